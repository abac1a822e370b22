"""What ``ppd eval`` rows are keyed and cached by: the protocol's settings, the agents' hashes, and the
JSON-lines result cache (one line per row, so a killed run loses at most that line and resumes)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ppd.evaluate.tables import Row
from ppd.io import file_sha256


@dataclass(frozen=True)
class EvalConfig:
    k: int = 10  # k-means: prompts kept per class
    seed: int = 0  # references, target subset, k-means, random removal, attacker layouts
    attack_steps: int = 8  # attacker moves T for ideal-attacked
    greedy_max_removals: int = 15
    # start sets from cycle-consistent matches (ppd.oneshot.match_patches); every fm-* method and
    # the defender's start set follow it
    cycle: bool = field(default_factory=lambda: _cycle_default())
    # fm-kmeans and fm-ppd: this many start sets (flipped references, then other k-means seeds), their
    # masks voted pixel-wise (ppd.oneshot.OneShot's ``votes``); other methods read the first set only
    votes: int = 1
    # methods that refine a one-shot start set (fm-ppd, fm-random, fm-ppd-union, ideal-attacked-defended-ref):
    # the defender first adapted to each reference for this many decodes (ppd.train.adapt; 0 = off)
    adapt: int = 0
    adapt_views: str = "jitter"  # the practice images of that adaptation (ppd.train.adapt.AdaptConfig.views)
    adapt_choose: str = "iou"  # whose result is kept then: adapted or given defender (AdaptConfig.choose)
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
    from ppd.matching import THIN_INIT  # here, not at the top: ppd.matching imports torch, the CLI's parser must not

    if THIN_INIT != "scipy":  # session 14: k-means seeded by ppd.matching.stable_plusplus (other start sets)
        d["thin_init"] = THIN_INIT
    if d["votes"] == 1:  # added in session 10
        del d["votes"]
    else:  # sessions 11 / 16: the voted start sets come from views of the reference / target (ppd.views)
        from ppd.oneshot import VOTE_PLAN

        d["vote_plan"] = VOTE_PLAN
    del d["adapt_views"], d["adapt_choose"]  # sessions 20, 21: inside the adaptation's key (older rows keep theirs)
    if d["adapt"] == 0:  # added in session 19
        del d["adapt"]
    else:
        d["adapt"] = adapt_config(cfg).key()
    return d


def adapt_config(cfg: EvalConfig):
    """The test-time adaptation a run's defended one-shot methods use (its seed is the run's)."""
    from ppd.train.adapt import AdaptConfig

    return AdaptConfig(decodes=cfg.adapt, seed=cfg.seed, views=cfg.adapt_views, choose=cfg.adapt_choose)


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


def agent_sha(spec, role: str, overrides: dict | None = None) -> str:
    """Hash of an agent's weights and configuration (and, for the defender, its inference settings,
    :class:`ppd.refine.DefenderConfig`, which decide its rows too)."""
    from ppd.agents.dqn import shipped_agent_path

    h = hashlib.sha256()
    if hasattr(spec, "q"):  # an agent in memory: its configuration and weights
        h.update(json.dumps(spec.config_dict(), sort_keys=True).encode())
        for k, v in sorted(spec.q.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().contiguous().numpy().tobytes())
    elif spec is not None and str(spec) == "untrained":
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

    d = asdict(DefenderConfig.for_agent(load_agent(spec, "defender"), **(overrides or {})))
    for name, default in (("iou_margin", 0.0), ("hypotheses", 0)):  # added in sessions 7 and 17: rows made
        if d.get(name) == default:                                    # before keep their keys
            del d[name]
    if d.get("hypotheses"):  # candidates compared on low-res masks (session 18), cropped to Frame.lowres_valid_shape
        d["hypotheses_select"] = "lowres-valid"  # (session 19): rows of sessions 17-18 are not reused
    return d
