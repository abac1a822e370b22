"""How should SAM make the final mask from a refined prompt set? (issue #20; docs/TRAINING.md, session 10)

Runs the ``ppd eval`` protocol (seeded references and targets, cycle-consistent matching, k-means
K = 10 per class) and, for the prompt sets fm-kmeans, fm-gbmseg and fm-ppd (the shipped defender)
end with, decodes the final mask several ways:

* ``plain``: one decode of the points (what every method does today);
* ``multi``: SAM's three masks, the one with the highest predicted IoU;
* ``box``: a second decode adding the bounding box of the first mask (PerSAM's post-refinement);
* ``mask``: a second decode adding the first mask's low-res logits as SAM's dense prompt;
* ``box+mask``: both;
* ``cascade``: PerSAM's three passes (multi, then + logits, then + box + logits);
* ``cc``: the first mask restricted to its connected parts that hold a positive prompt.

Also the defender refining the GBMSeg-style rule's set ("gbmseg-ppd"), and with ``--votes N`` the
pixel-wise majority of the masks of N voted start sets (``fm-kmeans-voteN``, ``fm-ppd-voteN``: what
``ppd oneshot --votes N`` does, ``ppd.oneshot.vote_plan``); ``--plain`` skips the second passes.
``--views`` (session 11) instead votes fm-kmeans / fm-ppd over start sets from other k-means seeds,
flipped references and flipped targets (``VIEW_VOTES``; the Dice of each start set alone as ``one:*``).

No variant reads the ground truth. Prints mDSC % (mean over targets, then mean ± sd over
references) per set and variant, and the paired gain over ``plain``; ``--out`` keeps the rows.

Run: .venv/bin/python benchmarks/final_decode.py --dataset kvasir --references 10 --seed 1 --limit 60
     .venv/bin/python benchmarks/final_decode.py --plain --votes 3 --dataset kvasir --references 10 --seed 1 --limit 60
     .venv/bin/python benchmarks/final_decode.py --views --dataset kvasir --references 10 --seed 1 --limit 40
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from protocol_args import protocol_parser, protocol_samples
from scipy import ndimage

from ppd.evaluate.baselines import gbmseg_prune, mask_box
from ppd.matching import Candidates, kmeans_thin, match_patches
from ppd.metrics import dice
from ppd.oneshot import (
    FLIPS,
    VOTE_PLANS,
    VOTE_SEED_STEP,
    OneShotReference,
    Proposal,
    flip_array,
    majority,
    other_start_sets,
    propose,
    rethin,
)
from ppd.refine import Defender
from ppd.sam import Frame, Segmenter

VARIANTS = ("plain", "multi", "box", "mask", "box+mask", "cascade", "cc")
#: --views: the masks voted (o = the reference and target as they are, oN = k-means seed + 1000 N,
#: rX = the reference flipped by X, tX = the target flipped by X, its points mapped back)
VIEW_VOTES = {"seed3": ("o0", "o1", "o2"), "ref3": ("o0", "rh", "rv"), "ref5": ("o0", "rh", "rv", "rhv", "o1"),
              "tgt3": ("o0", "th", "tv"), "rt5": ("o0", "rh", "rv", "th", "tv"),
              "all9": ("o0", "o1", "o2", "rh", "rv", "rhv", "th", "tv", "pool")}


def unflip(points: np.ndarray, how: str, size: tuple[int, int]) -> np.ndarray:
    """Points (x, y) found on a flipped image, on the image as it is."""
    h, w = size
    out = points.astype(np.float32).copy()
    if "h" in how:
        out[:, 0] = w - 1 - out[:, 0]
    if "v" in how:
        out[:, 1] = h - 1 - out[:, 1]
    return out


def pooled(refs: list[OneShotReference], tf, size: tuple[int, int]):
    """Candidates matched against every view of the reference at once (their grids stacked)."""
    g = np.concatenate([r.features.grid for r in refs]), np.concatenate([r.features.valid for r in refs])
    return match_patches(g[0], g[1], np.concatenate([r.frac for r in refs]), tf.grid, tf.valid, tf.patch_size,
                         size, cycle=True)


def with_positive(mask: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """The connected parts of ``mask`` that contain one of ``positives`` (x, y), else the mask."""
    lab, n = ndimage.label(mask)
    if n <= 1 or len(positives) == 0:
        return mask
    h, w = mask.shape
    ids = {int(lab[min(int(y), h - 1), min(int(x), w - 1)]) for x, y in positives} - {0}
    return np.isin(lab, list(ids)) if ids else mask


def final_masks(seg: Segmenter, fr: Frame, pts: np.ndarray, labs: np.ndarray, plain_only: bool = False
                ) -> dict[str, np.ndarray]:
    p = seg.decode(fr, pts, labs)
    out = {"plain": p.mask, "cc": with_positive(p.mask, pts[labs == 1])}
    if plain_only:
        return out
    mm = seg.decode(fr, pts, labs, multimask=True)
    out["multi"] = mm.mask
    box = mask_box(p.mask)
    out["mask"] = seg.decode(fr, pts, labs, mask_input=p.low_res_logits).mask
    out["box"] = seg.decode(fr, pts, labs, box=box).mask if box is not None else p.mask
    out["box+mask"] = (seg.decode(fr, pts, labs, box=box, mask_input=p.low_res_logits).mask if box is not None
                       else out["mask"])
    c2 = seg.decode(fr, pts, labs, mask_input=mm.low_res_logits, multimask=True)
    box2 = mask_box(c2.mask)
    out["cascade"] = (seg.decode(fr, pts, labs, box=box2, mask_input=c2.low_res_logits, multimask=True).mask
                      if box2 is not None else c2.mask)
    return out


def view_rows(seg, d, fr, gt, tid, rid, ref, flipped, tviews, prop, k, seed) -> list[dict]:
    """fm-kmeans / fm-ppd masks of every start set ``VIEW_VOTES`` names, and the Dice of each vote."""
    size = fr.original_size
    starts = {"o0": (prop, ref)} | {f"o{j}": (rethin(prop, k, seed + VOTE_SEED_STEP * j), ref) for j in (1, 2)}
    f = fr.features()
    for how, rv in flipped.items():
        starts[f"r{how}"] = (propose(rv, fr, k, None, seed=seed, target_features=f), rv)
    for how, tf in tviews.items():
        c = match_patches_views(ref, tf, size, how)
        starts[f"t{how}"] = (Proposal(c, kmeans_thin(c.points, c.labels, k, seed=seed)), ref)
    c = pooled([ref, *flipped.values()], f, size)
    starts["pool"] = (Proposal(c, kmeans_thin(c.points, c.labels, k, seed=seed)), ref)
    masks = {"fm-kmeans": {}, "fm-ppd": {}}
    for name, (p, rr) in starts.items():
        if len(p.points) == 0:
            continue
        masks["fm-kmeans"][name] = seg.decode(fr, p.points, p.labels).mask
        masks["fm-ppd"][name] = d.refine_frame(fr, p.points, p.labels, rr.graph_reference(d.config.graph_grid)).mask
    out = []
    for s, ms in masks.items():
        row = {"target": tid, "ref": rid, "set": s}
        row |= {f"one:{n}": float(dice(m, gt)) for n, m in ms.items()}
        row |= {v: float(dice(majority([ms[n] for n in names if n in ms]), gt)) for v, names in VIEW_VOTES.items()}
        out.append(row)
    return out


def match_patches_views(ref: OneShotReference, tf, size: tuple[int, int], how: str):
    """Candidates matched on the target flipped by ``how``, mapped back onto the target."""
    rf = ref.features
    c = match_patches(rf.grid, rf.valid, ref.frac, tf.grid, tf.valid, tf.patch_size, size, cycle=True)
    return Candidates(unflip(c.points, how, size), c.labels)


def main() -> None:
    a = protocol_parser(__doc__)
    a.add_argument("--out", default=None, help="a .jsonl file for the rows")
    a.add_argument("--plain", action="store_true", help="only the plain decode (and cc): compare the sets")
    a.add_argument("--votes", type=int, default=1, help="also the majority mask over start sets from N k-means seeds")
    a.add_argument("--views", action="store_true",
                   help="only fm-kmeans / fm-ppd, voted over flipped references / targets (VIEW_VOTES)")
    args = a.parse_args()
    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg)
    refs, targets = protocol_samples(args)
    made = [(r, OneShotReference.make(seg.frame(r.image()), r.mask(), r.image())) for r in refs]
    flipped = {r.id: {k: ref.view(k, seg) for k in FLIPS} for r, ref in made} if args.views else {}
    rows = []
    for t in targets:
        fr, gt = seg.frame(t.image()), t.mask()
        f = fr.features()
        tviews = {k: seg.frame(flip_array(t.image(), k)).features() for k in ("h", "v")} if args.views else {}
        for r, ref in made:
            prop = propose(ref, fr, args.k, None, seed=args.seed, target_features=f)
            if args.views:
                rows += view_rows(seg, d, fr, gt, t.id, r.id, ref, flipped[r.id], tviews, prop, args.k, args.seed)
                continue
            pts, labs = prop.points, prop.labels
            if len(pts) == 0:
                continue
            sets = {"fm-kmeans": np.ones(len(pts), bool),
                    "fm-gbmseg": gbmseg_prune(pts, labs, ref.features.grid, ref.features.valid, ref.frac, f.grid,
                                              f.patch_size),
                    "fm-ppd": d.refine_frame(fr, pts, labs, ref.graph_reference(d.config.graph_grid)).kept}
            g = np.nonzero(sets["fm-gbmseg"])[0]  # the defender refining the rule's set instead
            gref = ref.graph_reference(d.config.graph_grid)
            sets["gbmseg-ppd"] = sets["fm-gbmseg"].copy()
            if len(g):
                sets["gbmseg-ppd"][g] = d.refine_frame(fr, pts[g], labs[g], gref).kept
            for name, keep in sets.items():
                masks = final_masks(seg, fr, pts[keep], labs[keep], args.plain)
                rows.append({"target": t.id, "ref": r.id, "set": name,
                             **{v: float(dice(m, gt)) for v, m in masks.items()}})
            if args.votes > 1:  # start sets from other k-means seeds; the pixel-wise majority of their masks
                votes = {"fm-kmeans": [], "fm-ppd": []}
                for pr, view in [(prop, ref)] + [(s.proposal, s.ref) for s in other_start_sets(
                        ref, fr, prop, args.k, args.seed, args.votes, seg, None, f, VOTE_PLANS["flips"])]:
                    votes["fm-kmeans"].append(seg.decode(fr, pr.points, pr.labels).mask)
                    votes["fm-ppd"].append(d.refine_frame(fr, pr.points, pr.labels,
                                                          view.graph_reference(d.config.graph_grid)).mask)
                for name, ms in votes.items():
                    rows.append({"target": t.id, "ref": r.id, "set": f"{name}-vote{args.votes}",
                                 "plain": float(dice(majority(ms), gt))})
    if args.out:
        Path(args.out).write_text("".join(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                                      for k, v in r.items()}, separators=(",", ":")) + "\n"
                                          for r in rows))
    print(f"{args.dataset} {args.split}: {len(targets)} targets x {len(refs)} references (seed {args.seed})")
    for name in dict.fromkeys(x["set"] for x in rows):
        first = next(x for x in rows if x["set"] == name)
        names = [v for v in first if v not in ("target", "ref", "set")] if args.views else \
            [v for v in VARIANTS if v in first]
        per_ref = {v: [100 * np.mean([x.get(v, x.get("one:o0")) for x in rows if x["set"] == name and x["ref"] == r.id])
                       for r in refs] for v in names}
        line = "  ".join(f"{v} {np.mean(s):.1f}±{np.std(s):.1f}"
                         + ("" if v in ("plain", "one:o0") else
                            f" ({np.mean(np.subtract(s, per_ref.get('plain', per_ref.get('one:o0')))):+.1f})")
                         for v, s in per_ref.items())
        print(f"{name:10s} {line}")


if __name__ == "__main__":
    main()
