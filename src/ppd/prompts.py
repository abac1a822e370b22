"""Point prompt sets: ideal prompts from a ground-truth mask and the attacker's pool.

A :class:`PromptSet` is what the game manipulates: points with their exact
coordinates (that is what SAM receives), labels (1 positive, 0 negative) and
active flags. Actions index prompts, not patches: several prompts may share a
patch, and each takes the features of the patch that contains it.

Ideal prompts (training only, PAPER.md): positives on a regular lattice inside
the object, negatives on a lattice outside it (in a window around the object, see
``IdealConfig``), both kept a margin away from the boundary; the lattice stride
is chosen so that each class gets a count drawn from a configured range
(default 5-10, the size of the sets the defender sees at inference). The
attacker's pool holds the harmful candidates, each inactive until the attacker
activates it:

* ``bg_pos``      positives on the background in a band around the object;
* ``distractor``  positives on the background patches that look most like the
                  object in SAM feature space (hard distractors);
* ``obj_neg``     negatives on the object;
* ``boundary``    points within the margin of the boundary, random label;
* ``mislabel``    a copy of each ideal prompt with the opposite label: activating
                  it replaces the original (the original is deactivated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

IDEAL, BG_POS, DISTRACTOR, OBJ_NEG, BOUNDARY, MISLABEL = range(6)  # PromptSet.kind codes


def check_prompt_count(n: int, rows: int) -> None:
    """The defender sees at most ``rows`` prompts (its observation's rows); a larger set is refused,
    never silently passed through unrefined."""
    if n > rows:
        from ppd.errors import InvalidPromptError

        raise InvalidPromptError(f"{n} prompts: the defender refines at most {rows}; thin the set first "
                                 f"(e.g. ppd.oneshot.kmeans_thin, or `ppd oneshot -k {rows // 2}` or less)")


def check_k(k: int, rows: int | None = None, hint: str = "") -> None:
    """``-k`` (prompts kept per class by k-means): at least 1, and with a defender of ``rows`` rows at
    most rows // 2, since k positives and k negatives must fit (:func:`check_prompt_count`)."""
    from ppd.errors import ConfigError

    if k < 1:
        raise ConfigError(f"-k must be at least 1, got {k}")
    if rows is not None and 2 * k > rows:
        raise ConfigError(f"-k {k} can give up to {2 * k} prompts, but the defender refines at most {rows}: "
                          f"use -k {rows // 2} or less{hint}")


@dataclass
class PromptSet:
    points: np.ndarray  # (P, 2) float32 x, y in original pixels
    labels: np.ndarray  # (P,) int8, 1 positive / 0 negative
    active: np.ndarray  # (P,) bool
    kind: np.ndarray = field(default=None)  # (P,) int8 provenance (never shown to agents)
    twin: np.ndarray = field(default=None)  # (P,) int32 slot a mislabel copy replaces, else -1

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, np.float32).reshape(-1, 2)
        self.labels = np.asarray(self.labels, np.int8).reshape(-1)
        self.active = np.asarray(self.active, bool).reshape(-1)
        p = len(self.points)
        if self.kind is None:
            self.kind = np.zeros(p, np.int8)
        if self.twin is None:
            self.twin = np.full(p, -1, np.int32)
        if not (len(self.labels) == len(self.active) == len(self.kind) == len(self.twin) == p):
            raise ValueError("PromptSet arrays must have the same length")

    def __len__(self) -> int:
        return len(self.points)

    @classmethod
    def from_points(cls, points, labels, active=None) -> PromptSet:
        n = len(np.asarray(points).reshape(-1, 2))
        return cls(points, labels, np.ones(n, bool) if active is None else active)

    def copy(self) -> PromptSet:
        return PromptSet(self.points.copy(), self.labels.copy(), self.active.copy(), self.kind.copy(),
                         self.twin.copy())

    def active_prompts(self) -> tuple[np.ndarray, np.ndarray]:
        return self.points[self.active], self.labels[self.active]

    def subset(self, idx) -> PromptSet:
        """The prompts at ``idx`` as a new set (twins are dropped: they refer to old slots)."""
        idx = np.asarray(idx, int)
        return PromptSet(self.points[idx], self.labels[idx], self.active[idx], self.kind[idx])

    def concat(self, other: PromptSet) -> PromptSet:
        tw = np.where(other.twin >= 0, other.twin + len(self), -1)
        return PromptSet(np.concatenate([self.points, other.points]), np.concatenate([self.labels, other.labels]),
                         np.concatenate([self.active, other.active]), np.concatenate([self.kind, other.kind]),
                         np.concatenate([self.twin, tw]).astype(np.int32))


