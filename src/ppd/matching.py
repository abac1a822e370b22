"""Feature matching (PAPER.md, "Inference") and k-means thinning: one-shot candidates as arrays.

From one reference image and its mask: every reference patch of SAM's 64x64
embedding grid that lies wholly inside the mask votes for its nearest target
patch (cosine similarity of SAM features) as a *positive* candidate, every patch
wholly outside for a *negative* one. Candidates sit at target patch centres; a
target patch claimed twice by one class is one candidate, one claimed by both
classes is dropped.

That gives hundreds to thousands of candidates, too many for SAM (a decode with
thousands of points takes about a second) and for a defender that removes one
per step, so :func:`kmeans_thin` keeps at most K per class: k-means on the
candidates' coordinates, and the candidate nearest each centroid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ppd.errors import ConfigError
from ppd.sam.frame import GRID, IMG_SIZE


@dataclass
class Candidates:
    points: np.ndarray  # (N, 2) x, y in target pixels
    labels: np.ndarray  # (N,) 1 / 0

    def __len__(self) -> int:
        return len(self.points)


def patch_fractions(mask: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Share of each 64x64-grid patch covered by ``mask`` (padding counts as outside)."""
    ih, iw = input_size
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    m = F.interpolate(m, (ih, iw), mode="nearest")
    m = F.pad(m, (0, IMG_SIZE - iw, 0, IMG_SIZE - ih))
    return F.avg_pool2d(m, IMG_SIZE // GRID)[0, 0].numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def match_patches(ref_grid: np.ndarray, ref_valid: np.ndarray, ref_frac: np.ndarray, tgt_grid: np.ndarray,
                  tgt_valid: np.ndarray, patch_size: float, size: tuple[int, int], cycle: bool = False) -> Candidates:
    """Feature matching on 64x64 feature grids (see the module doc).

    ``ref_frac`` is the reference mask's share of each patch (:func:`patch_fractions`);
    ``patch_size`` and ``size`` (H, W) describe the target in original pixels. ``cycle``: keep a
    candidate only if the target patch's own nearest reference patch lies on the same side of the
    reference mask (forward-backward consistency, as in Matcher / PerSAM-style pipelines).
    """
    inside = ref_valid & (ref_frac >= 1.0)
    outside = ref_valid & (ref_frac <= 0.0)
    if not inside.any():  # an object smaller than a patch: use the patches most covered
        inside = ref_valid & (ref_frac > 0) & (ref_frac >= ref_frac[ref_valid].max() * 0.5)
    rows, cols = np.nonzero(tgt_valid)
    tgt = torch.as_tensor(_unit(tgt_grid[rows, cols]))
    claims = np.zeros((len(rows), 2), bool)  # [negative, positive]
    for lab, sel in ((1, inside), (0, outside)):
        if sel.any():
            nearest = (torch.as_tensor(_unit(ref_grid[sel])) @ tgt.T).argmax(1).numpy()
            claims[np.unique(nearest), lab] = True
    keep = claims.any(1) & ~claims.all(1)
    if cycle:
        rr, rc = np.nonzero(ref_valid)
        back = (tgt @ torch.as_tensor(_unit(ref_grid[rr, rc])).T).argmax(1).numpy()
        inside_back = ref_frac[rr[back], rc[back]] >= 0.5
        keep &= np.where(claims[:, 1], inside_back, ~inside_back)
    h, w = size
    pts = np.stack([np.minimum((cols[keep] + 0.5) * patch_size, w - 1),
                    np.minimum((rows[keep] + 0.5) * patch_size, h - 1)], 1)
    return Candidates(points=pts.astype(np.float32), labels=claims[keep, 1].astype(np.int64))


#: how kmeans_thin seeds k-means: "stable" (the default since session 14) or "scipy" (scipy's own
#: k-means++, what every result before session 14 used; kept to reproduce them)
THIN_INITS = ("stable", "scipy")
THIN_INIT = "stable"


def _point_uniforms(points: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """(N, rounds) uniforms in (0, 1), each a function of its point's coordinates, the round and the seed
    only (splitmix64 over the coordinates in 1/8 pixel), not of the point's place in the list."""
    q = np.round(np.asarray(points, np.float64) * 8).astype(np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):  # uint64 products wrap around, as the hash means them to
        z = (q[:, :1] * np.uint64(0x9E3779B97F4A7C15) ^ q[:, 1:2] * np.uint64(0xC2B2AE3D27D4EB4F)
             ^ np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x165667B19E3779F9)
             ^ np.arange(rounds, dtype=np.uint64)[None] * np.uint64(0x27D4EB2F165667C5))
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z = (z ^ (z >> np.uint64(shift))) * np.uint64(mult)
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def stable_plusplus(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means++ centres (k, 2) that a small change of the point set leaves alone.

    Plain k-means++ draws by list position, so one candidate more or less (a single match that a
    1e-6 change of the embedding flips) redraws every centre and gives another start set. Here each
    round is an exponential race: the point with the smallest ``-log(u) / D^2`` wins, with ``u`` tied
    to the point's coordinates (:func:`_point_uniforms`). The centres have k-means++'s distribution,
    and a point added or removed changes them only if it would have won a round."""
    e = -np.log(_point_uniforms(points, k, seed))
    d2 = np.ones(len(points))
    centres = []
    for j in range(k):
        with np.errstate(divide="ignore"):
            i = int(np.argmin(np.where(d2 > 0, e[:, j] / d2, np.inf)))
        centres.append(points[i])
        dist = ((points - points[i]) ** 2).sum(1)
        d2 = np.minimum(d2, dist) if j else dist
    return np.array(centres)


def kmeans_thin(points: np.ndarray, labels: np.ndarray, k: int = 10, seed: int = 0,
                init: str | None = None) -> np.ndarray:
    """Indices of at most ``k`` prompts per class: the point nearest each k-means centroid.

    ``init="stable"`` seeds Lloyd's iterations with :func:`stable_plusplus`, so the start set does not
    jump when the candidates change by one; ``"scipy"`` is scipy's k-means++ (results before session 14);
    None: :data:`THIN_INIT`."""
    from scipy.cluster.vq import kmeans2

    init = THIN_INIT if init is None else init
    if not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k (prompts kept per class) must be an integer of at least 1, got {k!r}")
    if init not in THIN_INITS:
        raise ConfigError(f"init must be one of {', '.join(THIN_INITS)}, got {init!r}")
    keep = []
    for lab in (1, 0):
        idx = np.nonzero(labels == lab)[0]
        if len(idx) <= k:
            keep += idx.tolist()
            continue
        pts = points[idx].astype(np.float64)
        with warnings.catch_warnings():  # a cluster emptied by Lloyd's steps keeps its centre: fine here
            warnings.filterwarnings("ignore", "One of the clusters is empty")
            if init == "stable":
                cent, _ = kmeans2(pts, stable_plusplus(pts, int(k), seed), minit="matrix")
            else:
                cent, _ = kmeans2(pts, k, minit="++", seed=seed)
        d = ((pts[:, None, :] - cent[None]) ** 2).sum(-1)
        chosen = set()
        for c in range(len(cent)):  # nearest unused candidate to each centroid
            for j in np.argsort(d[:, c]):
                if j not in chosen:
                    chosen.add(int(j))
                    break
        keep += idx[sorted(chosen)].tolist()
    return np.array(sorted(keep), dtype=np.int64)
