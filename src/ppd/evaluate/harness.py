"""``ppd eval``: one-shot evaluation of prompt-engineering methods on any data root.

The protocol, fixed and the same for every method:

* the images of one dataset and split (a plain ``images/`` + ``masks/`` folder, or
  a manifest without a ``split`` column, counts as ``eval``);
* ``references`` seeded reference images (or one given ``reference_id``); every
  *other* image of the split is a target — the same targets for every reference
  and every method; ``limit`` takes a seeded subset of them;
* the target is the whole ground-truth mask; Dice and IoU at the stored size, no
  post-processing; per method the mean over targets (mDSC, mIoU, in %) for each
  reference, then mean ± sd over references;
* ``s/img``: seconds of the method's own prompt engineering and SAM decodes per
  target, excluding the target's image encoder (shared by all methods, cached).

Methods that use no reference (``oracle-*``, ``ideal*``) are computed once per
target. Every row is cached in a JSON-lines file under a key made of the method
and its configuration, the target's image and mask file hashes, the reference's
image and mask file hashes, and the SAM / defender / attacker weight hashes; so an
interrupted run resumes where it stopped and a second run only reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ppd.data import Sample
from ppd.errors import ConfigError, DataError
from ppd.io import file_sha256
from ppd.metrics import dice, iou

#: method -> (uses a reference, uses the defender, uses the attacker, one-line description)
METHODS: dict[str, tuple[bool, bool, bool, str]] = {
    "oracle-click": (False, False, False, "one click at the GT interior point farthest from the border (sanity)"),
    "oracle-box": (False, False, False, "the GT bounding box (sanity)"),
    "fm": (True, False, False, "all feature-matching prompts"),
    "fm-kmeans": (True, False, False, "FM thinned to at most K per class by k-means on coordinates"),
    "fm-ppd": (True, True, False, "fm-kmeans + the defender"),
    "fm-random": (True, True, False, "fm-kmeans minus as many random prompts as the defender removed"),
    "fm-gbmseg": (True, False, False, "fm-kmeans pruned by GBMSeg-style rules"),
    "persam": (True, False, False, "PerSAM-style best / worst point + cascaded box refinement"),
    "fm-greedy-oracle": (True, False, False, "GT-guided greedy removal from fm-kmeans (GT-informed, not a bound)"),
    "ideal": (False, False, False, "the game's ideal prompts from the GT"),
    "ideal-attacked": (False, False, True, "ideal prompts after the attacker (T steps)"),
    "ideal-attacked-defended": (False, True, True, "the attacked set refined by the defender"),
    "ideal-attacked-random": (False, True, True, "the attacked set minus as many random prompts as the defender "
                                                 "removed"),
}
TRAINING_FREE = ("fm", "fm-kmeans", "fm-random", "fm-gbmseg", "persam")


@dataclass(frozen=True)
class EvalConfig:
    k: int = 10  # k-means: prompts kept per class
    seed: int = 0  # references, target subset, k-means, random removal, attacker layouts
    attack_steps: int = 8  # attacker moves T for ideal-attacked
    greedy_max_removals: int = 15
    # start sets from cycle-consistent matches (ppd.oneshot.match_patches); every fm-* method and
    # the defender's start set follow it
    cycle: bool = field(default_factory=lambda: _cycle_default())
    # part of every cache key: bump it when a method's definition changes (the defender's
    # weights and inference settings are in the keys of the rows that use it)
    version: int = 1


def _cycle_default() -> bool:
    from ppd.oneshot import CYCLE

    return CYCLE


def config_key(cfg: EvalConfig) -> dict:
    """The configuration as it enters cache keys and run.json comparisons; settings added later
    enter only when they differ from their default, so earlier rows keep their keys."""
    d = asdict(cfg)
    if not d["cycle"]:
        del d["cycle"]
    return d


@dataclass
class Row:
    dataset: str
    method: str
    reference: str  # "-" for methods without a reference
    target: str
    dice: float
    iou: float
    seconds: float
    n_prompts: int  # prompts given to SAM before any refinement
    n_kept: int  # prompts SAM finally saw
    key: str = ""


class ResultCache:
    """Rows in a JSON-lines file, appended one line per write (a kill loses at most that line)."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: dict[str, Row] = {}
        self.hits = 0
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    r = Row(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a line cut by a kill
                self.rows[r.key] = r

    def get(self, key: str) -> Row | None:
        r = self.rows.get(key)
        self.hits += r is not None
        return r

    def put(self, row: Row) -> None:
        self.rows[row.key] = row
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(asdict(row)) + "\n").encode())
        finally:
            os.close(fd)


