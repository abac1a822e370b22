"""Views of an image for ``--votes``: flips and transposes, the plans that vote over them, and the
majority of the voted masks. Pure array code (the pipeline that embeds and refines is :mod:`ppd.oneshot`).

A voted start set is drawn from a view of the *reference* (matched anew), a view of the *target*
(embedded anew: SAM's encoder is not flip-equivariant, so a flipped target is a second look with its own
patch features and its own decoder input; the mask is flipped back), or another k-means seed.
"""

from __future__ import annotations

import numpy as np

from ppd.errors import ConfigError

#: ``flip`` -> (H, W, ...) array flipped: left-right, up-down, both
FLIPS = {"h": (1,), "v": (0,), "hv": (0, 1)}
#: every view of a reference: a flip, or the image transposed ("t", rows <-> columns) then flipped
#: ("th", "tv", "thv": the quarter turns and the other diagonal): the eight symmetries of the square
VIEWS = (*FLIPS, "t", *(f"t{f}" for f in FLIPS))
#: the views ``--votes`` cycles through, by plan name: (view of the reference, view of the target).
#: "flips" (session 11), "dihedral" (all eight reference views, session 13), "flips+target" (session
#: 16: the three reference flips, then the three target flips)
VOTE_PLANS = {"flips": (("", ""), ("h", ""), ("v", ""), ("hv", "")),
              "dihedral": (("", ""), *((v, "") for v in VIEWS)),
              "flips+target": (("", ""), ("h", ""), ("v", ""), ("hv", ""), ("", "h"), ("", "v"), ("", "hv"))}
#: the plan shipped (its name enters ``ppd eval``'s cache keys): the voted start sets cycle through
#: ``VOTE_VIEWS[j % n]`` with k-means seed ``seed + VOTE_SEED_STEP * (j // n)`` (docs/TRAINING.md, sessions 11,
#: 13, 16)
VOTE_PLAN = "flips+target"
VOTE_VIEWS = VOTE_PLANS[VOTE_PLAN]
VOTE_SEED_STEP = 1000


def flip_array(a: np.ndarray, flip: str) -> np.ndarray:
    """``a`` (H, W, ...) seen through view ``flip`` (:data:`VIEWS`): transposed first if it starts with "t"."""
    if flip not in VIEWS:
        raise ConfigError(f"unknown view {flip!r}; one of {list(VIEWS)}")
    if flip.startswith("t"):
        a, flip = np.swapaxes(a, 0, 1), flip[1:]
    return np.ascontiguousarray(np.flip(a, FLIPS[flip]) if flip else a)


def flip_points(points: np.ndarray, flip: str, size: tuple[int, int]) -> np.ndarray:
    """(N, 2) (x, y) points on an (H, W) = ``size`` image, as they sit on its view ``flip`` (a flip in
    :data:`FLIPS`, its own inverse). Pixel ``i`` spans [i, i + 1), so ``x`` maps to ``W - x``."""
    if flip and flip not in FLIPS:
        raise ConfigError(f"a target view is one of {list(FLIPS)}, got {flip!r}")
    h, w = size
    out = np.array(points, np.float64, copy=True).reshape(-1, 2)
    if "h" in flip:
        out[:, 0] = np.clip(w - out[:, 0], 0, w - 1)
    if "v" in flip:
        out[:, 1] = np.clip(h - out[:, 1], 0, h - 1)
    return out.astype(np.asarray(points).dtype, copy=False)


def vote_plan(votes: int, views: tuple[tuple[str, str], ...] = VOTE_VIEWS) -> list[tuple[str, str, int]]:
    """(view of the reference, view of the target, k-means seed offset) of start sets 2 .. ``votes`` (the
    first is ("", "", 0)): ``views`` in turn, then again with the next seed."""
    return [(*views[j % len(views)], VOTE_SEED_STEP * (j // len(views))) for j in range(1, votes)]


def check_votes(votes: int) -> None:
    if not isinstance(votes, int | np.integer) or isinstance(votes, bool) or votes < 1:
        raise ConfigError(f"--votes must be a whole number of at least 1, got {votes!r}")


def majority(masks: list[np.ndarray]) -> np.ndarray:
    """Pixel-wise majority of boolean masks (with an even count a tie is background)."""
    return np.mean(np.stack(masks), axis=0) > 0.5
