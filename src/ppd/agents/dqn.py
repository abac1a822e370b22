"""Deep Q-learning for the attacker and the defender, readable top to bottom.

Why not Stable-Baselines3 / TorchRL: SB3's DQN has no invalid-action masking
(in acting or in the TD target) and expects flat Box/Discrete observations; the
game's actions are rows of a variable-size prompt set, masked per state, and two
agents learn against each other in one alternating loop. What is written here is
the standard algorithm and nothing else: an epsilon-greedy behaviour policy over
valid actions, a uniform replay buffer, a target network synced every
``target_sync`` updates, (Double) DQN targets maxed over the *valid* next
actions only, Huber loss, Adam, gradient clipping.

Replay memory (``ppd.agents.replay``) keeps compact game states and rebuilds a
batch's observations, vectorised, when it is sampled: about 1.1 KB a transition
instead of 5.5 KB of float16 observations (22 KB with message-passing pairs).

Checkpoints are safetensors (weights) + JSON (configuration); nothing is pickled.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ppd.agents.qnet import MPQNet, QNet
from ppd.agents.replay import ReplayBuffer
from ppd.errors import CheckpointError, PPDWarning
from ppd.io import atomic_write, file_sha256

FORMAT = "ppd-dqn-1"


@dataclass
class DQNConfig:
    hidden: int = 128
    lr: float = 3e-4
    gamma: float = 0.95
    batch_size: int = 128
    buffer_size: int = 50_000
    learning_starts: int = 1_000  # transitions before the first update
    target_sync: int = 250  # updates between target-network syncs
    double: bool = True
    grad_clip: float = 10.0
    arch: str = "deepsets"  # "deepsets" (QNet) or "mp" (MPQNet: message passing over the dual-space graph)


def masked_max(q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over valid actions; 0 where no action is valid."""
    m = torch.where(mask, q, torch.full_like(q, -torch.inf)).max(1).values
    return torch.where(mask.any(1), m, torch.zeros_like(m))


