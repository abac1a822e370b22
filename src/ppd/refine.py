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

Then ``DefenderConfig.select`` picks which visited state to keep: where the stop rule
ended (``last``), or the state with SAM's highest predicted IoU (``iou``, the shipped
ship7's setting, chosen on val) or best agreement with the reference (``reference``).
The settings are the agent's own (its JSON), overridable per call.

With ``DefenderConfig.hypotheses`` > 0 the defender also refines label hypotheses the image
suggests (:mod:`ppd.hypotheses`: 2-means splits of the prompts' patch features, each side taken
as the object) and keeps the mask that agrees most with the others. This is what repairs
*mislabelled* prompts, which removal alone cannot (docs/TRAINING.md, session 17).

No ground truth is used. The result lists the kept and the suppressed prompts,
the order of removal with the Q-value of each removal, and SAM's final mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ppd.agents import DQNAgent
from ppd.agents.dqn import shipped_agent_path
from ppd.errors import ConfigError, ImageNotSetError, InvalidMaskError, InvalidPromptError
from ppd.game.observation import geometry, observe
from ppd.graph import Reference, decode_summary, graph_of, prototypes
from ppd.hypotheses import label_hypotheses, medoid
from ppd.io import check_image_array, check_points, check_reference_mask
from ppd.prompts import PromptSet, check_prompt_count
from ppd.sam import Frame, Segmenter


def load_agent(spec: DQNAgent | str | Path | None, role: str, like: DQNAgent | None = None,
               seed: int = 0) -> DQNAgent:
    """``None`` = the shipped agent; ``"untrained"`` = a randomly initialised one (seeded, shaped like
    ``like`` or the shipped one); a DQNAgent is returned as it is; else a checkpoint path."""
    if isinstance(spec, DQNAgent):
        return spec
    if spec is None:
        return DQNAgent.load(shipped_agent_path(role), expect_role=role)
    if str(spec) == "untrained":
        ref = like or DQNAgent.load(shipped_agent_path(role), expect_role=role)
        return DQNAgent(role, ref.rows, ref.n_actions, ref.n_slot, ref.n_ctx, stop=ref.stop, cfg=ref.cfg, seed=seed,
                        buffer=False, features=ref.features)
    return DQNAgent.load(spec, expect_role=role)


#: How the final state is chosen among those the defender visited: "last" (where its stop rule
#: ended), "iou" (the state with SAM's highest predicted IoU) or "reference" (the state whose mask
#: agrees best with the one-shot reference, object similarity minus background similarity; "last"
#: when no reference is set). None of them reads the ground truth.
SELECT_RULES = ("last", "iou", "reference")


def choose_step(trace: list[tuple[float, float, float]], rule: str, iou_margin: float = 0.0) -> int:
    """Index of the chosen state in a :attr:`RefineResult.trace`. With ``iou``, a later state must beat the
    start set's predicted IoU by ``iou_margin`` (else the start set is kept: argmax over near-equal noisy
    estimates picks noise)."""
    last = len(trace) - 1
    if rule == "last" or not trace:
        return last
    if rule == "iou":
        j = int(np.argmax([iou for iou, _, _ in trace]))
        return j if trace[j][0] >= trace[0][0] + iou_margin else 0
    score = np.array([fg - bg for _, fg, bg in trace])
    if np.isnan(score).all():
        return last
    return int(np.nanargmax(score))


