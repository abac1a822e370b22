"""Vote over views of the *target* as well as of the reference? (issue #20, Kvasir >= 65)

``--votes N`` (plan "flips", ``ppd.oneshot.vote_plan``) draws its start sets from the reference as it is
and flipped, then from other k-means seeds; the target is always seen as it is, so every voted mask
comes from the same target embedding. SAM's encoder is not flip-equivariant: the target flipped
left-right, up-down or both is a second look at the same pixels, with its own patch features (so its
own matches) and its own mask decoder input. A target view costs one encoder pass per target (shared
by every reference). Here each start set ``T<view>`` is the reference as it is matched on the flipped
target, refined there by the shipped defender (fm-ppd) or kept (fm-kmeans), and its mask flipped back.
Plans voted (pixel-wise majority, ties background), against ``flips7`` (what ``--votes 7`` ships):

* ``tta7``: the reference views of flips7 with the three target views in place of the seed draws;
* ``flips7+T3``: all ten sets; ``tgt4``: the target as it is and its three flips only.

No plan reads the ground truth. Prints mDSC % (mean over targets, then mean ± sd over references)
and the paired change against ``flips7``; ``--out`` keeps the rows.

Run: .venv/bin/python benchmarks/target_views.py --dataset kvasir --references 10 --seed 1 --limit 20 \
         --out docs/tuning/session16/target_views_kvasir.jsonl.gz
"""

from __future__ import annotations

import time

from protocol_args import plan_rows, replay_or_setup, report_rows, rows_parser, set_masks, write_rows

from ppd.oneshot import VOTE_SEED_STEP, flip_array, propose

#: start sets: (reference view, target view, k-means seed offset)
SETS = {"o0": ("", "", 0), "h": ("h", "", 0), "v": ("v", "", 0), "hv": ("hv", "", 0), "o1": ("", "", VOTE_SEED_STEP),
        "h1": ("h", "", VOTE_SEED_STEP), "v1": ("v", "", VOTE_SEED_STEP),
        "Th": ("", "h", 0), "Tv": ("", "v", 0), "Thv": ("", "hv", 0)}
PLANS = {"flips7": ("o0", "h", "v", "hv", "o1", "h1", "v1"),
         "tta7": ("o0", "h", "v", "hv", "Th", "Tv", "Thv"),
         "flips7+T3": ("o0", "h", "v", "hv", "o1", "h1", "v1", "Th", "Tv", "Thv"),
         "tgt4": ("o0", "Th", "Tv", "Thv")}
BASE = "flips7"


def main() -> None:
    args = rows_parser(__doc__).parse_args()
    setup = replay_or_setup(args, report)
    if setup is None:
        return
    seg, d, made, targets = setup
    refs = [r for r, _ in made]
    rows, t0 = [], time.perf_counter()
    for i, t in enumerate(targets):
        img, gt = t.image(), t.mask()
        frames = {tv: seg.frame(flip_array(img, tv) if tv else img) for tv in ("", "h", "v", "hv")}
        feats = {tv: fr.features() for tv, fr in frames.items()}
        for r, ref in made:
            base = propose(ref, frames[""], args.k, None, seed=args.seed, target_features=feats[""])
            masks = set_masks(seg, d, ref, frames, feats, base, SETS, args)
            rows += plan_rows(t.id, r.id, masks, gt, PLANS)
        print(f"{i + 1}/{len(targets)} {t.id} {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out:
            write_rows(args.out, rows)
    report(rows, [r.id for r in refs], args)


def report(rows: list[dict], ref_ids: list[str], args) -> None:
    report_rows(rows, ref_ids, args, [*PLANS, *(f"one:{k}" for k in SETS)], BASE, "one:o0")


if __name__ == "__main__":
    main()