@dataclass
class IdealConfig:
    n_pos: tuple[int, int] = (5, 10)  # inclusive range of positives
    n_neg: tuple[int, int] = (5, 10)  # inclusive range of negatives
    margin: float = 0.01  # keep points this fraction of the image diagonal from the boundary (>= 1 px)
    # Negatives lie in a window around the object: its box grown by this share of its
    # longer side (at least neg_window_min of the diagonal). Chosen on val: with negatives
    # over the whole image, ideal Dice is 0.66 on DSB nuclei and 0.43 on ISBI cells (SAM
    # is pulled off by negatives on other instances); with this window 0.82 / 0.68, and
    # ECSSD is unchanged (0.85-0.87); see docs/GAME.md.
    neg_window: float = 0.5
    neg_window_min: float = 0.03


@dataclass
class PoolConfig:
    bg_pos: int = 6
    distractor: int = 4
    obj_neg: int = 6
    boundary: int = 4
    mislabel: bool = True
    band: float = 0.15  # bg_pos band: up to this fraction of the diagonal from the object
    margin: float = 0.01  # boundary band half-width, fraction of the diagonal (>= 1 px)

    def size(self, max_ideal: int) -> int:
        return self.bg_pos + self.distractor + self.obj_neg + self.boundary + (max_ideal if self.mislabel else 0)


def _margin_px(shape: tuple[int, int], frac: float) -> float:
    return max(1.0, frac * float(np.hypot(*shape)))


