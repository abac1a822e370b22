"""Weigh the voted masks by how well they match back onto the reference? (issue #20, "reference-aware")

``--votes N`` refines N start sets and keeps the pixel-wise majority of their masks. Some of those
masks are the object, some are a look-alike. The reference is the one image whose answer is known,
so each target mask M can be checked against it: M's patches (inside vs outside M) are matched back
onto the reference image exactly as the reference is matched onto a target (cycle-consistent,
k-means K per class), SAM segments the reference with those prompts, and the Dice of that mask with
the reference's own mask is M's *back score*. A mask on the object should send its prompts back onto
the reference object. No ground truth of the target is read.

Per (reference, target) pair of the ``ppd eval`` protocol, for fm-kmeans (unrefined) and fm-ppd (the
shipped defender), the N voted masks (``ppd.oneshot.OneShot(votes=N)``, what ``--votes N`` does) and
these combinations: ``majority`` (today), ``best`` (the mask with the best back score), ``topH``
(majority of the better half by back score), ``weighted`` (each mask's vote weighted by its back score),
and ``consensus`` (each set's kept prompts that agree with the majority mask, a positive inside it and a
negative outside, decoded again, then the majority of those masks; a class left empty keeps its prompts).
Prints mDSC % (mean over targets, then mean ± sd over references).

Run: .venv/bin/python benchmarks/back_check.py --dataset kvasir --references 10 --seed 1 --limit 20 --votes 7
"""

from __future__ import annotations

import time

import numpy as np
from protocol_args import protocol_parser, protocol_samples, report_rows, write_rows

from ppd.matching import kmeans_thin, match_patches, patch_fractions
from ppd.metrics import dice
from ppd.oneshot import OneShot, OneShotReference, majority
from ppd.refine import Defender
from ppd.sam import Frame, Segmenter

RULES = ("majority", "best", "topH", "weighted", "consensus")


def back_score(seg: Segmenter, target: Frame, mask: np.ndarray, ref: OneShotReference, k: int) -> float:
    """Dice, on the reference, of SAM's mask from ``mask``'s patches matched back onto the reference."""
    if not mask.any():
        return 0.0
    tf, rf = target.features(), ref.features
    frac = patch_fractions(mask, target.input_size)
    c = match_patches(tf.grid, tf.valid, frac, rf.grid, rf.valid, rf.patch_size, ref.frame.original_size,
                      cycle=True)
    if not (c.labels == 1).any():
        return 0.0
    idx = kmeans_thin(c.points, c.labels, k, seed=0)
    return dice(seg.decode(ref.frame, c.points[idx], c.labels[idx]).mask, ref.mask)


def combine(masks: list[np.ndarray], scores: np.ndarray) -> dict[str, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    top = order[: max(1, (len(masks) + 1) // 2)]
    w = np.maximum(scores, 1e-6)
    return {"majority": majority(masks), "best": masks[order[0]],
            "topH": majority([masks[i] for i in top]),
            "weighted": np.tensordot(w / w.sum(), np.stack(masks).astype(np.float32), 1) > 0.5}


def consensus(seg: Segmenter, frame: Frame, results: list, voted: np.ndarray) -> np.ndarray:
    """Every set's kept prompts that the voted mask agrees with, decoded again; their majority."""
    masks = []
    for r in results:
        pts, labs = r.points[r.kept], r.labels[r.kept]
        xi = np.clip(pts[:, 0].astype(int), 0, voted.shape[1] - 1)
        yi = np.clip(pts[:, 1].astype(int), 0, voted.shape[0] - 1)
        ok = voted[yi, xi] == (labs == 1)
        for lab in (0, 1):
            if (labs == lab).any() and not ok[labs == lab].any():
                ok[labs == lab] = True
        masks.append(seg.decode(frame, pts[ok], labs[ok]).mask)
    return majority(masks)


def main() -> None:
    ap = protocol_parser(__doc__)
    ap.add_argument("--votes", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg)
    refs, targets = protocol_samples(args)
    pipes = {"fm-kmeans": OneShot(seg, None, k=args.k, seed=args.seed, votes=args.votes),
             "fm-ppd": OneShot(seg, d, k=args.k, seed=args.seed, votes=args.votes)}
    made = {r.id: OneShotReference.make(seg.frame(r.image()), r.mask(), r.image()) for r in refs}
    rows, t0 = [], time.perf_counter()
    for n, t in enumerate(targets):
        fr, gt = seg.frame(t.image()), t.mask()
        for r in refs:
            ref = made[r.id]
            for name, pipe in pipes.items():
                pipe.set_reference(ref)
                res = pipe.run(fr)
                masks = [res.refined.mask] + [o.mask for o in res.others]
                scores = np.array([back_score(seg, fr, m, ref, args.k) for m in masks])
                row = {"set": name, "ref": r.id, "target": t.id, "back": scores.tolist(),
                       "single": [dice(m, gt) for m in masks]}
                row.update({k: dice(m, gt) for k, m in combine(masks, scores).items()})
                row["consensus"] = dice(consensus(seg, fr, [res.refined, *res.others], majority(masks)), gt)
                rows.append(row)
        print(f"{n + 1}/{len(targets)} targets, {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out:
            write_rows(args.out, rows)
    report_rows(rows, [r.id for r in refs], args, list(RULES), "majority", "majority")
    single = np.concatenate([x["single"] for x in rows if x["set"] == "fm-ppd"])
    back = np.concatenate([x["back"] for x in rows if x["set"] == "fm-ppd"])
    print(f"fm-ppd masks: corr(back score, Dice) = {np.corrcoef(back, single)[0, 1]:.3f} over {len(single)}")


if __name__ == "__main__":
    main()
