"""Overlays that show a mask and the point prompts that produced it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

POSITIVE = (40, 220, 60)
NEGATIVE = (235, 40, 40)
SUPPRESSED = (255, 200, 0)
MASK = (30, 144, 255)


def _edges(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    e = np.zeros_like(m)
    e[1:, :] |= m[1:, :] != m[:-1, :]
    e[:, 1:] |= m[:, 1:] != m[:, :-1]
    return e & m


def overlay(image: np.ndarray, mask: np.ndarray | None = None, points=None, labels=None,
            suppressed_points=None, suppressed_labels=None, alpha: float = 0.45) -> np.ndarray:
    """RGB picture: mask tinted with its outline, kept positives as green discs,
    kept negatives as red discs, suppressed prompts as yellow crosses (ring colour = label)."""
    out = image.astype(np.float32).copy()
    if mask is not None:
        m = mask.astype(bool)
        out[m] = (1 - alpha) * out[m] + alpha * np.array(MASK, np.float32)
        out[_edges(m)] = MASK
    im = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    r = max(3, round(max(image.shape[:2]) / 120))
    if suppressed_points is not None:
        labs = np.ones(len(suppressed_points)) if suppressed_labels is None else suppressed_labels
        for (x, y), lab in zip(np.asarray(suppressed_points, float).reshape(-1, 2), labs, strict=True):
            ring = POSITIVE if lab == 1 else NEGATIVE
            draw.ellipse([x - r, y - r, x + r, y + r], outline=ring, width=max(1, r // 3))
            draw.line([x - r, y - r, x + r, y + r], fill=SUPPRESSED, width=max(2, r // 2))
            draw.line([x - r, y + r, x + r, y - r], fill=SUPPRESSED, width=max(2, r // 2))
    if points is not None:
        labs = np.ones(len(points)) if labels is None else labels
        for (x, y), lab in zip(np.asarray(points, float).reshape(-1, 2), labs, strict=True):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=POSITIVE if lab == 1 else NEGATIVE,
                         outline=(255, 255, 255), width=max(1, r // 3))
    return np.asarray(im)
