"""Test-time adaptation to the one-shot reference: the adversarial game played on the reference itself.

A one-shot user gives one labelled image of their domain. It is a training image the shipped agents
never saw: its eight dihedral views (four rotations, each also mirrored) are played as the training
game (:class:`ppd.train.Trainer`: attacker episodes, defender episodes from attacked sets and from
one-shot start sets matched between the views), fine-tuning both agents from the given ones for a
small decode budget. The adapted defender then refines the targets' start sets as usual; the
attacker is discarded. Nothing is written to disk. Chosen on val in session 19 (docs/TRAINING.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ppd.agents.dqn import DQNAgent, shipped_agent_path
from ppd.data import ArraySample
from ppd.errors import CheckpointError, ConfigError
from ppd.io import check_image_array, check_reference_mask
from ppd.train.config import TrainConfig
from ppd.train.trainer import Trainer


@dataclass(frozen=True)
class AdaptConfig:
    decodes: int = 1500  # SAM decodes of the game on the reference's views (43-47 s on 2 CPU cores, fp32)
    eps_start: float = 0.3  # exploration at the start, as the fine-tunes of docs/TRAINING.md
    learning_starts: int = 256  # transitions before the first gradient step (ppd train's 1000 left ~60 steps)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.learning_starts, int) or self.learning_starts < 1:
            raise ConfigError(f"adaptation learning_starts must be a positive integer, got {self.learning_starts!r}")
        if not isinstance(self.decodes, int) or self.decodes <= self.learning_starts:  # no gradient step would be made
            raise ConfigError(f"adaptation needs more decodes than its {self.learning_starts} warm-up transitions, "
                              f"got {self.decodes!r}")
        if not 0.0 <= self.eps_start <= 1.0:
            raise ConfigError(f"adaptation eps_start must be in [0, 1], got {self.eps_start!r}")

    def key(self) -> dict:
        """What enters the eval cache keys of rows made with an adapted defender."""
        return asdict(self)


def dihedral_views(image: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The eight rotations / mirror images of an image and its mask (the first is the image as it is)."""
    out = []
    for k in range(4):
        im, m = np.rot90(image, k), np.rot90(mask, k)
        out += [(np.ascontiguousarray(im), np.ascontiguousarray(m)),
                (np.ascontiguousarray(im[:, ::-1]), np.ascontiguousarray(m[:, ::-1]))]
    return out


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
    samples = [ArraySample("reference", f"view{j}", im, m) for j, (im, m) in enumerate(dihedral_views(image, mask))]
    base = TrainConfig()
    cfg = replace(base, decode_budget=config.decodes, max_minutes=60.0, eps_start=config.eps_start, seed=config.seed,
                  game=replace(base.game, dataset_weights={"reference": 1.0}),
                  attacker=replace(base.attacker, learning_starts=config.learning_starts),
                  defender=replace(base.defender, learning_starts=config.learning_starts))
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        tr = Trainer(cfg, samples, None, segmenter=segmenter, progress=progress, command="adapt",
                     start={"attacker": attacker, "defender": defender})
        tr.train()
    out = tr.defender
    out.buffer = None  # the replay memory is not needed at inference
    out.meta = dict(getattr(defender, "meta", None) or {}) | {"adapted": asdict(config) | {"decodes_run": tr.decodes}}
    return out


def adapt_defender(defender, image: np.ndarray, mask: np.ndarray, attacker=None, config: AdaptConfig = AdaptConfig(),
                   progress: bool = False):
    """A new :class:`ppd.refine.Defender` (same segmenter and settings) whose agent is ``defender``'s adapted
    to the reference ``image`` / ``mask``. ``attacker``: the agent it was trained with (a DQNAgent or a
    checkpoint path; default the shipped attacker, see :func:`attacker_beside`)."""
    from ppd.refine import Defender, load_agent

    agent = adapt(defender.agent, load_agent(attacker, "attacker"), image, mask, defender.seg, config, progress)
    return Defender(agent, segmenter=defender.seg, config=defender.config)
