"""Evidence that the agents learned: ideal -> attacked -> defended, on unseen images.

For every object of the chosen images (ECSSD: the whole mask; DSB2018: up to
``nuclei_per_image`` seeded nuclei; ISBI2012: as many cells), with the game's
fixed per-object ideal prompts and attack pool:

* ``ideal``      the ideal prompts;
* ``attacked``   after ``attack_steps`` greedy moves of the attacker (= doing nothing);
* ``defended``   the attacked set refined by the defender (``ppd.refine``, its own
                 stopping rule, no ground truth);
* ``random``     the attacked set minus as many random prompts as the defender removed;
* ``untrained``  the attacked set refined by a randomly initialised defender;
* ``oracle``     GT-guided greedy removal (the best single removal while it helps):
                 a strong GT-informed reference, not an upper bound (greedy
                 can stop in a local optimum).

Dice is computed at the original resolution from SAM's float32 full path.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppd.agents import DQNAgent
from ppd.evaluate.baselines import greedy_oracle
from ppd.game import Arena, GameConfig, ImageBank, PromptGame
from ppd.metrics import dice
from ppd.prompts import PromptSet
from ppd.refine import Defender

METHODS = ("ideal", "attacked", "defended", "random", "untrained", "oracle")


@dataclass
class ObjectResult:
    dataset: str
    image: str
    obj: int
    dice: dict[str, float]
    removed: int
    n_attacked: int


def _full_dice(seg, frame, pts, labs, gt) -> float:
    if len(pts) == 0:
        return dice(np.zeros_like(gt), gt)
    return dice(seg.decode(frame, pts, labs).mask, gt)


def attack(env: PromptGame, attacker: DQNAgent, i: int, k: int, steps: int) -> tuple[PromptSet, PromptSet]:
    """The ideal prompts of object ``k`` of bank image ``i`` and the set after ``steps`` greedy attacker moves."""
    obs, info = env.reset(options={"image": i, "object": k, "horizon": steps})
    ideal = env.prompts.subset(np.nonzero(env.prompts.active & env.valid)[0])
    done = False
    while not done:
        a = attacker.act(obs["slots"][None], obs["context"][None], info["action_mask"][None], 0.0)[0]
        obs, _, done, _, info = env.step(int(a))
    return ideal, env.prompts.subset(np.nonzero(env.prompts.active & env.valid)[0])


def evaluate(samples, attacker: DQNAgent, defender: DQNAgent, segmenter, attack_steps: int = 8,
             nuclei_per_image: int = 5, seed: int = 0, out_csv: str | Path | None = None,
             progress: bool = True, oracle: bool = True, myopic: bool = False) -> list[ObjectResult]:
    from tqdm.auto import tqdm

    cfg = GameConfig()
    bank = ImageBank(segmenter, samples, graph_grid=cfg.graph_grid, knn=cfg.knn, objects=cfg.objects,
                     progress=progress)
    arena = Arena(bank, cfg)
    env = PromptGame(arena, "attacker", seed=seed, strict=True)
    dfd = Defender(defender, segmenter=segmenter, graph_grid=cfg.graph_grid, knn=cfg.knn, myopic=myopic)
    untrained = Defender(DQNAgent(defender.role, defender.rows, defender.n_actions, defender.n_slot,
                                  defender.n_ctx, stop=defender.stop, cfg=defender.cfg, seed=seed, buffer=False,
                                  features=defender.features),
                         segmenter=segmenter, graph_grid=cfg.graph_grid, knn=cfg.knn, myopic=myopic)
    rng = np.random.default_rng(seed)
    targets = []
    for i in range(len(bank)):
        n = len(bank.objects(i))
        ks = [0] if n == 1 else sorted(rng.choice(n, min(nuclei_per_image, n), replace=False).tolist())
        targets += [(i, k) for k in ks]
    results = []
    for i, k in tqdm(targets, desc="objects", disable=not progress):
        frame, sample = bank.images[i], bank.samples[i]
        gt = bank.objects(i).mask(k)
        ideal, att = attack(env, attacker, i, k, attack_steps)
        seg = segmenter
        r = dfd.refine_frame(frame, att.points, att.labels)
        ru = untrained.refine_frame(frame, att.points, att.labels)
        n_rm = len(r.order)
        keep = np.ones(len(att), bool)
        if n_rm:
            keep[rng.choice(len(att), min(n_rm, len(att) - 1), replace=False)] = False
        d = {"ideal": _full_dice(seg, frame, ideal.points, ideal.labels, gt),
             "attacked": _full_dice(seg, frame, att.points, att.labels, gt),
             "defended": dice(r.mask, gt), "random": _full_dice(seg, frame, att.points[keep], att.labels[keep], gt),
             "untrained": dice(ru.mask, gt)}
        if oracle:
            ko = greedy_oracle(seg, frame, att.points, att.labels, gt, 15)
            d["oracle"] = _full_dice(seg, frame, att.points[ko], att.labels[ko], gt)
        else:
            d["oracle"] = float("nan")
        results.append(ObjectResult(sample.dataset, sample.id, k, d, n_rm, len(att)))
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
    from ppd.refine import load_agent
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
    att = load_agent(attacker, "attacker")
    dfd = load_agent(defender, "defender", seed=seed)
    seg = Segmenter(cache_dir=cache_dir)
    t0 = time.perf_counter()
    out_csv = Path(out_dir) / "attack_defence.csv" if out_dir else None
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    res = evaluate(samples, att, dfd, seg, attack_steps=attack_steps, seed=seed, out_csv=out_csv, oracle=oracle)
    table = summarize(res)
    text = (f"split {split}, {len(samples)} images, attacker T = {attack_steps}, seed {seed}, "
            f"{time.perf_counter() - t0:.0f} s\n\n{table}\n")
    if out_dir:
        (Path(out_dir) / "attack_defence.md").write_text(text)
    return text
