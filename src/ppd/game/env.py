"""The attacker / defender game of PAPER.md as Gymnasium environments.

One :class:`Arena` (images, decode memo, configuration) is shared by any number
of :class:`PromptGame` environments, one per role or per parallel game.

* **Attacker** (``role="attacker"``): starts from the ideal prompts of one object
  (all active) beside its pool of harmful candidates (all inactive, see
  :mod:`ppd.prompts`); each step activates one candidate (a mislabel candidate
  replaces its original). Reward = -(Dice change).
* **Defender** (``role="defender"``): starts from a prompt set (given in
  ``reset(options={"prompts": ...})``, else ideal + a random attack); each step
  deactivates one active prompt, or takes the optional "stop" action (the last
  one). Reward = Dice change.

Either role may know a one-shot reference, another image of the bank with its
whole mask (``reset(options={"reference": j})``, ``None`` for none; drawn per
episode by ``GameConfig.ref_prob`` when not given), which adds what it says
about each prompt to the observation (:mod:`ppd.game.observation`).

After every action SAM's fast path is re-run on the active prompts (or read from
the memo) and Dice is computed at low resolution against the object's area
fractions. Observations are fixed-shape (see :mod:`ppd.game.observation`):
row ``j`` of ``obs["slots"]`` is the prompt that action ``j`` acts on (the
attacker's rows are its pool candidates first, then the ideal prompts it cannot
act on). ``info["action_mask"]`` marks the valid actions; a masked action is a
no-op that uses up a step (``info["invalid_action"]``), or raises with
``strict=True``. The horizon T is drawn per episode from the role's range and,
being part of the observation (``t_frac``, ``steps_left``), ends the episode as
a termination, not a truncation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ppd.game.bank import ImageBank
from ppd.game.memo import DecodeMemo, Outcome
from ppd.game.objects import WHOLE, ObjectConfig
from ppd.game.observation import N_CONTEXT, N_SLOT_FEATURES, Episode, State, decode_columns, geometry
from ppd.graph import Reference, decode_summary
from ppd.prompts import IdealConfig, PoolConfig, PromptSet, attack_pool, ideal_prompts

ROLES = ("attacker", "defender")


@dataclass
class GameConfig:
    graph_grid: int = 32  # graph nodes: 32x32 pooled patches (see docs/GAME.md for the measurement)
    knn: int = 8
    ideal: IdealConfig = field(default_factory=IdealConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    objects: ObjectConfig = field(default_factory=ObjectConfig)
    max_ideal: int = 20  # ideal rows in the attacker's observation (>= n_pos max + n_neg max)
    defender_slots: int = 64  # prompt rows in the defender's observation
    attack_steps: tuple[int, int] = (2, 15)  # attacker horizon T, inclusive
    defend_steps: tuple[int, int] = (2, 15)  # defender horizon T, inclusive
    # The optional "stop" action. Off by default: Q(stop) is 0 by definition (no further
    # reward), so "stop when the best removal has Q <= 0" (ppd.refine) is the same rule,
    # and in training an explored stop cut most defender episodes short (11 of 12 in a
    # smoke run) before any removal was learned.
    defender_stop: bool = False
    dataset_weights: dict[str, float] = field(
        default_factory=lambda: {"ecssd": 0.6, "dsb2018": 0.25, "isbi2012": 0.15})
    layout_seed: int = 0  # ideal prompts and pools are fixed per (image, object) for this seed
    defender_repeats: int = 3  # defender episodes played from each attacked set (training schedule)
    # Beyond the paper: the share of episodes that know a one-shot reference (another image of
    # the target's dataset, its whole mask; see ppd.graph.Reference). The rest see none, so
    # an agent also works on prompt sets that come with no reference.
    ref_prob: float = 0.8
    pair_obs: bool = False  # add obs["pairs"] (slot x slot node cosines) for message-passing Q-networks
    # the game's decoder (Segmenter precision): bf16 keeps Dice within ~0.003 of fp32 and is 1.5x
    # faster where the CPU has native bf16, 80x slower where it has not; "auto" measures which
    precision: str = "auto"
    memo_capacity: int = 200_000

    @property
    def pool_size(self) -> int:
        return self.pool.size(self.max_ideal)

    @property
    def max_steps(self) -> int:
        return max(self.attack_steps[1], self.defend_steps[1])


def _pad(prompts: PromptSet, rows: int) -> tuple[PromptSet, np.ndarray]:
    n = len(prompts)
    if n > rows:
        raise ValueError(f"{n} prompts do not fit in {rows} rows")
    valid = np.r_[np.ones(n, bool), np.zeros(rows - n, bool)]
    pad = PromptSet(np.zeros((rows - n, 2)), np.zeros(rows - n), np.zeros(rows - n, bool))
    return prompts.concat(pad), valid


class Arena:
    """Shared state of all games: the image bank, the decode memo and the configuration."""

    def __init__(self, bank: ImageBank, cfg: GameConfig = GameConfig()) -> None:
        self.bank = bank
        self.cfg = cfg
        self.memo = DecodeMemo(cfg.memo_capacity)
        self._layouts: dict[tuple[int, int], tuple[PromptSet, np.ndarray]] = {}
        self._refs: dict[int, Reference] = {}
        by_ds: dict[str, list[int]] = {}
        for i, s in enumerate(bank.samples):
            by_ds.setdefault(s.dataset, []).append(i)
        self.by_dataset = by_ds
        w = np.array([cfg.dataset_weights.get(d, 0.0) for d in by_ds], float)
        if w.sum() <= 0:  # none of the weighted datasets: uniform over datasets
            w = np.ones(len(by_ds))
        self._ds_names = list(by_ds)
        self._ds_p = w / w.sum()

    # ------------------------------------------------------------------ references
    def reference(self, j: int) -> Reference:
        """Image ``j``'s whole mask as a one-shot reference (cached; its node features are the graph's)."""
        ref = self._refs.get(j)
        if ref is None:
            ref = self._refs[j] = Reference.from_mask(self.bank.graphs[j], self.bank.objects(j).mask(WHOLE))
        return ref

    def sample_reference(self, i: int, rng: np.random.Generator) -> int | None:
        """Another image of image ``i``'s dataset with probability ``ref_prob``, else None."""
        others = [j for j in self.by_dataset[self.bank.samples[i].dataset] if j != i]
        if not others or rng.random() >= self.cfg.ref_prob:
            return None
        return int(rng.choice(others))

    # ------------------------------------------------------------------ targets
    def sample_target(self, rng: np.random.Generator) -> tuple[int, int]:
        """(image, object) drawn by dataset weight, then uniformly."""
        for _ in range(100):
            ds = self._ds_names[rng.choice(len(self._ds_names), p=self._ds_p)]
            i = int(rng.choice(self.by_dataset[ds]))
            n = len(self.bank.objects(i))
            if n:
                return i, int(rng.integers(n))
        raise RuntimeError("no image in the bank has a usable object")

    def attack_layout(self, i: int, k: int) -> tuple[PromptSet, np.ndarray, int]:
        """Rows [pool (padded to pool_size)] + [ideal (padded to max_ideal)], fixed per (i, k).

        Returns the layout (ideal active, pool inactive), its valid rows and the
        number of real ideal prompts.
        """
        key = (i, k)
        if key not in self._layouts:
            cfg = self.cfg
            seed = int.from_bytes(hashlib.sha256(f"{cfg.layout_seed}|{self.bank.images[i].image_sha256}|{k}".encode())
                                  .digest()[:8], "little")
            rng = np.random.default_rng(seed)
            mask = self.bank.objects(i).mask(k)
            ideal = ideal_prompts(mask, rng, cfg.ideal)
            g = self.bank.graphs[i]
            pool = attack_pool(mask, ideal, rng, cfg.pool, g.feats, g.centers)
            pool_real = len(pool)
            # twins point at ideal rows, which follow the padded pool
            pool.twin = np.where(pool.twin >= 0, pool.twin + cfg.pool_size, -1).astype(np.int32)
            pool_p, pool_v = _pad(pool, cfg.pool_size)
            ideal_p, ideal_v = _pad(ideal, cfg.max_ideal)
            layout = PromptSet(np.concatenate([pool_p.points, ideal_p.points]),
                               np.concatenate([pool_p.labels, ideal_p.labels]),
                               np.concatenate([pool_p.active, ideal_p.active]),
                               np.concatenate([pool_p.kind, ideal_p.kind]),
                               np.concatenate([pool_p.twin, np.full(cfg.max_ideal, -1, np.int32)]))
            valid = np.concatenate([pool_v, ideal_v])
            assert pool_real <= cfg.pool_size
            self._layouts[key] = (layout, valid, len(ideal))
        layout, valid, n_ideal = self._layouts[key]
        return layout.copy(), valid.copy(), n_ideal

    # ------------------------------------------------------------------ scoring
    def outcome(self, i: int, k: int | None, prompts: PromptSet, valid: np.ndarray) -> tuple[Outcome, bool]:
        """SAM's answer to the active prompts (memoised) and whether it was a memo hit."""
        act = prompts.active & valid
        pts, labs = prompts.points[act], prompts.labels[act]
        trip = np.column_stack([pts, labs.astype(np.float32)])
        trip = trip[np.lexsort(trip.T[::-1])] if len(trip) else trip
        key = (i, "no-gt" if k is None else k, trip.tobytes())
        wanted = [(float(x), float(y)) for x, y in prompts.points[valid]]
        out = self.memo.get(key)
        if out is not None and all(p in out.logit_at for p in wanted):
            return out, True
        im = self.bank.images[i]
        g = self.bank.graphs[i]
        if len(pts) == 0:  # no prompt: SAM is not asked, the mask is empty
            logits = None
            iou = 0.0
            mask = np.zeros((256, 256), bool)
        else:  # decode in the canonical order too, so a state's answer never depends on its history
            logits, iou = self.bank.decode(i, trip[:, :2], trip[:, 2].astype(np.int64))
            mask = (logits > 0).numpy()
        if k is None:
            dice = float("nan")
        else:
            gt = self.bank.soft_gt(i, k)
            den = mask.sum() + gt.sum()
            dice = float(2.0 * gt[mask].sum() / den) if den > 0 else 1.0
        node_frac, fresh = decode_summary(logits, mask, g, im.lowres_scale, wanted)
        logit_at = (dict(out.logit_at) if out is not None else {}) | fresh
        res = Outcome(dice=dice, iou=float(iou), node_frac=node_frac, logit_at=logit_at)
        self.memo.put(key, res)
        return res, False


