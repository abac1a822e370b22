"""Adversarial training of the attacker and the defender (PAPER.md, "Two agents, one game").

One *round* plays ``n_games`` games in lockstep, each on an object drawn from the
training images:

1. the attacker degrades the object's ideal prompts for T steps (epsilon-greedy);
2. the defender starts from each attacked set and repairs it,
   ``GameConfig.defender_repeats`` times;

both agents learn from their own transitions as they are made (``updates_per_step``
gradient steps per batched step once their buffer is warm). Epsilon decays
linearly from 1.0 to 0.1 over ``eps_fraction`` of the run, the run's length being
budgeted in SAM decodes (``decode_budget``, the cost that dominates) and capped in
wall-clock minutes (progress is whichever of the two is further).

Outputs in ``--out``: ``log.csv`` (one row per round), ``curves.png``,
``attacker.{safetensors,json}`` / ``defender.{safetensors,json}`` (the agents), and
``checkpoint/`` (everything ``--resume`` needs: both agents' online and target
weights, Adam states, replay buffers, counters and RNG states), written every
``checkpoint_minutes`` atomically (a temporary folder renamed into place).
Resuming continues from the last checkpoint's round, step and buffers; what
happened after it (at most one interval) is replayed with new randomness.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ppd import data
from ppd.agents.dqn import DQNAgent, init_path
from ppd.errors import CheckpointError, DataError
from ppd.game import GameConfig
from ppd.train.config import LOG_FIELDS, TrainConfig, config_from_dict
from ppd.train.trainer import Trainer, fm_start_sets

__all__ = ["LOG_FIELDS", "GameConfig", "TrainConfig", "Trainer", "config_from_dict", "fm_start_sets", "run"]


def run(data_root, split: str, out: str, resume: bool = False, cfg: TrainConfig | None = None,
        exclude: set[str] | None = None, progress: bool = True, segmenter=None,
        limit_images: int | None = None) -> Trainer:
    """``ppd train``: embeddings first (cached), then adversarial training."""
    out_p = Path(out)
    if resume:
        st = out_p / "checkpoint" / "state.json"
        if not st.is_file():
            raise CheckpointError(f"nothing to resume in {out_p}: no checkpoint/state.json")
        cfg = config_from_dict(json.loads(st.read_text())["config"])
    elif (out_p / "log.csv").exists():
        raise CheckpointError(f"{out_p} already holds a run; use --resume or another --out")
    cfg = cfg or TrainConfig()
    if cfg.init is not None:  # readable before minutes of embedding
        for role in ("attacker", "defender"):
            DQNAgent.load(init_path(cfg.init, role), expect_role=role)
    root = Path(data_root) if data_root is not None else data.default_root()
    plain = not (root / "manifest.csv").is_file()  # a user's images/ + masks/ folder: all of it is training data
    samples = data.load_dataset(root, split=None if plain else split)
    if plain and not resume:
        cfg = replace(cfg, game=replace(cfg.game, dataset_weights={samples[0].dataset: 1.0}))
    if "*" in cfg.game.dataset_weights:  # every dataset of the split, equal weight
        cfg = replace(cfg, game=replace(cfg.game, dataset_weights=dict.fromkeys(sorted({s.dataset for s in samples}),
                                                                                1.0)))
    unknown = sorted(set(cfg.game.dataset_weights) - {s.dataset for s in samples})
    if unknown:
        raise DataError(f"no {split!r} rows of dataset(s) {', '.join(unknown)} in {data_root}")
    samples = [s for s in samples if s.dataset in cfg.game.dataset_weights and cfg.game.dataset_weights[s.dataset] > 0
               and f"{s.dataset}/{s.id}" not in (exclude or set())]
    if limit_images:
        pick = np.random.default_rng(cfg.seed).choice(len(samples), min(limit_images, len(samples)), replace=False)
        samples = [samples[i] for i in sorted(pick)]
    if not samples:
        raise CheckpointError(f"no training images in split {split!r} for {sorted(cfg.game.dataset_weights)}")
    data.check_training_pairs(samples)
    seg = segmenter() if callable(segmenter) else segmenter  # a factory: SAM loads after the checks above
    tr = Trainer(cfg, samples, out_p, segmenter=seg, progress=progress)
    if resume:
        tr.load_checkpoint()
    else:
        (out_p / "config.json").write_text(json.dumps({"command": tr.command, "config": asdict(tr.cfg)}, indent=1))
    tr.train()
    return tr
