"""Choose the defender's mode per reference by trying it on the reference's own practice views (session 20, issue #20).

Session 18 measured three ways for the defender to treat a one-shot start set (``hypotheses_oneshot.py``):
as given (``fm-ppd``), label hypotheses behind a SAM-IoU gate (``iou-gate``), and the medoid with the given
labels counted four times (``medoid-given4``). Which one wins depends on the domain and on the reference
(polyps: as given; skin lesions and natural images: the hypotheses). Here each reference's seven jittered
practice views (``ppd.train.adapt.practice_views``, crops and colour changes of its dihedral views, masks
known) are the targets of that reference's start sets, every mode is scored on them, and the mode with
the best practice Dice is what that reference would use on the real targets. No target's ground truth
is read for the choice.

Run: practice rows (the model), then the report against session 18's target rows (no model)::

    python benchmarks/selfcheck_screen.py --dataset ph2 --references 5 --seed 0 \\
        --defender docs/training/ship7x/defender --defender-opt select=iou \\
        --out docs/tuning/session20/selfcheck_ship7x_ph2.jsonl.gz
    python benchmarks/selfcheck_screen.py --dataset ph2 --references 5 --seed 0 \\
        --rows docs/tuning/session20/selfcheck_ship7x_ph2.jsonl.gz \\
        --targets docs/tuning/session18/hypotheses_oneshot_ship7x_ph2.jsonl.gz
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from hypotheses_oneshot import pair_row  # noqa: E402
from protocol_args import read_rows, rows_parser, write_rows  # noqa: E402

MODES = ["fm-ppd", "iou-gate", "medoid-given4"]


def report(practice: list[dict], targets: list[dict], margin: float) -> None:
    """Per reference: practice Dice of each mode, the mode chosen (the best, if it beats fm-ppd by
    ``margin``), and the targets' mDSC of each mode and of the choice."""
    prac, tgt = defaultdict(list), defaultdict(list)
    for x in practice:
        prac[x["ref"]].append(x)
    for x in targets:
        tgt[x["ref"]].append(x)
    chosen_scores, cols = [], {m: [] for m in ["fm-kmeans", *MODES]}
    for ref, rows in prac.items():
        p = {m: 100 * np.mean([x[m] for x in rows]) for m in MODES}
        best = max(MODES, key=lambda m: p[m])
        pick = best if p[best] >= p["fm-ppd"] + margin else "fm-ppd"
        t = {m: 100 * np.mean([x[m] for x in tgt[ref]]) for m in cols}
        for m in cols:
            cols[m].append(t[m])
        chosen_scores.append(t[pick])
        print(f"  {ref}: practice " + " ".join(f"{m} {p[m]:.1f}" for m in MODES)
              + f" -> {pick}; targets " + " ".join(f"{m} {t[m]:.1f}" for m in cols))
    for m, s in cols.items():
        print(f"  {m:14s} {np.mean(s):5.1f}")
    print(f"  {'chosen':14s} {np.mean(chosen_scores):5.1f}  (margin {margin})")


def main() -> None:
    a = rows_parser(__doc__)
    a.add_argument("--defender-opt", action="append", metavar="KEY=VALUE")
    a.add_argument("--targets", default=None, help="session 18's hypotheses_oneshot rows of the same protocol")
    a.add_argument("--margin", type=float, default=0.0, help="points a mode must beat fm-ppd by on practice")
    args = a.parse_args()
    if args.rows:
        report(read_rows(args.rows), read_rows(args.targets), args.margin)
        return
    from protocol_args import protocol_samples

    from ppd.oneshot import OneShotReference
    from ppd.refine import Defender, parse_overrides
    from ppd.sam import Segmenter
    from ppd.train.adapt import practice_views

    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg, **parse_overrides(args.defender_opt))
    refs, _ = protocol_samples(args)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for r in refs:
        ref = OneShotReference.make(seg.frame(r.image()), r.mask())
        for j, (im, m) in enumerate(practice_views(r.image(), r.mask(), "jitter", args.seed)[1:], 1):
            row = pair_row(seg, d, ref, seg.frame(im), m)
            if row is not None:
                rows.append({"ref": r.id, "view": j, **row})
        if args.out:
            write_rows(args.out, rows)
        print(f"{r.id} done, {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