@dataclass
class RefineResult:
    points: np.ndarray  # (N, 2) the input prompts
    labels: np.ndarray  # (N,) the labels the prompts are used with (the input's, unless ``relabeled``)
    kept: np.ndarray  # (N,) bool
    relabeled: np.ndarray | None = None  # (N,) bool: label changed by a label hypothesis (DefenderConfig.hypotheses)
    order: list[int] = field(default_factory=list)  # indices removed, in order
    q_values: list[float] = field(default_factory=list)  # Q-value of each removal when it was made
    mask: np.ndarray | None = None  # (H, W) bool SAM mask from the kept prompts
    iou: float = 0.0  # SAM's predicted IoU of that mask
    stop_reason: str = ""
    # per state visited (state t = after the first t removals of ``order``): SAM's predicted IoU and
    # the mask's agreement with the reference (cosine of the mask's mean feature with the reference
    # object's and background's mean features; NaN without a reference)
    trace: list[tuple[float, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.relabeled is None:
            self.relabeled = np.zeros(len(self.kept), bool)

    @property
    def suppressed(self) -> np.ndarray:
        return ~self.kept

    def to_json(self) -> dict:
        """The prompts JSON that ``ppd refine --prompts`` reads back."""
        q = dict(zip(self.order, self.q_values, strict=True))
        return {"points": self.points.tolist(), "labels": [int(v) for v in self.labels],
                "status": ["kept" if k else "suppressed" for k in self.kept],
                "relabeled": [bool(v) for v in self.relabeled],
                "q_value": [q.get(i) for i in range(len(self.points))],
                "removal_order": [int(i) for i in self.order], "stop_reason": self.stop_reason,
                "sam_iou": self.iou}


@dataclass(frozen=True)
class DefenderConfig:
    """How a defender refines at inference. Saved in the agent's JSON (``extra.inference``) so that the
    settings travel with the weights; the graph's grid and k-NN come from the agent's training
    configuration; any field can be overridden (``Defender(..., max_removals=12)``, CLI
    ``--defender-opt max_removals=12``). The eval cache key is built from it."""

    max_removals: int = 10  # removal budget (the module doc)
    q_threshold: float = 0.0  # stop when the best removal's Q is at most this
    min_keep_per_class: int = 1
    myopic: bool = False  # show every state as an episode's last step
    hypotheses: int = 0  # > 0: also refine this many 2-means label splits (both ways), keep the medoid (ppd.hypotheses)
    select: str = "last"  # which visited state to keep (SELECT_RULES)
    iou_margin: float = 0.0  # select="iou": a later state must beat the start set's SAM IoU by this much
    graph_grid: int = 32  # the dual graph the agent was trained on
    knn: int = 8

    def __post_init__(self) -> None:
        if self.select not in SELECT_RULES:
            raise ConfigError(f"select must be one of {', '.join(SELECT_RULES)}, got {self.select!r}")
        for name in ("max_removals", "hypotheses", "min_keep_per_class", "graph_grid", "knn"):
            v, low = getattr(self, name), 0 if name in ("max_removals", "hypotheses") else 1
            if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < low:
                raise ConfigError(f"{name} must be a whole number of at least {low}, got {v!r}")

    @classmethod
    def for_agent(cls, agent: DQNAgent, **overrides) -> DefenderConfig:
        """The agent's saved settings (defaults where it saved none), then ``overrides``."""
        meta = getattr(agent, "meta", {}) or {}
        game = (meta.get("train_config") or {}).get("game") or {}
        base = {k: game[k] for k in ("graph_grid", "knn") if k in game}
        base.update(meta.get("inference") or {})
        unknown = sorted(set(base) - set(cls.__dataclass_fields__)) + sorted(
            set(overrides) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown defender setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(cls.__dataclass_fields__)}")
        return cls(**{**base, **overrides})


def parse_overrides(items: list[str] | None) -> dict:
    """``["max_removals=12", "select=reference"]`` -> typed values for :class:`DefenderConfig`."""
    out: dict = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        field_ = DefenderConfig.__dataclass_fields__.get(key.strip())
        if not sep or field_ is None:
            raise ConfigError(f"--defender-opt takes KEY=VALUE with KEY one of "
                              f"{', '.join(DefenderConfig.__dataclass_fields__)}, got {item!r}")
        kind = type(field_.default)
        try:
            out[key.strip()] = (text.strip().lower() in ("1", "true", "yes") if kind is bool
                                else kind(text.strip()))
        except ValueError:
            raise ConfigError(f"--defender-opt {key}: {text!r} is not a {kind.__name__}") from None
    return out


class Defender:
    """The trained defender over a MobileSAM segmenter.

    Stateless core: :meth:`refine_frame` (a :class:`ppd.sam.Frame`, prompts, an optional
    :class:`ppd.graph.Reference`). Facade: ``set_image`` / ``set_reference`` once, ``refine`` many."""

    def __init__(self, agent: DQNAgent | str | Path | None = None, segmenter: Segmenter | None = None,
                 config: DefenderConfig | None = None, **overrides) -> None:
        """``config``: the settings (default: the agent's own, :meth:`DefenderConfig.for_agent`);
        ``overrides``: single fields on top, e.g. ``max_removals=12``."""
        if not isinstance(agent, DQNAgent | str | Path | None):
            raise ConfigError(f"agent must be a DQNAgent, a checkpoint path, 'untrained' or None (the shipped "
                              f"defender), got {type(agent).__name__}")
        if segmenter is not None and not isinstance(segmenter, Segmenter):
            raise ConfigError(f"segmenter must be a ppd.sam.Segmenter, got {type(segmenter).__name__}")
        self.agent = agent if isinstance(agent, DQNAgent) else load_agent(agent, "defender")
        if config is not None and not isinstance(config, DefenderConfig):
            raise ConfigError(f"config must be a DefenderConfig, got {type(config).__name__}")
        self.config = (replace(config, **overrides) if config is not None and overrides else
                       config or DefenderConfig.for_agent(self.agent, **overrides))
        self.seg = segmenter or Segmenter()
        self.frame: Frame | None = None
        self.reference: Reference | None = None

    # ------------------------------------------------------------------ facade
    def set_image(self, image: np.ndarray | Frame) -> None:
        """The image whose prompts :meth:`refine` will refine (an array or a ready frame)."""
        self.frame = image if isinstance(image, Frame) else self.seg.frame(image)

    @property
    def graph(self):
        """The current image's dual graph (None before ``set_image``)."""
        return None if self.frame is None else self.graph_of(self.frame)

    def graph_of(self, frame: Frame):
        return graph_of(frame, self.config.graph_grid, self.config.knn)

    def reference_of(self, image: np.ndarray | Frame, mask: np.ndarray) -> Reference:
        """A one-shot reference (image or frame, and its mask) as this defender reads it."""
        if not isinstance(image, Frame):
            image = check_image_array(image)
        if mask is None:
            size = image.original_size if isinstance(image, Frame) else image.shape[:2]
            raise InvalidMaskError(f"reference needs a mask of its image's size {size[1]}x{size[0]}, got no mask")
        if not isinstance(image, Frame):
            mask = check_reference_mask(mask, image)
            image = self.seg.frame(image)
        else:
            mask = check_reference_mask(mask, image.original_size)
        return Reference.from_frame(image, mask, self.config.graph_grid)

    def set_reference(self, image: np.ndarray | Frame | Reference | None, mask: np.ndarray | None = None) -> None:
        """The one-shot reference (image or frame + mask, or a ready :class:`ppd.graph.Reference`) whose
        object the prompts are meant to find, or None for none. Kept until replaced. Agents trained
        before references existed ignore it."""
        self.reference = image if image is None or isinstance(image, Reference) else self.reference_of(image, mask)

    def refine(self, points, labels, max_removals: int | None = None) -> RefineResult:
        """:meth:`refine_frame` on the image and reference set with ``set_image`` / ``set_reference``."""
        if self.frame is None:
            raise ImageNotSetError("call set_image(image) before refine")
        return self.refine_frame(self.frame, points, labels, self.reference, max_removals)

    # ------------------------------------------------------------------ core
    def _state(self, frame: Frame, graph, prompts: PromptSet, valid: np.ndarray):
        act = prompts.active & valid
        pts = [(float(x), float(y)) for x, y in prompts.points[valid]]
        if act.any():
            low = self.seg.decode(frame, prompts.points[act], prompts.labels[act], lowres=True)
            logits, iou = low.logits, low.iou
            mask = (logits > 0).numpy()
        else:
            logits, iou, mask = None, 0.0, np.zeros((256, 256), bool)
        node_frac, logit_at = decode_summary(logits, mask, graph, frame.lowres_scale, pts)
        slot_logits = np.array([logit_at.get((float(x), float(y)), 0.0) for x, y in prompts.points], np.float32)
        return slot_logits, node_frac, iou, mask

    @torch.no_grad()
    def refine_frame(self, frame: Frame, points, labels, reference: Reference | None = None,
                     max_removals: int | None = None, config: DefenderConfig | None = None) -> RefineResult:
        """Remove misleading prompts on ``frame`` (see the module doc) and segment with the rest.
        ``config``: settings for this call instead of :attr:`config` (e.g. many-object start sets)."""
        if not isinstance(frame, Frame):
            raise ConfigError(f"refine_frame needs a ppd.sam.Frame, got {type(frame).__name__}")
        pts, labs = check_points(points, labels, frame.original_size)
        if len(pts) == 0:
            raise InvalidPromptError("no prompts to refine")
        c = config or self.config
        budget = c.max_removals if max_removals is None else max_removals
        check_prompt_count(len(pts), self.agent.rows)
        graph = self.graph_of(frame)
        if c.hypotheses == 0:
            return self._remove(frame, graph, pts, labs, reference, budget, c)[0]
        # The given labels and the image's label hypotheses, each refined; keep the medoid. The candidates
        # are compared on SAM's low-res masks, and only the chosen one is decoded at full size.
        done = {labs.astype(np.int64).tobytes(): self._remove(frame, graph, pts, labs, reference, budget, c, False)}
        cands = list(done.values())
        for lab in label_hypotheses(graph.feats[graph.node_of(pts)], c.hypotheses):
            key = lab.tobytes()
            if key not in done:
                done[key] = self._remove(frame, graph, pts, lab, reference, budget, c, False)
            cands.append(done[key])
        vh, vw = frame.lowres_valid_shape  # the image's part of SAM's 256x256 low-res grid
        res = cands[medoid([low[:vh, :vw] for _, low in cands])][0]
        res.mask = self.seg.decode(frame, pts[res.kept], res.labels[res.kept]).mask
        res.relabeled = res.labels != labs
        res.stop_reason += f"; {int(res.relabeled.sum())} label(s) changed by the medoid of {len(cands)} hypotheses"
        return res

    def _remove(self, frame: Frame, graph, pts: np.ndarray, labs: np.ndarray, reference: Reference | None,
                budget: int, c: DefenderConfig, decode: bool = True) -> tuple[RefineResult, np.ndarray]:
        """The removal loop on prompts with labels ``labs`` (already validated): the result (its full-size
        mask decoded only if ``decode``) and the chosen state's low-res mask."""
        n, rows = len(pts), self.agent.rows
        res = RefineResult(points=pts, labels=labs, kept=np.ones(n, bool))
        prompts = PromptSet.from_points(np.zeros((rows, 2)), np.zeros(rows), np.zeros(rows, bool))
        prompts.points[:n], prompts.labels[:n], prompts.active[:n] = pts, labs, True
        valid = np.zeros(len(prompts), bool)
        valid[:n] = True
        horizon = max(1, min(budget, 15))
        geo = geometry(graph, prompts, reference)
        lows = []  # each visited state's low-res mask
        for t in range(budget + 1):
            slot_logits, node_frac, iou, low = self._state(frame, graph, prompts, valid)
            lows.append(low)
            res.iou = iou
            res.trace.append((float(iou), *_agreement(graph, reference, node_frac)))
            if t == budget:
                res.stop_reason = res.stop_reason or "removal budget reached"
                break
            can = prompts.active & valid
            for lab in (0, 1):  # keep at least min_keep of each class that was given
                have = can & (prompts.labels == lab)
                if (labs == lab).any() and have.sum() <= c.min_keep_per_class:
                    can &= prompts.labels != lab
            if not can.any():
                res.stop_reason = "minimum prompts per class kept"
                break
            # myopic: show every state as the last step of an episode, so Q estimates only the
            # immediate Dice change of a removal. Measured on val attacked sets (docs/TRAINING.md):
            # defended Dice 80.0 myopic vs 81.9 with t counting up to the budget, the default.
            tt, hh = (14, 15) if c.myopic else (t, horizon)
            obs = observe(graph, geo, prompts, valid, slot_logits, node_frac, iou, tt, hh, rows,
                          pairs=self.agent.needs_pairs)
            q = self.agent.q_values(obs["slots"][:rows], obs["context"],
                                    obs["pairs"][:rows, :rows] if "pairs" in obs else None)[:rows]
            q = np.where(can[:rows], q, -np.inf)
            best = int(q.argmax())
            if q[best] <= c.q_threshold:
                res.stop_reason = f"best removal has Q = {q[best]:.3f} <= {c.q_threshold}"
                break
            prompts.active[best] = False
            res.kept[best] = False
            res.order.append(best)
            res.q_values.append(float(q[best]))
        step = choose_step(res.trace, c.select, c.iou_margin)
        if step < len(res.order):  # undo the removals after the chosen state
            for i in res.order[step:]:
                res.kept[i] = True
            res.stop_reason += f"; mask of state {step} of {len(res.order)} chosen by {c.select}"
            res.order, res.q_values, res.iou = res.order[:step], res.q_values[:step], res.trace[step][0]
        if decode:
            res.mask = self.seg.decode(frame, pts[res.kept], labs[res.kept]).mask
        return res, lows[step]


def _agreement(graph, reference: Reference | None, node_frac: np.ndarray) -> tuple[float, float]:
    """Cosines of the mask's mean graph feature with the reference object's and background's."""
    if reference is None or not (node_frac > 0).any():
        return float("nan"), float("nan")
    fg, _ = prototypes(node_frac, graph.feats)
    return float(fg @ reference.proto_fg), float(fg @ reference.proto_bg)
