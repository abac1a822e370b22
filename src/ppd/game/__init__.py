"""The attacker / defender game: image bank, decode memo, observations, Gymnasium envs."""

from ppd.game.bank import ImageBank
from ppd.game.env import Arena, GameConfig, PromptGame, apply_attack
from ppd.game.memo import DecodeMemo, Outcome
from ppd.game.objects import ObjectConfig, ObjectSource
from ppd.game.observation import CONTEXT_FEATURES, N_CONTEXT, N_SLOT_FEATURES, SLOT_FEATURES
from ppd.game.vector import VecGame, VecStep

__all__ = [
    "CONTEXT_FEATURES", "N_CONTEXT", "N_SLOT_FEATURES", "SLOT_FEATURES", "Arena", "DecodeMemo", "GameConfig",
    "ImageBank", "ObjectConfig", "ObjectSource", "Outcome", "PromptGame", "VecGame", "VecStep", "apply_attack",
]
