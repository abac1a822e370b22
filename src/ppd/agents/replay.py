"""Replay memory of compact game states; observations are rebuilt per batch.

A transition refers to two states, and a state is stored as what changes from
step to step (``ppd.game.observation.State``): the active flags and SAM's
inside/outside answer (bits), five float16 numbers per prompt slot from the
decode, the predicted IoU, the mask area and the step. What stays fixed through
an episode (image id, the slots' graph nodes, positions, labels, validity,
reference columns, horizon) is stored once per episode. Each state is stored
once: an episode's first state with the episode, every later one as the next
state of the transition that led to it (a transition's state is the previous
transition's next state, found by a pointer). The slot-by-slot cosines are not
stored at all: they are recomputed per batch from the image's graph features,
which the game's image bank holds anyway (the buffer keeps references, not
copies).

``sample`` rebuilds a batch of observations with the same
``ppd.game.observation.assemble`` the game uses, so a rebuilt observation equals
the one the agent saw (up to float16 rounding of the stored decode columns).
Sizes (64-slot defender, 21 slot features): 1,141 bytes a transition (47 for
the transition itself, 662 for its next state, 432 for a quarter of an episode
record), against 5,481 bytes for two float16 observations and 21,865 with the
message-passing pair matrices; a 50k buffer is 57 MB instead of 274 MB / 1.1 GB.
Rebuilding the 256 observations of a batch-128 update takes ~12-17 ms on two
cores (``ppd bench replay``, docs/bench_replay.txt).

Tables are rings. When the episode table wraps, or the transition a state
pointer names is overwritten, the transitions that need it become unusable; they
are skipped when sampling (``usable``) until overwritten in turn. With episodes
of a few steps this is rare: the episode table holds a quarter of the
transition capacity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch

from ppd.game.observation import DECODE_COLUMNS, State, assemble, pair_distances


class _States:
    """A table of compact states (the per-step part of ``State``)."""

    def __init__(self, n: int, rows: int) -> None:
        nb = (rows + 7) // 8
        self.rows = rows
        self.t = np.zeros(n, np.int16)
        self.active = np.zeros((n, nb), np.uint8)  # bit-packed
        self.inside = np.zeros((n, nb), np.uint8)
        self.decode = np.zeros((n, rows, len(DECODE_COLUMNS)), np.float16)
        self.iou = np.zeros(n, np.float16)
        self.area = np.zeros(n, np.float16)

    def put(self, i: int, s: State) -> None:
        self.t[i] = s.t
        self.active[i] = np.packbits(s.active)
        self.inside[i] = np.packbits(s.inside)
        self.decode[i] = s.decode
        self.iou[i], self.area[i] = s.iou, s.area

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        r = self.rows
        return {"t": self.t[idx], "active": np.unpackbits(self.active[idx], axis=1, count=r).astype(bool),
                "inside": np.unpackbits(self.inside[idx], axis=1, count=r).astype(bool),
                "decode": self.decode[idx], "iou": self.iou[idx], "area": self.area[idx]}


def _pick(first: dict[str, np.ndarray], second: dict[str, np.ndarray], use_first: np.ndarray) -> dict:
    out = {}
    for k, a in first.items():
        m = use_first.reshape((-1,) + (1,) * (a.ndim - 1))
        out[k] = np.where(m, a, second[k])
    return out


class ReplayBuffer:
    """Uniform replay of (state, action, reward, next state, next action mask, done)."""

    def __init__(self, capacity: int, rows: int, n_actions: int, pairs: bool = False,
                 episode_capacity: int | None = None) -> None:
        self.capacity, self.rows, self.n_actions, self.pairs = capacity, rows, n_actions, pairs
        e = self.episode_capacity = episode_capacity or max(64, capacity // 4)
        nb = (rows + 7) // 8
        # episodes: the fixed part, and the first state
        self.ep_serial = np.full(e, -1, np.int64)
        self.ep_image = np.zeros(e, np.int32)
        self.ep_nodes = np.zeros((e, rows), np.int16)
        self.ep_xy = np.zeros((e, rows, 2), np.float32)
        self.ep_scale = np.zeros((e, 2), np.float32)
        self.ep_labels = np.zeros((e, nb), np.uint8)
        self.ep_valid = np.zeros((e, nb), np.uint8)
        self.ep_ref = np.zeros((e, rows, 3), np.float16)
        self.ep_has_ref = np.zeros(e, bool)
        self.ep_horizon = np.zeros(e, np.int16)
        self.ep_max_steps = np.zeros(e, np.int16)
        self.ep_first = _States(e, rows)
        # transitions: a pointer to the state, the action's outcome, and the next state
        self.serial = np.full(capacity, -1, np.int64)
        self.episode = np.zeros(capacity, np.int32)
        self.episode_serial = np.zeros(capacity, np.int64)
        self.prev = np.full(capacity, -1, np.int32)  # transition whose next state is this one's state; -1: first
        self.prev_serial = np.zeros(capacity, np.int64)
        self.action = np.zeros(capacity, np.int16)
        self.reward = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, bool)
        self.next_mask = np.zeros((capacity, (n_actions + 7) // 8), np.uint8)
        self.next = _States(capacity, rows)
        self.size = self.pos = self.ep_pos = 0
        self.n_added = self.n_episodes = 0  # serial numbers of the next transition / episode
        self.image_feats: dict[int, torch.Tensor] = {}
        # per open episode: (its last next state, that transition's slot and serial, episode slot, serial)
        self._open: OrderedDict[int, tuple[State, int, int, int, int]] = OrderedDict()

    # ------------------------------------------------------------------ size
    def _tables(self) -> dict[str, np.ndarray]:
        """Every stored array by name (what checkpoints hold and what the memory counts)."""
        out = {k: v for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        for prefix, part in (("next", self.next), ("ep_first", self.ep_first)):
            out |= {f"{prefix}.{k}": v for k, v in vars(part).items() if isinstance(v, np.ndarray)}
        return out

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the whole capacity (graph features are the bank's, not counted)."""
        return sum(a.nbytes for a in self._tables().values())

    @property
    def bytes_per_transition(self) -> int:
        return round(self.nbytes / self.capacity)

    @staticmethod
    def observation_bytes(rows: int, n_slot: int, n_ctx: int, n_actions: int, pairs: bool = False) -> int:
        """What a transition costs when both observations are stored as float16 (for comparison)."""
        obs = rows * n_slot + n_ctx + (rows * rows if pairs else 0)
        return 2 * 2 * obs + n_actions + 8 + 4 + 1

    # ------------------------------------------------------------------ adding
    def _new_episode(self, s: State) -> tuple[int, int]:
        e = s.episode
        i, serial = self.ep_pos, self.n_episodes
        if len(e.valid) != self.rows:
            raise ValueError(f"a state of {len(e.valid)} slots does not fit a buffer of {self.rows} rows")
        self.ep_serial[i], self.ep_image[i] = serial, e.image
        self.ep_nodes[i] = e.geo.nodes
        self.ep_xy[i], self.ep_scale[i] = e.geo.xy, e.geo.scale
        self.ep_labels[i], self.ep_valid[i] = np.packbits(e.labels == 1), np.packbits(e.valid)
        self.ep_ref[i] = e.geo.ref if e.geo.ref is not None else 0.0
        self.ep_has_ref[i] = e.geo.ref is not None
        self.ep_horizon[i], self.ep_max_steps[i] = e.horizon, e.max_steps
        self.ep_first.put(i, s)
        if e.image not in self.image_feats:
            self.image_feats[e.image] = torch.from_numpy(e.graph_feats)
        self.ep_pos = (i + 1) % self.episode_capacity
        self.n_episodes += 1
        return i, serial

    def add(self, state: State, action: int, reward: float, next_state: State, next_mask: np.ndarray,
            done: bool) -> None:
        """Store a transition. ``state`` is found again when it is the ``next_state`` of the
        previous transition of its episode (the same object); otherwise it starts a new episode."""
        key = id(state.episode)
        tail = self._open.pop(key, None)
        i, serial = self.pos, self.n_added
        if tail is not None and tail[0] is state and self.serial[tail[1]] == tail[2]:
            _, prev, prev_serial, ep, ep_serial = tail
        else:
            prev, prev_serial = -1, -1
            ep, ep_serial = self._new_episode(state)
        self.serial[i], self.episode[i], self.episode_serial[i] = serial, ep, ep_serial
        self.prev[i], self.prev_serial[i] = prev, prev_serial
        self.action[i], self.reward[i], self.done[i] = action, reward, done
        self.next_mask[i] = np.packbits(np.asarray(next_mask, bool))
        self.next.put(i, next_state)
        if not done:
            self._open[key] = (next_state, i, serial, ep, ep_serial)
            while len(self._open) > 4096:  # episodes abandoned without a last transition
                self._open.popitem(last=False)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.n_added += 1

    # ------------------------------------------------------------------ sampling
    def usable(self, idx: np.ndarray) -> np.ndarray:
        """Whether the episode and the state pointer of transitions ``idx`` are still stored."""
        ok = self.ep_serial[self.episode[idx]] == self.episode_serial[idx]
        p = self.prev[idx]
        return ok & ((p < 0) | (self.serial[np.maximum(p, 0)] == self.prev_serial[idx]))

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` transition slots drawn uniformly among the usable ones."""
        idx = rng.integers(0, self.size, n)
        for _ in range(100):
            bad = ~self.usable(idx)
            if not bad.any():
                return idx
            idx[bad] = rng.integers(0, self.size, int(bad.sum()))
        raise RuntimeError("the replay buffer holds almost no usable transitions")

    def states(self, idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Episode slots, states and next states (``_States.take`` arrays) of transitions ``idx``."""
        ep, p = self.episode[idx], self.prev[idx]
        s = _pick(self.ep_first.take(ep), self.next.take(np.maximum(p, 0)), p < 0)
        return ep, s, self.next.take(idx)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``n`` transitions drawn uniformly among the usable ones, observations rebuilt."""
        return self.batch(self.draw(n, rng))

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Transitions ``idx`` as a training batch, both observations rebuilt in one call."""
        n = len(idx)
        ep, s, s2 = self.states(idx)
        obs = self.observations(np.concatenate([ep, ep]), {k: np.concatenate([s[k], s2[k]]) for k in s})
        t = torch.from_numpy
        out = {"slots": obs["slots"][:n], "ctx": obs["context"][:n], "next_slots": obs["slots"][n:],
               "next_ctx": obs["context"][n:],
               "next_mask": t(np.unpackbits(self.next_mask[idx], axis=1, count=self.n_actions).astype(bool)),
               "action": t(self.action[idx].astype(np.int64)), "reward": t(self.reward[idx]), "done": t(self.done[idx])}
        if self.pairs:
            out |= {"pairs": obs["pairs"][:n], "next_pairs": obs["pairs"][n:]}
        return out

    def observations(self, ep: np.ndarray, st: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Observations of states ``st`` (``_States.take`` arrays) of episodes ``ep``."""
        r, t = self.rows, torch.from_numpy
        uniq, inv = np.unique(ep, return_inverse=True)
        feats = torch.stack([self.image_feats[int(self.ep_image[u])][t(self.ep_nodes[u].astype(np.int64))]
                             for u in uniq])
        cos = torch.bmm(feats, feats.transpose(1, 2))  # per episode (assemble spreads them per state)
        dist = pair_distances(t(self.ep_xy[uniq]), t(self.ep_scale[uniq]))
        xy = t(self.ep_xy[ep])
        bits = lambda a: t(np.unpackbits(a[ep], axis=1, count=r).astype(bool))  # noqa: E731
        with torch.no_grad():
            return assemble(cos, dist, xy, bits(self.ep_labels).long(),
                            bits(self.ep_valid), t(st["active"]), t(st["decode"].astype(np.float32)),
                            t(st["inside"]), t(self.ep_ref[ep].astype(np.float32)), t(self.ep_has_ref[ep]),
                            t(st["iou"].astype(np.float32)), t(st["area"].astype(np.float32)),
                            t(st["t"].astype(np.float32)), t(self.ep_horizon[ep]),
                            t(self.ep_max_steps[ep].astype(np.float32)), r, self.pairs, episode_of=t(inv))

    # ------------------------------------------------------------------ checkpoints
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the buffer (no graph features: see ``load_arrays``)."""
        counters = np.array([self.size, self.pos, self.ep_pos, self.n_added, self.n_episodes], np.int64)
        return self._tables() | {"counters": counters}

    def load_arrays(self, arrays: Mapping[str, np.ndarray], image_feats: Mapping[int, np.ndarray]) -> None:
        """Restore ``state_arrays``; ``image_feats[i]`` must be the graph features of image ``i`` of
        the bank the buffer was filled from (the same images in the same order)."""
        for k, v in self._tables().items():
            if arrays[k].shape != v.shape:
                raise ValueError(f"replay table {k}: {arrays[k].shape} stored, {v.shape} expected")
            v[...] = arrays[k]
        self.size, self.pos, self.ep_pos, self.n_added, self.n_episodes = (int(x) for x in arrays["counters"])
        used = np.unique(self.ep_image[self.ep_serial >= 0])
        missing = [int(i) for i in used if int(i) not in image_feats]
        if missing:
            raise ValueError(f"graph features of images {missing[:5]} are needed to rebuild stored states")
        self.image_feats = {int(i): torch.from_numpy(image_feats[int(i)]) for i in used}
        self._open.clear()
