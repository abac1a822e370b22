"""Label hypotheses on one-shot start sets: which GT-free choice among the candidates (session 18, issue #20).

For every (reference, target) pair of the ``ppd eval`` protocol (one cycle-consistent start set, K per
class) the defender refines the start set as given (``fm-ppd`` today) and every distinct label
hypothesis of ``ppd.hypotheses`` (8 draws), each with the reference. The candidates are then chosen
from without ground truth:

- ``medoid``: what ``hypotheses=8`` does (every draw counted);
- ``medoid-given4``: the same with the given labels counted four times;
- ``oriented``: the medoid of the given labels and the hypotheses whose positives match the reference
  object better than their negatives do (mean margin of ``Reference.prompt_features``);
- ``iou-gate``: the medoid if SAM's predicted IoU of its mask beats the given labels' by 0.1, else the given;
- ``agreement``: the candidate whose mask agrees best with the reference (object minus background cosine);
- ``gt-best``: the candidate with the best Dice (a ceiling, reads the ground truth).

Run (session 18; ``docs/tuning/session18/hypotheses_oneshot_<dataset>.txt``, and ``..._ship7x_<dataset>``
with ``--defender docs/training/ship7x/defender --defender-opt select=iou``)::

    python benchmarks/hypotheses_oneshot.py --dataset kvasir --references 5 --seed 0 --limit 20 \\
        --out docs/tuning/session18/hypotheses_oneshot_kvasir.jsonl.gz
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from protocol_args import read_rows, report_rows, rows_parser, write_rows  # noqa: E402

COLS = ["fm-kmeans", "fm-ppd", "medoid", "medoid-given4", "oriented", "iou-gate", "agreement", "gt-best"]


def pair_row(seg, d, ref, frame, gt) -> dict | None:
    from ppd.hypotheses import label_hypotheses, medoid
    from ppd.metrics import dice
    from ppd.oneshot import propose

    prop = propose(ref, frame, 10, True, seed=0)
    pts, labs = prop.points, prop.labels.astype(np.int64)
    if len(pts) == 0:
        return None
    graph, gref = d.graph_of(frame), ref.graph_reference(d.config.graph_grid)
    feats = graph.feats[graph.node_of(pts)]
    margin = gref.prompt_features(feats)[:, 1]
    done: dict[bytes, tuple] = {}
    cands = []  # (labels, result, dice), one per draw (repeats kept, as hypotheses=8 counts them)
    for lab in [labs] + label_hypotheses(feats, 8):
        if lab.tobytes() not in done:
            res = d.refine_frame(frame, pts, lab, reference=gref)
            done[lab.tobytes()] = (lab, res, dice(res.mask, gt))
        cands.append(done[lab.tobytes()])
    masks = [r.mask for _, r, _ in cands]

    def agreement(res) -> float:
        _, fg, bg = res.trace[len(res.order)]
        return -np.inf if np.isnan(fg) else fg - bg

    oriented = [0] + [i for i, (lab, _, _) in enumerate(cands)
                      if i and margin[lab == 1].mean() > margin[lab == 0].mean()]
    pick = {
        "fm-ppd": 0,
        "medoid": medoid(masks),
        "medoid-given4": medoid(masks, [4.0] + [1.0] * (len(cands) - 1)),
        "oriented": oriented[medoid([masks[i] for i in oriented])],
        "agreement": int(np.argmax([agreement(r) for _, r, _ in cands])),
        "iou-gate": 0,
        "gt-best": int(np.argmax([s for _, _, s in cands])),
    }
    if cands[pick["medoid"]][1].iou >= cands[0][1].iou + 0.1:
        pick["iou-gate"] = pick["medoid"]
    row = {k: round(float(cands[i][2]), 4) for k, i in pick.items()}
    row["fm-kmeans"] = round(float(dice(seg.decode(frame, pts, labs).mask, gt)), 4)
    row["distinct"] = len(done)
    return row


def main() -> None:
    a = rows_parser(__doc__)
    a.add_argument("--defender-opt", action="append", metavar="KEY=VALUE",
                   help="defender settings, as ppd's (the twin ship7x: select=iou)")
    args = a.parse_args()
    report = lambda rows, refs, args: report_rows(rows, refs, args, COLS, "fm-ppd", "fm-ppd")  # noqa: E731
    if args.rows:
        rows = read_rows(args.rows)
        report(rows, list(dict.fromkeys(x["ref"] for x in rows)), args)
        return
    from protocol_args import protocol_samples

    from ppd.oneshot import OneShotReference
    from ppd.refine import Defender, parse_overrides
    from ppd.sam import Segmenter

    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg, **parse_overrides(args.defender_opt))
    refs, targets = protocol_samples(args)
    made = [(r, OneShotReference.make(seg.frame(r.image()), r.mask())) for r in refs]
    rows: list[dict] = []
    t0 = time.perf_counter()
    for n, t in enumerate(targets):
        frame, gt = seg.frame(t.image()), t.mask()
        for r, ref in made:
            row = pair_row(seg, d, ref, frame, gt)
            if row is not None:
                rows.append({"target": t.id, "ref": r.id, "set": "one start set", **row})
        if args.out:
            write_rows(args.out, rows)
        print(f"{n + 1}/{len(targets)} targets, {time.perf_counter() - t0:.0f} s", flush=True)
    report(rows, [r.id for r, _ in made], args)
    print(f"distinct labelings refined per set: {np.mean([x['distinct'] for x in rows]):.1f}")


if __name__ == "__main__":
    main()
