"""Label hypotheses: what the image says the prompts' labels could be, for sets whose labels lie.

The attacker of the game mostly *mislabels* prompts (a positive inside the object becomes a
negative, and the reverse). A defender that can only remove prompts cannot undo that: removing
every attacker prompt leaves the object with too few prompts of the right label (on PH2 val the
clean prompts alone reach 47.5 Dice against 88.2 for the ideal set, docs/TRAINING.md session 17).
Once half the labels are flipped they carry almost no information, so the alternatives come
from the image: the prompts split in two by their SAM patch features (2-means, a few seeded
draws), each group taken once as the object. The defender refines every hypothesis and the
given labels, and :func:`medoid` keeps the mask the others agree with most; no ground truth and
no reference is read.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.cluster.vq import kmeans2

#: Draws for "my labels may be flipped" (``ppd serve``'s check box): chosen on val in session 17
#: (docs/TRAINING.md), where 8 repaired more of the attacker's damage than 3 or 5.
DRAWS = 8


def label_hypotheses(feats: np.ndarray, draws: int, seed: int = 0) -> list[np.ndarray]:
    """Labelings of the prompts: for each of ``draws`` seeded 2-means splits of
    ``feats`` (N, C), each side as the positives. Splits with an empty side are dropped; repeats are
    kept (a split that several draws find counts as often in :func:`medoid`; callers refine it once)."""
    feats = np.asarray(feats, np.float64)
    out: list[np.ndarray] = []
    if len(feats) < 2:
        return out
    for d in range(draws):
        with warnings.catch_warnings():  # kmeans2 warns when a draw leaves a cluster empty; it is dropped below
            warnings.simplefilter("ignore")
            _, side = kmeans2(feats, 2, seed=seed + d, minit="++")
        for positive in (0, 1):
            lab = (side == positive).astype(np.int64)
            if 0 < lab.sum() < len(lab):
                out.append(lab)
    return out


def _thumb(mask: np.ndarray, size: int = 128) -> np.ndarray:
    h, w = mask.shape
    return mask[np.ix_(np.linspace(0, h - 1, min(h, size)).astype(int),
                       np.linspace(0, w - 1, min(w, size)).astype(int))].ravel()


def medoid(masks: list[np.ndarray], weights: list[float] | None = None) -> int:
    """Index of the mask with the highest summed IoU with the others (the first on ties); ``weights``:
    how much each mask counts in those sums (default 1 each; val screens of other weightings,
    docs/TRAINING.md session 18)."""
    if not masks:
        raise ValueError("medoid of no masks")
    m = np.stack([_thumb(np.asarray(x, bool)) for x in masks]).astype(np.float32)
    inter = m @ m.T
    area = m.sum(1)
    union = area[:, None] + area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return int(np.argmax(iou.sum(1) if weights is None else iou @ np.asarray(weights, np.float32)))
