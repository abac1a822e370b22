"""SAM layer: MobileSAM weights, embedding cache, segmenter facade and fast decode path."""

from ppd.errors import ImageNotSetError
from ppd.sam.cache import EmbeddingCache
from ppd.sam.checkpoint import MOBILE_SAM_SHA256, load_mobile_sam, resolve_checkpoint
from ppd.sam.frame import Frame
from ppd.sam.segmenter import (
    LowResPrediction,
    PatchFeatures,
    Prediction,
    Segmenter,
    downsample_mask,
)

__all__ = [
    "MOBILE_SAM_SHA256",
    "EmbeddingCache",
    "Frame",
    "ImageNotSetError",
    "LowResPrediction",
    "PatchFeatures",
    "Prediction",
    "Segmenter",
    "downsample_mask",
    "load_mobile_sam",
    "resolve_checkpoint",
]
