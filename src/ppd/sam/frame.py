"""``Frame``: one image as SAM sees it, an explicit value.

A frame holds the image's embedding and sizes; the decoder's prepared tensors are
built on its first decode (``Segmenter.decode``) and may be dropped again to save
memory (an image bank keeps thousands of frames, few of them decoded at a time).
Values that later stages derive from a frame (its patch graph, for one) are kept
in ``memo`` by those stages, so a frame passed around is built on once.

Nothing here is "current": any number of frames can be decoded in any order by
one segmenter, which is what lets one-shot pipelines, image banks and several
browser sessions share a model without putting images back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

IMG_SIZE = 1024  # SAM's padded input frame
GRID = 64  # embedding grid (patch = 16 px of the input frame)
LOWRES = 256  # low-resolution logits (4 px of the input frame)


@dataclass
class PatchFeatures:
    grid: np.ndarray  # (64, 64, 256) float32 SAM embedding, one vector per 16 px patch
    valid: np.ndarray  # (64, 64) bool: patch overlaps the image (not the padding)
    patch_size: float  # patch side in original-image pixels


def preprocess_shape(h: int, w: int, long_side: int = IMG_SIZE) -> tuple[int, int]:
    """SAM's resize: longest side -> ``long_side``, rounding the other."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def valid_patches(input_size: tuple[int, int]) -> np.ndarray:
    """(64, 64) bool: embedding patches that overlap the resized image (not SAM's padding)."""
    ih, iw = input_size
    valid = np.zeros((GRID, GRID), bool)
    valid[: -(-ih // 16), : -(-iw // 16)] = True
    return valid


def lowres_scale(original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """Factors (x, y) from original pixels to the 256x256 low-res logits frame."""
    (h, w), (ih, iw) = original_size, input_size
    return np.array([iw / w * LOWRES / IMG_SIZE, ih / h * LOWRES / IMG_SIZE], np.float32)


@dataclass(eq=False)
class Frame:
    """One image's SAM embedding and geometry (make one with ``Segmenter.frame(image)``)."""

    embedding: torch.Tensor  # (1, 256, 64, 64) float16: SAM's embedding, rounded as the cache stores it
    original_size: tuple[int, int]  # (H, W) of the image
    image_sha256: str = ""  # content hash of the pixels ("" when unknown)
    model_sha256: str = ""  # the SAM weights that made the embedding ("" when unknown)
    context: object | None = field(default=None, repr=False)  # the decoder's prepared tensors (lazy)
    memo: dict = field(default_factory=dict, repr=False)  # values later stages derive from the frame

    def __post_init__(self) -> None:
        h, w = int(self.original_size[0]), int(self.original_size[1])
        self.original_size = (h, w)
        self.embedding = self.embedding.detach().to(torch.float16)

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the image inside SAM's 1024 input frame."""
        return preprocess_shape(*self.original_size)

    def embedding32(self) -> torch.Tensor:
        """(1, 256, 64, 64) float32 (exact: the values are float16-rounded)."""
        return self.embedding.float()

    def features(self) -> PatchFeatures:
        """Per-patch SAM features on the 64x64 grid, with the image's valid region marked."""
        ih = self.input_size[0]
        # C-contiguous, as the facade always returned them: pooling sums in memory order, so a strided
        # view would change the graph's features in the last bit
        return PatchFeatures(grid=np.ascontiguousarray(self.embedding[0].permute(1, 2, 0).float().numpy()),
                             valid=valid_patches(self.input_size), patch_size=16 * self.original_size[0] / ih)

    def to_input_frame(self, points: np.ndarray) -> np.ndarray:
        """Original-pixel (x, y) -> SAM's resized 1024 frame."""
        h, w = self.original_size
        ih, iw = self.input_size
        return np.asarray(points, np.float64) * np.array([iw / w, ih / h])

    @property
    def lowres_valid_shape(self) -> tuple[int, int]:
        """Rows, columns of the 256x256 logits that cover the image (the rest is padding)."""
        ih, iw = self.input_size
        return int(round(ih * LOWRES / IMG_SIZE)), int(round(iw * LOWRES / IMG_SIZE))

    @property
    def lowres_scale(self) -> np.ndarray:
        """Original pixel (x, y) -> low-res (256) frame."""
        return lowres_scale(self.original_size, self.input_size)

    def drop_context(self) -> None:
        """Free the decoder's prepared tensors (~20 MB); the next decode prepares them again."""
        self.context = None
