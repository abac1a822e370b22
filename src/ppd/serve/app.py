"""The browser app's HTTP API (FastAPI) over frames, the defender and the one-shot pipeline.

Routes are plain (non-async) functions, so FastAPI runs each in its thread pool: a long
one-shot target never blocks the event loop, and other sessions' clicks keep being answered.
Model work runs on two dedicated threads: one answers clicks (SAM decodes), the other runs
the long work (embedding an image, Defend, one-shot), so a long job never delays a click, and
20 clients neither oversubscribe two cores nor give torch and malloc per-thread state in 40 threads.
Every error is a JSON ``{"error": "one line"}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from importlib import resources

import numpy as np
from fastapi import FastAPI, File, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ppd.errors import ConfigError, PPDError
from ppd.hypotheses import DRAWS
from ppd.serve.guards import Guards
from ppd.serve.sessions import MAX_UPLOAD, ImageEntry, NotFound, SessionStore, UploadTooLarge

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class Prompts(BaseModel):
    points: list[list[float]] = Field(default_factory=list, max_length=256)
    labels: list[int] = Field(default_factory=list, max_length=256)


class DefendIn(Prompts):
    use_reference: bool = True  # use the session's one-shot reference, if one is set
    check_labels: bool = False  # the labels may be flipped: also refine label hypotheses (ppd.hypotheses)


class ReferenceIn(Prompts):
    image: str


class OneShotIn(BaseModel):
    k: int = Field(10, ge=1, le=64)
    instances: str = "auto"
    adapt: bool = False  # first adapt the defender to the session's reference (ppd.train.adapt; once per reference)


def mask_png(mask: np.ndarray) -> str:
    """A boolean mask as a 1-bit PNG data URL (small, lossless; the page colours it)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask)).convert("1").save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _prompts(body: Prompts, entry: ImageEntry) -> tuple[np.ndarray, np.ndarray]:
    from ppd.io import check_points

    if not body.points:
        raise ConfigError("no prompts: click on the image first")
    return check_points(body.points, body.labels or None, entry.size)


