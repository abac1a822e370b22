"""One object per episode: turning a dataset's masks into single-object targets.

* ecssd, kvasir, ph2 and unknown datasets: the whole mask is the object;
* dsb2018: one nucleus of ``labels/<id>.png`` (at least ``min_nucleus_px``);
* isbi2012: one 8-connected white component (a cell) of at least ``min_cell_px``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from ppd.data import Sample

EIGHT = np.ones((3, 3), bool)
WHOLE = -1  # object index of the whole mask (all instances): the target of one-shot episodes


@dataclass
class ObjectConfig:
    min_nucleus_px: int = 20
    min_cell_px: int = 50


class ObjectSource:
    """The single-object masks of one sample, computed once and indexed 0..n-1."""

    def __init__(self, sample: Sample, cfg: ObjectConfig = ObjectConfig()) -> None:
        self.sample = sample
        mask = sample.mask()
        self.shape = mask.shape
        if sample.dataset == "dsb2018" and sample.labels_path() is not None:
            lab = np.asarray(Image.open(sample.labels_path())).astype(np.int32)
            sizes = np.bincount(lab.ravel())
            ids = [k for k in range(1, len(sizes)) if sizes[k] >= cfg.min_nucleus_px]
        elif sample.dataset == "isbi2012":
            lab, n = ndimage.label(mask, structure=EIGHT)
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            ids = [k for k in range(1, n + 1) if sizes[k] >= cfg.min_cell_px]
        else:
            lab, ids = mask.astype(np.int32), [1]
        self._labels = lab
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def mask(self, k: int) -> np.ndarray:
        """Boolean mask of object ``k`` (0-based among the kept objects); ``WHOLE`` = the whole mask."""
        if k == WHOLE:
            return self._labels > 0
        return self._labels == self.ids[k]
