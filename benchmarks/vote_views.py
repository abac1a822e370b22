"""Which reference views should ``--votes`` draw its start sets from? (issue #20; docs/TRAINING.md, session 13)

Session 11 votes over the reference as it is and flipped left-right, up-down and both, then over
the same views with the next k-means seed (``ppd.oneshot.vote_plan``, plan "flips"). The square has
four more symmetries: the reference transposed, then flipped ("t", "th", "tv", "thv": quarter turns
and the other diagonal; ``ppd.oneshot.VIEWS``). Each is one more encoder pass per reference, not per
target, and a new draw of the feature matching. This runs the ``ppd eval`` protocol (seeded
references and targets, cycle-consistent matching, K = 10 per class), refines each start set with the
shipped defender (fm-ppd) or keeps it (fm-kmeans), and scores the pixel-wise majority of each plan in
``PLANS`` (ties are background), plus each set alone (``one:<set>``). No plan reads the ground truth.

Prints mDSC % (mean over targets, then mean ± sd over references) and the paired change against
``flips5`` (what ``--votes 5`` ships); ``--out`` keeps the rows.

Run: .venv/bin/python benchmarks/vote_views.py --dataset kvasir --references 10 --seed 1 --limit 40 \
         --out docs/tuning/session13/views_kvasir.jsonl.gz
     .venv/bin/python benchmarks/vote_views.py --dataset kvasir --rows docs/tuning/session13/views_kvasir.jsonl.gz
"""

from __future__ import annotations

from protocol_args import plan_rows, replay_or_setup, report_rows, rows_parser, set_masks, write_rows

from ppd.oneshot import VOTE_SEED_STEP, propose

#: start sets: (view, k-means seed offset); "o0" is the reference as it is, "o1" with the next seed
SETS = {"o0": ("", 0), "h": ("h", 0), "v": ("v", 0), "hv": ("hv", 0), "o1": ("", VOTE_SEED_STEP),
        "h1": ("h", VOTE_SEED_STEP), "v1": ("v", VOTE_SEED_STEP),
        "t": ("t", 0), "th": ("th", 0), "tv": ("tv", 0), "thv": ("thv", 0)}
#: the plans voted: "flips" as ``--votes N`` draws today, "dihedral" with the transposed views first
PLANS = {"flips5": ("o0", "h", "v", "hv", "o1"), "flips7": ("o0", "h", "v", "hv", "o1", "h1", "v1"),
         "dihedral5": ("o0", "h", "v", "hv", "t"), "dihedral7": ("o0", "h", "v", "hv", "t", "th", "tv"),
         "dihedral8": ("o0", "h", "v", "hv", "t", "th", "tv", "thv"),
         "dihedral9": ("o0", "h", "v", "hv", "t", "th", "tv", "thv", "o1"),
         "turns4": ("o0", "th", "hv", "tv"), "turns5": ("o0", "th", "hv", "tv", "o1")}
BASE = "flips5"


def main() -> None:
    args = rows_parser(__doc__).parse_args()
    setup = replay_or_setup(args, report)
    if setup is None:
        return
    seg, d, made, targets = setup
    refs = [r for r, _ in made]
    rows = []
    for i, t in enumerate(targets):
        fr, gt = seg.frame(t.image()), t.mask()
        f = fr.features()
        for r, ref in made:
            base = propose(ref, fr, args.k, None, seed=args.seed, target_features=f)
            sets = {name: (view, "", offset) for name, (view, offset) in SETS.items()}
            masks = set_masks(seg, d, ref, {"": fr}, {"": f}, base, sets, args)
            rows += plan_rows(t.id, r.id, masks, gt, PLANS)
        print(f"{i + 1}/{len(targets)} {t.id}", flush=True)
        if args.out:
            write_rows(args.out, rows)
    report(rows, [r.id for r in refs], args)


def report(rows: list[dict], ref_ids: list[str], args) -> None:
    report_rows(rows, ref_ids, args, [*PLANS, *(f"one:{k}" for k in SETS)], BASE, "one:o0")


if __name__ == "__main__":
    main()