def select(samples: list[Sample], references: int = 5, reference_id: str | None = None,
           limit: int | None = None, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(references, targets) of one dataset, seeded; targets exclude every reference."""
    samples = sorted(samples, key=lambda s: s.id)
    if reference_id is not None:
        refs = [s for s in samples if s.id == reference_id]
        if not refs:
            raise DataError(f"reference {reference_id!r} is not among the {len(samples)} images")
    else:
        if len(samples) < references + 1:
            raise DataError(f"{len(samples)} images: too few for {references} reference(s) and a target")
        rng = np.random.default_rng(seed)
        refs = [samples[i] for i in sorted(rng.choice(len(samples), references, replace=False))]
    ids = {r.id for r in refs}
    targets = [s for s in samples if s.id not in ids]
    if not targets:
        raise DataError("no target image left besides the reference")
    if limit is not None and limit < len(targets):
        rng = np.random.default_rng(seed + 1)
        targets = [targets[i] for i in sorted(rng.choice(len(targets), limit, replace=False))]
    return refs, targets


def agent_sha(spec, role: str, overrides: dict | None = None) -> str:
    """Hash of an agent's weights and configuration (and, for the defender, its inference settings,
    :class:`ppd.refine.DefenderConfig`, which decide its rows too)."""
    from ppd.agents.dqn import shipped_agent_path

    h = hashlib.sha256()
    if spec is not None and str(spec) == "untrained":
        h.update(b"untrained")
    else:
        base = shipped_agent_path(role) if spec is None else Path(spec).with_suffix("")
        for suffix in (".safetensors", ".json"):
            h.update(file_sha256(base.with_suffix(suffix)).encode())
    if role == "defender":
        h.update(json.dumps(refine_settings(spec, overrides), sort_keys=True).encode())
    return h.hexdigest()


def refine_settings(spec=None, overrides: dict | None = None) -> dict:
    """The settings the harness's defender refines with: the agent's saved ones plus ``overrides``."""
    from ppd.refine import DefenderConfig, load_agent

    return asdict(DefenderConfig.for_agent(load_agent(spec, "defender"), **(overrides or {})))


def check_methods(methods: list[str]) -> None:
    if not methods:
        raise ConfigError(f"no method given; known: {', '.join(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")


def _int_hash(text: str) -> int:
    """A stable 32-bit integer of a string (seeds per target / reference)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def check_pair_sizes(s: Sample) -> None:
    from ppd.io import stored_size

    (ih, iw), (mh, mw) = stored_size(s.image_path, "image"), stored_size(s.mask_path, "mask")
    if (ih, iw) != (mh, mw):
        raise DataError(f"{s.mask_path}: mask is {mw}x{mh}, image {iw}x{ih}")


