"""``ppd bench game``: game steps per second against a naive SamPredictor-style loop.

Replays the first N episodes of the default training schedule (PAPER.md: an
attacker episode on an object's ideal prompts, then defender episodes from the
attacked set, ``GameConfig.defender_repeats`` of them) with a fixed seed and
epsilon = 1 (uniformly random valid actions):

* game path: ``PromptGame`` as training uses it — decode memo, fast low-res decode,
  Dice at low resolution, observation building included;
* naive path: the same states (every reset and step), each decoded as a
  SamPredictor loop does — stock decoder, upsampling to the original size,
  threshold — and scored with Dice at the original size; no memo, no observation.

Embedding the images is done before either clock starts. The image pool is a
seeded subset of the train split (``--images``), so the ratio of episodes to
objects, which drives the memo hit rate, is stated with the result.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ppd import data
from ppd.bench.bench_sam import stock_full_mask
from ppd.game import Arena, GameConfig, ImageBank, PromptGame
from ppd.metrics import dice
from ppd.sam import Segmenter


def _pick_images(samples, n: int, weights: dict[str, float], rng: np.random.Generator):
    by_ds: dict[str, list] = {}
    for s in samples:
        by_ds.setdefault(s.dataset, []).append(s)
    names = [d for d in by_ds if weights.get(d, 0) > 0] or list(by_ds)
    w = np.array([weights.get(d, 1.0) for d in names], float)
    counts = np.maximum(1, np.round(n * w / w.sum())).astype(int)
    out = []
    for d, c in zip(names, counts, strict=True):
        idx = rng.choice(len(by_ds[d]), min(c, len(by_ds[d])), replace=False)
        out += [by_ds[d][i] for i in sorted(idx)]
    return out


def _play(env: PromptGame, rng: np.random.Generator, options: dict | None, record: list, epsilon: float,
          w: np.ndarray) -> int:
    """One episode, epsilon-greedy w.r.t. a fixed random linear scorer ``w`` (an untrained Q-network)."""
    obs, info = env.reset(options=options)
    record.append((env.image, env.object, *env.prompts.active_prompts()))
    steps, done = 0, False
    while not done:
        valid = np.nonzero(info["action_mask"])[0]
        if rng.random() < epsilon:
            a = int(rng.choice(valid))
        else:
            q = obs["slots"] @ w
            q = np.r_[q, 0.0][: len(info["action_mask"])] if len(info["action_mask"]) > len(q) else q
            a = int(valid[np.argmax(q[valid])])
        obs, _, done, _, info = env.step(a)
        steps += 1
        if env.role == "defender" and a == env.stop_action:
            continue  # no decode: the state did not change
        act = env.prompts.active & env.valid
        record.append((env.image, env.object, env.prompts.points[act], env.prompts.labels[act]))
    return steps


def obs_dim(arena: Arena) -> int:
    from ppd.game.observation import N_SLOT_FEATURES

    return N_SLOT_FEATURES


def _phase(arena, seg, bank, att, dfd, rng, n_episodes: int, eps: float, w: np.ndarray) -> dict:
    cfg = arena.cfg
    record: list = []
    steps = episodes = 0
    h0, m0, d0, s0 = arena.memo.hits, arena.memo.misses, bank.decodes, bank.decode_seconds
    t0 = time.perf_counter()
    while episodes < n_episodes:
        steps += _play(att, rng, None, record, eps, w)
        episodes += 1
        attacked = att.prompts.subset(np.nonzero(att.prompts.active & att.valid)[0])
        for _ in range(min(cfg.defender_repeats, n_episodes - episodes)):
            steps += _play(dfd, rng, {"image": att.image, "object": att.object, "prompts": attacked}, record, eps, w)
            episodes += 1
    game_s = time.perf_counter() - t0
    hits, misses = arena.memo.hits - h0, arena.memo.misses - m0
    decodes, dec_s = bank.decodes - d0, bank.decode_seconds - s0
    naive_s = _naive(seg, bank, record)
    n = len(record)
    return {"states": n, "agent_steps": steps, "objects_played": len({(r[0], r[1]) for r in record}),
            "game_s": game_s, "naive_s": naive_s, "game_states_per_s": n / game_s, "naive_states_per_s": n / naive_s,
            "memo_hits": hits, "memo_misses": misses, "memo_hit_rate": hits / max(hits + misses, 1),
            "decodes": decodes, "ms_per_decode": dec_s / max(decodes, 1), "speedup": naive_s / game_s}


def _naive(seg: Segmenter, bank: ImageBank, record: list) -> float:
    """Seconds to decode and score every recorded state as a SamPredictor loop does."""
    masks: dict[tuple[int, int], np.ndarray] = {}
    for i, k, _, _ in record:
        if (i, k) not in masks:
            masks[(i, k)] = bank.objects(i).mask(k)
    t0 = time.perf_counter()
    for i, k, pts, labs in record:
        fr = bank.images[i]
        if len(pts) == 0:
            full = np.zeros(fr.original_size, bool)
        else:  # the stock float32 decoder + full-size upsampling, as SamPredictor runs it
            full = stock_full_mask(seg, torch.as_tensor(fr.to_input_frame(pts), dtype=torch.float32),
                                    torch.as_tensor(labs, dtype=torch.int64), frame=fr)
        dice(full, masks[(i, k)])
    return time.perf_counter() - t0


def run(data_root=None, n_episodes: int = 40, n_images: int = 24, seed: int = 0, cache_dir=None,
        out=None, progress: bool = True, epsilons: tuple[float, ...] = (1.0, 0.1)) -> dict:
    cfg = GameConfig()
    rng = np.random.default_rng(seed)
    samples = _pick_images(data.load_dataset(data_root, split="train"), n_images, cfg.dataset_weights, rng)
    seg = Segmenter(cache_dir=cache_dir, precision=cfg.precision)
    bank = ImageBank(seg, samples, graph_grid=cfg.graph_grid, knn=cfg.knn, objects=cfg.objects, progress=progress)
    arena = Arena(bank, cfg)
    att = PromptGame(arena, "attacker", seed=seed, strict=True)
    dfd = PromptGame(arena, "defender", seed=seed + 1, strict=True)
    for i in range(len(bank)):  # object lists are part of setup, not of a step
        bank.objects(i)
    print(f"ppd bench game: {n_episodes} episodes per phase (1 attacker + {cfg.defender_repeats} defender per "
          f"round, seed {seed}, game decoder {seg.precision}) on {len(bank)} train images "
          f"({', '.join(sorted({s.dataset for s in samples}))}), {torch.get_num_threads()} threads")
    print("  phases: epsilon = 1.0 is the start of training (uniformly random actions); epsilon = 0.1 its end,")
    print("  greedy w.r.t. a fixed random linear scorer standing in for a (deterministic) Q-network")
    w = np.random.default_rng(seed + 7).normal(size=obs_dim(arena)).astype(np.float32)
    phases = {}
    totals = np.zeros(3)
    for eps in epsilons:
        ph = _phase(arena, seg, bank, att, dfd, rng, n_episodes, eps, w)
        phases[f"epsilon={eps:g}"] = ph
        totals += [ph["states"], ph["game_s"], ph["naive_s"]]
        print(f"  epsilon {eps:<4g} {ph['states']:5d} states ({ph['agent_steps']} steps, {ph['objects_played']} "
              f"objects): game {ph['game_states_per_s']:6.1f} states/s ({ph['decodes']} decodes, "
              f"{1e3 * ph['ms_per_decode']:.1f} ms each), naive {ph['naive_states_per_s']:5.1f} states/s, "
              f"memo hit rate {100 * ph['memo_hit_rate']:5.1f} %, speed-up {ph['speedup']:.2f}x")
    res = {"phases": phases, "images": len(bank), "episodes_per_phase": n_episodes,
           "speedup": totals[2] / totals[1], "states": int(totals[0])}
    print(f"  all phases: {int(totals[0])} states, game {totals[1]:.1f} s, naive {totals[2]:.1f} s")
    if out:
        Path(out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"speed-up ratio: {res['speedup']:.2f}")
    return res
