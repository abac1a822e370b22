"""Screen a per-target choice between the given and the adapted defender (session 21), on the fixed val protocol.

Test-time adaptation (``ppd.train.adapt``) helps most references and wrecks a few (DSB2018 val: one
reference from 69.3 to 38.8, docs/TRAINING.md session 20), and a guard scored on the reference's own views
did not see it coming (``benchmarks/adapt_guard.py``). Here both defenders refine every target's start set
and a label-free score picks one result per target: SAM's predicted IoU of the refined mask (``iou``), or
its mask-pooled features' agreement with the reference object (``agree``: cosine with the object's mean
feature minus with the background's). Rows per target: Dice, predicted IoU and agreement of each, and of
the start set as it is. No target's ground truth is read for a choice.

    PPD_CACHE_DIR=C python benchmarks/adapt_pair.py --dataset kvasir --references 5 --seed 0 --limit 20 \\
        --defender docs/training/ship7x/defender --defender-opt select=iou \\
        --out docs/tuning/session21/pair_kvasir.jsonl.gz
    python benchmarks/adapt_pair.py --dataset kvasir --rows docs/tuning/session21/pair_kvasir.jsonl.gz
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from protocol_args import protocol_parser, protocol_samples, read_rows, write_rows  # noqa: E402

RULES = ("given", "adapted", "iou", "agree", "both")


def pick(x: dict, rule: str) -> float:
    """The Dice of the result ``rule`` picks for one target (ties: the adapted one)."""
    if rule in ("given", "adapted"):
        return x[f"{rule}_dice"]
    score = {"iou": lambda d: x[f"{d}_iou"], "agree": lambda d: x[f"{d}_agree"],
             "both": lambda d: x[f"{d}_iou"] + x[f"{d}_agree"]}[rule]
    return x["given_dice"] if score("given") > score("adapted") else x["adapted_dice"]


def report(rows: list[dict]) -> None:
    from ppd.evaluate.report import paired_bootstrap

    by_ref = defaultdict(list)
    for x in rows:
        by_ref[x["ref"]].append(x)
    for ref, xs in by_ref.items():
        print(f"  {ref[:12]} start {100 * np.mean([x['start_dice'] for x in xs]):5.1f} "
              + " ".join(f"{r} {100 * np.mean([pick(x, r) for x in xs]):5.1f}" for r in RULES))
    cols = {r: {f"{x['ref']}|{x['target']}": pick(x, r) for x in rows} for r in RULES}
    cols["start"] = {f"{x['ref']}|{x['target']}": x["start_dice"] for x in rows}
    for r, v in cols.items():
        line = f"  {r:8s} {100 * np.mean(list(v.values())):5.1f}"
        if r not in ("given", "start"):
            d, lo, hi = paired_bootstrap(v, cols["given"])
            line += f"   vs given {d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        print(line)


def score_rows(args) -> list[dict]:
    from ppd.metrics import dice
    from ppd.oneshot import OneShotReference, propose
    from ppd.refine import Defender, parse_overrides
    from ppd.sam import Segmenter
    from ppd.train.adapt import AdaptConfig, adapt_defender, agreement, attacker_beside

    seg = Segmenter()
    given = Defender(args.defender, segmenter=seg, **parse_overrides(args.defender_opt))
    refs, targets = protocol_samples(args)
    rows: list[dict] = []
    t0 = time.perf_counter()
    for r in refs:
        image = r.image()
        ref = OneShotReference.make(seg.frame(image), r.mask(), image)
        adapted = adapt_defender(given, image, r.mask(), attacker_beside(args.defender),
                                 AdaptConfig(seed=args.seed, choose="adapted"))
        for t in targets:
            frame = seg.frame(t.image())
            p = propose(ref, frame, args.k, seed=args.seed)
            if not len(p.index):
                continue
            gt = t.mask()
            row = {"ref": r.id, "target": t.id,
                   "start_dice": dice(seg.decode(frame, p.points, p.labels).mask, gt)}
            for name, d in (("given", given), ("adapted", adapted)):
                res = d.refine_frame(frame, p.points, p.labels, reference=ref.graph_reference(d.config.graph_grid))
                # the scores PairedDefender compares
                row |= {f"{name}_dice": dice(res.mask, gt), f"{name}_iou": res.iou, f"{name}_agree": agreement(res),
                        f"{name}_kept": int(res.kept.sum())}
            rows.append(row)
        write_rows(args.out, rows)
        print(f"{r.id[:12]} done, {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def main() -> None:
    a = protocol_parser(__doc__)
    a.add_argument("--defender-opt", action="append", metavar="KEY=VALUE")
    a.add_argument("--out", default=None, help="rows to write (gzipped JSON lines)")
    a.add_argument("--rows", default=None, help="rows to report (no model)")
    args = a.parse_args()
    report(read_rows(args.rows) if args.rows else score_rows(args))


if __name__ == "__main__":
    main()