class Harness:
    """Runs methods on (target, reference) pairs with one segmenter, caching every row."""

    def __init__(self, segmenter, methods: list[str], cfg: EvalConfig | None = None, defender=None,
                 attacker=None, cache: ResultCache | None = None, defender_opts: dict | None = None) -> None:
        check_methods(methods)
        self.seg = segmenter
        self.methods = list(methods)
        self.cfg = cfg = cfg or EvalConfig()
        self.defender_spec, self.attacker_spec = defender, attacker
        self.defender_opts = dict(defender_opts or {})
        self.cache = cache or ResultCache(None)
        uses_d = any(METHODS[m][1] for m in methods)
        uses_a = any(METHODS[m][2] for m in methods)
        self.hashes = {"sam": segmenter.model_sha256,
                       "defender": agent_sha(defender, "defender", self.defender_opts) if uses_d else None,
                       "attacker": agent_sha(attacker, "attacker") if uses_a else None}
        self._defender = self._attacker = None
        self._files: dict[Path, str] = {}

    # ------------------------------------------------------------------ keys
    def _sha(self, path: Path) -> str:
        if path not in self._files:
            self._files[path] = file_sha256(path)
        return self._files[path]

    def key(self, method: str, target: Sample, ref: Sample | None) -> str:
        _, uses_d, uses_a, _ = METHODS[method]
        if method == "fm-random":
            uses_a = False  # depends on the defender's removal count only
        parts = {"method": method, "cfg": config_key(self.cfg), "sam": self.hashes["sam"],
                 "target": [self._sha(target.image_path), self._sha(target.mask_path)],
                 "ref": [self._sha(ref.image_path), self._sha(ref.mask_path)] if ref is not None else None,
                 "defender": self.hashes["defender"] if uses_d else None,
                 "attacker": self.hashes["attacker"] if uses_a else None}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ agents
    @property
    def defender(self):
        if self._defender is None:
            from ppd.refine import Defender, load_agent

            self._defender = Defender(load_agent(self.defender_spec, "defender", seed=self.cfg.seed),
                                      segmenter=self.seg, **self.defender_opts)
        return self._defender

    @property
    def attacker(self):
        if self._attacker is None:
            from ppd.refine import load_agent

            self._attacker = load_agent(self.attacker_spec, "attacker", seed=self.cfg.seed)
        return self._attacker

    # ------------------------------------------------------------------ running
    def run(self, refs: list[Sample], targets: list[Sample], progress: bool = True,
            on_row: Callable[[Row], None] | None = None) -> list[Row]:
        from tqdm.auto import tqdm

        for s in refs + targets:  # every pair checked before any work (and before the progress bar)
            check_pair_sizes(s)
        ref_methods = [m for m in self.methods if METHODS[m][0]]
        solo_methods = [m for m in self.methods if not METHODS[m][0]]
        jobs = [(m, None) for m in solo_methods] + [(m, r) for r in refs for m in ref_methods]
        ref_feats: dict[str, tuple] = {}
        rows: list[Row] = []
        for t in tqdm(targets, desc=f"eval {targets[0].dataset if targets else ''}", unit="img",
                      disable=not progress):
            keys = {(m, r.id if r else "-"): self.key(m, t, r) for m, r in jobs}
            todo = [(m, r) for m, r in jobs if self.cache.get(keys[(m, r.id if r else "-")]) is None]
            if todo:
                if any(r is not None for _, r in todo):
                    for r in {r.id: r for _, r in todo if r is not None}.values():
                        if r.id not in ref_feats:
                            ref_feats[r.id] = self._reference(r)
                self._target(t, todo, ref_feats, keys)
            for m, r in jobs:
                row = self.cache.rows[keys[(m, r.id if r else "-")]]
                row = Row(**{**asdict(row), "dataset": t.dataset, "target": t.id, "reference": r.id if r else "-"})
                rows.append(row)
                if on_row:
                    on_row(row)
        return rows

    def _reference(self, ref: Sample) -> tuple:
        from ppd.graph import Reference
        from ppd.oneshot import patch_fractions

        image, mask = ref.image(), ref.mask()
        if not mask.any():
            raise DataError(f"{ref.mask_path}: the reference mask is empty")
        self.seg.set_image(image)
        f = self.seg.features()
        uses_defender = any(METHODS[m][1] and METHODS[m][0] for m in self.methods)
        reference = (Reference.from_features(f.grid, f.valid, f.patch_size, self.seg.original_size, mask)
                     if uses_defender else None)
        return f.grid, f.valid, patch_fractions(mask, self.seg.input_size), reference

    def _put(self, key: str, t: Sample, method: str, ref: Sample | None, mask: np.ndarray, gt: np.ndarray,
             seconds: float, n_prompts: int, n_kept: int) -> None:
        self.cache.put(Row(t.dataset, method, ref.id if ref else "-", t.id, dice(mask, gt), iou(mask, gt),
                           seconds, int(n_prompts), int(n_kept), key))

    def _target(self, t: Sample, todo: list, ref_feats: dict, keys: dict) -> None:
        from ppd.evaluate import baselines
        from ppd.evaluate.attack_defence import greedy_oracle
        from ppd.oneshot import kmeans_thin, match_patches

        image, gt = t.image(), t.mask()
        seg, cfg = self.seg, self.cfg
        need_graph = any(m in ("fm-ppd", "fm-random") for m, _ in todo)
        t0 = time.perf_counter()
        if need_graph:
            self.defender.set_image(image)  # sets the segmenter's image too
        else:
            seg.set_image(image)
        graph_s = time.perf_counter() - t0 if need_graph else 0.0
        f = seg.features()
        empty = np.zeros_like(gt, bool)

        def decode(pts, labs, box=None, multimask=False):
            if len(pts) == 0 and box is None:
                return empty
            return seg.predict(pts, labs, box=box, multimask=multimask).mask

        solo = [m for m, r in todo if r is None]
        for m in solo:
            k = keys[(m, "-")]
            t1 = time.perf_counter()
            if m == "oracle-click":
                mask, n = decode(baselines.oracle_click(gt), np.ones(1, np.int64), multimask=True), 1
                self._put(k, t, m, None, mask, gt, time.perf_counter() - t1, n, n)
            elif m == "oracle-box":
                mask = decode(np.zeros((0, 2)), np.zeros(0), box=baselines.mask_box(gt))
                self._put(k, t, m, None, mask, gt, time.perf_counter() - t1, 0, 0)
        ideal_methods = [m for m in solo if m.startswith("ideal")]
        if ideal_methods:  # the game's image bank made other handles current: back to the target
            self._ideal(t, image, gt, ideal_methods, keys, decode)
            if need_graph:
                self.defender.set_image(image)
            else:
                seg.set_image(image)

        by_ref: dict[str, list[str]] = {}
        refs: dict[str, Sample] = {}
        for m, r in todo:
            if r is not None:
                by_ref.setdefault(r.id, []).append(m)
                refs[r.id] = r
        rng_base = _int_hash(f"{cfg.seed}|{t.id}")
        for rid, methods in by_ref.items():
            ref = refs[rid]
            rg, rv, rf, ref_graph = ref_feats[rid]
            t1 = time.perf_counter()
            cand = match_patches(rg, rv, rf, f.grid, f.valid, f.patch_size, seg.original_size,
                                 cycle=cfg.cycle)
            match_s = time.perf_counter() - t1
            idx = kmeans_thin(cand.points, cand.labels, cfg.k, seed=cfg.seed)
            pts, labs = cand.points[idx], cand.labels[idx]
            thin_s = time.perf_counter() - t1
            n_in = len(pts)
            removed = None
            for m in [m for m in METHODS if m in methods]:  # fixed order: fm-ppd before fm-random
                k = keys[(m, rid)]
                t1 = time.perf_counter()
                if m == "fm":
                    mask = decode(cand.points, cand.labels)
                    self._put(k, t, m, ref, mask, gt, match_s + time.perf_counter() - t1, len(cand), len(cand))
                elif m == "fm-kmeans":
                    self._put(k, t, m, ref, decode(pts, labs), gt, thin_s + time.perf_counter() - t1, n_in, n_in)
                elif m == "fm-ppd":
                    if n_in:
                        self.defender.set_reference(ref_graph)
                        res = self.defender.refine(pts, labs)
                        mask, kept = res.mask, int(res.kept.sum())
                    else:
                        mask, kept = empty, 0
                    removed = n_in - kept
                    self._put(k, t, m, ref, mask, gt, graph_s + thin_s + time.perf_counter() - t1, n_in, kept)
                elif m == "fm-random":
                    if removed is None:  # fm-ppd came from the cache
                        self.defender.set_reference(ref_graph)
                        removed = self._removed(t, ref, pts, labs)
                    rng = np.random.default_rng([rng_base, _int_hash(rid)])
                    keep = baselines.random_removal(labs, removed, rng)
                    self._put(k, t, m, ref, decode(pts[keep], labs[keep]), gt,
                              thin_s + time.perf_counter() - t1, n_in, int(keep.sum()))
                elif m == "fm-gbmseg":
                    keep = baselines.gbmseg_prune(pts, labs, rg, rv, rf, f.grid, f.patch_size)
                    self._put(k, t, m, ref, decode(pts[keep], labs[keep]), gt,
                              thin_s + time.perf_counter() - t1, n_in, int(keep.sum()))
                elif m == "persam":
                    p2, l2 = baselines.persam_points(rg, rf, rv, f.grid, f.valid, f.patch_size, seg.original_size)
                    first = decode(p2, l2, multimask=True)
                    box = baselines.mask_box(first)
                    mask = decode(p2, l2, box=box) if box is not None else first
                    self._put(k, t, m, ref, mask, gt, time.perf_counter() - t1, 2, 2)
                elif m == "fm-greedy-oracle":
                    keep = (greedy_oracle(seg, pts, labs, gt, cfg.greedy_max_removals) if n_in
                            else np.zeros(0, bool))
                    self._put(k, t, m, ref, decode(pts[keep], labs[keep]), gt,
                              thin_s + time.perf_counter() - t1, n_in, int(keep.sum()))

    def _removed(self, t: Sample, ref: Sample, pts, labs) -> int:
        row = self.cache.get(self.key("fm-ppd", t, ref))
        if row is not None:
            return row.n_prompts - row.n_kept
        return len(pts) - int(self.defender.refine(pts, labs).kept.sum())

    def _ideal(self, t: Sample, image: np.ndarray, gt: np.ndarray, methods: list[str], keys: dict, decode) -> None:
        from ppd.evaluate import baselines
        from ppd.evaluate.attack_defence import attack
        from ppd.game import Arena, GameConfig, ImageBank, PromptGame
        from ppd.game.objects import WHOLE

        gcfg = GameConfig(layout_seed=self.cfg.seed)
        t0 = time.perf_counter()
        bank = ImageBank(self.seg, [t], graph_grid=gcfg.graph_grid, knn=gcfg.knn, progress=False)
        env = PromptGame(Arena(bank, gcfg), "attacker", seed=self.cfg.seed, strict=True)
        if any(m.startswith("ideal-attacked") for m in methods):
            ideal, att = attack(env, self.attacker, 0, WHOLE, self.cfg.attack_steps)
        else:
            ideal, _, _ = env.arena.attack_layout(0, WHOLE)
            ideal, att = ideal.subset(np.nonzero(ideal.active)[0]), None
        setup = time.perf_counter() - t0
        self.seg.set_image(image)
        removed = None
        for m in [m for m in METHODS if m in methods]:  # fixed order: defended before random
            t1 = time.perf_counter()
            if m == "ideal":
                p = ideal
                mask, n_in, n_kept = decode(p.points, p.labels), len(p), len(p)
            elif m == "ideal-attacked":
                mask, n_in, n_kept = decode(att.points, att.labels), len(att), len(att)
            elif m == "ideal-attacked-defended":
                self.defender.set_image(image)
                self.defender.set_reference(None)  # the paper's ablation: no one-shot reference
                res = self.defender.refine(att.points, att.labels)
                mask, n_in, n_kept = res.mask, len(att), int(res.kept.sum())
                removed = n_in - n_kept
            else:  # ideal-attacked-random
                if removed is None:
                    row = self.cache.get(self.key("ideal-attacked-defended", t, None))
                    if row is None:
                        self.defender.set_image(image)
                        self.defender.set_reference(None)
                        removed = len(att) - int(self.defender.refine(att.points, att.labels).kept.sum())
                    else:
                        removed = row.n_prompts - row.n_kept
                rng = np.random.default_rng([self.cfg.seed, _int_hash(t.id)])
                keep = baselines.random_removal(att.labels, removed, rng)
                mask, n_in, n_kept = decode(att.points[keep], att.labels[keep]), len(att), int(keep.sum())
            self._put(keys[(m, "-")], t, m, None, mask, gt, setup + time.perf_counter() - t1, n_in, n_kept)