def lattice_points(region: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n`` (x, y) points on a regular lattice over ``region``, exactly ``min(n, |region|)``.

    The stride is sqrt(area / n) with a random offset; extra lattice points are
    dropped at random, missing ones (thin regions) come from the most interior pixels.
    """
    ys, xs = np.nonzero(region)
    area = len(xs)
    if area == 0 or n <= 0:
        return np.zeros((0, 2), np.float32)
    n = min(n, area)
    stride = max(1.0, np.sqrt(area / n))
    pts = np.zeros((0, 2))
    for _ in range(6):
        off = rng.uniform(0, stride, 2)
        sel = (np.mod(xs - off[0], stride) < 1) & (np.mod(ys - off[1], stride) < 1)
        pts = np.stack([xs[sel], ys[sel]], 1)
        if len(pts) >= n:
            break
        stride = max(1.0, stride * 0.8)
    if len(pts) > n:
        pts = pts[np.sort(rng.choice(len(pts), n, replace=False))]
    elif len(pts) < n:
        dist = ndimage.distance_transform_edt(region)
        order = np.argsort(-dist[ys, xs], kind="stable")
        have = {(int(x), int(y)) for x, y in pts}
        extra = [(xs[i], ys[i]) for i in order if (int(xs[i]), int(ys[i])) not in have][: n - len(pts)]
        pts = np.concatenate([pts.reshape(-1, 2), np.array(extra, float).reshape(-1, 2)])
    return pts.astype(np.float32)


def _eroded(region: np.ndarray, margin: float) -> np.ndarray:
    """``region`` shrunk by ``margin`` px, or the region itself if that empties it."""
    inner = ndimage.distance_transform_edt(region) > margin
    return inner if inner.any() else region


def object_window(mask: np.ndarray, grow: float, grow_min: float) -> np.ndarray:
    """The object's bounding box grown by ``grow`` x its longer side (>= ``grow_min`` x diagonal)."""
    ys, xs = np.nonzero(mask)
    win = np.zeros_like(mask, dtype=bool)
    if len(xs) == 0:
        win[:] = True
        return win
    e = max(grow * max(np.ptp(ys) + 1, np.ptp(xs) + 1), grow_min * float(np.hypot(*mask.shape)))
    win[max(0, int(ys.min() - e)): int(ys.max() + e) + 1, max(0, int(xs.min() - e)): int(xs.max() + e) + 1] = True
    return win


def ideal_prompts(mask: np.ndarray, rng: np.random.Generator, cfg: IdealConfig = IdealConfig()) -> PromptSet:
    """Positives on a lattice inside ``mask``, negatives on a lattice outside, all active."""
    margin = _margin_px(mask.shape, cfg.margin)
    pos = lattice_points(_eroded(mask, margin), int(rng.integers(cfg.n_pos[0], cfg.n_pos[1] + 1)), rng)
    background = _eroded(~mask, margin)
    window = object_window(mask, cfg.neg_window, cfg.neg_window_min)
    if (background & window).any():
        background &= window
    neg = lattice_points(background, int(rng.integers(cfg.n_neg[0], cfg.n_neg[1] + 1)), rng)
    pts = np.concatenate([pos, neg])
    labs = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return PromptSet(pts, labs, np.ones(len(pts), bool), np.full(len(pts), IDEAL, np.int8))


def _random_points(region: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(region)
    if len(xs) == 0 or n <= 0:
        return np.zeros((0, 2), np.float32)
    k = rng.choice(len(xs), min(n, len(xs)), replace=False)
    return np.stack([xs[k], ys[k]], 1).astype(np.float32)


def attack_pool(mask: np.ndarray, ideal: PromptSet, rng: np.random.Generator, cfg: PoolConfig = PoolConfig(),
                node_feats: np.ndarray | None = None, node_centers: np.ndarray | None = None) -> PromptSet:
    """The attacker's harmful candidates for one object, all inactive (see module doc).

    ``node_feats`` / ``node_centers`` (unit features and pixel centres of the graph
    nodes) enable the feature-space distractors; without them those slots become
    band positives.
    """
    h, w = mask.shape
    margin = _margin_px(mask.shape, cfg.margin)
    dist_out = ndimage.distance_transform_edt(~mask)
    dist_in = ndimage.distance_transform_edt(mask)
    band = (dist_out > margin) & (dist_out <= cfg.band * np.hypot(h, w))
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []
    n_bg = cfg.bg_pos
    if node_feats is not None and node_centers is not None and cfg.distractor > 0:
        cx = np.clip(node_centers[:, 0].astype(int), 0, w - 1)
        cy = np.clip(node_centers[:, 1].astype(int), 0, h - 1)
        inside = mask[cy, cx]
        far = dist_out[cy, cx] > margin
        if inside.any() and far.any():
            proto = node_feats[inside].mean(0)
            sim = node_feats @ proto
            cand = np.nonzero(far & ~inside)[0]
            top = cand[np.argsort(-sim[cand])[: cfg.distractor]]
            parts.append((node_centers[top], np.ones(len(top)), DISTRACTOR))
        else:
            n_bg += cfg.distractor
    else:
        n_bg += cfg.distractor
    parts.append((_random_points(band if band.any() else ~mask, n_bg, rng), np.ones(n_bg), BG_POS))
    parts.append((_random_points(mask, cfg.obj_neg, rng), np.zeros(cfg.obj_neg), OBJ_NEG))
    edge = (dist_out <= margin) & (dist_out > 0) | (dist_in <= margin) & (dist_in > 0)
    bpts = _random_points(edge, cfg.boundary, rng)
    parts.append((bpts, rng.integers(0, 2, len(bpts)), BOUNDARY))
    pts = np.concatenate([p.reshape(-1, 2) for p, _, _ in parts]).astype(np.float32)
    labs = np.concatenate([lab[: len(p)] for p, lab, _ in parts])
    kinds = np.concatenate([np.full(len(p), k) for p, _, k in parts])
    pool = PromptSet(pts, labs, np.zeros(len(pts), bool), kinds.astype(np.int8))
    if cfg.mislabel:
        mis = PromptSet(ideal.points.copy(), 1 - ideal.labels, np.zeros(len(ideal), bool),
                        np.full(len(ideal), MISLABEL, np.int8), np.arange(len(ideal), dtype=np.int32))
        # twins refer to slots of ``ideal``; callers lay out ideal first, then the pool.
        pool = PromptSet(np.concatenate([pool.points, mis.points]), np.concatenate([pool.labels, mis.labels]),
                         np.concatenate([pool.active, mis.active]), np.concatenate([pool.kind, mis.kind]),
                         np.concatenate([pool.twin, mis.twin]).astype(np.int32))
    return pool
