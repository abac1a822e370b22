"""Memo of SAM decodes keyed by (image, prompt layout, active set).

A game step re-runs SAM on the active prompts. Episodes on an object start from
the same ideal set, attacker and defender revisit each other's states, and the
defender's start state is the attacker's end state, so many steps ask for a
decode already made. The key is the *set* of active (x, y, label) prompts in a
canonical order (SAM's decoder is permutation-invariant over point tokens), so a
state is found again whatever slot layout it appears in. An entry keeps only
what the game reads: Dice against the object, SAM's predicted IoU, the mask
fraction on each graph node and the logit at the points asked so far (about
1-2 KB), in a bounded LRU.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass
class Outcome:
    dice: float
    iou: float
    node_frac: np.ndarray  # (N,) uint8 share of each graph node under the mask, 0..255
    logit_at: dict  # (x, y) -> low-res logit at that point


class DecodeMemo:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._d: OrderedDict[tuple, Outcome] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> Outcome | None:
        out = self._d.get(key)
        if out is None:
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        return out

    def put(self, key: tuple, value: Outcome) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.capacity:
            self._d.popitem(last=False)

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0

    def __len__(self) -> int:
        return len(self._d)
