"""Label hypotheses: the medoid chosen on SAM's low-res masks (one full-size decode) against every
candidate decoded at full size (session 17's way), side by side on the same attacked sets (session 18).

The shipped attacker attacks the first ``--images`` val targets of each dataset (the ablation's game:
seed 0, T = 8 moves); the defender with ``hypotheses=8`` then refines the attacked set both ways.
Reported: seconds per set (the target's embedding and graph made beforehand), how often both ways
keep the same candidate, and mDSC % of each. Run (``docs/tuning/session18/hypotheses_speed.txt``)::

    python benchmarks/hypotheses_speed.py --data ../shared/data --images 8 \\
        --out docs/tuning/session18/hypotheses_speed.txt
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np

from ppd import data
from ppd.evaluate.attack_defence import attack, attacker_game
from ppd.hypotheses import label_hypotheses, medoid
from ppd.metrics import dice
from ppd.refine import Defender, load_agent
from ppd.sam import Segmenter


def full_size_medoid(d: Defender, frame, pts: np.ndarray, labs: np.ndarray):
    """Session 17's selection: every candidate decoded at full size, the medoid of those masks."""
    c, graph = d.config, d.graph_of(frame)
    done = {labs.astype(np.int64).tobytes(): d._remove(frame, graph, pts, labs, None, c.max_removals, c)[0]}
    cands = list(done.values())
    for lab in label_hypotheses(graph.feats[graph.node_of(pts)], c.hypotheses):
        if lab.tobytes() not in done:
            done[lab.tobytes()] = d._remove(frame, graph, pts, lab, None, c.max_removals, c)[0]
        cands.append(done[lab.tobytes()])
    return cands[medoid([r.mask for r in cands])]


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--data", default=None)
    a.add_argument("--images", type=int, default=8)
    a.add_argument("--out", required=True)
    args = a.parse_args()
    seg = Segmenter()
    d = Defender(segmenter=seg, hypotheses=8)
    attacker = load_agent(None, "attacker")
    secs: dict[str, list[float]] = {"low-res medoid (shipped)": [], "full-size medoid (session 17)": []}
    dices: dict[str, list[float]] = {k: [] for k in secs}
    same, names = 0, list(secs)
    for ds in ("kvasir", "ph2", "ecssd"):
        for s in data.load_dataset(args.data, dataset=ds, split="val")[: args.images]:
            frame, gt = seg.frame(s.image()), s.mask()
            _, att = attack(attacker_game(seg, s, frame, 0), attacker, 0, -1, 8)
            d.graph_of(frame)  # the graph and the decoder's image-side tensors made once, outside both timings
            seg.decode(frame, att.points[:1], att.labels[:1], lowres=True)
            runs = [("low-res medoid (shipped)", d.refine_frame),
                    ("full-size medoid (session 17)", partial(full_size_medoid, d))]
            got = []
            for name, run in runs[:: 1 if len(dices[names[0]]) % 2 else -1]:  # alternate which goes first
                t0 = time.perf_counter()
                res = run(frame, att.points, att.labels)
                secs[name].append(time.perf_counter() - t0)
                dices[name].append(dice(res.mask, gt))
                got.append((res.labels.tobytes(), res.kept.tobytes()))
            same += got[0] == got[1]
    n = len(secs["low-res medoid (shipped)"])
    lines = [f"{n} attacked val sets (first {args.images} of kvasir, ph2, ecssd), hypotheses=8, this CPU", "",
             "| selection | s per set (median) | mDSC % |", "|---|---|---|"]
    lines += [f"| {k} | {np.median(v):.2f} | {100 * np.mean(dices[k]):.1f} |" for k, v in secs.items()]
    lines += ["", f"same candidate kept: {same} of {n}; speed-up (median): "
              f"{np.median(secs['full-size medoid (session 17)']) / np.median(secs['low-res medoid (shipped)']):.2f}x"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
