"""``ppd serve``'s API through the real MobileSAM and the shipped defender (FastAPI's TestClient)."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import interior_point, need, pick  # noqa: E402
from ppd.io import read_image, read_mask

need("fastapi")
need("python_multipart")
from fastapi.testclient import TestClient  # noqa: E402


@pytest.fixture(scope="module")
def defender(segmenter):
    from ppd.refine import Defender

    return Defender(segmenter=segmenter)


@pytest.fixture(scope="module")
def app(segmenter, defender):
    from ppd.serve import create_app

    return create_app(segmenter, defender, allowed_hosts=["testserver"])


@pytest.fixture()
def client(app):
    with TestClient(app) as c:
        yield c


def session(client) -> str:
    r = client.post("/api/sessions")
    assert r.status_code == 200
    return r.json()["session"]


def png_bytes(array: np.ndarray, exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(array)
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(buf, format="PNG", exif=exif.tobytes())
    else:
        im.save(buf, format="PNG")
    return buf.getvalue()


def mask_of(data_url: str) -> np.ndarray:
    head, _, b64 = data_url.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L")) > 0


def upload(client, sid, array, name="x.png", **kw):
    return client.post(f"/api/sessions/{sid}/images", files={"file": (name, png_bytes(array, **kw), "image/png")})


def test_page_and_static(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas id=\"canvas\"" in r.text
    for f in ("app.js", "style.css"):
        assert client.get(f"/static/{f}").status_code == 200
    names = {s["name"] for s in client.get("/api/samples").json()}
    assert {"chelsea", "dsb-fluo", "fluo-ref", "coins-a"} <= names


def test_click_predict_and_defend_match_the_library(client, segmenter, defender, manifest):
    """Upload a real Kvasir image; /predict equals Segmenter.decode, /defend equals Defender.refine_frame."""
    s = pick(manifest, "kvasir", "val", 1)[0]
    image, gt = read_image(s.image_path), read_mask(s.mask_path)
    sid = session(client)
    info = upload(client, sid, image).json()
    assert (info["height"], info["width"]) == image.shape[:2]
    served = np.asarray(Image.open(io.BytesIO(client.get(info["url"]).content)).convert("RGB"))
    assert np.array_equal(served, image)

    x, y = interior_point(gt)
    ys, xs = np.nonzero(~gt)
    pts = [[x, y], [float(xs[0]), float(ys[0])], [float(xs[-1]), float(ys[-1])]]
    labels = [1, 1, 0]
    r = client.post(f"/api/sessions/{sid}/images/{info['image']}/predict", json={"points": pts, "labels": labels})
    assert r.status_code == 200
    frame = segmenter.frame(image)
    want = segmenter.decode(frame, np.array(pts, float), np.array(labels))
    assert np.array_equal(mask_of(r.json()["mask"]), want.mask)
    assert r.json()["iou"] == pytest.approx(want.iou, abs=1e-6)

    d = client.post(f"/api/sessions/{sid}/images/{info['image']}/defend", json={"points": pts, "labels": labels})
    assert d.status_code == 200
    res = defender.refine_frame(frame, np.array(pts, float), np.array(labels))
    out = d.json()
    assert out["status"] == res.to_json()["status"] and out["removal_order"] == res.order
    assert np.array_equal(mask_of(out["after"]["mask"]), res.mask)
    assert np.array_equal(mask_of(out["before"]["mask"]), want.mask)
    assert out["used_reference"] is False


def test_defend_with_check_labels_matches_the_library(client, segmenter, defender, manifest):
    """Clicks made with the wrong button (every label flipped) on a real PH2 image: /defend with
    ``check_labels`` equals Defender.refine_frame with label hypotheses, and relabels where the plain
    defender cannot."""
    from dataclasses import replace

    from ppd.hypotheses import DRAWS

    s = pick(manifest, "ph2", "val", 1)[0]
    image, gt = read_image(s.image_path), read_mask(s.mask_path)
    rng = np.random.default_rng(0)
    inside, outside = np.argwhere(gt)[:, ::-1], np.argwhere(~gt)[:, ::-1]
    pts = np.r_[inside[rng.integers(0, len(inside), 4)], outside[rng.integers(0, len(outside), 4)]].astype(float)
    labels = [0] * 4 + [1] * 4  # flipped: negatives on the lesion, positives on the skin
    sid = session(client)
    iid = upload(client, sid, image).json()["image"]
    url = f"/api/sessions/{sid}/images/{iid}/defend"
    checked = client.post(url, json={"points": pts.tolist(), "labels": labels, "check_labels": True}).json()
    plain = client.post(url, json={"points": pts.tolist(), "labels": labels}).json()
    frame = segmenter.frame(image)
    res = defender.refine_frame(frame, pts, np.array(labels), config=replace(defender.config, hypotheses=DRAWS))
    want = res.to_json()
    for key in ("labels", "relabeled", "status", "removal_order"):
        assert checked[key] == want[key]
    assert np.array_equal(mask_of(checked["after"]["mask"]), res.mask)
    assert any(checked["relabeled"]) and not any(plain["relabeled"])
    assert plain["labels"] == labels


def test_exif_rotated_upload_lands_clicks_where_seen(client, segmenter, manifest):
    """Pixels stored turned, EXIF orientation 6: the app works on the image as a viewer shows it."""
    s = pick(manifest, "ph2", "val", 1)[0]
    shown, gt = read_image(s.image_path), read_mask(s.mask_path)
    stored = np.ascontiguousarray(np.rot90(shown, 1))  # orientation 6: the viewer turns it back clockwise
    sid = session(client)
    info = upload(client, sid, stored, exif_orientation=6).json()
    assert (info["height"], info["width"]) == shown.shape[:2]
    x, y = interior_point(gt)
    r = client.post(f"/api/sessions/{sid}/images/{info['image']}/predict", json={"points": [[x, y]], "labels": [1]})
    mask = mask_of(r.json()["mask"])
    assert mask[y, x]
    want = segmenter.decode(segmenter.frame(shown), np.array([[x, y]], float), np.array([1]))
    assert np.array_equal(mask, want.mask)


def test_oneshot_and_reference_match_the_pipeline(client, segmenter, defender):
    from ppd.oneshot import OneShot

    sid = session(client)
    ref = client.post(f"/api/sessions/{sid}/samples/coins-ref").json()
    tgt = client.post(f"/api/sessions/{sid}/samples/coins-a").json()
    r = client.post(f"/api/sessions/{sid}/images/{tgt['image']}/oneshot", json={})
    assert r.status_code == 400 and "reference" in r.json()["error"]
    rr = client.post(f"/api/sessions/{sid}/reference", json={"image": ref["image"]})
    assert rr.status_code == 200 and rr.json()["mode"] == "many" and rr.json()["objects"] >= 3
    out = client.post(f"/api/sessions/{sid}/images/{tgt['image']}/oneshot", json={"k": 10}).json()

    from importlib import resources

    root = resources.files("ppd") / "assets" / "oneshot"
    with resources.as_file(root / "coins-ref.jpg") as p, resources.as_file(root / "coins-ref.mask.png") as mp:
        ref_img, ref_mask = read_image(p), read_mask(mp)
    with resources.as_file(root / "coins-a.jpg") as p, resources.as_file(root / "coins-a.mask.png") as mp:
        tgt_img, tgt_mask = read_image(p), read_mask(mp)
    pipe = OneShot(segmenter, defender, k=10)
    pipe.set_reference(ref_img, ref_mask)
    want = pipe.run(tgt_img)
    assert out["mode"] == want.mode == "many"
    assert out["status"] == want.refined.to_json()["status"]
    assert len(out["candidates"]["points"]) == len(want.proposal.candidates)
    assert out["start_index"] == [int(i) for i in want.proposal.index]
    assert np.array_equal(mask_of(out["final"]["mask"]), want.mask)
    assert set(out["dice"]) == {"start", "final"}

    # a reference made from SAM clicks in the app
    pt = [[60.0, 60.0]]
    rc = client.post(f"/api/sessions/{sid}/reference", json={"image": tgt["image"], "points": pt, "labels": [1]})
    assert rc.status_code == 200 and rc.json()["source"] == "SAM clicks"
    want_mask = segmenter.decode(segmenter.frame(tgt_img), np.array(pt), np.array([1])).mask
    assert np.array_equal(mask_of(rc.json()["mask"]), want_mask)
    # and an uploaded mask
    def put_mask(m):
        return client.post(f"/api/sessions/{sid}/images/{tgt['image']}/mask",
                           files={"file": ("m.png", png_bytes(m.astype(np.uint8) * 255), "image/png")})

    bad = put_mask(tgt_mask[:-3])
    assert bad.status_code == 400 and "x" in bad.json()["error"], bad.text
    assert put_mask(~tgt_mask).json()["area"] == int((~tgt_mask).sum())
    assert client.get(f"/api/sessions/{sid}/images/{tgt['image']}/mask").json()["area"] == int((~tgt_mask).sum())
    assert put_mask(tgt_mask).status_code == 200
    assert client.get(f"/api/sessions/{sid}/images/{tgt['image']}/mask").json()["area"] == int(tgt_mask.sum())


def test_bad_input_is_a_4xx_json_line(client, app, manifest):
    sid = session(client)
    s = pick(manifest, "ecssd", "val", 1)[0]
    image = read_image(s.image_path)
    good = upload(client, sid, image).json()["image"]

    def check(r, status, words):
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error"} and "\n" not in body["error"] and words in body["error"], body

    files = lambda data: {"file": ("f.png", data, "image/png")}  # noqa: E731
    check(client.post(f"/api/sessions/{sid}/images", files=files(b"%PDF-1.4 not an image")), 400, "cannot read")
    truncated = png_bytes(image)[:2000]
    check(client.post(f"/api/sessions/{sid}/images", files=files(truncated)), 400, "cannot read")
    check(client.post(f"/api/sessions/{sid}/images", files=files(b"")), 400, "empty")
    big = b"\x89PNG" + bytes(21 * 2**20)
    check(client.post(f"/api/sessions/{sid}/images", files=files(big)), 413, "20 MB")
    check(client.post(f"/api/sessions/{sid}/samples/..%2F..%2Fetc%2Fpasswd"), 404, "")  # the router refuses
    check(client.post(f"/api/sessions/{sid}/samples/..passwd"), 404, "no shipped sample")
    check(client.post(f"/api/sessions/{sid}/images", files=files(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 9 9\n")),
          400, "cannot read")

    def chunked():  # no Content-Length: the guard counts the bytes itself
        for _ in range(22):
            yield bytes(2**20)

    check(client.post(f"/api/sessions/{sid}/images", content=chunked(),
                      headers={"Content-Type": "multipart/form-data; boundary=x"}), 413, "20 MB")
    check(client.post("/api/sessions", headers={"Origin": "http://evil.example"}), 403, "evil.example")
    assert client.post("/api/sessions", headers={"Origin": "http://testserver:8000"}).status_code == 200
    check(client.post(f"/api/sessions/{sid}/samples/nope"), 404, "no shipped sample")
    check(client.get("/api/sessions/forged/images/x"), 404, "session")
    other = session(client)
    check(client.get(f"/api/sessions/{other}/images/{good}"), 404, "no image")  # isolation
    check(client.post(f"/api/sessions/{other}/images/{good}/predict", json={"points": [[1, 1]]}), 404, "no image")
    url = f"/api/sessions/{sid}/images/{good}/predict"
    check(client.post(url, json={"points": [[1e6, 5]], "labels": [1]}), 400, "outside")
    check(client.post(url, json={"points": [[5, 5]], "labels": [7]}), 400, "label")
    check(client.post(url, json={"points": []}), 400, "no prompts")
    check(client.post(url, json={"points": "x"}), 422, "points")
    check(client.post(url, content=b"{not json", headers={"Content-Type": "application/json"}), 422, "invalid")
    check(client.post(f"/api/sessions/{sid}/reference", json={"image": good}), 400, "no mask")
    check(client.post(f"/api/sessions/{sid}/images/{good}/mask", files=files(png_bytes(image))), 400, "binary")
    r = client.get("/api/samples", headers={"Host": "attacker.example"})  # DNS rebinding
    assert r.status_code == 400
    # nothing half-written: only finished PNGs in the session's private folder
    folder = app.state.store.root
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert not list(folder.rglob("*.part"))


def test_frames_lru_and_concurrent_sessions(app, client):
    """At most 8 frames held; an evicted image still answers (disk cache); sessions click concurrently."""
    store = app.state.store
    names = [s["name"] for s in client.get("/api/samples").json()]
    sid = session(client)
    opened = [client.post(f"/api/sessions/{sid}/samples/{n}").json() for n in names[:10]]
    assert store.frames_held() <= 8
    first = opened[0]
    r = client.post(f"/api/sessions/{sid}/images/{first['image']}/predict",
                    json={"points": [[first["width"] / 2, first["height"] / 2]]})
    assert r.status_code == 200

    errors, masks = [], {}

    def clicker(i: int) -> None:
        try:
            s = session(client)
            info = client.post(f"/api/sessions/{s}/samples/{names[i % 3]}").json()
            for j in range(3):
                p = [[info["width"] * (j + 1) / 5, info["height"] / 2]]
                out = client.post(f"/api/sessions/{s}/images/{info['image']}/predict", json={"points": p})
                assert out.status_code == 200, out.text
                masks[(names[i % 3], j, i)] = out.json()["mask"]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=clicker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (name, j, i), m in masks.items():  # same image and click in two sessions -> the same mask
        twin = masks.get((name, j, i + 3))
        assert twin is None or twin == m


def test_cli_serve_bad_options(tmp_path, capsys):
    from ppd.cli import main
    from ppd.cli.serve import allowed_hosts

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--adapt-decodes", "50"]) == 2  # refused before SAM loads
    err = capsys.readouterr().err
    assert "adapt" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:  # each one-shot request says whether to adapt: no such switch
        main(["serve", "--adapt"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    from ppd.cli.serve import _attacker

    assert _attacker(None) is not None and _attacker(str(tmp_path / "defender")) is None  # no attacker beside it
    assert "0.0.0.0" not in allowed_hosts("0.0.0.0", None) and "::" not in allowed_hosts("::", None)
    assert "box.lan" in allowed_hosts("0.0.0.0", ["box.lan"]) and "10.0.0.2" in allowed_hosts("10.0.0.2", None)
    assert "[fe80::1]" in allowed_hosts("fe80::1", None)


def test_a_long_job_does_not_delay_other_sessions_clicks(client):
    """A one-shot target (union mode: one SAM decode per positive) runs while another session clicks."""
    import time

    a, b = session(client), session(client)
    ref = client.post(f"/api/sessions/{a}/samples/coins-ref").json()
    tgt = client.post(f"/api/sessions/{a}/samples/coins-b").json()
    assert client.post(f"/api/sessions/{a}/reference", json={"image": ref["image"]}).status_code == 200
    img = client.post(f"/api/sessions/{b}/samples/chelsea").json()
    done: dict[str, float] = {}

    def long_job() -> None:
        r = client.post(f"/api/sessions/{a}/images/{tgt['image']}/oneshot", json={"k": 32, "instances": "union"})
        done["job"] = time.perf_counter()
        done["job_status"] = r.status_code

    t = threading.Thread(target=long_job)
    start = time.perf_counter()
    t.start()
    time.sleep(0.2)
    for i in range(3):
        r = client.post(f"/api/sessions/{b}/images/{img['image']}/predict", json={"points": [[100 + 50 * i, 150]]})
        assert r.status_code == 200
    done["clicks"] = time.perf_counter()
    t.join()
    assert done["job_status"] == 200
    assert done["clicks"] < done["job"], (done["clicks"] - start, done["job"] - start)


def test_the_reference_image_is_never_evicted(client):
    """A session keeps 32 images (LRU), but never drops its one-shot reference: Defend and one-shot keep working."""
    from ppd.serve.sessions import MAX_IMAGES

    sid = session(client)
    ref = client.post(f"/api/sessions/{sid}/samples/coins-ref").json()
    assert client.post(f"/api/sessions/{sid}/reference", json={"image": ref["image"]}).status_code == 200
    opened = [client.post(f"/api/sessions/{sid}/samples/coins-a").json() for _ in range(MAX_IMAGES + 2)]
    assert client.get(opened[0]["url"]).status_code == 404  # the oldest target went
    assert client.get(ref["url"]).status_code == 200  # the reference stayed
    r = client.post(f"/api/sessions/{sid}/images/{opened[-1]['image']}/defend", json={"points": [[60, 60]]})
    assert r.status_code == 200 and r.json()["used_reference"] is True


def test_oneshot_with_adapt_matches_the_api(segmenter, defender):
    """``adapt`` in a one-shot request: the defender is adapted to the session's reference once (the
    same weights as :func:`ppd.train.adapt.adapt_defender` gives), reused for later targets, and made
    again when the reference changes. A server given a defender but no attacker to adapt it against
    refuses it in one line."""
    from importlib import resources

    from ppd.agents import shipped_agent_path
    from ppd.oneshot import OneShot
    from ppd.serve import create_app
    from ppd.train.adapt import AdaptConfig, adapt_defender

    cfg = AdaptConfig(decodes=300)
    root = resources.files("ppd") / "assets" / "oneshot"
    with resources.as_file(root / "coins-ref.jpg") as p, resources.as_file(root / "coins-ref.mask.png") as mp:
        ref_img, ref_mask = read_image(p), read_mask(mp)
    with resources.as_file(root / "coins-a.jpg") as p:
        tgt_img = read_image(p)
    with TestClient(create_app(segmenter, defender, allowed_hosts=["testserver"], adapt=cfg)) as c:
        sid = session(c)
        ref = c.post(f"/api/sessions/{sid}/samples/coins-ref").json()
        tgt = c.post(f"/api/sessions/{sid}/samples/coins-a").json()
        assert c.post(f"/api/sessions/{sid}/reference", json={"image": ref["image"]}).status_code == 200
        r = c.post(f"/api/sessions/{sid}/images/{tgt['image']}/oneshot", json={"adapt": True})
        assert r.status_code == 400 and "attacker" in r.json()["error"] and "\n" not in r.json()["error"]
        assert c.post(f"/api/sessions/{sid}/images/{tgt['image']}/oneshot", json={}).json()["adapted"] is None

    app = create_app(segmenter, defender, allowed_hosts=["testserver"], attacker=shipped_agent_path("attacker"),
                     adapt=cfg)
    with TestClient(app) as c:
        sid = session(c)
        ref = c.post(f"/api/sessions/{sid}/samples/coins-ref").json()
        tgt = c.post(f"/api/sessions/{sid}/samples/coins-a").json()
        other = c.post(f"/api/sessions/{sid}/samples/coins-b").json()
        assert c.post(f"/api/sessions/{sid}/reference", json={"image": ref["image"]}).status_code == 200
        first = c.post(f"/api/sessions/{sid}/images/{tgt['image']}/oneshot", json={"adapt": True}).json()
        assert first["adapted"]["reused"] is False and first["adapted"]["seconds"] > 0
        assert first["adapted"]["decodes"] == 300 and first["adapted"]["views"] == cfg.views
        assert first["adapted"]["choose"] == cfg.choose == "iou"
        again = c.post(f"/api/sessions/{sid}/images/{tgt['image']}/oneshot", json={"adapt": True}).json()
        assert again["adapted"]["reused"] is True and again["final"]["mask"] == first["final"]["mask"]
        pipe = OneShot(segmenter, adapt_defender(defender, ref_img, ref_mask, config=cfg), k=10)
        pipe.set_reference(ref_img, ref_mask)
        want = pipe.run(tgt_img)
        assert np.array_equal(mask_of(first["final"]["mask"]), want.mask)
        assert first["status"] == want.refined.to_json()["status"]
        # another reference: adapted again
        assert c.post(f"/api/sessions/{sid}/reference", json={"image": other["image"]}).status_code == 200
        third = c.post(f"/api/sessions/{sid}/images/{tgt['image']}/oneshot", json={"adapt": True}).json()
        assert third["adapted"]["reused"] is False
