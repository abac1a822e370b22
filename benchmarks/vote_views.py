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
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from protocol_args import protocol_parser

from ppd import data
from ppd.evaluate.harness import select
from ppd.metrics import dice
from ppd.oneshot import VOTE_SEED_STEP, OneShotReference, majority, propose, rethin
from ppd.refine import Defender
from ppd.sam import Segmenter

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
    a = protocol_parser(__doc__)
    a.add_argument("--out", default=None, help="a .jsonl.gz file for the rows (written as targets finish)")
    args = a.parse_args()
    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg)
    grid = d.config.graph_grid
    samples = [s for s in data.load_dataset(args.data, split=args.split) if s.dataset == args.dataset]
    refs, targets = select(samples, args.references, None, args.limit, args.seed)
    made = [(r, OneShotReference.make(seg.frame(r.image()), r.mask(), r.image())) for r in refs]
    rows = []
    for i, t in enumerate(targets):
        fr, gt = seg.frame(t.image()), t.mask()
        f = fr.features()
        for r, ref in made:
            base = propose(ref, fr, args.k, None, seed=args.seed, target_features=f)
            masks: dict[str, dict[str, np.ndarray]] = {"fm-kmeans": {}, "fm-ppd": {}}
            for name, (view, offset) in SETS.items():
                v = ref.view(view, seg)
                if view:  # a new match from this view of the reference
                    p = propose(v, fr, args.k, None, args.seed + offset, f)
                else:  # the same match, thinned with another seed
                    p = rethin(base, args.k, args.seed + offset) if offset else base
                if len(p.points) == 0:
                    continue
                masks["fm-kmeans"][name] = seg.decode(fr, p.points, p.labels).mask
                masks["fm-ppd"][name] = d.refine_frame(fr, p.points, p.labels, v.graph_reference(grid)).mask
            for set_name, ms in masks.items():
                if "o0" not in ms:
                    continue
                row = {"target": t.id, "ref": r.id, "set": set_name}
                row.update({f"one:{k}": round(float(dice(m, gt)), 4) for k, m in ms.items()})
                for plan, names in PLANS.items():
                    voted = [ms[k] for k in names if k in ms]
                    row[plan] = round(float(dice(majority(voted), gt)), 4)
                rows.append(row)
        print(f"{i + 1}/{len(targets)} {t.id}", flush=True)
        if args.out:
            tmp = Path(args.out + ".tmp")
            with gzip.open(tmp, "wt") as fh:
                fh.writelines(json.dumps(x, separators=(",", ":")) + "\n" for x in rows)
            tmp.replace(args.out)
    report(rows, [r.id for r in refs], args)


def report(rows: list[dict], ref_ids: list[str], args) -> None:
    print(f"{args.dataset} {args.split}: {len({x['target'] for x in rows})} targets x {len(ref_ids)} references "
          f"(seed {args.seed})")
    for name in dict.fromkeys(x["set"] for x in rows):
        mine = [x for x in rows if x["set"] == name]
        cols = [*PLANS, *(f"one:{k}" for k in SETS)]
        per_ref = {k: np.array([100 * np.mean([x.get(k, x["one:o0"]) for x in mine if x["ref"] == r])
                                for r in ref_ids]) for k in cols}
        print(name)
        for k, s in per_ref.items():
            print(f"  {k:10s} {s.mean():5.1f} ± {s.std():4.1f}  ({s.mean() - per_ref[BASE].mean():+.2f} vs {BASE})")


if __name__ == "__main__":
    main()
