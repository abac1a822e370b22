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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ppd.data import Sample
from ppd.errors import ConfigError, DataError
from ppd.evaluate.agents import Agents
from ppd.evaluate.keys import EvalConfig, ResultCache, adapt_config, agent_sha, config_key, refine_settings  # noqa: F401
from ppd.evaluate.methods import METHODS, TRAINING_FREE, RefJob, TargetJob, target_name  # noqa: F401
from ppd.evaluate.tables import Row, Summary, format_table, read_base, summarize, write_outputs  # noqa: F401
from ppd.game.objects import WHOLE, ObjectConfig, ObjectSource
from ppd.io import file_sha256
from ppd.metrics import dice, iou


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


def check_methods(methods: list[str]) -> None:
    if not methods:
        raise ConfigError(f"no method given; known: {', '.join(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")


def check_pair_sizes(s: Sample) -> None:
    from ppd.io import stored_size

    (ih, iw), (mh, mw) = stored_size(s.image_path, "image"), stored_size(s.mask_path, "mask")
    if (ih, iw) != (mh, mw):
        raise DataError(f"{s.mask_path}: mask is {mw}x{mh}, image {iw}x{ih}")


@dataclass
class Unit:
    """One target (or one object of it) to score: the cache key of each (method, reference id) pair, and the
    pairs whose rows are not cached yet."""

    target: Sample
    obj: int
    keys: dict[tuple[str, str], str]
    todo: list[tuple[str, Sample | None]]


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
        uses_d = any(METHODS[m].defender for m in methods)
        uses_a = any(METHODS[m].attacker for m in methods)
        self.hashes = {"sam": getattr(segmenter, "embed_key", segmenter.model_sha256),
                       "defender": agent_sha(defender, "defender", self.defender_opts) if uses_d else None,
                       "attacker": agent_sha(attacker, "attacker") if uses_a else None}
        if "ideal-attacked-untrained" in methods:  # seeded (the seed is in the key), shaped and set like the defender
            self.hashes["untrained"] = hashlib.sha256(b"untrained|" + self.hashes["defender"].encode()).hexdigest()
        self.agents = Agents(segmenter, defender, attacker, self.defender_opts, cfg.seed,
                             adapt=adapt_config(cfg) if cfg.adapt else None)
        self._files: dict[Path, str] = {}
        self._per_target: dict = {}  # the current target's frame and objects, shared by its object units

    # ------------------------------------------------------------------ keys
    def _sha(self, path: Path) -> str:
        if path not in self._files:
            self._files[path] = file_sha256(path)
        return self._files[path]

    def key(self, method: str, target: Sample, ref: Sample | None, obj: int = WHOLE) -> str:
        m = METHODS[method]
        uses_a = m.attacker and method != "fm-random"  # fm-random depends on the defender's removal count only
        defender = self.hashes["untrained" if method == "ideal-attacked-untrained" else "defender"]
        cfg = config_key(self.cfg)
        if not m.votes:  # only these read ``votes``: the others keep their rows whatever it is
            cfg.pop("votes", None)
            cfg.pop("vote_plan", None)
        if not (m.defender and m.reference):  # only these refine with a defender adapted to the reference
            cfg.pop("adapt", None)
        parts = {"method": method, "cfg": cfg, "sam": self.hashes["sam"],
                 "target": [self._sha(target.image_path), self._sha(target.mask_path)],
                 "ref": [self._sha(ref.image_path), self._sha(ref.mask_path)] if ref is not None else None,
                 "defender": defender if m.defender else None,
                 "attacker": self.hashes["attacker"] if uses_a else None}
        if obj != WHOLE:  # one instance of the mask (keys of whole-mask rows stay as they were)
            parts["object"] = obj
            parts["objects"] = asdict(ObjectConfig())
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _removed(self, target: Sample, method: str, ref: Sample | None, obj: int = WHOLE) -> int | None:
        """How many prompts a cached defended row removed (None when it is not cached)."""
        row = self.cache.get(self.key(method, target, ref, obj))
        return None if row is None else row.n_prompts - row.n_kept

    # ------------------------------------------------------------------ running
    def run(self, refs: list[Sample], targets: list[Sample], progress: bool = True,
            on_row: Callable[[Row], None] | None = None, objects: dict[str, list[int]] | None = None,
            executor: Callable | None = None) -> list[Row]:
        """Rows of every method on every target (and reference). ``objects``: per ``DATASET/ID``, the instances
        (``ppd.game.objects`` indices) to score one by one instead of the whole mask; only methods
        without a reference take them. ``executor`` (e.g. :func:`ppd.cluster.eval_ray.executor`) computes
        the missing rows elsewhere: called with this harness and the :class:`Unit` s to compute, it yields
        lists of new rows, which are cached here as they arrive (a killed run resumes). ``on_row`` sees
        every row, in the table's order, once all are computed."""
        from tqdm.auto import tqdm

        for s in refs + targets:  # every pair checked before any work (and before the progress bar)
            check_pair_sizes(s)
        jobs = self.jobs(refs)
        if objects and any(r is not None for _, r in jobs):
            raise ConfigError("single objects are scored by methods without a reference only")
        units = [Unit(t, k, {(m, r.id if r else "-"): self.key(m, t, r, k) for m, r in jobs}, [])
                 for t in targets for k in (objects or {}).get(f"{t.dataset}/{t.id}", [WHOLE])]
        for u in units:
            u.todo = [(m, r) for m, r in jobs if self.cache.get(u.keys[(m, r.id if r else "-")]) is None]
        pending = [u for u in units if u.todo]
        bar = tqdm(total=len(units), initial=len(units) - len(pending), unit="img", disable=not progress,
                   desc=f"eval {targets[0].dataset if targets else ''}")
        if executor is None:
            ref_frames: dict = {}  # reference id -> ppd.oneshot.OneShotReference
            for u in pending:
                self.compute(u, ref_frames)
                bar.update()
        else:
            for new_rows in executor(self, refs, pending):
                for row in new_rows:
                    self.cache.put(row)
                bar.update()
        bar.close()
        self._per_target = {}  # the last target's frame does not outlive the run
        rows: list[Row] = []
        for u in units:
            for m, r in jobs:
                row = self.cache.rows[u.keys[(m, r.id if r else "-")]]
                row = Row(**{**asdict(row), "dataset": u.target.dataset, "target": target_name(u.target.id, u.obj),
                             "reference": r.id if r else "-"})
                rows.append(row)
                if on_row:
                    on_row(row)
        return rows

    def jobs(self, refs: list[Sample]) -> list[tuple[str, Sample | None]]:
        """(method, reference or None) pairs each target is scored with, in the method table's order."""
        order = [m for m in METHODS if m in self.methods]
        jobs = [(m, None) for m in order if not METHODS[m].reference]
        return jobs + [(m, r) for r in refs for m in order if METHODS[m].reference]

    def compute(self, u: Unit, ref_frames: dict) -> list[Row]:
        """Compute (and cache) the rows ``u.todo`` of one unit; ``ref_frames`` keeps references across calls."""
        for r in {r.id: r for _, r in u.todo if r is not None}.values():
            if r.id not in ref_frames:
                ref_frames[r.id] = self._reference(r)
        if self._per_target.get("id") != (u.target.dataset, u.target.id):  # objects of one target share its frame
            self._per_target = {"id": (u.target.dataset, u.target.id)}
        self._target(u.target, u.obj, u.todo, ref_frames, u.keys, self._per_target)
        return [self.cache.rows[u.keys[(m, r.id if r else "-")]] for m, r in u.todo]

    def _reference(self, ref: Sample):
        from ppd.oneshot import OneShotReference

        mask = ref.mask()
        if not mask.any():
            raise DataError(f"{ref.mask_path}: the reference mask is empty")
        image = ref.image()
        return OneShotReference.make(self.seg.frame(image), mask, image)

    def _target(self, t: Sample, k: int, todo: list, ref_frames: dict, keys: dict, per_target: dict) -> None:
        if k == WHOLE:
            gt = t.mask()
        else:
            if "objects" not in per_target:
                per_target["objects"] = ObjectSource(t)
            gt = per_target["objects"].mask(k)
        if "frame" not in per_target:
            per_target["frame"] = self.seg.frame(t.image())
        job = TargetJob(t, per_target["frame"], gt, self.seg, self.cfg, self.agents,
                        lambda method, ref: self._removed(t, method, ref, k), obj=k,
                        wants_attack=any(m.startswith("ideal-attacked") for m, _ in todo))
        ref_jobs: dict[str, RefJob] = {}
        for m, r in todo:
            rj = None
            if r is not None:
                rj = ref_jobs.setdefault(r.id, RefJob(r, ref_frames[r.id], job))
            if m.startswith("ideal"):
                job.attacked()  # ideal prompts and attack: built outside the method's window (charged as shared_s)
            elif rj is not None:
                _ = rj.proposal  # likewise the proposal every fm-* method shares (Proposal.thin_s)
            if rj is not None and METHODS[m].defender:
                self.agents.defender_for(r)  # and the adaptation to the reference (once per reference; run.json)
            t1 = time.perf_counter()
            out = METHODS[m].run(job, rj)
            self.cache.put(Row(t.dataset, m, r.id if r else "-", job.name, dice(out.mask, gt), iou(out.mask, gt),
                               out.shared_s + time.perf_counter() - t1, int(out.n_prompts), int(out.n_kept),
                               keys[(m, r.id if r else "-")]))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(data_root=None, dataset: str | None = None, split: str = "eval", methods: list[str] | None = None,
        references: int = 5, reference_id: str | None = None, limit: int | None = None,
        out_dir: str | os.PathLike | None = None, cfg: EvalConfig | None = None, defender=None, attacker=None,
        segmenter=None, cache_path: str | os.PathLike | None = None, progress: bool = True,
        argv: list[str] | None = None, base: str | os.PathLike | None = None,
        defender_opts: dict | None = None, executor: Callable | None = None,
        runner: dict | None = None) -> tuple[list[Row], list[Summary]]:
    """Select references and targets, run (or read from the cache) every method, write ``out_dir``.

    ``segmenter``: a Segmenter, or a function making one (called only once the
    arguments and data have been checked, so bad input fails before SAM loads).
    ``base``: an earlier output folder of the same protocol (dataset, split,
    references, targets, settings; checked) whose rows stand for every method not
    run now, e.g. to recompute only the defender's methods after a new defender
    without the hours of the greedy oracle; ``run.json`` records where each came from.
    ``executor`` / ``runner``: compute the rows elsewhere (``ppd eval --ray``) and say so in run.json.
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
    if any(METHODS[m].defender and METHODS[m].reference for m in methods):  # fm-ppd / fm-random refine k-means sets
        from ppd.prompts import check_k
        from ppd.refine import load_agent

        check_k(cfg.k, load_agent(defender, "defender").rows)
        if cfg.adapt:  # the attacker the adaptation game needs: refused now, not after SAM has loaded
            from ppd.train.adapt import attacker_beside

            attacker_beside(defender)
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
    base_rows, base_info = (read_base(base, dataset, split, [r.id for r in refs], [t.id for t in targets],
                                      config_key(cfg), methods) if base is not None else ([], None))
    from ppd.io import OutputDir

    out = OutputDir(out_dir) if out_dir is not None else None  # checked now, created when written
    seg = segmenter() if callable(segmenter) else (segmenter or Segmenter())
    if cache_path is None:
        cache_path = default_cache_dir() / "eval" / "results.jsonl"
    harness = Harness(seg, methods, cfg, defender=defender, attacker=attacker, cache=ResultCache(cache_path),
                      defender_opts=defender_opts)
    rows = harness.run(refs, targets, progress=progress, executor=executor)
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
                "encoder": getattr(seg, "encoder", "eager"),
                "runner": runner or {"process": "serial", "threads": _threads()},
                "cache_hits": harness.cache.hits}
        if harness.agents.adapt_seconds:  # per reference adapted in this process (not under --ray, nor from the cache)
            info["adapt_seconds"] = harness.agents.adapt_seconds
        with out:
            write_outputs(out.ensure(), rows, summary, info)
    return rows, summary
