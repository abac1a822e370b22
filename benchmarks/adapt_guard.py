"""Screen a guard on test-time adaptation (session 21, measured, not adopted) on the fixed val protocol.

The guard: score the given and the adapted defender on fresh jittered views of the reference (other crops
and colours than the adaptation game's; the reference's mask is known), and keep the adapted one only if
its mean Dice there is not lower. For each reference of a finished ``ppd eval`` run with ``--adapt``
(``--adapted``), the defender is adapted again (seeded: the same weights) and guarded; the guarded method
is then, per reference, the adapted run's fm-ppd rows when the guard keeps the adaptation, else the plain
run's (``--given``): the same targets, the same start sets. No target's ground truth is read for the choice.

    python benchmarks/adapt_guard.py --given docs/tuning/session19/val_twin_kvasir \\
        --adapted docs/tuning/session20/val_twin_jitter_kvasir --guard 7 \\
        --defender docs/training/ship7x/defender --defender-opt select=iou \\
        --out docs/tuning/session21/guard7_kvasir.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def fm_ppd(run: str) -> tuple[str, dict[str, dict[str, float]]]:
    """The dataset of a ``ppd eval`` output folder, and its fm-ppd Dice: reference -> target -> Dice."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    dataset = ""
    with open(Path(run) / "per_image.csv") as fh:
        for r in csv.DictReader(fh):
            dataset = r["dataset"]
            if r["method"] == "fm-ppd":
                out[r["reference"]][r["target"]] = float(r["dice"])
    return dataset, out


def guard_views(image: np.ndarray, mask: np.ndarray, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` jittered views the adaptation game never plays on: its seven rotated / mirrored views cropped and
    re-coloured with other seeds (``seed`` + 1, + 2, ...)."""
    from ppd.train.adapt import practice_views

    out: list[tuple[np.ndarray, np.ndarray]] = []
    s = seed
    while len(out) < n:
        s += 1
        out += practice_views(image, mask, "jitter", s)[1:]
    return out[:n]


def guard_scores(defenders: list, image: np.ndarray, mask: np.ndarray, n: int, seed: int, k: int = 10) -> list:
    """Mean Dice % of each defender on the one-shot start sets (the reference matched onto each guard view),
    refined; and last, the start sets' own."""
    from ppd.metrics import dice
    from ppd.oneshot import OneShotReference, propose

    seg = defenders[0].seg
    ref = OneShotReference.make(seg.frame(image), mask, image)
    scores: list[list[float]] = [[] for _ in range(len(defenders) + 1)]
    for im, m in guard_views(image, mask, n, seed):
        frame = seg.frame(im, cache=False)
        p = propose(ref, frame, k, seed=seed)
        if not len(p.index):
            continue
        scores[-1].append(dice(seg.decode(frame, p.points, p.labels).mask, m))
        for j, d in enumerate(defenders):
            res = d.refine_frame(frame, p.points, p.labels, reference=ref.graph_reference(d.config.graph_grid))
            scores[j].append(dice(res.mask, m))
    return [round(100 * float(np.mean(x)), 2) for x in scores]


def guard_rows(args, refs: list[str], dataset: str) -> list[dict]:
    from ppd import data
    from ppd.refine import Defender, parse_overrides
    from ppd.sam import Segmenter
    from ppd.train.adapt import AdaptConfig, adapt_defender, attacker_beside

    samples = {s.id: s for s in data.load_dataset(args.data, split=args.split) if s.dataset == dataset}
    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg, **parse_overrides(args.defender_opt))
    cfg = AdaptConfig(seed=args.seed, views=args.views)
    rows = []
    for ref in refs:
        s = samples[ref]
        t0 = time.perf_counter()
        a = adapt_defender(d, s.image(), s.mask(), attacker_beside(args.defender), cfg)
        given, adapted, start = guard_scores([d, a], s.image(), s.mask(), args.guard, args.seed)
        rows.append({"reference": ref, "kept": adapted >= given, "seconds": round(time.perf_counter() - t0, 2),
                     "views": args.guard, "start": start, "given": given, "adapted": adapted})
        print(f"{ref[:12]} {rows[-1]}", flush=True)
    return rows


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--given", required=True, help="ppd eval folder: fm-ppd with the given defender")
    a.add_argument("--adapted", required=True, help="ppd eval folder: fm-ppd with --adapt (same protocol)")
    a.add_argument("--guard", type=int, default=7)
    a.add_argument("--views", default="jitter")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--data", default=None)
    a.add_argument("--split", default="val")
    a.add_argument("--defender", default=None)
    a.add_argument("--defender-opt", action="append", metavar="KEY=VALUE")
    a.add_argument("--out", required=True, help="the guard's rows (JSON); read back when it exists")
    args = a.parse_args()
    (_, given), (dataset, adapted) = fm_ppd(args.given), fm_ppd(args.adapted)
    out = Path(args.out)
    if out.is_file():
        rows = json.loads(out.read_text())
    else:
        rows = guard_rows(args, sorted(adapted), dataset)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1))
    from ppd.evaluate.report import paired_bootstrap

    per: dict[str, dict[str, float]] = {"given": {}, "adapted": {}, "guarded": {}}
    for r in rows:
        ref = r["reference"]
        ts = sorted(adapted[ref])
        g = [given[ref][t] for t in ts]
        ad = [adapted[ref][t] for t in ts]
        for t, x, y in zip(ts, g, ad, strict=True):
            per["given"][f"{ref}|{t}"], per["adapted"][f"{ref}|{t}"] = x, y
            per["guarded"][f"{ref}|{t}"] = y if r["kept"] else x
        print(f"  {ref[:12]}: guard given {r['given']:.1f} adapted {r['adapted']:.1f} start {r['start']:.1f}"
              f" -> {'adapted' if r['kept'] else 'given'}; targets given {100 * np.mean(g):.1f}"
              f" adapted {100 * np.mean(ad):.1f}")
    for m, v in per.items():
        print(f"  {m:8s} {100 * np.mean(list(v.values())):5.1f}")
    for other in ("given", "adapted"):
        d, lo, hi = paired_bootstrap(per["guarded"], per[other])
        print(f"  guarded - {other}: {d:+.1f} [{lo:+.1f}, {hi:+.1f}]")


if __name__ == "__main__":
    main()
