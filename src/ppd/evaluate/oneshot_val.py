"""A quick one-shot check (the full harness is ``ppd eval``, to come): for every image
of a split, a seeded reference of the same dataset, feature matching, k-means
thinning, then SAM with the k-means set (``fm-kmeans``) or with what a defender
keeps (``fm-ppd``). Mean Dice at the original size, whole masks as targets."""

from __future__ import annotations

import numpy as np

from ppd.metrics import dice
from ppd.oneshot import FeatureMatcher, kmeans_thin
from ppd.refine import Defender


def evaluate(samples, defenders: dict[str, Defender], segmenter, k: int = 10, seed: int = 0,
             progress: bool = True) -> dict[str, dict[str, float]]:
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    fm = FeatureMatcher(segmenter)
    scores: dict[str, dict[str, list[float]]] = {}
    for s in tqdm(samples, desc="one-shot targets", disable=not progress):
        same = [r for r in samples if r.dataset == s.dataset and r.id != s.id]
        ref = same[rng.integers(len(same))]
        fm.set_reference(ref.image(), ref.mask())
        image, gt = s.image(), s.mask()
        cand = fm.match(image)
        idx = kmeans_thin(cand.points, cand.labels, k, seed=seed)
        pts, labs = cand.points[idx], cand.labels[idx]
        row = scores.setdefault(s.dataset, {})
        row.setdefault("fm-kmeans", []).append(dice(segmenter.predict(pts, labs).mask, gt))
        for name, d in defenders.items():
            d.set_image(image)
            res = d.refine(pts, labs)
            row.setdefault(name, []).append(dice(res.mask, gt))
            row.setdefault(name + " kept", []).append(float(res.kept.mean()))
    return {ds: {m: float(np.mean(v)) for m, v in row.items()} for ds, row in scores.items()}