def create_app(segmenter=None, defender=None, allowed_hosts: list[str] | None = None, attacker=None,
               adapt=None) -> FastAPI:
    """The app. ``segmenter`` / ``defender`` default to MobileSAM and the shipped defender;
    ``allowed_hosts`` (Host-header check against DNS rebinding) defaults to loopback names.
    One-shot requests with ``adapt`` fine-tune the defender on the session's reference first
    (:mod:`ppd.train.adapt`, ``adapt``: its :class:`AdaptConfig`) against ``attacker`` (an agent or
    checkpoint path; default: the shipped attacker if ``defender`` is the shipped one, else refused)."""
    from ppd.agents import shipped_agent_path
    from ppd.refine import Defender
    from ppd.sam import Segmenter
    from ppd.train.adapt import AdaptConfig

    seg = segmenter or Segmenter()
    if attacker is None and defender is None:
        attacker = shipped_agent_path("attacker")
    defender = defender or Defender(segmenter=seg)
    adapt = adapt or AdaptConfig()
    store = SessionStore(seg)
    pools: dict[str, ThreadPoolExecutor] = {}  # "clicks" and "jobs", one thread each, made on first use
    pools_lock = threading.Lock()

    def run_on(name: str, fn):
        with pools_lock:
            if name not in pools:
                pools[name] = ThreadPoolExecutor(1, thread_name_prefix=f"ppd-{name}")
            ex = pools[name]
        return ex.submit(fn).result()

    @asynccontextmanager
    async def lifespan(_app):
        yield
        with pools_lock:
            for ex in pools.values():
                ex.shutdown(wait=False, cancel_futures=True)
            pools.clear()
        store.close()  # the private upload folder goes with the server

    app = FastAPI(title="ppd serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store, app.state.segmenter, app.state.defender = store, seg, defender
    hosts = list(allowed_hosts or LOOPBACK_HOSTS)
    app.add_middleware(Guards, max_body=MAX_UPLOAD + 64 * 1024, allowed_hosts=hosts)  # multipart overhead
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)  # outermost: checked first
    static = resources.files("ppd") / "serve" / "static"

    def click(fn):
        """Run ``fn`` (a SAM decode) on the click thread. Only the two model threads ever call torch, so
        its per-thread pools and malloc arenas exist twice, not once per request thread (docs/bench_serve.txt)."""
        return run_on("clicks", fn)

    def job(fn):
        """Run ``fn`` (embedding, Defend, one-shot) on the job thread: clicks never wait behind it."""
        return run_on("jobs", fn)

    # ------------------------------------------------------------------ errors: one JSON line, 4xx
    def err(status: int, text: str) -> JSONResponse:
        return JSONResponse({"error": text}, status_code=status)

    @app.exception_handler(PPDError)
    async def _ppd(_req, e: PPDError):
        status = 404 if isinstance(e, NotFound) else 413 if isinstance(e, UploadTooLarge) else 400
        return err(status, str(e).splitlines()[0] if str(e) else type(e).__name__)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return err(422, f"invalid request: {where}: {first.get('msg', 'malformed')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, e: StarletteHTTPException):
        return err(e.status_code, str(e.detail))

    # ------------------------------------------------------------------ page
    @app.get("/", response_class=HTMLResponse)
    def index():
        return (static / "index.html").read_text()

    with resources.as_file(static) as folder:
        app.mount("/static", StaticFiles(directory=folder), name="static")

    # ------------------------------------------------------------------ sessions and images
    def image_info(s, entry: ImageEntry, t0: float) -> dict:
        h, w = entry.size
        return {"image": entry.id, "name": entry.name, "width": w, "height": h, "has_mask": entry.mask is not None,
                "url": f"/api/sessions/{s.id}/images/{entry.id}", "embed_s": round(time.perf_counter() - t0, 3)}

    @app.get("/api/samples")
    def samples():
        return [{"name": k, "group": v["group"], "role": v.get("role", "click"), "has_mask": v["mask"] is not None,
                 "points": v.get("points"), "labels": v.get("labels")} for k, v in store.samples.items()]

    @app.post("/api/sessions")
    def new_session():
        return {"session": store.new_session().id}

    @app.post("/api/sessions/{sid}/samples/{name}")
    def open_sample(sid: str, name: str):
        s, t0 = store.session(sid), time.perf_counter()
        return image_info(s, job(lambda: store.add_sample(s, name)), t0)

    @app.post("/api/sessions/{sid}/images")
    def upload(sid: str, file: UploadFile = File(...)):
        s, t0 = store.session(sid), time.perf_counter()
        data = file.file.read(MAX_UPLOAD + 1)
        return image_info(s, job(lambda: store.add_upload(s, file.filename or "upload", data)), t0)

    @app.get("/api/sessions/{sid}/images/{iid}")
    def image_file(sid: str, iid: str):
        entry = store.session(sid).image(iid)
        return FileResponse(entry.path, headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/sessions/{sid}/images/{iid}/mask")
    def upload_mask(sid: str, iid: str, file: UploadFile = File(...)):
        mask = store.set_mask(store.session(sid), iid, file.file.read(MAX_UPLOAD + 1))
        return {"image": iid, "area": int(mask.sum()), "mask": mask_png(mask)}

    @app.get("/api/sessions/{sid}/images/{iid}/mask")
    def get_mask(sid: str, iid: str):
        entry = store.session(sid).image(iid)
        if entry.mask is None:
            raise NotFound("this image has no mask")
        return {"image": iid, "area": int(entry.mask.sum()), "mask": mask_png(entry.mask)}

    # ------------------------------------------------------------------ click mode
    @app.post("/api/sessions/{sid}/images/{iid}/predict")
    def predict(sid: str, iid: str, body: Prompts):
        entry = store.session(sid).image(iid)
        pts, labs = _prompts(body, entry)
        t0 = time.perf_counter()
        pred = click(lambda: seg.decode(store.frame(entry), pts, labs))
        return {"mask": mask_png(pred.mask), "iou": pred.iou, "area": int(pred.mask.sum()),
                "decode_s": round(time.perf_counter() - t0, 4)}

    def graph_reference(s):
        if s.reference is None:
            return None
        rid, rmask = s.reference
        return store.oneshot_reference(s.image(rid), rmask).graph_reference(defender.config.graph_grid)

    @app.post("/api/sessions/{sid}/images/{iid}/defend")
    def defend(sid: str, iid: str, body: DefendIn):
        s = store.session(sid)
        entry = s.image(iid)
        pts, labs = _prompts(body, entry)
        t0 = time.perf_counter()
        def work():
            frame = store.frame(entry)
            ref = graph_reference(s) if body.use_reference else None
            cfg = (replace(defender.config, hypotheses=defender.config.hypotheses or DRAWS)
                   if body.check_labels else None)
            return seg.decode(frame, pts, labs), ref, defender.refine_frame(frame, pts, labs, reference=ref, config=cfg)

        before, ref, res = job(work)
        out = res.to_json()
        out.update(before={"mask": mask_png(before.mask), "iou": before.iou},
                   after={"mask": mask_png(res.mask), "iou": res.iou}, used_reference=ref is not None,
                   defend_s=round(time.perf_counter() - t0, 4))
        return out

    # ------------------------------------------------------------------ one-shot mode
    @app.post("/api/sessions/{sid}/reference")
    def set_reference(sid: str, body: ReferenceIn):
        from ppd.instances import count_instances, resolve_mode

        s = store.session(sid)
        entry = s.image(body.image)
        if body.points:
            pts, labs = _prompts(body, entry)
            mask = click(lambda: seg.decode(store.frame(entry), pts, labs).mask)
            source = "SAM clicks"
        elif entry.mask is not None:
            mask, source = entry.mask, "the image's mask"
        else:
            raise ConfigError("this image has no mask: upload one, or click the object to make one with SAM")
        if not mask.any():
            raise ConfigError("the reference mask is empty: click on the object")
        s.reference = (entry.id, mask)
        return {"image": entry.id, "source": source, "area": int(mask.sum()), "mask": mask_png(mask),
                "objects": count_instances(mask), "mode": resolve_mode("auto", mask)}

    @app.post("/api/sessions/{sid}/images/{iid}/oneshot")
    def oneshot(sid: str, iid: str, body: OneShotIn):
        from ppd.metrics import dice
        from ppd.oneshot import OneShot

        s = store.session(sid)
        entry = s.image(iid)
        if s.reference is None:
            raise ConfigError("set a reference first (an image and its mask)")
        rid, rmask = s.reference
        if body.adapt and attacker is None:
            raise ConfigError("adapting needs the attacker trained with this server's defender: "
                              "start ppd serve with a --defender that has attacker.* beside it")
        t0 = time.perf_counter()
        ref_entry = s.image(rid)
        plain = OneShot(seg, None, k=body.k, instances=body.instances)
        adapted: dict = {}

        def work():
            d = defender
            if body.adapt:  # adapted once per reference (kept for later targets and sessions)
                d, adapted["seconds"], adapted["reused"] = store.adapted_defender(ref_entry, rmask, defender,
                                                                                  attacker, adapt)
            pipe = OneShot(seg, d, k=body.k, instances=body.instances)
            ref = pipe.set_reference(store.oneshot_reference(ref_entry, rmask))
            plain.set_reference(ref)
            frame = store.frame(entry)
            result = pipe.run(frame)
            return result, plain.run(frame, result.proposal)

        result, start = job(work)
        prop, res = result.proposal, result.refined
        out = res.to_json()
        out.update(candidates={"points": prop.candidates.points.tolist(),
                               "labels": [int(v) for v in prop.candidates.labels]},
                   start_index=[int(i) for i in prop.index],
                   mode=result.mode, start={"mask": mask_png(start.mask), "iou": start.refined.iou},
                   final={"mask": mask_png(res.mask), "iou": res.iou}, oneshot_s=round(time.perf_counter() - t0, 3),
                   adapted=({"decodes": adapt.decodes, "views": adapt.views, "choose": adapt.choose, **adapted}
                            if adapted else None))
        if entry.mask is not None:
            out["dice"] = {"start": dice(start.mask, entry.mask), "final": dice(res.mask, entry.mask)}
        return out

    @app.get("/api/health")
    def health():
        return {"ok": True, "frames_held": store.frames_held()}

    return app
