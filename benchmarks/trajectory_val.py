"""Which state of the defender's removal trajectory to keep, measured on a val split (issue #20 item 3).

For every (reference, target) pair of the `ppd eval` protocol (same seeded references and
targets, FM -> k-means K per class) the defender is run to its full removal budget,
ignoring its Q <= 0 stop, and every visited state is scored: Dice of SAM's full-resolution
mask against the ground truth (for the table only), SAM's predicted IoU, and the mask's
agreement with the reference (object minus background similarity of the mask's mean
feature; see ppd.refine.choose_step). Selection rules are then compared offline, each a
choice of one state per pair without ground truth, plus the GT-best state as a ceiling.

Run: .venv/bin/python benchmarks/trajectory_val.py --dataset kvasir [--split val] [--references 5]
     [--limit 40] [--defender PATH] [--budget 10] [--cycle] [--out FILE.json]
     .venv/bin/python benchmarks/trajectory_val.py --dataset D --summarize FILE.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ppd import data
from ppd.evaluate.harness import select
from ppd.metrics import dice
from ppd.oneshot import OneShotReference, propose
from ppd.refine import Defender, choose_step, load_agent
from ppd.sam import Segmenter


def trajectories(args) -> list[dict]:
    seg = Segmenter()
    samples = [s for s in data.load_dataset(args.data, split=args.split) if s.dataset == args.dataset]
    refs, targets = select(samples, args.references, None, args.limit, args.seed)
    d = Defender(load_agent(args.defender, "defender"), segmenter=seg, q_threshold=-np.inf, select="last",
                 max_removals=args.budget)
    ref_frames = {r.id: OneShotReference.make(seg.frame(r.image()), r.mask()) for r in refs}
    out = []
    t0 = time.perf_counter()
    for n, t in enumerate(targets):
        image, gt = t.image(), t.mask()
        frame = seg.frame(image)
        for r in refs:
            prop = propose(ref_frames[r.id], frame, args.k, args.cycle, seed=args.seed)
            pts, labs = prop.points, prop.labels
            if len(pts) == 0:
                out.append({"ref": r.id, "target": t.id, "dice": [0.0], "q": [], "trace": [[0.0, np.nan, np.nan]]})
                continue
            res = d.refine_frame(frame, pts, labs, reference=ref_frames[r.id].graph_reference())
            kept = np.ones(len(pts), bool)
            dices = [dice(seg.decode(frame, pts, labs).mask, gt)]
            for i in res.order:
                kept[i] = False
                dices.append(dice(seg.decode(frame, pts[kept], labs[kept]).mask, gt))
            out.append({"ref": r.id, "target": t.id, "dice": dices, "q": res.q_values, "trace": res.trace})
        print(f"{n + 1}/{len(targets)} targets, {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def rules(p: dict, stop_q: float = 0.0) -> dict[str, int]:
    """State index chosen by each rule for one pair."""
    q, tr = p["q"], np.array(p["trace"], float)
    qstop = next((i for i, v in enumerate(q) if v <= stop_q), len(q))
    score = tr[:, 1] - tr[:, 2]
    ok = ~np.isnan(score)

    def best(upto: int, s: np.ndarray) -> int:
        s = np.where(ok[: upto + 1], s[: upto + 1], -np.inf)
        return int(s.argmax()) if np.isfinite(s).any() else upto

    return {"k-means (state 0)": 0, "Q-stop (fm-ppd today)": qstop,
            "reference, up to the Q-stop": best(qstop, score), "reference, whole budget": best(len(q), score),
            "SAM IoU, up to the Q-stop": int(tr[: qstop + 1, 0].argmax()),
            **{f"SAM IoU, up to the Q-stop, margin {m}": choose_step(p["trace"][: qstop + 1], "iou", m)
               for m in (0.02, 0.05)},  # DefenderConfig.iou_margin, as the defender applies it
            "SAM IoU, whole budget": int(tr[:, 0].argmax()),
            "reference + IoU, whole budget": best(len(q), score + tr[:, 0]),
            "GT-best state (ceiling)": int(np.argmax(p["dice"]))}


def summarize(pairs: list[dict]) -> dict[str, float]:
    names = list(rules(pairs[0]))
    table = {}
    for name in names:
        per_ref: dict[str, list[float]] = {}
        for p in pairs:
            per_ref.setdefault(p["ref"], []).append(p["dice"][rules(p)[name]])
        means = [100 * np.mean(v) for v in per_ref.values()]
        table[name] = (float(np.mean(means)), float(np.std(means)))
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--references", type=int, default=5)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--defender")
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cycle", action="store_true", help="start from cycle-consistent matches")
    ap.add_argument("--out")
    ap.add_argument("--summarize", metavar="FILE.json", help="only print the table of an earlier --out")
    args = ap.parse_args()
    if args.summarize:
        pairs = json.loads(Path(args.summarize).read_text())["pairs"]
        for name, (m, sd) in summarize(pairs).items():
            print(f"  {name:40s} {m:5.1f} ± {sd:4.1f}")
        return
    pairs = trajectories(args)
    table = summarize(pairs)
    print(f"{args.dataset} {args.split}, {len(pairs)} pairs, defender {args.defender or 'shipped'}:")
    for name, (m, sd) in table.items():
        print(f"  {name:40s} {m:5.1f} ± {sd:4.1f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), "table": table, "pairs": pairs}, default=float))


if __name__ == "__main__":
    main()
