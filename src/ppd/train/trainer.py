"""The adversarial training loop (:class:`Trainer`): rounds of attacker and defender episodes played in
lockstep, learning as transitions arrive, checkpointed atomically for ``--resume``; see the package doc."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file as load_pt
from safetensors.torch import save_file as save_pt

from ppd.agents.dqn import DQNAgent, init_path, linear_epsilon
from ppd.agents.training_state import load_training_state, save_training_state
from ppd.errors import CheckpointError
from ppd.game import Arena, ImageBank, PromptGame
from ppd.io import atomic_write
from ppd.train.config import LOG_FIELDS, TrainConfig
from ppd.viz import plot_curves


def _mean_finite(xs: list[float]) -> float:
    xs = [x for x in xs if np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


class Trainer:
    def __init__(self, cfg: TrainConfig, samples, out: str | os.PathLike | None, segmenter=None,
                 progress: bool = True, command: str | None = None, start: dict[str, DQNAgent] | None = None,
                 frames: list | None = None) -> None:
        """``out`` None: nothing is written (test-time adaptation keeps the agents in memory). ``start``: the
        agents to fine-tune from, by role, in memory (else ``cfg.init``'s files, if set). ``frames``: the
        samples' frames, when the caller made them (else embedded here, through the embedding cache)."""
        from ppd.sam import Segmenter

        self.cfg, self.out, self.progress = cfg, None if out is None else Path(out), progress
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.command = command or " ".join(sys.argv)
        seg = segmenter or Segmenter(precision=cfg.game.precision)
        if "mp" in (cfg.attacker.arch, cfg.defender.arch) and not cfg.game.pair_obs:
            # message passing reads the slot x slot cosines (a new config: the caller's is not touched)
            cfg = self.cfg = replace(cfg, game=replace(cfg.game, pair_obs=True))
        g = cfg.game
        self.bank = ImageBank(seg, samples, graph_grid=g.graph_grid, knn=g.knn, objects=g.objects, progress=progress,
                              frames=frames)
        self.arena = Arena(self.bank, g)
        b = cfg.n_games
        self.att_envs = [PromptGame(self.arena, "attacker", seed=cfg.seed * 1000 + j, strict=True) for j in range(b)]
        self.def_envs = [PromptGame(self.arena, "defender", seed=cfg.seed * 1000 + 500 + j, strict=True)
                         for j in range(b)]
        self.attacker = DQNAgent.for_env(self.att_envs[0], cfg.attacker, seed=cfg.seed)
        self.defender = DQNAgent.for_env(self.def_envs[0], cfg.defender, seed=cfg.seed + 1)
        self.inherited: dict[str, dict] = {}  # inference settings of the agents fine-tuned from (kept on save)
        if cfg.init is not None or start is not None:
            for agent in (self.attacker, self.defender):
                first = start[agent.role] if start is not None else DQNAgent.load(init_path(cfg.init, agent.role),
                                                                                  expect_role=agent.role)
                agent.start_from(first)
                if (getattr(first, "meta", None) or {}).get("inference"):
                    self.inherited[agent.role] = first.meta["inference"]
        self.round = self.env_steps = self.decodes = 0
        self.seconds = 0.0
        self.rng = np.random.default_rng(cfg.seed + 99)
        self.fm_starts = fm_start_sets(self.bank, cfg, progress) if cfg.fm_fraction > 0 else []

    # ------------------------------------------------------------------ playing
    @property
    def progress_fraction(self) -> float:
        """How far the run is: decodes over budget or minutes over the cap, whichever is further."""
        c = self.cfg
        return max(self.decodes / c.decode_budget, self.seconds / (60 * c.max_minutes))

    @property
    def epsilon(self) -> float:
        c = self.cfg
        return linear_epsilon(int(1e6 * self.progress_fraction), int(1e6), c.eps_start, c.eps_end, c.eps_fraction)

    def _play(self, envs: list[PromptGame], agent: DQNAgent, options: list[dict | None]) -> dict:
        """Play one episode in every env in lockstep; learn as transitions arrive."""
        obs, masks, states = [], [], []
        for env, opt in zip(envs, options, strict=True):
            o, info = env.reset(options=opt)
            obs.append(o)
            masks.append(info["action_mask"])
            states.append(env.snapshot())
        start = [env.outcome.dice for env in envs]
        live = list(range(len(envs)))
        returns = np.zeros(len(envs))
        losses, upd_s, stops = [], 0.0, 0
        while live:
            eps = self.epsilon
            acts = agent.act(np.stack([obs[j]["slots"] for j in live]), np.stack([obs[j]["context"] for j in live]),
                             np.stack([masks[j] for j in live]), eps,
                             np.stack([obs[j]["pairs"] for j in live]) if agent.needs_pairs else None)
            still = []
            for j, a in zip(live, acts, strict=True):
                d0 = self.bank.decodes
                o2, r, done, _, info = envs[j].step(int(a))
                self.decodes += self.bank.decodes - d0
                self.env_steps += 1
                stops += int(envs[j].stop_action is not None and a == envs[j].stop_action)
                nmask = np.zeros_like(info["action_mask"]) if done else info["action_mask"]
                s2 = envs[j].snapshot()
                agent.buffer.add(states[j], int(a), r, s2, nmask, done)
                returns[j] += r
                obs[j], masks[j], states[j] = o2, info["action_mask"], s2
                if not done:
                    still.append(j)
            live = still
            self.seconds = time.perf_counter() - self._t_start
            if agent.ready():
                t0 = time.perf_counter()
                losses += [agent.update() for _ in range(self.cfg.updates_per_step)]
                upd_s += time.perf_counter() - t0
        return {"start": float(np.mean(start)), "end": float(np.mean([e.outcome.dice for e in envs])),
                "return": float(returns.mean()), "loss": float(np.mean(losses)) if losses else float("nan"),
                "update_s": upd_s, "updates": len(losses), "stops": stops}

    def _fm_start(self) -> dict:
        """A one-shot start set; its reference is shown with probability ``GameConfig.ref_prob``."""
        start = self.fm_starts[self.rng.integers(len(self.fm_starts))]
        return start if self.rng.random() < self.cfg.game.ref_prob else {**start, "reference": None}

    def play_round(self) -> dict:
        a = self._play(self.att_envs, self.attacker, [None] * len(self.att_envs))
        attacked = [{"image": e.image, "object": e.object,
                     "prompts": e.prompts.subset(np.nonzero(e.prompts.active & e.valid)[0])} for e in self.att_envs]
        defs = []
        for _ in range(self.cfg.game.defender_repeats):
            starts = [self._fm_start() if self.fm_starts and self.rng.random() < self.cfg.fm_fraction
                      else {**att, "reference": None} if self.cfg.attacked_no_reference else att
                      for att in attacked]
            defs.append(self._play(self.def_envs, self.defender, starts))
        upd = a["update_s"] + sum(d["update_s"] for d in defs)
        n_upd = a["updates"] + sum(d["updates"] for d in defs)
        return {"dice_ideal": a["start"], "dice_attacked": a["end"],
                "dice_defended": float(np.mean([d["end"] for d in defs])), "attacker_return": a["return"],
                "defender_return": float(np.mean([d["return"] for d in defs])), "attacker_loss": a["loss"],
                "defender_loss": _mean_finite([d["loss"] for d in defs]),
                "update_ms": 1e3 * upd / max(n_upd, 1), "defender_stops": sum(d["stops"] for d in defs)}

    def train(self) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        persist = self.out is not None
        log_path = self.out / "log.csv" if persist else None
        new_log = not persist or not log_path.exists()
        last_ckpt = time.perf_counter()
        t_start = self._t_start = time.perf_counter() - self.seconds
        bar = tqdm(total=cfg.decode_budget, initial=self.decodes, desc="training (decodes)", unit="dec",
                   disable=not self.progress)
        with open(log_path, "a", newline="") if persist else io.StringIO() as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new_log:
                w.writeheader()
            while self.decodes < cfg.decode_budget and self.seconds < 60 * cfg.max_minutes:
                d0, t0 = self.decodes, time.perf_counter()
                row = self.play_round()
                self.round += 1
                self.seconds = time.perf_counter() - t_start
                m = self.arena.memo
                row |= {"round": self.round, "env_steps": self.env_steps, "decodes": self.decodes,
                        "seconds": round(self.seconds, 1), "epsilon": round(self.epsilon, 4),
                        "memo_hit_rate": round(m.hit_rate, 4),
                        "decodes_per_s": round((self.decodes - d0) / max(time.perf_counter() - t0, 1e-9), 2)}
                w.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items()})
                f.flush()
                bar.update(self.decodes - d0)
                bar.set_postfix(eps=f"{self.epsilon:.2f}", att=f"{row['dice_attacked']:.2f}",
                                dfd=f"{row['dice_defended']:.2f}", hit=f"{m.hit_rate:.2f}")
                if persist and time.perf_counter() - last_ckpt > 60 * cfg.checkpoint_minutes:
                    self.save_checkpoint()
                    last_ckpt = time.perf_counter()
        bar.close()
        if persist:
            self.save_checkpoint()
            self.save_agents()
            plot_curves(log_path, self.out / "curves.png")

    # ------------------------------------------------------------------ persistence
    def save_agents(self) -> None:
        meta = {"command": self.command, "rounds": self.round, "env_steps": self.env_steps, "decodes": self.decodes,
                "seconds": round(self.seconds, 1), "train_config": asdict(self.cfg),
                "images": [f"{s.dataset}/{s.id}" for s in self.bank.samples]}
        for agent in (self.attacker, self.defender):
            inherited = {"inference": self.inherited[agent.role]} if agent.role in self.inherited else {}
            agent.save(self.out / agent.role, extra=meta | inherited)

    def save_checkpoint(self) -> Path:
        """Everything --resume needs, written to a temporary folder then renamed into place."""
        final = self.out / "checkpoint"
        tmp = self.out / f".checkpoint.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, ag in (("attacker", self.attacker), ("defender", self.defender)):
            save_training_state(ag, tmp, name)
        torch_rng = torch.get_rng_state()
        save_pt({"torch_rng": torch_rng}, str(tmp / "rng.safetensors"))
        state = {"round": self.round, "env_steps": self.env_steps, "decodes": self.decodes, "seconds": self.seconds,
                 "config": asdict(self.cfg), "command": self.command,
                 "images": [im.image_sha256 for im in self.bank.images],
                 "env_rng": [e.np_random.bit_generator.state for e in self.att_envs + self.def_envs],
                 "rng": self.rng.bit_generator.state}
        (tmp / "state.json").write_text(json.dumps(state, default=int))
        old = self.out / f".checkpoint.old{os.getpid()}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self) -> bool:
        ck = self.out / "checkpoint"
        if not (ck / "state.json").is_file():
            return False
        try:
            state = json.loads((ck / "state.json").read_text())
            shas = [im.image_sha256 for im in self.bank.images]
            if state.get("images", shas) != shas:
                raise CheckpointError(f"cannot resume from {ck}: it was trained on other images (data changed?)")
            feats = {i: g.feats for i, g in enumerate(self.bank.graphs)}
            for name, ag in (("attacker", self.attacker), ("defender", self.defender)):
                load_training_state(ag, ck, name, feats)
            torch.set_rng_state(load_pt(str(ck / "rng.safetensors"))["torch_rng"])
            for e, st in zip(self.att_envs + self.def_envs, state["env_rng"], strict=True):
                e.np_random.bit_generator.state = st
            self.rng.bit_generator.state = state["rng"]
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot resume from {ck}: {type(e).__name__}: {e}") from None
        self.round, self.env_steps = state["round"], state["env_steps"]
        self.decodes, self.seconds = state["decodes"], state["seconds"]
        self._truncate_log()
        return True

    def _truncate_log(self) -> None:
        """Drop log rows written after the checkpoint (they are replayed)."""
        p = self.out / "log.csv"
        if not p.is_file():
            return
        with open(p, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["round"]) <= self.round]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as g:
                w = csv.DictWriter(g, fieldnames=LOG_FIELDS)
                w.writeheader()
                w.writerows(rows)

        atomic_write(p, write)


