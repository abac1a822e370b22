"""The images a game is played on: embeddings, graphs, objects, decoder handles.

Embeddings are computed once (or read from the on-disk cache) and kept in memory
as float16 (2 MiB an image); the decoder's per-image tensors are prepared on
demand and kept in a small LRU, so vectorised games can hop between images
without re-encoding or re-preparing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ppd.data import Sample
from ppd.game.objects import ObjectConfig, ObjectSource
from ppd.graph import DualGraph, build_graph
from ppd.sam import Segmenter
from ppd.sam.segmenter import LOWRES, ImageHandle, lowres_scale, preprocess_shape, valid_patches


@dataclass
class BankImage:
    sample: Sample
    embedding: torch.Tensor  # (1, 256, 64, 64) float16
    sha: str
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    graph: DualGraph

    @property
    def lowres_valid(self) -> tuple[int, int]:
        ih, iw = self.input_size
        return int(round(ih * LOWRES / 1024)), int(round(iw * LOWRES / 1024))

    def features(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(64, 64, C) float32 patch features, (64, 64) valid region, patch side in original pixels."""
        ih = self.input_size[0]
        return (self.embedding[0].permute(1, 2, 0).float().numpy(), valid_patches(self.input_size),
                16 * self.original_size[0] / ih)

    def lowres_scale(self) -> np.ndarray:
        """Original pixel (x, y) -> low-res (256) frame."""
        return lowres_scale(self.original_size, self.input_size)


class ImageBank:
    def __init__(self, segmenter: Segmenter, samples: list[Sample], graph_grid: int = 32, knn: int = 8,
                 objects: ObjectConfig = ObjectConfig(), max_handles: int = 16, progress: bool = True) -> None:
        from tqdm.auto import tqdm

        self.seg = segmenter
        self.graph_grid = graph_grid
        self.object_cfg = objects
        self.images: list[BankImage] = []
        for s in tqdm(samples, desc="embeddings", disable=not progress, unit="img"):
            image = s.image()
            emb, sha = segmenter.embed(image)
            h, w = image.shape[:2]
            im = BankImage(s, emb.half(), sha, (h, w), preprocess_shape(h, w), graph=None)
            im.graph = build_graph(*im.features(), (h, w), grid=graph_grid, k=knn)
            self.images.append(im)
        self._handles: OrderedDict[int, ImageHandle] = OrderedDict()
        self._objects: dict[int, ObjectSource] = {}
        self._soft: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.max_handles = max_handles
        self.decodes = 0
        self.decode_seconds = 0.0

    def __len__(self) -> int:
        return len(self.images)

    def objects(self, i: int) -> ObjectSource:
        if i not in self._objects:
            self._objects[i] = ObjectSource(self.images[i].sample, self.object_cfg)
        return self._objects[i]

    def handle(self, i: int) -> ImageHandle:
        h = self._handles.get(i)
        if h is None:
            im = self.images[i]
            h = self.seg.handle(im.embedding, im.original_size, im.sha)
            self._handles[i] = h
            while len(self._handles) > self.max_handles:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(i)
        return h

    def decode(self, i: int, points: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, float]:
        """Fast-path SAM logits (256, 256) and predicted IoU for points in original pixels."""
        import time

        t0 = time.perf_counter()
        self.seg.use(self.handle(i))
        coords = torch.as_tensor(self.seg.to_input_frame(points), dtype=torch.float32)
        out = self.seg.decode_input_frame(coords, torch.as_tensor(labels, dtype=torch.int64))
        self.decodes += 1
        self.decode_seconds += time.perf_counter() - t0
        return out.logits, out.iou

    def soft_gt(self, i: int, k: int) -> np.ndarray:
        """Object ``k`` of image ``i`` on the low-res frame: area fraction per low-res pixel."""
        key = (i, k)
        g = self._soft.get(key)
        if g is None:
            im = self.images[i]
            vh, vw = im.lowres_valid
            m = torch.as_tensor(self.objects(i).mask(k), dtype=torch.float32)[None, None]
            g = np.zeros((LOWRES, LOWRES), np.float32)
            g[:vh, :vw] = F.interpolate(m, (vh, vw), mode="area")[0, 0].numpy()
            self._soft[key] = g
            while len(self._soft) > 4096:
                self._soft.popitem(last=False)
        return g
