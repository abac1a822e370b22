"""Defender inference: refine any coarse point-prompt set, then segment.

Mirrors SamPredictor: ``set_image`` once, then ``refine(points, labels)`` as often
as needed; ``set_reference(ref_image, ref_mask)`` tells a defender trained with
one-shot references which object the prompts are meant to find. The defender
removes one prompt per step, always the one with the highest Q-value, re-running
SAM after each removal, and stops when

* the best removal's Q-value is at most ``q_threshold`` (default 0: Q is the
  expected Dice change, and stopping is worth exactly 0), or
* ``max_removals`` prompts have been removed (10: chosen on the val split, where
  it kept ECSSD one-shot Dice within 1.5 points of 15 and lifted DSB2018
  all-nuclei targets from 56.7 to 64.8; docs/TRAINING.md), or
* only ``min_keep_per_class`` positives (and negatives, if any were given) remain.

No ground truth is used. The result lists the kept and the suppressed prompts,
the order of removal with the Q-value of each removal, and SAM's final mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ppd.agents import DQNAgent
from ppd.errors import InvalidMaskError, InvalidPromptError
from ppd.game.env import decode_summary
from ppd.game.observation import geometry, observe
from ppd.graph import Reference, build_graph
from ppd.prompts import PromptSet
from ppd.sam import Segmenter
from ppd.sam.segmenter import check_points, lowres_scale


def shipped_agent_path(role: str = "defender") -> Path:
    """Path (without suffix) of the agent shipped in ``ppd/assets``."""
    with resources.as_file(resources.files("ppd") / "assets" / f"{role}.safetensors") as p:
        return Path(p).with_suffix("")


def load_agent(spec: str | Path | None, role: str, like: DQNAgent | None = None, seed: int = 0) -> DQNAgent:
    """``None`` = the shipped agent; ``"untrained"`` = a randomly initialised one; else a checkpoint path."""
    if spec is None:
        return DQNAgent.load(shipped_agent_path(role), expect_role=role)
    if str(spec) == "untrained":
        ref = like or DQNAgent.load(shipped_agent_path(role), expect_role=role)
        return DQNAgent(role, ref.rows, ref.n_actions, ref.n_slot, ref.n_ctx, stop=ref.stop, cfg=ref.cfg, seed=seed,
                        buffer=False, features=ref.features)
    return DQNAgent.load(spec, expect_role=role)


@dataclass
class RefineResult:
    points: np.ndarray  # (N, 2) the input prompts
    labels: np.ndarray  # (N,)
    kept: np.ndarray  # (N,) bool
    order: list[int] = field(default_factory=list)  # indices removed, in order
    q_values: list[float] = field(default_factory=list)  # Q-value of each removal when it was made
    mask: np.ndarray | None = None  # (H, W) bool SAM mask from the kept prompts
    iou: float = 0.0  # SAM's predicted IoU of that mask
    stop_reason: str = ""

    @property
    def suppressed(self) -> np.ndarray:
        return ~self.kept

    def to_json(self) -> dict:
        """The prompts JSON that ``ppd refine --prompts`` reads back."""
        q = dict(zip(self.order, self.q_values, strict=True))
        return {"points": self.points.tolist(), "labels": [int(v) for v in self.labels],
                "status": ["kept" if k else "suppressed" for k in self.kept],
                "q_value": [q.get(i) for i in range(len(self.points))],
                "removal_order": [int(i) for i in self.order], "stop_reason": self.stop_reason,
                "sam_iou": self.iou}


class Defender:
    """The trained defender over a MobileSAM segmenter."""

    def __init__(self, agent: DQNAgent | str | Path | None = None, segmenter: Segmenter | None = None,
                 graph_grid: int = 32, knn: int = 8, max_removals: int = 10, q_threshold: float = 0.0,
                 min_keep_per_class: int = 1, myopic: bool = False) -> None:
        self.agent = agent if isinstance(agent, DQNAgent) else load_agent(agent, "defender")
        self.seg = segmenter or Segmenter()
        self.graph_grid, self.knn = graph_grid, knn
        self.max_removals, self.q_threshold, self.min_keep = max_removals, q_threshold, min_keep_per_class
        self.myopic = myopic
        self.graph = None
        self._image: np.ndarray | None = None
        self.reference: Reference | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.seg.set_image(image)
        self._image = image
        f = self.seg.features()
        self.graph = build_graph(f.grid, f.valid, f.patch_size, self.seg.original_size, self.graph_grid, self.knn)

    def set_reference(self, image: np.ndarray | Reference | None, mask: np.ndarray | None = None) -> None:
        """The one-shot reference (image + mask, or a ready :class:`ppd.graph.Reference`) whose object
        the prompts are meant to find, or None for none. Kept until replaced; the image set by
        ``set_image`` stays current. Agents trained before references existed ignore it."""
        if image is None or isinstance(image, Reference):
            self.reference = image
            return
        if mask is None or mask.shape != image.shape[:2]:
            got = "no mask" if mask is None else f"a {mask.shape[1]}x{mask.shape[0]} mask"
            raise InvalidMaskError(f"reference needs a mask of its image's size "
                                   f"{image.shape[1]}x{image.shape[0]}, got {got}")
        if not np.asarray(mask).any():
            raise InvalidMaskError("reference mask is empty")
        self.seg.set_image(image)
        f = self.seg.features()
        self.reference = Reference.from_features(f.grid, f.valid, f.patch_size, self.seg.original_size, mask,
                                                 self.graph_grid)
        if self._image is not None:  # back to the target
            self.seg.set_image(self._image)

    def _state(self, prompts: PromptSet, valid: np.ndarray):
        act = prompts.active & valid
        pts = [(float(x), float(y)) for x, y in prompts.points[valid]]
        if act.any():
            low = self.seg.predict_lowres(prompts.points[act], prompts.labels[act])
            logits, iou = low.logits, low.iou
            mask = (logits > 0).numpy()
        else:
            logits, iou, mask = None, 0.0, np.zeros((256, 256), bool)
        scale = lowres_scale(self.seg.original_size, self.seg.input_size)
        node_frac, logit_at = decode_summary(logits, mask, self.graph, scale, pts)
        slot_logits = np.array([logit_at.get((float(x), float(y)), 0.0) for x, y in prompts.points], np.float32)
        return slot_logits, node_frac, iou

    @torch.no_grad()
    def refine(self, points, labels, max_removals: int | None = None) -> RefineResult:
        """Remove misleading prompts (see the module doc) and segment with the rest."""
        if self.graph is None:
            from ppd.errors import ImageNotSetError

            raise ImageNotSetError("call set_image(image) before refine")
        pts, labs = check_points(points, labels, self.seg.original_size)
        n = len(pts)
        if n == 0:
            raise InvalidPromptError("no prompts to refine")
        rows = self.agent.rows
        res = RefineResult(points=pts, labels=labs, kept=np.ones(n, bool))
        budget = self.max_removals if max_removals is None else max_removals
        if n > rows:  # more prompts than the defender's rows: nothing is removed
            res.stop_reason = f"more than {rows} prompts: not refined (thin them first, e.g. by k-means)"
            budget = 0
        size = max(rows, n)
        prompts = PromptSet.from_points(np.zeros((size, 2)), np.zeros(size), np.zeros(size, bool))
        prompts.points[:n], prompts.labels[:n], prompts.active[:n] = pts, labs, True
        valid = np.zeros(len(prompts), bool)
        valid[:n] = True
        horizon = max(1, min(budget, 15))
        geo = geometry(self.graph, prompts, self.reference)
        for t in range(budget + 1):
            slot_logits, node_frac, iou = self._state(prompts, valid)
            res.iou = iou
            if t == budget:
                res.stop_reason = res.stop_reason or "removal budget reached"
                break
            can = prompts.active & valid
            for lab in (0, 1):  # keep at least min_keep of each class that was given
                have = can & (prompts.labels == lab)
                if (labs == lab).any() and have.sum() <= self.min_keep:
                    can &= prompts.labels != lab
            if not can.any():
                res.stop_reason = "minimum prompts per class kept"
                break
            # myopic: show every state as the last step of an episode, so Q estimates only the
            # immediate Dice change of a removal. Measured on val attacked sets (docs/TRAINING.md):
            # defended Dice 80.0 myopic vs 81.9 with t counting up to the budget, the default.
            tt, hh = (14, 15) if self.myopic else (t, horizon)
            obs = observe(self.graph, geo, prompts, valid, slot_logits, node_frac, iou, tt, hh, rows,
                          pairs=self.agent.needs_pairs)
            q = self.agent.q_values(obs["slots"][:rows], obs["context"],
                                    obs["pairs"][:rows, :rows] if "pairs" in obs else None)[:rows]
            q = np.where(can[:rows], q, -np.inf)
            best = int(q.argmax())
            if q[best] <= self.q_threshold:
                res.stop_reason = f"best removal has Q = {q[best]:.3f} <= {self.q_threshold}"
                break
            prompts.active[best] = False
            res.kept[best] = False
            res.order.append(best)
            res.q_values.append(float(q[best]))
        act = prompts.active & valid
        res.mask = self.seg.predict(prompts.points[act], prompts.labels[act]).mask
        return res