def fm_start_sets(bank: ImageBank, cfg: TrainConfig, progress: bool = True) -> list[dict]:
    """One-shot defender start sets: for each image, ``fm_refs_per_image`` other images of its
    dataset as references, feature matching, k-means thinning; the target is the whole mask."""
    from tqdm.auto import tqdm

    from ppd.game.objects import WHOLE
    from ppd.oneshot import OneShotReference, patch_fractions, propose
    from ppd.prompts import PromptSet

    rng = np.random.default_rng(cfg.seed + 7)
    by_ds: dict[str, list[int]] = {}
    for i, s in enumerate(bank.samples):
        by_ds.setdefault(s.dataset, []).append(i)
    starts = []
    for i in tqdm(range(len(bank)), desc="one-shot start sets", disable=not progress):
        others = [j for j in by_ds[bank.samples[i].dataset] if j != i]
        feats = bank.images[i].features() if others else None  # matched against every reference below
        for r in rng.choice(others, min(cfg.fm_refs_per_image, len(others)), replace=False) if others else []:
            r = int(r)
            fr, mask = bank.images[r], bank.objects(r).mask(WHOLE)
            ref = OneShotReference(fr, mask, patch_fractions(mask, fr.input_size))
            prop = propose(ref, bank.images[i], cfg.fm_k, cfg.fm_cycle, seed=r, target_features=feats)
            if (prop.candidates.labels == 1).sum() == 0:
                continue
            starts.append({"image": i, "object": WHOLE, "reference": r,
                           "prompts": PromptSet.from_points(prop.points, prop.labels)})
    return starts
