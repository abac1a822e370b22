"""DQN agents and adversarial training, on real episodes through the real MobileSAM."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import fill_buffer, pick, td_loss_before_after
from ppd import train
from ppd.agents import DQNAgent, DQNConfig, QNet
from ppd.errors import CheckpointError
from ppd.game import Arena, GameConfig, ImageBank, PromptGame


@pytest.fixture(scope="module")
def arena(segmenter, manifest):
    samples = pick(manifest, "ecssd", "train", 3) + pick(manifest, "dsb2018", "train", 1)
    return Arena(ImageBank(segmenter, samples, progress=False), GameConfig())


def test_qnet_shapes_and_set_invariance():
    torch.manual_seed(0)
    net = QNet(18, 6, hidden=32, n_actions=5, stop=True)
    slots = torch.rand(2, 8, 18)
    slots[:, :, 0] = 1
    slots[1, 6:] = 0  # padded rows
    ctx = torch.rand(2, 6)
    q = net(slots, ctx)
    assert q.shape == (2, 6)
    perm = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])  # swapping two rows swaps their Q-values only
    q2 = net(slots[:, perm], ctx)
    assert torch.allclose(q2[:, 0], q[:, 1], atol=1e-6) and torch.allclose(q2[:, 2:], q[:, 2:], atol=1e-6)


def test_td_loss_drops_on_fixed_buffer(arena):
    rng = np.random.default_rng(0)
    env = PromptGame(arena, "defender", seed=0, strict=True)
    agent = DQNAgent.for_env(env, DQNConfig(buffer_size=600, target_sync=10**9, lr=1e-3), seed=0)
    fill_buffer(agent, env, 600, rng)
    before, after = td_loss_before_after(agent, 200, probe=512)
    assert after <= 0.8 * before, (before, after)
    assert agent.buffer.bytes_per_transition < 10_000


def test_acting_never_takes_masked_actions(arena):
    env = PromptGame(arena, "attacker", seed=3, strict=True)  # strict: a masked action would raise
    agent = DQNAgent.for_env(env, seed=0, buffer=False)
    for eps in (0.0, 0.5, 1.0):
        obs, info = env.reset()
        done = False
        while not done:
            a = agent.act(obs["slots"][None], obs["context"][None], info["action_mask"][None], eps)[0]
            assert info["action_mask"][a]
            obs, _, done, _, info = env.step(int(a))


def test_save_load_identical_q_values(tmp_path, arena):
    env = PromptGame(arena, "defender", seed=0)
    agent = DQNAgent.for_env(env, seed=5, buffer=False)
    obs, _ = env.reset()
    agent.save(tmp_path / "defender", extra={"note": "x"})
    back = DQNAgent.load(tmp_path / "defender", expect_role="defender")
    assert np.array_equal(agent.q_values(obs["slots"], obs["context"]), back.q_values(obs["slots"], obs["context"]))
    assert back.meta == {"note": "x"}
    with pytest.raises(CheckpointError, match="not an attacker"):
        DQNAgent.load(tmp_path / "defender", expect_role="attacker")
    raw = (tmp_path / "defender.safetensors").read_bytes()
    (tmp_path / "defender.safetensors").write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.raises(CheckpointError):
        DQNAgent.load(tmp_path / "defender")
    (tmp_path / "defender.safetensors").write_bytes(raw)
    cfg = json.loads((tmp_path / "defender.json").read_text())
    cfg["dqn"]["hidden"] = 64  # a config the weights do not fit
    (tmp_path / "defender.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit"):
        DQNAgent.load(tmp_path / "defender")


def test_short_training_run_and_resume(tmp_path, segmenter, data_root):
    cfg = train.TrainConfig(n_games=2, decode_budget=60, max_minutes=5, checkpoint_minutes=0.0,
                            attacker=DQNConfig(learning_starts=16, batch_size=16),
                            defender=DQNConfig(learning_starts=16, batch_size=16))
    out = tmp_path / "run"
    tr = train.run(data_root, "train", str(out), cfg=cfg, segmenter=segmenter, limit_images=3, progress=False)
    assert tr.decodes >= 60 and (out / "curves.png").is_file() and (out / "log.csv").is_file()
    dfd = DQNAgent.load(out / "defender", expect_role="defender")
    assert DQNAgent.load(out / "attacker", expect_role="attacker").role == "attacker"
    assert dfd.meta["decodes"] == tr.decodes
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["round"] == tr.round and state["decodes"] == tr.decodes
    with pytest.raises(CheckpointError, match="already holds a run"):
        train.run(data_root, "train", str(out), cfg=cfg, segmenter=segmenter, limit_images=3, progress=False)
    # resume: extend the budget, continue from the saved step and buffers
    st = json.loads((out / "checkpoint" / "state.json").read_text())
    st["config"]["decode_budget"] = 120
    (out / "checkpoint" / "state.json").write_text(json.dumps(st))
    tr2 = train.Trainer(train.config_from_dict(st["config"]), tr.bank.samples, out, segmenter=segmenter,
                        progress=False)
    assert tr2.load_checkpoint()
    assert (tr2.round, tr2.env_steps, tr2.decodes) == (tr.round, tr.env_steps, tr.decodes)
    assert tr2.defender.buffer.size == tr.defender.buffer.size
    assert np.array_equal(tr2.defender.buffer.action[: tr.defender.buffer.size],
                          tr.defender.buffer.action[: tr.defender.buffer.size])
    assert tr2.defender.updates == tr.defender.updates
    for a, b in zip(tr2.defender.q.parameters(), tr.defender.q.parameters(), strict=True):
        assert torch.equal(a, b)
    tr2.train()
    assert tr2.decodes >= 120 and tr2.round > tr.round
    rounds = [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert rounds == list(range(1, tr2.round + 1))
