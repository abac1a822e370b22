"""Training-free prompt engineering to compare the defender with (``ppd eval`` methods).

Each function takes prompts (or a target / reference) and returns prompts; SAM
decodes them in the harness. All ``fm-*`` refinements start from the same
k-means-thinned feature-matching set, so their gains are comparable.

* :func:`oracle_click` / the GT box: sanity lines that use the target's ground truth.
* :func:`random_removal`: as many random removals as the defender made (is it the
  *choice* of prompts that helps, or only removing some?).
* :func:`gbmseg_prune`: rule-based pruning in physical and feature space in the
  spirit of GBMSeg (Liu et al., MICCAI 2024, training-free one-shot GBM
  segmentation with SAM), whose prompt engineering keeps a matched point only if the
  backward match agrees, keeps positives and negatives apart and spreads points out.
  Our rules, fixed before any eval run: (1) backward check: a candidate's target
  patch must match back (cosine nearest) into the reference region of its class;
  (2) exclusive: negatives closer than ``exclusive_patches`` patches to a kept
  positive go; (3) outliers: positives farther from the positives' median than
  ``outlier_factor`` times their median distance go. At least one prompt per class
  survives each rule (the one ranked best by it).
* :func:`persam_points`: the training-free PerSAM recipe (Zhang et al., ICLR 2024):
  the reference object's mean feature, its cosine map on the target, the best
  location as a positive and the worst as a negative, then PerSAM's cascaded
  post-refinement (a second decode adding the box of the first mask). PerSAM's
  target-guided attention and semantic prompting change SAM's decoder internals
  and are not reproduced.
* :func:`greedy_oracle`: GT-guided greedy removal (the best single removal while it
  helps). A strong reference that reads the ground truth, **not** an upper bound of
  removal-only refinement: greedy can stop in a local optimum that a non-greedy
  removal sequence escapes (ECSSD target 0474 with reference 0793: oracle 0.000,
  fm-ppd 0.339).
"""

from __future__ import annotations

import numpy as np


def oracle_click(gt: np.ndarray) -> np.ndarray:
    """(1, 2) x, y of the ground-truth pixel farthest from the mask's border."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(gt.astype(bool), 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return np.array([[x, y]], np.float32)


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """x0, y0, x1, y1 of a mask's bounding box (pixel edges), None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def random_removal(labels: np.ndarray, n_remove: int, rng: np.random.Generator,
                   min_keep_per_class: int = 1) -> np.ndarray:
    """Keep-mask after ``n_remove`` random removals, keeping ``min_keep_per_class`` of each given class
    (the defender's own constraint, so both remove from the same choices)."""
    keep = np.ones(len(labels), bool)
    for _ in range(n_remove):
        can = keep.copy()
        for lab in (0, 1):
            have = keep & (labels == lab)
            if have.any() and have.sum() <= min_keep_per_class:
                can &= labels != lab
        idx = np.nonzero(can)[0]
        if len(idx) == 0:
            break
        keep[rng.choice(idx)] = False
    return keep


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _patch_of(points: np.ndarray, patch_size: float) -> tuple[np.ndarray, np.ndarray]:
    cols = np.clip((points[:, 0] / patch_size).astype(int), 0, 63)
    rows = np.clip((points[:, 1] / patch_size).astype(int), 0, 63)
    return rows, cols


def _keep_one(keep: np.ndarray, labels: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Re-admit the best-scored prompt of any given class a rule emptied."""
    for lab in (0, 1):
        cls = labels == lab
        if cls.any() and not (keep & cls).any():
            idx = np.nonzero(cls)[0]
            keep[idx[np.argmax(score[idx])]] = True
    return keep


def gbmseg_prune(points: np.ndarray, labels: np.ndarray, ref_grid: np.ndarray, ref_valid: np.ndarray,
                 ref_frac: np.ndarray, tgt_grid: np.ndarray, patch_size: float,
                 exclusive_patches: float = 2.0, outlier_factor: float = 2.5) -> np.ndarray:
    """Keep-mask of the GBMSeg-style rules (module doc) over a thinned FM set."""
    labels = np.asarray(labels)
    n = len(points)
    if n == 0:
        return np.zeros(0, bool)
    # (1) backward check
    rows, cols = _patch_of(points, patch_size)
    tf = _unit(tgt_grid[rows, cols])
    rr, rc = np.nonzero(ref_valid)
    rf = _unit(ref_grid[rr, rc])
    sim = tf @ rf.T
    back = ref_frac[rr, rc][sim.argmax(1)]  # reference-mask share of the patch each prompt matches back to
    agree = np.where(labels == 1, back >= 0.5, back < 0.5)
    keep = _keep_one(agree.copy(), labels, np.where(labels == 1, back, 1 - back))
    # (2) exclusive: negatives near kept positives
    pos = points[keep & (labels == 1)]
    if len(pos):
        d = np.sqrt(((points[:, None] - pos[None]) ** 2).sum(-1)).min(1)
        keep &= ~((labels == 0) & (d < exclusive_patches * patch_size))
        keep = _keep_one(keep, labels, np.where(labels == 0, d, 0.0))
    # (3) positive outliers
    pidx = np.nonzero(keep & (labels == 1))[0]
    if len(pidx) >= 3:
        centre = np.median(points[pidx], 0)
        d = np.sqrt(((points - centre) ** 2).sum(-1))
        scale = max(float(np.median(d[pidx])), patch_size)
        keep &= ~((labels == 1) & (d > outlier_factor * scale))
        keep = _keep_one(keep, labels, np.where(labels == 1, -d, 0.0))
    return keep


def persam_points(ref_grid: np.ndarray, ref_frac: np.ndarray, ref_valid: np.ndarray, tgt_grid: np.ndarray,
                  tgt_valid: np.ndarray, patch_size: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """PerSAM's positive (best) and negative (worst) location on the target, in target pixels."""
    w = np.where(ref_valid, ref_frac, 0.0)
    if w.sum() <= 0:
        raise ValueError("the reference mask covers no patch")
    target = _unit((ref_grid * w[..., None]).sum((0, 1)) / w.sum())
    sim = _unit(tgt_grid) @ target
    sim = np.where(tgt_valid, sim, np.nan)
    h, wd = size
    out = []
    for fn in (np.nanargmax, np.nanargmin):
        r, c = np.unravel_index(int(fn(sim)), sim.shape)
        out.append([min((c + 0.5) * patch_size, wd - 1), min((r + 0.5) * patch_size, h - 1)])
    return np.array(out, np.float32), np.array([1, 0], np.int64)



def greedy_oracle(seg, frame, pts, labs, gt, max_removals: int) -> np.ndarray:
    """Keep-mask of GT-guided greedy removal (the best single removal while it helps) on ``frame``.

    Candidates are scored on the fast path (low-res Dice against the downsampled
    ground truth); the caller decodes the kept set at full resolution.
    """
    from ppd.metrics import dice
    from ppd.sam import downsample_mask

    gt_low = downsample_mask(gt, frame.lowres_valid_shape)

    def low_dice(k):
        if not k.any():
            return 0.0
        return dice((seg.decode(frame, pts[k], labs[k], lowres=True).logits > 0).numpy(), gt_low)

    keep = np.ones(len(pts), bool)
    best = low_dice(keep)
    for _ in range(max_removals):
        cands = []
        for j in np.nonzero(keep)[0]:
            k = keep.copy()
            k[j] = False
            if k.any():
                cands.append((low_dice(k), j))
        if not cands:
            break
        d, j = max(cands)
        if d <= best:
            break
        best, keep[j] = d, False
    return keep