class DQNAgent:
    """A DQN agent for one role of the game (``learn`` / ``act`` / ``save`` / ``load``)."""

    def __init__(self, role: str, rows: int, n_actions: int, n_slot: int, n_ctx: int, stop: bool = False,
                 cfg: DQNConfig | None = None, seed: int = 0, buffer: bool = True,
                 features: tuple[list[str], list[str]] | None = None) -> None:
        """``n_slot`` / ``n_ctx``: the observation's widths; ``features``: the (slot, context) feature
        names the network reads (default: all of ``ppd.game.observation``'s, in order)."""
        from ppd.game.observation import CONTEXT_FEATURES, SLOT_FEATURES

        self.role, self.rows, self.n_actions, self.stop = role, rows, n_actions, stop
        self.n_slot, self.n_ctx = n_slot, n_ctx
        self.cfg = cfg or DQNConfig()
        slot_names, ctx_names = features or (list(SLOT_FEATURES[:n_slot]), list(CONTEXT_FEATURES[:n_ctx]))
        unknown = sorted(set(slot_names) - set(SLOT_FEATURES) | set(ctx_names) - set(CONTEXT_FEATURES))
        if unknown:
            raise CheckpointError(f"unknown observation features {unknown}; retrain the agent")
        self.features = (list(slot_names), list(ctx_names))
        cols = None
        if self.features != (list(SLOT_FEATURES[:n_slot]), list(CONTEXT_FEATURES[:n_ctx])):
            cols = ([SLOT_FEATURES.index(n) for n in slot_names], [CONTEXT_FEATURES.index(n) for n in ctx_names])
        torch.manual_seed(seed)
        row_actions = n_actions - (1 if stop else 0)
        kw = {"slot_cols": cols[0], "ctx_cols": cols[1]} if cols else {}
        if self.cfg.arch not in ("deepsets", "mp"):
            raise CheckpointError(f"unknown Q-network architecture {self.cfg.arch!r}")
        net = MPQNet if self.cfg.arch == "mp" else QNet
        self.needs_pairs = self.cfg.arch == "mp"
        self.q = net(n_slot, n_ctx, self.cfg.hidden, n_actions=row_actions if row_actions < rows else None,
                     stop=stop, **kw)
        self.q_target = net(n_slot, n_ctx, self.cfg.hidden, n_actions=self.q.n_actions, stop=stop, **kw)
        self.q_target.load_state_dict(self.q.state_dict())
        self.opt = torch.optim.Adam(self.q.parameters(), lr=self.cfg.lr)
        self.rng = np.random.default_rng(seed)
        self.buffer = (ReplayBuffer(self.cfg.buffer_size, rows, n_actions, pairs=self.needs_pairs)
                       if buffer else None)
        self.updates = 0

    @classmethod
    def for_env(cls, env, cfg: DQNConfig | None = None, seed: int = 0, buffer: bool = True) -> DQNAgent:
        rows, n_slot = env.observation_space["slots"].shape
        return cls(env.role, rows, int(env.action_space.n), n_slot, env.observation_space["context"].shape[0],
                   stop=env.stop_action is not None, cfg=cfg, seed=seed, buffer=buffer)

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def q_values(self, slots: np.ndarray, context: np.ndarray, pairs: np.ndarray | None = None) -> np.ndarray:
        """Q-values of one state (R, F), (C,) [, (R, R)] or of a batch of them."""
        s = torch.as_tensor(slots, dtype=torch.float32)
        c = torch.as_tensor(context, dtype=torch.float32)
        p = None if pairs is None or not self.needs_pairs else torch.as_tensor(pairs, dtype=torch.float32)
        if s.ndim == 2:
            return self.q(s[None], c[None], None if p is None else p[None])[0].numpy()
        return self.q(s, c, p).numpy()

    def act(self, slots: np.ndarray, context: np.ndarray, mask: np.ndarray, epsilon: float = 0.0,
            pairs: np.ndarray | None = None) -> np.ndarray:
        """Epsilon-greedy valid actions for a batch (B, R, F), (B, C), (B, A); never a masked action."""
        q = self.q_values(slots, context, pairs)
        q = np.where(mask, q, -np.inf)
        acts = q.argmax(1)
        for b in range(len(acts)):
            if not mask[b].any():
                raise ValueError("no valid action in this state")
            if self.rng.random() < epsilon:
                acts[b] = self.rng.choice(np.nonzero(mask[b])[0])
        return acts

    # ----------------------------------------------------------------- learning
    def td_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        p, np_ = batch.get("pairs"), batch.get("next_pairs")
        q = self.q(batch["slots"], batch["ctx"], p).gather(1, batch["action"][:, None])[:, 0]
        with torch.no_grad():
            mask = batch["next_mask"]
            if self.cfg.double:
                online = self.q(batch["next_slots"], batch["next_ctx"], np_)
                best = torch.where(mask, online, torch.full_like(online, -torch.inf)).argmax(1, keepdim=True)
                nq = self.q_target(batch["next_slots"], batch["next_ctx"], np_).gather(1, best)[:, 0]
                nq = torch.where(mask.any(1), nq, torch.zeros_like(nq))
            else:
                nq = masked_max(self.q_target(batch["next_slots"], batch["next_ctx"], np_), mask)
            target = batch["reward"] + self.cfg.gamma * (~batch["done"]).float() * nq
        return F.smooth_l1_loss(q, target)

    def update(self, batch: dict[str, torch.Tensor] | None = None) -> float:
        """One gradient step on a replay batch; syncs the target network every ``target_sync`` steps."""
        if batch is None:
            batch = self.buffer.sample(self.cfg.batch_size, self.rng)
        loss = self.td_loss(batch)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.q.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.updates += 1
        if self.updates % self.cfg.target_sync == 0:
            self.sync_target()
        return loss.item()

    def sync_target(self) -> None:
        self.q_target.load_state_dict(self.q.state_dict())

    def start_from(self, other: DQNAgent) -> None:
        """Fine-tuning: copy ``other``'s network (same role, rows, columns and architecture) into this
        agent's online and target networks; the optimiser and replay buffer start fresh."""
        mine = (self.role, self.rows, self.n_actions, self.features, self.cfg.arch, self.cfg.hidden)
        theirs = (other.role, other.rows, other.n_actions, other.features, other.cfg.arch, other.cfg.hidden)
        if mine != theirs:
            diff = [n for n, a, b in zip(("role", "rows", "actions", "features", "arch", "hidden"), mine, theirs,
                                         strict=True) if a != b]
            raise CheckpointError(f"cannot start from that {other.role}: its {', '.join(diff)} differ from this run's")
        self.q.load_state_dict(other.q.state_dict())
        self.sync_target()

    def ready(self) -> bool:
        return self.buffer is not None and self.buffer.size >= max(self.cfg.learning_starts, self.cfg.batch_size)

    # ----------------------------------------------------------------- persistence
    def config_dict(self) -> dict:
        return {"format": FORMAT, "role": self.role, "rows": self.rows, "n_actions": self.n_actions,
                "stop": self.stop, "n_slot": self.n_slot, "n_ctx": self.n_ctx, "dqn": asdict(self.cfg),
                "slot_features": self.features[0], "context_features": self.features[1],
                "updates": self.updates}

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Weights to ``PATH.safetensors`` and configuration to ``PATH.json`` (both atomic)."""
        path = Path(path).with_suffix("")
        weights = {k: v.detach().contiguous() for k, v in self.q.state_dict().items()}
        atomic_write(path.with_suffix(".safetensors"), lambda t: save_file(weights, str(t)))
        cfg = self.config_dict() | {"extra": extra or {},
                                    "weights_sha256": file_sha256(path.with_suffix(".safetensors"))}
        atomic_write(path.with_suffix(".json"), lambda t: t.write_text(json.dumps(cfg, indent=1) + "\n"))
        return path.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | os.PathLike, expect_role: str | None = None) -> DQNAgent:
        """An agent from ``PATH.safetensors`` + ``PATH.json`` (no replay buffer)."""
        path = Path(path).with_suffix("")
        wpath, cpath = path.with_suffix(".safetensors"), path.with_suffix(".json")
        if not wpath.is_file() or not cpath.is_file():
            raise CheckpointError(f"agent checkpoint needs {wpath} and {cpath}")
        try:
            cfg = json.loads(cpath.read_text())
        except Exception as e:
            raise CheckpointError(f"cannot read agent checkpoint {path}: {type(e).__name__}: {e}") from None
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            fmt = cfg.get("format") if isinstance(cfg, dict) else None
            raise CheckpointError(f"{cpath} is not a ppd agent checkpoint (format {fmt!r})")
        if expect_role and cfg.get("role") != expect_role:
            raise CheckpointError(f"{path} is {_article(cfg.get('role'))} checkpoint, not {_article(expect_role)}")
        expected = cfg.get("weights_sha256")
        if expected is None:
            warnings.warn(f"agent checkpoint {path} has no integrity hash (saved before ppd recorded one); "
                          f"loading it unchecked", PPDWarning, stacklevel=2)
        elif file_sha256(wpath) != expected:
            raise CheckpointError(f"agent weights {wpath} do not match the sha256 recorded in {cpath.name} "
                                  f"(tampered, truncated or mixed up with another checkpoint)")
        try:
            weights = load_file(str(wpath))
        except Exception as e:
            raise CheckpointError(f"cannot read agent checkpoint {path}: {type(e).__name__}: {e}") from None
        from ppd.game.observation import N_CONTEXT, N_SLOT_FEATURES

        try:  # the network reads the columns it was trained on out of today's observation
            agent = cls(cfg["role"], cfg["rows"], cfg["n_actions"], N_SLOT_FEATURES, N_CONTEXT, stop=cfg["stop"],
                        cfg=DQNConfig(**cfg["dqn"]), buffer=False,
                        features=(cfg["slot_features"], cfg["context_features"]))
            agent.q.load_state_dict(weights, strict=True)
        except (RuntimeError, TypeError, KeyError) as e:
            raise CheckpointError(f"{path} does not fit its configuration: {str(e).splitlines()[0]}") from None
        agent.sync_target()
        agent.updates = int(cfg.get("updates", 0))
        agent.meta = cfg.get("extra", {})
        return agent


def shipped_agent_path(role: str = "defender") -> Path:
    """Path (without suffix) of the agent shipped in ``ppd/assets``."""
    from importlib import resources

    with resources.as_file(resources.files("ppd") / "assets" / f"{role}.safetensors") as p:
        return Path(p).with_suffix("")


def init_path(spec: str | os.PathLike, role: str) -> Path:
    """``--init``: "shipped" -> the shipped agent of ``role``; a run folder -> its ``ROLE.*``."""
    if str(spec) == "shipped":
        return shipped_agent_path(role)
    folder = Path(spec)
    if not folder.is_dir():
        raise CheckpointError(f"--init {spec}: give 'shipped' or a run folder holding attacker.* and defender.*")
    return folder / role


def _article(word) -> str:
    return f"{'an' if str(word)[:1] in 'aeiou' else 'a'} {word}"


def linear_epsilon(step: int, total: int, start: float, end: float, fraction: float) -> float:
    span = max(1.0, fraction * total)
    return float(end + (start - end) * max(0.0, 1.0 - step / span))
