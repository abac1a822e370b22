"""Many games over different images, stepped in one call.

SAM decodes stay sequential (batching prompt sets does not pay on this CPU); the
point is that the agent scores all games' observations in one batched Q-network
call. Gymnasium's ``SyncVectorEnv`` would do the stepping too, but its autoreset
convention hands back the *next* episode's first observation in place of the
final one and moves ``action_mask`` into nested infos; the trainer needs the
final observation and mask of every transition explicitly, so this small class
returns them as arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppd.game.env import Arena, PromptGame
from ppd.game.observation import State


@dataclass
class VecStep:
    obs: dict[str, np.ndarray]  # (B, ...) observations to act on next (after any autoreset)
    reward: np.ndarray  # (B,)
    done: np.ndarray  # (B,) the transition ended an episode
    next_obs: dict[str, np.ndarray]  # (B, ...) the observation the transition led to (pre-reset)
    next_mask: np.ndarray  # (B, A) valid actions in next_obs (all False where done)
    mask: np.ndarray  # (B, A) valid actions in obs
    infos: list[dict]  # per game, pre-reset info of the transition
    states: list[State]  # compact form of obs (PromptGame.snapshot), for a replay buffer
    next_states: list[State]  # compact form of next_obs


def _stack(obs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([o[k] for o in obs]) for k in obs[0]}


class VecGame:
    """``n`` games of one role sharing an arena, with automatic reset."""

    def __init__(self, arena: Arena, role: str, n: int, seed: int = 0) -> None:
        self.games = [PromptGame(arena, role, seed=seed + j, strict=True) for j in range(n)]
        self.role = role
        self._obs: list[dict] = []
        self._masks: list[np.ndarray] = []
        self._reset_options: list[dict | None] = [None] * n

    def __len__(self) -> int:
        return len(self.games)

    def set_reset_options(self, j: int, options: dict | None) -> None:
        """Options for game ``j``'s next automatic reset (e.g. the defender's start set)."""
        self._reset_options[j] = options

    def reset(self, options: list[dict | None] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        self._obs, self._masks = [], []
        for j, g in enumerate(self.games):
            o, info = g.reset(options=(options[j] if options else None))
            self._obs.append(o)
            self._masks.append(info["action_mask"])
        return _stack(self._obs), np.stack(self._masks)

    def states(self) -> list[State]:
        """Every game's current state, compactly (what ``obs`` shows)."""
        return [g.snapshot() for g in self.games]

    def step(self, actions) -> VecStep:
        rewards, dones, nxt, nmask, infos, nstates = [], [], [], [], [], []
        for j, (g, a) in enumerate(zip(self.games, actions, strict=True)):
            o, r, term, trunc, info = g.step(int(a))
            done = term or trunc
            rewards.append(r)
            dones.append(done)
            nxt.append(o)
            nstates.append(g.snapshot())
            infos.append(info)
            nmask.append(np.zeros_like(info["action_mask"]) if done else info["action_mask"])
            if done:
                o, info2 = g.reset(options=self._reset_options[j])
                self._reset_options[j] = None
                info["final_dice"] = info["dice"]
                self._masks[j] = info2["action_mask"]
            else:
                self._masks[j] = info["action_mask"]
            self._obs[j] = o
        return VecStep(obs=_stack(self._obs), reward=np.array(rewards, np.float32), done=np.array(dones),
                       next_obs=_stack(nxt), next_mask=np.stack(nmask), mask=np.stack(self._masks), infos=infos,
                       states=self.states(), next_states=nstates)
