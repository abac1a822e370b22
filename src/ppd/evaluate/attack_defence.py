"""Evidence that the agents learned: ideal -> attacked -> defended, on unseen images.

The ``ppd eval`` harness's ``ideal-attacked*`` methods, scored per object: ECSSD,
Kvasir, PH2 the whole mask; DSB2018 up to ``nuclei_per_image`` seeded nuclei;
ISBI2012 as many cells. With the game's fixed per-object ideal prompts and attack pool:

* ``ideal``      the ideal prompts;
* ``attacked``   after ``attack_steps`` greedy moves of the attacker (= doing nothing);
* ``defended``   the attacked set refined by the defender (its own settings, no reference,
                 no ground truth);
* ``random``     the attacked set minus as many random prompts as the defender removed,
                 keeping one prompt of each given class as the defender does
                 (``baselines.random_removal``, the one notion of random removal);
* ``untrained``  the attacked set refined by a randomly initialised defender with the
                 defender's settings;
* ``oracle``     GT-guided greedy removal (the best single removal while it helps):
                 a strong GT-informed reference, not an upper bound.

Dice is computed at the original resolution from SAM's float32 full path. Rows are
cached with every other ``ppd eval`` row (whole-mask rows are the same rows).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ppd.agents import DQNAgent
from ppd.game.objects import WHOLE, ObjectSource
from ppd.prompts import PromptSet

if TYPE_CHECKING:
    from ppd.game import PromptGame

#: column -> harness method
METHODS = {"ideal": "ideal", "attacked": "ideal-attacked", "defended": "ideal-attacked-defended",
           "random": "ideal-attacked-random", "untrained": "ideal-attacked-untrained",
           "oracle": "ideal-attacked-oracle"}


@dataclass
class ObjectResult:
    dataset: str
    image: str
    obj: int  # -1: the whole mask
    dice: dict[str, float]
    removed: int
    n_attacked: int


def attacker_game(segmenter, sample, frame, seed: int = 0) -> PromptGame:
    """The attacker's game on one target (its frame already made), laid out and seeded with ``seed``:
    the game's fixed ideal prompts and attack pool for every object of the sample."""
    from ppd.game import Arena, GameConfig, ImageBank, PromptGame

    gcfg = GameConfig(layout_seed=seed)
    bank = ImageBank(segmenter, [sample], graph_grid=gcfg.graph_grid, knn=gcfg.knn, progress=False, frames=[frame])
    return PromptGame(Arena(bank, gcfg), "attacker", seed=seed, strict=True)


def attack(env: PromptGame, attacker: DQNAgent, i: int, k: int, steps: int) -> tuple[PromptSet, PromptSet]:
    """The ideal prompts of object ``k`` of bank image ``i`` and the set after ``steps`` greedy attacker moves."""
    obs, info = env.reset(options={"image": i, "object": k, "horizon": steps})
    ideal = env.prompts.subset(np.nonzero(env.prompts.active & env.valid)[0])
    done = False
    while not done:
        a = attacker.act(obs["slots"][None], obs["context"][None], info["action_mask"][None], 0.0)[0]
        obs, _, done, _, info = env.step(int(a))
    return ideal, env.prompts.subset(np.nonzero(env.prompts.active & env.valid)[0])


