"""Pictures: overlays that show a mask and the point prompts that produced it; training curves."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ppd.io import atomic_write

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


def plot_curves(log_csv: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Training curves: Dice ideal / attacked / defended, returns, epsilon, TD losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    x = np.array([float(r["decodes"]) for r in rows])

    def col(k):
        return np.array([float(r[k]) if r[k] not in ("", "nan") else np.nan for r in rows])

    def smooth(y, k=max(1, len(rows) // 40)):
        """Moving average that ignores NaNs and does not sag at the ends."""
        if k <= 1:
            return y
        ok = np.isfinite(y)
        num = np.convolve(np.where(ok, y, 0.0), np.ones(k), mode="same")
        den = np.convolve(ok.astype(float), np.ones(k), mode="same")
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    for k, lab in (("dice_ideal", "ideal prompts"), ("dice_attacked", "after attack"),
                   ("dice_defended", "after defence")):
        ax[0, 0].plot(x, smooth(col(k)), label=lab)
    ax[0, 0].set(title="Dice (low-res, per round)", xlabel="SAM decodes", ylim=(0, 1))
    ax[0, 0].legend()
    ax[0, 1].plot(x, smooth(col("attacker_return")), label="attacker")
    ax[0, 1].plot(x, smooth(col("defender_return")), label="defender")
    ax[0, 1].set(title="episode return", xlabel="SAM decodes")
    ax[0, 1].legend()
    ax[1, 0].plot(x, col("epsilon"))
    ax[1, 0].set(title="epsilon", xlabel="SAM decodes")
    ax[1, 1].plot(x, smooth(col("attacker_loss")), label="attacker")
    ax[1, 1].plot(x, smooth(col("defender_loss")), label="defender")
    ax[1, 1].set(title="TD loss (Huber)", xlabel="SAM decodes", yscale="log")
    ax[1, 1].legend()
    fig.tight_layout()
    out_png = Path(out_png)
    atomic_write(out_png, lambda t: fig.savefig(t, format="png", dpi=90))
    plt.close(fig)
    return out_png
