"""Many objects on DSB2018 val: one SAM mask from the start set vs per-positive masks (no negatives,
area-capped by the reference's median nucleus), alone and united with the single mask, at K = 10 and 32.

    .venv/bin/python benchmarks/instances_val.py   # prints mDSC % over the 25 (reference, target) pairs

A side measurement for ppd.instances (docs/TRAINING.md, session 6); the harness methods fm-union and
fm-ppd-union measure the shipped union rule (with negatives).
"""

import numpy as np
from scipy import ndimage

from ppd import data
from ppd.evaluate.harness import select
from ppd.metrics import dice
from ppd.oneshot import OneShotReference, propose
from ppd.sam import Segmenter


def main() -> None:
    seg = Segmenter()
    samples = [s for s in data.load_dataset(split="val") if s.dataset == "dsb2018"]
    refs, targets = select(samples, 5, None, None, 0)
    res: dict[tuple[str, int], list[float]] = {}
    for r in refs:
        rr = OneShotReference.make(seg.frame(r.image()), r.mask())
        lab, _ = ndimage.label(r.mask())
        med_frac = np.median(np.bincount(lab.ravel())[1:]) / r.mask().size
        for t in targets:
            fr, gt = seg.frame(t.image()), t.mask()
            for k in (10, 32):
                p = propose(rr, fr, k=k, seed=0)
                single = seg.decode(fr, p.points, p.labels).mask
                res.setdefault(("single", k), []).append(dice(single, gt))
                union = np.zeros_like(gt)
                for q in p.points[p.labels == 1]:
                    pr = seg.decode(fr, q[None], [1])
                    if pr.iou >= 0.7 and pr.mask.mean() <= 10 * med_frac:
                        union |= pr.mask
                res.setdefault(("per-positive", k), []).append(dice(union, gt))
                res.setdefault(("per-positive + single", k), []).append(dice(union | single, gt))
    for (name, k), v in sorted(res.items()):
        print(f"{name:24s} K={k:2d}  {100 * np.mean(v):.1f}")


if __name__ == "__main__":
    main()
