"""Test-time adaptation to the one-shot reference: the adversarial game played on the reference itself.

A one-shot user gives one labelled image of their domain. It is a training image the shipped agents
never saw: eight practice views of it (four rotations, each also mirrored; all but the first also
randomly cropped and re-coloured, :func:`practice_views`) are played as the training game
(:class:`ppd.train.Trainer`: attacker episodes, defender episodes from attacked sets and from one-shot
start sets matched between the views), fine-tuning both agents from the given ones for a small decode
budget. The adapted defender then refines the targets' start sets as usual; the attacker is discarded.
Nothing is written to disk. Chosen on val in sessions 19 (the game, its budget) and 20 (the crops and
colour changes: without them, matches between views are too easy; docs/TRAINING.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ppd.agents.dqn import DQNAgent, shipped_agent_path
from ppd.data import ArraySample
from ppd.errors import CheckpointError, ConfigError
from ppd.io import check_image_array, check_reference_mask
from ppd.refine import Defender, RefineResult, load_agent
from ppd.train.config import TrainConfig
from ppd.train.trainer import Trainer

VIEWS = ("jitter", "dihedral")  # AdaptConfig.views
CHOICES = ("iou", "agree", "adapted")  # AdaptConfig.choose


@dataclass(frozen=True)
class AdaptConfig:
    decodes: int = 1500  # SAM decodes of the game on the reference's views (42-79 s on 2 CPU cores, fp32)
    eps_start: float = 0.3  # exploration at the start, as the fine-tunes of docs/TRAINING.md
    learning_starts: int = 256  # transitions before the first gradient step (ppd train's 1000 left ~60 steps)
    seed: int = 0
    # the practice images: "jitter" (the reference's 8 rotations / mirror images, all but the first also
    # cropped and re-coloured, so that matches between them fail as real ones do; chosen on val in session 20)
    # or "dihedral" (those views as they are; session 19)
    views: str = "jitter"
    # which defender's result is kept: both the adapted and the given one refine each start set, and the
    # result with the higher label-free score is kept ("iou": SAM's predicted IoU of the mask, chosen on val
    # in session 21; "agree": the mask's agreement with the reference object; PairedDefender), or the adapted
    # defender refines alone ("adapted", sessions 19-20)
    choose: str = "iou"

    def __post_init__(self) -> None:
        if not isinstance(self.learning_starts, int) or self.learning_starts < 1:
            raise ConfigError(f"adaptation learning_starts must be a positive integer, got {self.learning_starts!r}")
        if not isinstance(self.decodes, int) or self.decodes <= self.learning_starts:  # no gradient step would be made
            raise ConfigError(f"adaptation needs more decodes than its {self.learning_starts} warm-up transitions, "
                              f"got {self.decodes!r}")
        if not 0.0 <= self.eps_start <= 1.0:
            raise ConfigError(f"adaptation eps_start must be in [0, 1], got {self.eps_start!r}")
        if self.views not in VIEWS:
            raise ConfigError(f"adaptation views must be one of {', '.join(VIEWS)}, got {self.views!r}")
        if self.choose not in CHOICES:
            raise ConfigError(f"adaptation choose must be one of {', '.join(CHOICES)}, got {self.choose!r}")

    def key(self) -> dict:
        """What enters the eval cache keys of rows made with an adapted defender (``views`` only when it is
        not session 19's dihedral views, ``choose`` only when not the adapted defender alone: older rows keep
        their keys)."""
        d = asdict(self)
        if d["views"] == "dihedral":
            del d["views"]
        if d["choose"] == "adapted":
            del d["choose"]
        return d


def dihedral_views(image: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The eight rotations / mirror images of an image and its mask (the first is the image as it is)."""
    out = []
    for k in range(4):
        im, m = np.rot90(image, k), np.rot90(mask, k)
        out += [(np.ascontiguousarray(im), np.ascontiguousarray(m)),
                (np.ascontiguousarray(im[:, ::-1]), np.ascontiguousarray(m[:, ::-1]))]
    return out


