"""``ppd bench replay``: replay memory per transition and the time of one batch update.

Fills one replay buffer per role from real random episodes on train images
(real MobileSAM decodes), then, for each role and Q-network architecture,
measures side by side:

* bytes per transition of the compact buffer (``ppd.agents.replay``) against
  storing both observations as float16 (the previous design);
* sampling a batch: compact (observations rebuilt) against gathering stored
  float16 observations (built here from the same transitions);
* one DQN update on a sampled batch (the Q-network's forward and backward);

and reports sample + update against the time of one SAM decode measured in the
same run (the issue's budget: a batch-128 update well under one decode). Times
are medians over ``repeats`` calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ppd import data
from ppd.agents import DQNAgent, DQNConfig, ReplayBuffer
from ppd.bench.bench_game import _pick_images
from ppd.bench.bench_sam import _median_time
from ppd.game import Arena, GameConfig, ImageBank, PromptGame
from ppd.game.observation import N_CONTEXT, N_SLOT_FEATURES
from ppd.sam import Segmenter


def _fill(env: PromptGame, buf: ReplayBuffer, n: int, rng: np.random.Generator) -> None:
    while buf.size < n:
        _, info = env.reset()
        state, done = env.snapshot(), False
        while not done and buf.size < n:
            a = int(rng.choice(np.nonzero(info["action_mask"])[0]))
            _, r, done, _, info = env.step(a)
            nxt = env.snapshot()
            buf.add(state, a, r, nxt, np.zeros_like(info["action_mask"]) if done else info["action_mask"], done)
            state = nxt


def _float16_store(buf: ReplayBuffer) -> dict[str, np.ndarray]:
    """Both observations of every stored transition as float16 arrays (what the old buffer kept)."""
    ep, s, s2 = buf.states(np.arange(buf.size))
    o1, o2 = buf.observations(ep, s), buf.observations(ep, s2)
    out = {"slots": o1["slots"], "ctx": o1["context"], "next_slots": o2["slots"], "next_ctx": o2["context"]}
    if "pairs" in o1:
        out |= {"pairs": o1["pairs"], "next_pairs": o2["pairs"]}
    return {k: v.numpy().astype(np.float16) for k, v in out.items()}


def run(data_root=None, n_transitions: int = 1000, n_images: int = 12, batch: int = 128, repeats: int = 30,
        seed: int = 0, cache_dir=None, out=None, progress: bool = True) -> dict:
    cfg = GameConfig(pair_obs=True)
    rng = np.random.default_rng(seed)
    samples = _pick_images(data.load_dataset(data_root, split="train"), n_images, cfg.dataset_weights, rng)
    seg = Segmenter(cache_dir=cache_dir, precision=cfg.precision)
    bank = ImageBank(seg, samples, graph_grid=cfg.graph_grid, knn=cfg.knn, objects=cfg.objects, progress=progress)
    arena = Arena(bank, cfg)
    print(f"ppd bench replay: {n_transitions} random transitions per role on {len(bank)} train images, "
          f"batch {batch}, {torch.get_num_threads()} threads, game decoder {seg.precision}")
    res: dict = {"transitions": n_transitions, "batch": batch, "images": len(bank), "roles": {}}
    for role in ("defender", "attacker"):
        env = PromptGame(arena, role, seed=seed)
        n_act = int(env.action_space.n)
        buf = ReplayBuffer(n_transitions, env.rows, n_act, pairs=True)
        d0, s0 = bank.decodes, bank.decode_seconds
        _fill(env, buf, n_transitions, rng)
        decode_ms = 1e3 * (bank.decode_seconds - s0) / max(bank.decodes - d0, 1)
        store = _float16_store(buf)
        n = buf.size
        row: dict = {"rows": env.rows, "episodes": int(buf.n_episodes), "decode_ms": round(decode_ms, 1)}
        for arch in ("deepsets", "mp"):
            pairs = arch == "mp"
            compact = ReplayBuffer(n_transitions, env.rows, n_act, pairs=pairs)
            full = ReplayBuffer.observation_bytes(env.rows, N_SLOT_FEATURES, N_CONTEXT, n_act, pairs=pairs)
            agent = DQNAgent.for_env(env, DQNConfig(arch=arch, batch_size=batch), seed=seed, buffer=False)
            buf.pairs = pairs
            srng = np.random.default_rng(seed + 1)
            t_compact = _median_time(lambda: buf.sample(batch, srng), repeats)  # noqa: B023

            def gather(srng=srng, store=store, pairs=pairs, n=n):
                idx = srng.integers(0, n, batch)
                return {k: torch.from_numpy(v[idx].astype(np.float32)) for k, v in store.items()
                        if pairs or "pairs" not in k}

            t_f16 = _median_time(gather, repeats)
            b = buf.sample(batch, srng)
            t_upd = _median_time(lambda: agent.update(b), repeats)  # noqa: B023
            row[arch] = {"bytes_compact": compact.bytes_per_transition, "bytes_float16": full,
                         "memory_ratio": round(full / compact.bytes_per_transition, 1),
                         "sample_ms_compact": round(1e3 * t_compact, 1), "sample_ms_float16": round(1e3 * t_f16, 1),
                         "update_ms": round(1e3 * t_upd, 1),
                         "sample_plus_update_ms": round(1e3 * (t_compact + t_upd), 1),
                         "of_one_decode": round((t_compact + t_upd) * 1e3 / decode_ms, 2)}
            r = row[arch]
            print(f"  {role:8s} {arch:8s} bytes/transition {r['bytes_compact']:6d} compact vs {full:6d} float16 "
                  f"({r['memory_ratio']:.1f}x smaller); sample {r['sample_ms_compact']:5.1f} ms rebuilt vs "
                  f"{r['sample_ms_float16']:4.1f} ms gathered; update {r['update_ms']:5.1f} ms; sample + update "
                  f"{r['sample_plus_update_ms']:5.1f} ms = {r['of_one_decode']:.2f} decodes ({decode_ms:.0f} ms each)")
        buf.pairs = True
        res["roles"][role] = row
    if out:
        Path(out).write_text(json.dumps(res, indent=1) + "\n")
    return res
