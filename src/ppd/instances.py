"""Many objects from one reference: "all nuclei", "all coins".

When the reference mask holds several separate objects (:func:`count_instances`:
connected components of at least ``max(min_px, rel * largest)`` pixels, so the
1-pixel specks some Kvasir masks carry do not count; "several" is ``MULTI_AT`` or
more), one-shot needs prompts on many objects. Two ways were built and measured on
DSB2018 val "all nuclei" (5 references x 5 targets, mDSC %; docs/TRAINING.md):

* ``many``: the same single SAM mask from a denser start set, ``MANY_K`` = 32 prompts
  per class instead of 10: fm-kmeans 70.2 -> 74.1, with the defender 68.7 -> 76.9;
* ``union``: one SAM mask per kept positive (with every negative), the union of the
  confident, object-sized ones (:func:`union_of_instances`): fm-kmeans 65.5 (K 10) and
  44.0 (K 32); with the defender 65.2 / 44.0.

So ``auto`` picks ``many`` for such references and ``single`` (K as given) otherwise;
``union`` stays available by choice (objects far apart and few).

In ``many`` mode the defender keeps a refined state only when SAM's predicted IoU beats the
start set's by :data:`MANY_IOU_MARGIN`: with 64 prompts the predicted IoUs of the visited
states differ by thousandths, and picking their argmax picked noise (the demo's fluo-b lost
0.018 Dice that way). DSB2018 val, many mode, the stored trajectories of the shipped defender
(docs/tuning/session7/traj_dsb2018_ship7_cycle_k32.json): margin 0 / 0.005 / 0.01 / 0.02 ->
76.9 / 76.9 / 77.2 / 76.7 mDSC (25 pairs: a tie within noise, no loss). On single objects a
margin costs Kvasir val 0.3-0.7 points, so it applies to ``many`` only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ppd.errors import ConfigError

#: Reference masks with at least this many substantial components count as "many objects".
MULTI_AT = 3
#: Prompts per class of the start set for many objects (the defender's 64 rows hold 2 x 32).
MANY_K = 32
#: many mode: the margin of SAM's predicted IoU a refined state needs over the start set's.
MANY_IOU_MARGIN = 0.01
MODES = ("auto", "single", "many", "union")


def count_instances(mask: np.ndarray, min_px: int = 10, rel: float = 0.05) -> int:
    """Connected components (8-connected) of ``mask`` with at least ``max(min_px, rel * largest)`` pixels."""
    lab, n = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))
    if n == 0:
        return 0
    sizes = np.bincount(lab.ravel())[1:]
    return int((sizes >= max(min_px, rel * sizes.max())).sum())


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"instances must be one of {', '.join(MODES)}, got {mode!r}")


def resolve_mode(mode: str, ref_mask: np.ndarray) -> str:
    """``auto`` -> ``many`` when the reference has :data:`MULTI_AT` or more substantial objects, else ``single``."""
    check_mode(mode)
    if mode != "auto":
        return mode
    return "many" if count_instances(ref_mask) >= MULTI_AT else "single"


def start_k(mode: str, k: int) -> int:
    """Prompts per class of the start set in ``mode`` (``many``: at least :data:`MANY_K`)."""
    return max(k, MANY_K) if mode == "many" else k


def union_of_instances(seg, frame, points: np.ndarray, labels: np.ndarray, min_iou: float = 0.7,
                       max_area: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """SAM once per positive prompt (with all negatives), the union of the confident, object-sized masks.

    Returns the union (H, W) bool and, per positive, whether its mask was kept. A mask is dropped when
    SAM's predicted IoU is below ``min_iou`` or it covers more than ``max_area`` of the image (a
    positive on the background segments the background). With no mask kept, the most confident one is.
    """
    points, labels = np.asarray(points, np.float64).reshape(-1, 2), np.asarray(labels)
    pos, neg = points[labels == 1], points[labels == 0]
    h, w = frame.original_size
    union = np.zeros((h, w), bool)
    kept = np.zeros(len(pos), bool)
    best, best_iou = None, -1.0
    for j, p in enumerate(pos):
        pred = seg.decode(frame, np.vstack([p[None], neg]), np.r_[1, np.zeros(len(neg), np.int64)])
        if pred.iou > best_iou:
            best, best_iou = pred.mask, pred.iou
        if pred.iou >= min_iou and pred.mask.mean() <= max_area:
            union |= pred.mask
            kept[j] = True
    if not kept.any() and best is not None:
        union = best
    return union, kept