def jittered(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
             min_side: float = 0.6, min_kept: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A random crop (each side ``min_side``-1 of the image's, keeping at least ``min_kept`` of the object)
    with random per-channel gain, contrast and gamma: the reference as another photo of its domain might
    show it (scale, framing, lighting), its mask moved with it."""
    h, w = mask.shape
    area = mask.sum()
    y0 = x0 = 0
    ch, cw = h, w
    for _ in range(20):  # a crop that keeps enough of the object; else the whole view
        sh, sw = rng.uniform(min_side, 1.0, 2)
        ch, cw = min(h, max(16, int(h * sh))), min(w, max(16, int(w * sw)))  # tiny images: uncropped
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if mask[y0:y0 + ch, x0:x0 + cw].sum() >= min_kept * area:
            break
    else:
        y0 = x0 = 0
        ch, cw = h, w
    im = image[y0:y0 + ch, x0:x0 + cw].astype(np.float32) / 255.0
    im = im * rng.uniform(0.85, 1.15, 3)  # colour cast
    mean = im.mean()
    im = mean + (im - mean) * rng.uniform(0.75, 1.25)  # contrast
    im = np.clip(im, 0.0, 1.0) ** rng.uniform(0.8, 1.25)  # gamma (brightness)
    out = np.clip(np.rint(im * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out), np.ascontiguousarray(mask[y0:y0 + ch, x0:x0 + cw])


def practice_views(image: np.ndarray, mask: np.ndarray, kind: str = "jitter",
                   seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The images the adaptation game is played on (:attr:`AdaptConfig.views`); the first is the reference
    as it is."""
    views = dihedral_views(image, mask)
    if kind == "dihedral":
        return views
    rng = np.random.default_rng(seed)
    return views[:1] + [jittered(im, m, rng) for im, m in views[1:]]


def attacker_beside(defender_spec) -> Path:
    """The attacker trained with a defender checkpoint: the shipped one for the shipped defender, else
    ``attacker.*`` in the defender's folder (as ``ppd train`` writes them)."""
    if defender_spec is None:
        return shipped_agent_path("attacker")
    path = Path(defender_spec).with_suffix("").parent / "attacker"
    if not path.with_suffix(".safetensors").is_file():
        raise CheckpointError(f"adapting needs the attacker trained with {defender_spec}: no {path}.safetensors")
    return path


def adapt(defender: DQNAgent, attacker: DQNAgent, image: np.ndarray, mask: np.ndarray, segmenter,
          config: AdaptConfig = AdaptConfig(), progress: bool = False) -> DQNAgent:
    """A copy of ``defender`` fine-tuned by the game on the reference's views (the inputs are not
    changed). Seeded: the same inputs give the same weights on one machine."""
    import torch

    mask = check_reference_mask(mask, check_image_array(image))
    views = practice_views(image, mask, config.views, config.seed)
    samples = [ArraySample("reference", f"view{j}", im, m) for j, (im, m) in enumerate(views)]
    base = TrainConfig()
    cfg = replace(base, decode_budget=config.decodes, max_minutes=60.0, eps_start=config.eps_start, seed=config.seed,
                  game=replace(base.game, dataset_weights={"reference": 1.0}),
                  attacker=replace(base.attacker, learning_starts=config.learning_starts),
                  defender=replace(base.defender, learning_starts=config.learning_starts))
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        # the views are made once: embedded without the disk cache (the reference itself may be in it already)
        frames = [segmenter.frame(im, cache=j == 0) for j, (im, _) in enumerate(views)]
        tr = Trainer(cfg, samples, None, segmenter=segmenter, progress=progress, command="adapt",
                     start={"attacker": attacker, "defender": defender}, frames=frames)
        tr.train()
    out = tr.defender
    out.buffer = None  # the replay memory is not needed at inference
    out.meta = dict(getattr(defender, "meta", None) or {}) | {"adapted": asdict(config) | {"decodes_run": tr.decodes}}
    return out


def agreement(res: RefineResult) -> float:
    """How much the refined mask looks like the reference object: the cosine of its mask-pooled feature with
    the object's mean feature minus with the background's, at the state the defender kept (NaN without a
    reference)."""
    _, fg, bg = res.trace[len(res.order)]
    return fg - bg


SCORES = {"iou": lambda res: res.iou, "agree": agreement}  # PairedDefender's label-free scores


class PairedDefender(Defender):
    """The adapted defender with the given one beside it: both refine each start set, and the result with the
    higher label-free score (``score``: SAM's predicted IoU of the mask, or its :func:`agreement` with the
    reference object) is kept. Adaptation lifts most references and wrecks a few (one DSB2018 val reference:
    the given defender's repair undone, 69.3 -> 38.8); per start set the score can take the given defender's
    result back (chosen on val, docs/TRAINING.md session 21). Twice the refinement work per start set."""

    def __init__(self, adapted: Defender, given: Defender, score: str = "iou") -> None:
        if score not in SCORES:
            raise ConfigError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        super().__init__(adapted.agent, segmenter=adapted.seg, config=adapted.config)
        self.given, self.score = given, score

    def refine_frame(self, frame, points, labels, reference=None, max_removals=None, config=None) -> RefineResult:
        res = super().refine_frame(frame, points, labels, reference, max_removals, config)
        if reference is None and self.score == "agree":  # nothing to judge the two by: the adapted defender's
            return res
        other = self.given.refine_frame(frame, points, labels, reference, max_removals, config)
        score = SCORES[self.score]
        if score(other) > score(res):  # ties and NaN: the adapted one's
            other.stop_reason += f"; the given defender's result (higher {self.score} than the adapted one's)"
            return other
        return res


def adapt_defender(defender: Defender, image: np.ndarray, mask: np.ndarray, attacker=None,
                   config: AdaptConfig = AdaptConfig(), progress: bool = False) -> Defender:
    """A new :class:`ppd.refine.Defender` (same segmenter and settings) whose agent is ``defender``'s adapted
    to the reference ``image`` / ``mask``; unless ``config.choose`` is "adapted", a :class:`PairedDefender` of
    it and ``defender``. ``attacker``: the agent it was trained with (a DQNAgent or a checkpoint path; default the
    shipped attacker, see :func:`attacker_beside`)."""
    agent = adapt(defender.agent, load_agent(attacker, "attacker"), image, mask, defender.seg, config, progress)
    adapted = Defender(agent, segmenter=defender.seg, config=defender.config)
    return adapted if config.choose == "adapted" else PairedDefender(adapted, defender, config.choose)