def pick_objects(samples, nuclei_per_image: int = 5, seed: int = 0) -> dict[str, list[int]]:
    """``DATASET/ID`` -> objects scored: the whole mask where it is the only object, else a seeded choice."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in samples:
        src = ObjectSource(s)
        n = len(src)
        if n == 1 and np.array_equal(src.mask(0), src.mask(WHOLE)):
            ks = [WHOLE]
        else:
            ks = [0] if n == 1 else sorted(rng.choice(n, min(nuclei_per_image, n), replace=False).tolist())
        out[f"{s.dataset}/{s.id}"] = ks
    return out


def evaluate(samples, attacker: DQNAgent | str | None, defender: DQNAgent | str | None, segmenter,
             attack_steps: int = 8, nuclei_per_image: int = 5, seed: int = 0, out_csv: str | Path | None = None,
             progress: bool = True, oracle: bool = True, cache=None) -> list[ObjectResult]:
    """Every object's Dice per column of :data:`METHODS`, through :class:`ppd.evaluate.harness.Harness`."""
    from ppd.evaluate.harness import EvalConfig, Harness, ResultCache

    cols = [c for c in METHODS if oracle or c != "oracle"]
    h = Harness(segmenter, [METHODS[c] for c in cols], EvalConfig(seed=seed, attack_steps=attack_steps),
                defender=defender, attacker=attacker, cache=cache or ResultCache(None))
    rows = h.run([], list(samples), progress=progress, objects=pick_objects(samples, nuclei_per_image, seed))
    by: dict[tuple[str, str], dict[str, object]] = {}
    for r in rows:
        by.setdefault((r.dataset, r.target), {})[r.method] = r
    results = []
    for (ds, name), got in by.items():
        image, _, obj = name.partition("#")
        d = got[METHODS["defended"]]
        results.append(ObjectResult(ds, image, int(obj) if obj else WHOLE,
                                    {c: got[METHODS[c]].dice if c in cols else float("nan") for c in METHODS},
                                    d.n_prompts - d.n_kept, d.n_prompts))
    if out_csv:
        with open(out_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["dataset", "image", "object", *METHODS, "removed", "n_attacked"])
            for res in results:
                w.writerow([res.dataset, res.image, res.obj, *[f"{res.dice[m]:.4f}" for m in METHODS], res.removed,
                            res.n_attacked])
    return results


def _pct(values: list[float]) -> str:
    v = [x for x in values if np.isfinite(x)]
    return f"{100 * np.mean(v):.1f}" if v else "–"


def summarize(results: list[ObjectResult]) -> str:
    """Markdown table: mean Dice (%) per dataset and method."""
    lines = ["| dataset | objects | " + " | ".join(METHODS) + " | removed |",
             "|---|---|" + "---|" * len(METHODS) + "---|"]
    for ds in sorted({r.dataset for r in results} | {"all"}):
        rs = results if ds == "all" else [r for r in results if r.dataset == ds]
        cells = [_pct([r.dice[m] for r in rs]) for m in METHODS]
        lines.append(f"| {ds} | {len(rs)} | " + " | ".join(cells) +
                     f" | {np.mean([r.removed for r in rs]):.1f} / {np.mean([r.n_attacked for r in rs]):.1f} |")
    return "\n".join(lines)


def run(data_root=None, split: str = "val", attacker=None, defender=None, attack_steps: int = 8, seed: int = 0,
        out_dir: str | None = None, cache_dir=None, limit: int | None = None, datasets: str | None = None,
        oracle: bool = True) -> str:
    from ppd import data
    from ppd.sam import Segmenter

    samples = data.load_dataset(data_root, split=split)
    if datasets:
        samples = [s for s in samples if s.dataset in datasets.split(",")]
    if limit:  # a seeded subset of each dataset
        rng = np.random.default_rng(seed)
        picked = []
        for ds in sorted({s.dataset for s in samples}):
            rows = [s for s in samples if s.dataset == ds]
            idx = sorted(rng.choice(len(rows), min(limit, len(rows)), replace=False))
            picked += [rows[i] for i in idx]
        samples = picked
    from ppd.evaluate.harness import ResultCache
    from ppd.refine import load_agent
    from ppd.sam.cache import default_cache_dir

    load_agent(attacker, "attacker")  # a bad checkpoint fails now, before SAM loads
    load_agent(defender, "defender")
    seg = Segmenter(cache_dir=cache_dir)
    t0 = time.perf_counter()
    out_csv = Path(out_dir) / "attack_defence.csv" if out_dir else None
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    cache = ResultCache(Path(cache_dir or default_cache_dir()) / "eval" / "results.jsonl")
    res = evaluate(samples, attacker, defender, seg, attack_steps=attack_steps, seed=seed, out_csv=out_csv,
                   oracle=oracle, cache=cache)
    table = summarize(res)
    text = (f"split {split}, {len(samples)} images, attacker T = {attack_steps}, seed {seed}, "
            f"{time.perf_counter() - t0:.0f} s\n\n{table}\n")
    if out_dir:
        (Path(out_dir) / "attack_defence.md").write_text(text)
    return text
