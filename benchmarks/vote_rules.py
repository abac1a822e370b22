"""How should voted start sets be combined into one mask? (issue #20; docs/TRAINING.md, session 12)

``--votes N`` (session 11) takes the pixel-wise majority of the masks of N start sets (the reference
as it is, flipped left-right / up-down / both, then the same with the next k-means seeds:
``ppd.oneshot.vote_plan``). This runs the ``ppd eval`` protocol (seeded references and targets,
cycle-consistent matching, K = 10 per class) once with the largest N and scores, for the unrefined
sets (fm-kmeans) and the shipped defender's (fm-ppd), every way of combining the first n of them:

* ``hard{n}@{f}``: a pixel is object where more than a share ``f`` of the n masks say so
  (``@0.5`` is today's majority);
* ``soft{n}``: the mean of SAM's probabilities (sigmoid of each final decode's low-res logits) > 0.5,
  upsampled like one decode;
* ``iouw{n}``: the majority weighted by each mask's SAM-predicted IoU.

No rule reads the ground truth. Prints mDSC % (mean over targets, then mean ± sd over references) and
the paired change against ``hard5@0.5`` (what ``--votes 5`` ships); ``--out`` keeps the rows.

Run: .venv/bin/python benchmarks/vote_rules.py --dataset kvasir --references 10 --seed 1 --limit 40 \
         --out docs/tuning/session12/votes_kvasir.jsonl
"""

from __future__ import annotations

import numpy as np
import torch
from protocol_args import protocol_parser, protocol_samples, report_rows, write_rows

from ppd.metrics import dice
from ppd.oneshot import VOTE_PLANS, OneShotReference, other_start_sets, propose
from ppd.refine import Defender
from ppd.sam import Segmenter

COUNTS = (1, 3, 5, 7, 9)
SHARES = (0.3, 0.5, 0.7)
BASE = "hard5@0.5"


def set_outputs(seg, d, fr, sets) -> dict[str, list[tuple[np.ndarray, np.ndarray, float]]]:
    """(mask, low-res logits, SAM IoU) of each start set, unrefined and refined by the defender."""
    out = {"fm-kmeans": [], "fm-ppd": []}
    for p, view in sets:
        if len(p.points) == 0:
            continue
        raw = seg.decode(fr, p.points, p.labels)
        out["fm-kmeans"].append((raw.mask, raw.low_res_logits, raw.iou))
        res = d.refine_frame(fr, p.points, p.labels, view.graph_reference(d.config.graph_grid))
        fin = seg.decode(fr, p.points[res.kept], p.labels[res.kept])
        out["fm-ppd"].append((res.mask, fin.low_res_logits, res.iou))
    return out


def combine(seg, fr, outs: list[tuple[np.ndarray, np.ndarray, float]]) -> dict[str, np.ndarray]:
    """Every rule's mask from the first n outputs, for each n in ``COUNTS`` the outputs allow."""
    masks = {}
    for n in COUNTS:
        if n > len(outs):
            break
        hard = np.mean(np.stack([m for m, _, _ in outs[:n]]), axis=0)
        for f in SHARES:
            masks[f"hard{n}@{f}"] = hard > f
        prob = np.mean([1 / (1 + np.exp(-lo.astype(np.float64))) for _, lo, _ in outs[:n]], axis=0)
        logit = np.log(np.clip(prob, 1e-6, 1 - 1e-6) / np.clip(1 - prob, 1e-6, 1))
        masks[f"soft{n}"] = seg.upsample(torch.from_numpy(logit.astype(np.float32)), fr)
        w = np.array([max(iou, 1e-3) for _, _, iou in outs[:n]])
        masks[f"iouw{n}"] = np.tensordot(w / w.sum(), np.stack([m for m, _, _ in outs[:n]]), 1) > 0.5
    return masks


def main() -> None:
    a = protocol_parser(__doc__)
    a.add_argument("--max-votes", type=int, default=max(COUNTS), help="the most start sets voted (default 9)")
    a.add_argument("--out", default=None, help="a .jsonl.gz file for the rows (written as targets finish)")
    args = a.parse_args()
    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg)
    refs, targets = protocol_samples(args)
    made = [(r, OneShotReference.make(seg.frame(r.image()), r.mask(), r.image())) for r in refs]
    rows = []
    for i, t in enumerate(targets):
        fr, gt = seg.frame(t.image()), t.mask()
        f = fr.features()
        for r, ref in made:
            prop = propose(ref, fr, args.k, None, seed=args.seed, target_features=f)
            sets = [(prop, ref)] + [(s.proposal, s.ref) for s in other_start_sets(
                ref, fr, prop, args.k, args.seed, args.max_votes, seg, None, f, VOTE_PLANS["flips"])]
            for name, outs in set_outputs(seg, d, fr, sets).items():
                if outs:
                    rows.append({"target": t.id, "ref": r.id, "set": name, "n": len(outs),
                                 **{k: round(float(dice(m, gt)), 4) for k, m in combine(seg, fr, outs).items()}})
        print(f"{i + 1}/{len(targets)} {t.id}", flush=True)
        if args.out:
            write_rows(args.out, rows)
    report(rows, [r.id for r in refs], args)


def report(rows: list[dict], ref_ids: list[str], args) -> None:
    rules = [k for k in rows[0] if k not in ("target", "ref", "set", "n")]
    report_rows(rows, ref_ids, args, rules, BASE, "hard1@0.5")


if __name__ == "__main__":
    main()