# ---------------------------------------------------------------------- summary
@dataclass
class Summary:
    dataset: str
    method: str
    mdsc: float  # %, mean over references of the mean over targets
    mdsc_sd: float  # sd over references (nan with one reference or none used)
    miou: float
    miou_sd: float
    s_per_img: float
    n: int  # targets
    n_refs: int


def _sd(x: list[float]) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def summarize(rows: list[Row]) -> list[Summary]:
    out = []
    for ds in sorted({r.dataset for r in rows}):
        for m in [m for m in METHODS if any(r.method == m and r.dataset == ds for r in rows)]:
            rs = [r for r in rows if r.dataset == ds and r.method == m]
            by_ref: dict[str, list[Row]] = {}
            for r in rs:
                by_ref.setdefault(r.reference, []).append(r)
            d = [100 * np.mean([r.dice for r in v]) for v in by_ref.values()]
            j = [100 * np.mean([r.iou for r in v]) for v in by_ref.values()]
            out.append(Summary(ds, m, float(np.mean(d)), _sd(d), float(np.mean(j)), _sd(j),
                               float(np.mean([r.seconds for r in rs])), len({r.target for r in rs}),
                               len(by_ref) if METHODS[m][0] else 0))
    return out


def format_table(summary: list[Summary]) -> str:
    """Markdown: ``method | mDSC | mIoU | s/img | n`` per dataset."""
    def pm(v, sd):
        return f"{v:.1f}" if not np.isfinite(sd) else f"{v:.1f} ± {sd:.1f}"

    lines = []
    for ds in dict.fromkeys(s.dataset for s in summary):
        lines += [f"**{ds}**", "", "| method | mDSC | mIoU | s/img | n |", "|---|---|---|---|---|"]
        for s in [s for s in summary if s.dataset == ds]:
            lines.append(f"| {s.method} | {pm(s.mdsc, s.mdsc_sd)} | {pm(s.miou, s.miou_sd)} | "
                         f"{s.s_per_img:.2f} | {s.n} |")
        lines.append("")
    return "\n".join(lines)


