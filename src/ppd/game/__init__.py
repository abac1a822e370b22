"""The attacker / defender game: image bank, decode memo, observations, Gymnasium envs.

Names are imported on first use, so that inference code reading
``ppd.game.observation`` does not import Gymnasium (the envs' dependency).
"""

from importlib import import_module

_WHERE = {
    "ImageBank": "bank", "Arena": "env", "GameConfig": "env", "PromptGame": "env", "apply_attack": "env",
    "DecodeMemo": "memo", "Outcome": "memo", "ObjectConfig": "objects", "ObjectSource": "objects",
    "CONTEXT_FEATURES": "observation", "N_CONTEXT": "observation", "N_SLOT_FEATURES": "observation",
    "SLOT_FEATURES": "observation", "VecGame": "vector", "VecStep": "vector",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"ppd.game.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'ppd.game' has no attribute {name!r}")
