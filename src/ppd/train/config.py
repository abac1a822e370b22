"""``ppd train``'s settings: one dataclass (the game's, both agents' and the loop's), saved with every
checkpoint and read back by ``--resume``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ppd.agents.dqn import DQNConfig
from ppd.game import GameConfig

LOG_FIELDS = ("round", "env_steps", "decodes", "seconds", "epsilon", "dice_ideal", "dice_attacked", "dice_defended",
              "attacker_return", "defender_return", "attacker_loss", "defender_loss", "memo_hit_rate",
              "decodes_per_s", "update_ms", "defender_stops")


@dataclass
class TrainConfig:
    game: GameConfig = field(default_factory=GameConfig)
    attacker: DQNConfig = field(default_factory=DQNConfig)
    defender: DQNConfig = field(default_factory=DQNConfig)
    n_games: int = 8  # games per round, stepped in lockstep (batched Q-network calls)
    decode_budget: int = 40_000  # SAM decodes for the whole run (~20 ms each in bf16, ~10-15 per s with the rest)
    max_minutes: float = 45.0  # wall-clock cap of the training loop (embeddings are computed before, ~6 min)
    eps_start: float = 1.0
    eps_end: float = 0.1
    eps_fraction: float = 0.6
    updates_per_step: int = 1  # gradient steps per agent per batched step
    checkpoint_minutes: float = 5.0
    seed: int = 0
    # Beyond the paper: this share of defender episodes starts from a one-shot set (feature
    # matching from another train image of the same dataset, k-means-thinned to fm_k per
    # class, target = the whole mask), the kind of set the defender meets at inference.
    fm_fraction: float = 0.75
    fm_refs_per_image: int = 4
    fm_k: int = 10
    fm_cycle: bool = True  # one-shot start sets from cycle-consistent matches (ppd.oneshot.match_patches)
    # The defender's episodes from attacked sets see no reference, as in the eval's attack / defence
    # ablation (else a reference is drawn with GameConfig.ref_prob, as for the attacker's episodes).
    attacked_no_reference: bool = False
    # Fine-tuning: start both agents from "shipped" or a run folder's attacker.* / defender.*
    # (their networks; optimisers and replay buffers start fresh). None = from scratch.
    init: str | None = None


def config_from_dict(d: dict) -> TrainConfig:
    """The config a checkpoint's JSON holds (lists back to tuples, nested dataclasses rebuilt)."""
    from ppd.game.objects import ObjectConfig
    from ppd.prompts import IdealConfig, PoolConfig

    g = dict(d["game"])
    g["ideal"] = IdealConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in g["ideal"].items()})
    g["pool"] = PoolConfig(**g["pool"])
    g["objects"] = ObjectConfig(**g["objects"])
    for k in ("attack_steps", "defend_steps"):
        g[k] = tuple(g[k])
    return TrainConfig(**{**d, "game": GameConfig(**g), "attacker": DQNConfig(**d["attacker"]),
                          "defender": DQNConfig(**d["defender"])})