class PromptGame(gym.Env):
    """One game (attacker or defender) over an :class:`Arena`."""

    metadata = {"render_modes": []}

    def __init__(self, arena: Arena, role: str = "defender", seed: int | None = None, strict: bool = False) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.arena = arena
        self.role = role
        self.strict = strict
        cfg = arena.cfg
        self.rows = cfg.pool_size + cfg.max_ideal if role == "attacker" else cfg.defender_slots
        if role == "attacker":
            self.action_space = spaces.Discrete(cfg.pool_size)
        else:
            self.action_space = spaces.Discrete(cfg.defender_slots + (1 if cfg.defender_stop else 0))
        obs_spaces = {
            "slots": spaces.Box(-1.0, 1.0, (self.rows, N_SLOT_FEATURES), np.float32),
            "context": spaces.Box(-1.0, 1.0, (N_CONTEXT,), np.float32),
        }
        if cfg.pair_obs:
            obs_spaces["pairs"] = spaces.Box(-1.0, 1.0, (self.rows, self.rows), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        self._np_random, _ = gym.utils.seeding.np_random(seed)
        self.prompts: PromptSet | None = None

    # ----------------------------------------------------------------- helpers
    @property
    def stop_action(self) -> int | None:
        return self.arena.cfg.defender_slots if self.role == "defender" and self.arena.cfg.defender_stop else None

    def action_mask(self) -> np.ndarray:
        p, v = self.prompts, self.valid
        if self.role == "attacker":
            return attack_mask(p, v, self.arena.cfg.pool_size)
        m = np.zeros(self.action_space.n, bool)
        m[: self.rows] = v & p.active
        if self.stop_action is not None:
            m[self.stop_action] = True
        return m

    def _obs(self) -> dict[str, np.ndarray]:
        o = self.outcome
        logits = np.array([o.logit_at[(float(x), float(y))] if ok else 0.0
                           for (x, y), ok in zip(self.prompts.points, self.valid, strict=True)], np.float32)
        decode, inside, area = decode_columns(self.graph, self.episode.geo, logits, o.node_frac)
        self.state = State(self.episode, self.t, self.prompts.active.copy(), decode, inside, o.iou, area)
        return self.state.observe(self.rows, pairs=self.arena.cfg.pair_obs)

    def snapshot(self) -> State:
        """The current state, compactly (what a replay buffer stores; its observation is the last one
        returned). Not part of the observation: Gymnasium spaces cannot hold it."""
        return self.state

    def _info(self) -> dict:
        # (whether the decode was a memo hit is not reported here: info must not depend on
        # history for Gymnasium's determinism check; see Arena.memo for hit counts)
        return {"action_mask": self.action_mask(), "dice": self.outcome.dice, "iou": self.outcome.iou,
                "n_active": int((self.prompts.active & self.valid).sum()),
                "image": self.image, "object": self.object, "t": self.t}

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        opts = options or {}
        cfg = self.arena.cfg
        rng = self.np_random
        if "image" in opts:
            self.image, self.object = int(opts["image"]), opts.get("object", 0)
        else:
            self.image, self.object = self.arena.sample_target(rng)
        if self.role == "attacker":
            self.prompts, self.valid, _ = self.arena.attack_layout(self.image, self.object)
            lo, hi = cfg.attack_steps
        else:
            start = opts.get("prompts")
            if start is None:
                start = self._random_attack(rng)
            start = start.subset(np.nonzero(start.active)[0]) if start.active.any() else start.subset([])
            self.prompts, self.valid = _pad(start, self.rows)
            lo, hi = cfg.defend_steps
        self.horizon = int(opts.get("horizon", rng.integers(lo, hi + 1)))
        self.reference = (opts["reference"] if "reference" in opts
                          else self.arena.sample_reference(self.image, rng))
        self.t = 0
        self.graph = self.arena.bank.graphs[self.image]
        ref = None if self.reference is None else self.arena.reference(int(self.reference))
        self.episode = Episode(self.image, self.graph.feats, geometry(self.graph, self.prompts, ref),
                               self.prompts.labels.copy(), self.valid.copy(), self.horizon, cfg.max_steps)
        self.outcome, _ = self.arena.outcome(self.image, self.object, self.prompts, self.valid)
        self.start_dice = self.outcome.dice
        return self._obs(), self._info()

    def _random_attack(self, rng: np.random.Generator) -> PromptSet:
        """Ideal prompts of the current object after T random attacker moves."""
        layout, valid, _ = self.arena.attack_layout(self.image, self.object)
        lo, hi = self.arena.cfg.attack_steps
        n = self.arena.cfg.pool_size
        for _ in range(int(rng.integers(lo, hi + 1))):
            ok = attack_mask(layout, valid, n)
            if not ok.any():
                break
            a = int(rng.choice(np.nonzero(ok)[0]))
            apply_attack(layout, a)
        return layout.subset(np.nonzero(layout.active & valid)[0])

    def step(self, action):
        a = int(action)
        mask = self.action_mask()
        if not (0 <= a < len(mask)) or not mask[a]:
            if self.strict:
                raise ValueError(f"action {a} is not valid now (see info['action_mask'])")
            # a masked action is a no-op that still uses up a step (so generic Gymnasium
            # tools that ignore masks terminate); agents never take it
            self.t += 1
            info = self._info()
            info["invalid_action"] = True
            return self._obs(), 0.0, bool(self.t >= self.horizon), False, info
        prev = self.outcome.dice
        if self.role == "defender" and a == self.stop_action:
            self.t += 1
            return self._obs(), 0.0, True, False, self._info()
        if self.role == "attacker":
            apply_attack(self.prompts, a)
        else:
            self.prompts.active[a] = False
        self.t += 1
        self.outcome, _ = self.arena.outcome(self.image, self.object, self.prompts, self.valid)
        delta = self.outcome.dice - prev
        reward = float(-delta if self.role == "attacker" else delta)
        if np.isnan(reward):
            reward = 0.0
        real = self.action_mask()
        if self.stop_action is not None:
            real = real.copy()
            real[self.stop_action] = False
        terminated = self.t >= self.horizon or not real.any()
        return self._obs(), reward, bool(terminated), False, self._info()


def attack_mask(prompts: PromptSet, valid: np.ndarray, n: int) -> np.ndarray:
    """Valid attacker moves among the first ``n`` (pool) rows: inactive candidates, and a
    mislabel candidate only while the prompt it copies is still active."""
    ok = valid[:n] & ~prompts.active[:n]
    tw = prompts.twin[:n]
    return ok & ((tw < 0) | prompts.active[np.maximum(tw, 0)])


def apply_attack(prompts: PromptSet, slot: int) -> None:
    """Activate candidate ``slot``; a mislabel candidate deactivates the prompt it copies."""
    prompts.active[slot] = True
    if prompts.twin[slot] >= 0:
        prompts.active[prompts.twin[slot]] = False
