"""Dice and IoU for binary masks.

Empty-mask conventions (documented because they decide edge cases in evaluation
and in the game's reward):

* both prediction and ground truth empty -> Dice = IoU = 1 (a perfect "nothing");
* exactly one of them empty -> Dice = IoU = 0.

Masks must have the same shape; any non-zero value counts as foreground.
"""

from __future__ import annotations

import numpy as np

from ppd.errors import InvalidMaskError


def _counts(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise InvalidMaskError(f"mask shapes differ: prediction {pred.shape} vs ground truth {gt.shape}")
    p = pred.astype(bool, copy=False)
    g = gt.astype(bool, copy=False)
    inter = int(np.count_nonzero(p & g))
    return inter, int(np.count_nonzero(p)), int(np.count_nonzero(g))


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2|P∩G| / (|P| + |G|); 1.0 when both are empty."""
    inter, np_, ng = _counts(pred, gt)
    if np_ + ng == 0:
        return 1.0
    return 2.0 * inter / (np_ + ng)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P∩G| / |P∪G|; 1.0 when both are empty."""
    inter, np_, ng = _counts(pred, gt)
    union = np_ + ng - inter
    if union == 0:
        return 1.0
    return inter / union
