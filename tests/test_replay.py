"""The compact replay buffer: observations rebuilt from stored states equal the game's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import pick
from ppd.agents import ReplayBuffer
from ppd.game import Arena, GameConfig, ImageBank, PromptGame
from ppd.game.observation import N_SLOT_FEATURES, assemble


@pytest.fixture(scope="module")
def arena(segmenter, manifest):
    samples = pick(manifest, "ecssd", "val", 2) + pick(manifest, "dsb2018", "val", 1)
    return Arena(ImageBank(segmenter, samples, progress=False), GameConfig(pair_obs=True))


def play(env: PromptGame, buf: ReplayBuffer, n: int, rng) -> list[tuple[dict, dict, int, float, np.ndarray]]:
    """``n`` random transitions into ``buf``; returns what the game showed, by serial number."""
    seen = []
    while len(seen) < n:
        obs, info = env.reset()
        state, done = env.snapshot(), False
        while not done and len(seen) < n:
            a = int(rng.choice(np.nonzero(info["action_mask"])[0]))
            nxt, r, done, _, info = env.step(a)
            mask = np.zeros_like(info["action_mask"]) if done else info["action_mask"]
            buf.add(state, a, r, env.snapshot(), mask, done)
            seen.append((obs, nxt, a, r, mask))
            obs, state = nxt, env.snapshot()
    return seen


def check_batch(buf: ReplayBuffer, idx: np.ndarray, batch: dict, seen: list) -> float:
    err = 0.0
    for b, i in enumerate(idx):
        obs, nxt, a, r, mask = seen[int(buf.serial[i])]
        assert int(batch["action"][b]) == a and float(batch["reward"][b]) == pytest.approx(r, abs=1e-6)
        assert np.array_equal(batch["next_mask"][b].numpy(), mask)
        for key, mine in (("slots", "slots"), ("context", "ctx"), ("pairs", "pairs")):
            err = max(err, float(np.abs(batch[mine][b].numpy() - obs[key]).max()),
                      float(np.abs(batch["next_" + mine][b].numpy() - nxt[key]).max()))
    return err


@pytest.mark.parametrize("role", ["defender", "attacker"])
def test_rebuilt_observations_equal_the_games(arena, role):
    env = PromptGame(arena, role, seed=2)
    buf = ReplayBuffer(1000, env.rows, int(env.action_space.n), pairs=True)
    seen = play(env, buf, 120, np.random.default_rng(0))
    assert buf.size == 120 and buf.n_episodes < 60  # states shared along episodes, not one episode each
    idx = buf.draw(64, np.random.default_rng(1))
    batch = buf.batch(idx)
    again = buf.sample(64, np.random.default_rng(1))  # sample = batch of the same draw
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    assert check_batch(buf, idx, batch, seen) < 2e-3  # float16 storage of the decode columns
    full = ReplayBuffer.observation_bytes(env.rows, N_SLOT_FEATURES, 7, int(env.action_space.n), pairs=True)
    assert buf.bytes_per_transition * 10 < full, (buf.bytes_per_transition, full)


def test_rings_wrap_and_skip_what_they_lost(arena):
    env = PromptGame(arena, "defender", seed=3)
    buf = ReplayBuffer(40, env.rows, int(env.action_space.n), pairs=True, episode_capacity=2)
    seen = play(env, buf, 150, np.random.default_rng(4))
    assert buf.size == 40 and buf.n_added == 150
    usable = buf.usable(np.arange(40))
    assert 0 < usable.sum() < 40  # 2 episodes of <= 15 steps cannot cover 40 transitions
    idx = np.nonzero(usable)[0]
    draw = buf.draw(32, np.random.default_rng(5))
    batch = buf.batch(draw)
    assert set(draw) <= set(idx)
    assert check_batch(buf, draw, batch, seen) < 2e-3


def test_checkpoint_arrays_round_trip(arena):
    env = PromptGame(arena, "attacker", seed=6)
    buf = ReplayBuffer(60, env.rows, int(env.action_space.n))
    play(env, buf, 80, np.random.default_rng(7))
    back = ReplayBuffer(60, env.rows, int(env.action_space.n))
    with pytest.raises(ValueError, match="graph features"):
        back.load_arrays(buf.state_arrays(), {})
    back.load_arrays(buf.state_arrays(), {i: g.feats for i, g in enumerate(arena.bank.graphs)})
    a, b = buf.sample(32, np.random.default_rng(8)), back.sample(32, np.random.default_rng(8))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="stored"):
        ReplayBuffer(30, env.rows, int(env.action_space.n)).load_arrays(buf.state_arrays(), {})


def _reference_slot(cos, dist, labels, valid, active, j, col):
    """One relation feature of slot j, by loops (independent of the vectorised code)."""
    lab = 1 if col in ("mean_sim_pos", "max_sim_pos", "min_dist_pos") else 0
    others = [i for i in range(len(valid)) if i != j and valid[i] and active[i] and labels[i] == lab]
    if col.startswith("min_dist"):
        return min(1.0, 2 * min(dist[j, i] for i in others)) if others else 1.0
    if not others:
        return 0.0
    vals = [cos[j, i] for i in others]
    return float(np.mean(vals)) if col.startswith("mean") else float(max(vals))


def test_assemble_matches_a_loop_reference():
    from ppd.game.observation import SLOT_FEATURES

    rng = np.random.default_rng(0)
    b, p, p_max = 3, 7, 9
    f = rng.normal(size=(b, p, 5)).astype(np.float32)
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    cos = f @ f.transpose(0, 2, 1)
    xy = rng.random((b, p, 2)).astype(np.float32)
    dist = np.sqrt((((xy[:, :, None] - xy[:, None]) * 0.7) ** 2).sum(-1)).astype(np.float32)
    labels = rng.integers(0, 2, (b, p))
    valid = rng.random((b, p)) < 0.85
    active = rng.random((b, p)) < 0.7
    active[0] = False  # a state with nothing active
    t = torch.from_numpy
    out = assemble(t(cos), t(dist), t(xy), t(labels), t(valid), t(active), torch.zeros(b, p, 5),
                   torch.zeros(b, p, dtype=torch.bool), torch.zeros(b, p, 3), torch.zeros(b, dtype=torch.bool),
                   torch.zeros(b), torch.zeros(b), torch.ones(b), torch.full((b,), 4), 15, p_max)
    slots = out["slots"].numpy()
    assert slots.shape == (b, p_max, N_SLOT_FEATURES) and not slots[:, p:].any()
    for k in range(b):
        for j in range(p):
            for col in ("mean_sim_pos", "max_sim_pos", "mean_sim_neg", "max_sim_neg", "min_dist_pos",
                        "min_dist_neg"):
                want = _reference_slot(cos[k], dist[k], labels[k], valid[k], active[k], j, col) if valid[k, j] else 0
                assert slots[k, j, SLOT_FEATURES.index(col)] == pytest.approx(want, abs=1e-5), (k, j, col)
    ctx = out["context"].numpy()
    assert np.allclose(ctx[:, 2], (valid & active & (labels == 1)).sum(1) / 20)
    assert np.allclose(ctx[:, 4], 0.25) and np.allclose(ctx[:, 5], 3 / 15)
