"""What label hypotheses cost on prompt sets whose labels are (mostly) right.

The first 8 val images of Kvasir, PH2 and ECSSD; per image, seeded clicks from the ground truth:
``clean`` = 5 positives inside the object and 5 negatives outside; ``noisy`` = the same plus 3
positives on the background. Dice of SAM on the set as given, of the shipped defender, and of the
defender with ``--hypotheses`` label hypotheses. Session 17::

    python benchmarks/hypotheses_benign.py --data ../shared/data --out docs/tuning/session17/hypotheses_benign.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ppd import data
from ppd.metrics import dice
from ppd.refine import Defender
from ppd.sam import Segmenter


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--data", default=None)
    a.add_argument("--images", type=int, default=8)
    a.add_argument("--hypotheses", type=int, default=8)
    a.add_argument("--out", required=True)
    args = a.parse_args()
    seg = Segmenter()
    runs = {"SAM as given": None, "defender": Defender(segmenter=seg),
            f"defender, hypotheses={args.hypotheses}": Defender(segmenter=seg, hypotheses=args.hypotheses)}
    rng = np.random.default_rng(0)
    got: dict[tuple[str, str], list[float]] = {}
    for ds in ("kvasir", "ph2", "ecssd"):
        for s in data.load_dataset(args.data, dataset=ds, split="val")[: args.images]:
            gt, frame = s.mask(), seg.frame(s.image())
            pos, neg = np.argwhere(gt)[:, ::-1], np.argwhere(~gt)[:, ::-1]
            good = np.r_[pos[rng.integers(0, len(pos), 5)], neg[rng.integers(0, len(neg), 5)]].astype(float)
            labels = np.r_[np.ones(5), np.zeros(5)].astype(int)
            bad = neg[rng.integers(0, len(neg), 3)].astype(float)
            sets = (("clean", good, labels), ("noisy", np.r_[good, bad], np.r_[labels, np.ones(3, int)]))
            for case, pts, labs in sets:
                for name, d in runs.items():
                    mask = seg.decode(frame, pts, labs).mask if d is None else d.refine_frame(frame, pts, labs).mask
                    got.setdefault((case, name), []).append(dice(mask, gt))
    n = len(next(iter(got.values())))
    lines = [f"{n} val images (first {args.images} of kvasir, ph2, ecssd), mDSC %", "",
             "| set | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for case in ("clean", "noisy"):
        lines.append(f"| {case} | " + " | ".join(f"{100 * np.mean(got[(case, r)]):.1f}" for r in runs) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