def _git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_outputs(out: Path, rows: list[Row], summary: list[Summary], run_info: dict) -> None:
    """per_image.csv, summary.csv, summary.md and run.json, each written atomically."""
    import csv
    import io

    from ppd.io import atomic_write

    def text(path: Path, body: str) -> None:
        atomic_write(path, lambda tmp: tmp.write_text(body))

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "method", "reference", "target", "dice", "iou", "seconds", "n_prompts", "n_kept"])
    for r in rows:
        w.writerow([r.dataset, r.method, r.reference, r.target, f"{r.dice:.5f}", f"{r.iou:.5f}",
                    f"{r.seconds:.4f}", r.n_prompts, r.n_kept])
    text(out / "per_image.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "method", "mDSC", "mDSC_sd", "mIoU", "mIoU_sd", "s_per_img", "n", "n_refs"])
    for s in summary:
        w.writerow([s.dataset, s.method, f"{s.mdsc:.3f}", f"{s.mdsc_sd:.3f}", f"{s.miou:.3f}", f"{s.miou_sd:.3f}",
                    f"{s.s_per_img:.4f}", s.n, s.n_refs])
    text(out / "summary.csv", buf.getvalue())
    text(out / "summary.md", format_table(summary) + "\n")
    text(out / "run.json", json.dumps(run_info, indent=1) + "\n")


def read_base(base: str | os.PathLike, dataset: str, split: str, refs: list[str], targets: list[str],
              cfg: EvalConfig, skip: list[str]) -> tuple[list[Row], dict]:
    """Rows of an earlier ``ppd eval`` output folder for the methods not in ``skip``, after checking that
    it used the same dataset, split, references, targets and settings (else :class:`ConfigError`)."""
    import csv

    base = Path(base)
    try:
        info = json.loads((base / "run.json").read_text())
        with open(base / "per_image.csv", newline="") as f:
            raw = list(csv.DictReader(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--base {base}: not a readable ppd eval output ({type(e).__name__}: {e})") from None
    same = {"dataset": (info.get("dataset"), dataset), "split": (info.get("split"), split),
            "references": (info.get("references"), refs), "config": (info.get("config"), config_key(cfg)),
            "targets": (sorted({r["target"] for r in raw}), sorted(targets))}
    diff = [k for k, (a, b) in same.items() if a != b]
    if diff:
        raise ConfigError(f"--base {base} was run with other {', '.join(diff)}; its rows cannot be combined")
    rows = [Row(r["dataset"], r["method"], r["reference"], r["target"], float(r["dice"]), float(r["iou"]),
                float(r["seconds"]), int(r["n_prompts"]), int(r["n_kept"])) for r in raw if r["method"] not in skip]
    taken = list(dict.fromkeys(r.method for r in rows))
    return rows, {"dir": str(base), "git_commit": info.get("git_commit"), "methods": taken,
                  "hashes": info.get("hashes")}


def run(data_root=None, dataset: str | None = None, split: str = "eval", methods: list[str] | None = None,
        references: int = 5, reference_id: str | None = None, limit: int | None = None,
        out_dir: str | os.PathLike | None = None, cfg: EvalConfig | None = None, defender=None, attacker=None,
        segmenter=None, cache_path: str | os.PathLike | None = None, progress: bool = True,
        argv: list[str] | None = None, base: str | os.PathLike | None = None,
        defender_opts: dict | None = None) -> tuple[list[Row], list[Summary]]:
    """Select references and targets, run (or read from the cache) every method, write ``out_dir``.

    ``segmenter``: a Segmenter, or a function making one (called only once the
    arguments and data have been checked, so bad input fails before SAM loads).
    ``base``: an earlier output folder of the same protocol (dataset, split,
    references, targets, settings; checked) whose rows stand for every method not
    run now, e.g. to recompute only the defender's methods after a new defender
    without the hours of the greedy oracle; ``run.json`` records where each came from.
    """
    from ppd import data
    from ppd.sam import Segmenter
    from ppd.sam.cache import default_cache_dir

    cfg = cfg or EvalConfig()  # built here, not as a default argument: its default imports the pipeline
    methods = list(METHODS) if methods is None else list(methods)
    check_methods(methods)
    for flag, v in (("--references", references), ("--limit", limit), ("-k", cfg.k)):
        if v is not None and v < 1:
            raise ConfigError(f"{flag} must be at least 1, got {v}")
    if any(METHODS[m][1] and METHODS[m][0] for m in methods):  # fm-ppd / fm-random refine k-means sets
        from ppd.prompts import check_k
        from ppd.refine import load_agent

        check_k(cfg.k, load_agent(defender, "defender").rows)
    samples = data.load_dataset(data_root, split=split)
    names = sorted({s.dataset for s in samples})
    if dataset is None:
        if len(names) != 1:
            raise DataError(f"the {split} split holds datasets {', '.join(names) or '(none)'}: choose one "
                            "with --dataset")
        dataset = names[0]
    samples = [s for s in samples if s.dataset == dataset]
    if not samples:
        raise DataError(f"no {split} images of dataset {dataset!r} (have: {', '.join(names) or 'none'})")
    refs, targets = select(samples, references, reference_id, limit, cfg.seed)
    base_rows, base_info = (read_base(base, dataset, split, [r.id for r in refs], [t.id for t in targets], cfg,
                                      methods) if base is not None else ([], None))
    from ppd.io import OutputDir

    out = OutputDir(out_dir) if out_dir is not None else None  # checked now, created when written
    seg = segmenter() if callable(segmenter) else (segmenter or Segmenter())
    if cache_path is None:
        cache_path = default_cache_dir() / "eval" / "results.jsonl"
    harness = Harness(seg, methods, cfg, defender=defender, attacker=attacker, cache=ResultCache(cache_path),
                      defender_opts=defender_opts)
    rows = harness.run(refs, targets, progress=progress)
    if base_rows:  # in the method table's order
        rows = sorted(base_rows + rows, key=lambda r: list(METHODS).index(r.method))
    summary = summarize(rows)
    if out_dir is not None:
        info = {"argv": argv, "git_commit": _git_commit(), "data_root": str(data_root or data.default_root()),
                "dataset": dataset, "split": split, "methods": methods, "config": config_key(cfg), "base": base_info,
                "references": [r.id for r in refs], "n_targets": len(targets), "limit": limit,
                "hashes": harness.hashes, "defender": str(defender) if defender else "shipped",
                "defender_settings": refine_settings(defender, defender_opts) if harness.hashes["defender"] else None,
                "attacker": str(attacker) if attacker else "shipped", "cache": str(cache_path),
                "cache_hits": harness.cache.hits}
        with out:
            write_outputs(out.ensure(), rows, summary, info)
    return rows, summary
