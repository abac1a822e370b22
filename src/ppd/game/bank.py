"""The images a game is played on: frames, graphs, objects.

Embeddings are computed once (or read from the on-disk cache) and kept in memory
as :class:`ppd.sam.Frame` values (float16, 2 MiB an image); the decoder's per-image
tensors are prepared on a frame's first decode and kept for the ``max_handles``
most recently decoded frames only, so vectorised games can hop between images
without re-encoding or re-preparing.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

from ppd.data import Sample
from ppd.game.objects import ObjectConfig, ObjectSource
from ppd.graph import DualGraph, graph_of
from ppd.sam import Frame, Segmenter
from ppd.sam.segmenter import LOWRES


class ImageBank:
    def __init__(self, segmenter: Segmenter, samples: list[Sample], graph_grid: int = 32, knn: int = 8,
                 objects: ObjectConfig = ObjectConfig(), max_handles: int = 16, progress: bool = True,
                 frames: list[Frame] | None = None) -> None:
        """``frames``: the samples' frames when the caller has them already (else embedded here)."""
        from tqdm.auto import tqdm

        if frames is not None and (len(frames) != len(samples) or not all(f.image_sha256 for f in frames)):
            raise ValueError("frames must be one per sample, each with its image hash (Segmenter.frame)")

        self.seg = segmenter
        self.graph_grid, self.knn = graph_grid, knn
        self.object_cfg = objects
        self.samples: list[Sample] = list(samples)
        self.images: list[Frame] = []
        self.graphs: list[DualGraph] = []
        for j, s in enumerate(tqdm(self.samples, desc="embeddings", disable=not progress, unit="img")):
            fr = frames[j] if frames is not None else segmenter.frame(s.image())
            self.images.append(fr)
            self.graphs.append(graph_of(fr, graph_grid, knn))
        self._decoded: OrderedDict[int, None] = OrderedDict()  # frames holding a decoder context, LRU
        self._objects: dict[int, ObjectSource] = {}
        self._soft: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.max_handles = max_handles
        self.decodes = 0
        self.decode_seconds = 0.0

    def __len__(self) -> int:
        return len(self.images)

    def objects(self, i: int) -> ObjectSource:
        if i not in self._objects:
            self._objects[i] = ObjectSource(self.samples[i], self.object_cfg)
        return self._objects[i]

    def decode(self, i: int, points: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, float]:
        """Fast-path SAM logits (256, 256) and predicted IoU for points in original pixels."""
        import time

        t0 = time.perf_counter()
        fr = self.images[i]
        self._decoded[i] = None
        self._decoded.move_to_end(i)
        while len(self._decoded) > self.max_handles:
            self.images[self._decoded.popitem(last=False)[0]].drop_context()
        coords = torch.as_tensor(fr.to_input_frame(points), dtype=torch.float32)
        out = self.seg.decode_prepared(fr, coords, torch.as_tensor(labels, dtype=torch.int64))
        self.decodes += 1
        self.decode_seconds += time.perf_counter() - t0
        return out.logits, out.iou

    def soft_gt(self, i: int, k: int) -> np.ndarray:
        """Object ``k`` of image ``i`` on the low-res frame: area fraction per low-res pixel."""
        key = (i, k)
        g = self._soft.get(key)
        if g is None:
            vh, vw = self.images[i].lowres_valid_shape
            m = torch.as_tensor(self.objects(i).mask(k), dtype=torch.float32)[None, None]
            g = np.zeros((LOWRES, LOWRES), np.float32)
            g[:vh, :vw] = F.interpolate(m, (vh, vw), mode="area")[0, 0].numpy()
            self._soft[key] = g
            while len(self._soft) > 4096:
                self._soft.popitem(last=False)
        return g
