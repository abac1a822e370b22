"""One-shot references in the game and the defender, the message-passing Q-network,
and the decoder precision choice; through the real MobileSAM where a feature needs it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fill_buffer, pick, td_loss_before_after
from ppd.agents import DQNAgent, DQNConfig
from ppd.agents.qnet import MPQNet
from ppd.cli import main
from ppd.errors import InvalidMaskError
from ppd.game import Arena, GameConfig, ImageBank, PromptGame
from ppd.game.observation import (
    CONTEXT_FEATURES,
    LEGACY_CONTEXT_FEATURES,
    LEGACY_SLOT_FEATURES,
    SLOT_FEATURES,
)
from ppd.graph import Reference, build_graph, mask_fractions
from ppd.oneshot import FeatureMatcher
from ppd.refine import Defender, load_agent

REF_COLS = [SLOT_FEATURES.index(n) for n in ("ref_sim", "ref_margin", "ref_knn_frac")]


@pytest.fixture(scope="module")
def ecssd_graph(segmenter, manifest):
    s = pick(manifest, "ecssd", "val", 3)[2]
    segmenter.set_image(s.image())
    f = segmenter.features()
    return s, build_graph(f.grid, f.valid, f.patch_size, segmenter.original_size)


def test_mask_fractions_match_brute_force(ecssd_graph):
    s, g = ecssd_graph
    mask = s.mask()
    frac = mask_fractions(g, mask)
    h, w = mask.shape
    for n in np.random.default_rng(0).choice(g.n, 40, replace=False):
        r, c = g.cell[n]
        y0, x0 = int(np.floor(r * g.patch_px)), int(np.floor(c * g.patch_px))
        y1, x1 = min(int(np.floor((r + 1) * g.patch_px)), h), min(int(np.floor((c + 1) * g.patch_px)), w)
        assert frac[n] == pytest.approx(mask[y0:y1, x0:x1].mean(), abs=1e-6)
    with pytest.raises(ValueError):
        mask_fractions(g, mask[:-1])


def test_reference_features_separate_object_from_background(ecssd_graph):
    """An image as its own reference: nodes under its mask look like the object, the others do not."""
    s, g = ecssd_graph
    ref = Reference.from_mask(g, s.mask())
    frac = mask_fractions(g, s.mask())
    inside, outside = np.nonzero(frac >= 0.99)[0], np.nonzero(frac <= 0.01)[0]
    fi, fo = ref.prompt_features(g.feats[inside]), ref.prompt_features(g.feats[outside])
    assert fi.shape == (len(inside), 3)
    assert fi[:, 0].mean() > fo[:, 0].mean() and fi[:, 1].mean() > fo[:, 1].mean()
    assert fi[:, 2].mean() > 0.6 > 0.3 > fo[:, 2].mean()
    with pytest.raises(ValueError):
        Reference(g.feats, np.zeros(3, np.float32))


@pytest.fixture(scope="module")
def arena(segmenter, manifest):
    samples = pick(manifest, "ecssd", "train", 3)
    return Arena(ImageBank(segmenter, samples, progress=False), GameConfig(pair_obs=True))


def test_game_observes_the_reference(arena):
    env = PromptGame(arena, "defender", seed=0)
    obs, _ = env.reset(options={"image": 0, "reference": 1})
    valid = obs["slots"][:, 0] > 0
    assert obs["context"][CONTEXT_FEATURES.index("has_ref")] == 1.0
    assert np.abs(obs["slots"][valid][:, REF_COLS]).sum() > 0
    assert obs["pairs"].shape == (env.rows, env.rows)
    assert np.allclose(np.diag(obs["pairs"])[valid], 1.0, atol=1e-5)  # a node's cosine with itself
    obs2, _ = env.reset(options={"image": 0, "reference": None})
    assert obs2["context"][CONTEXT_FEATURES.index("has_ref")] == 0.0
    assert np.all(obs2["slots"][:, REF_COLS] == 0)
    # drawn per episode when not given: some episodes with, some without (ref_prob = 0.8)
    seen = {env.reset(options={"image": 0})[0]["context"][CONTEXT_FEATURES.index("has_ref")] for _ in range(30)}
    assert seen == {0.0, 1.0}


def test_legacy_agent_reads_only_its_columns(arena):
    env = PromptGame(arena, "defender", seed=1)
    obs, _ = env.reset(options={"image": 0, "reference": 1})
    shipped3 = DQNAgent("defender", env.rows, env.action_space.n, obs["slots"].shape[1], len(obs["context"]),
                        features=(list(LEGACY_SLOT_FEATURES), list(LEGACY_CONTEXT_FEATURES)), buffer=False)
    q = shipped3.q_values(obs["slots"], obs["context"])
    s2, c2 = obs["slots"].copy(), obs["context"].copy()
    s2[:, REF_COLS] = 0.37
    c2[CONTEXT_FEATURES.index("has_ref")] = 0.0
    assert np.array_equal(q, shipped3.q_values(s2, c2))
    full = DQNAgent.for_env(env, buffer=False)  # a new agent reads every column
    assert not np.array_equal(full.q_values(obs["slots"], obs["context"]), full.q_values(s2, c2))


def test_mp_qnet_is_permutation_equivariant_and_reads_pairs():
    torch.manual_seed(0)
    net = MPQNet(21, 7, hidden=32)
    slots = torch.rand(2, 8, 21)
    slots[:, :, 0] = 1
    slots[1, 6:] = 0
    ctx, pairs = torch.rand(2, 7), torch.rand(2, 8, 8)
    q = net(slots, ctx, pairs)
    perm = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7])
    q2 = net(slots[:, perm], ctx, pairs[:, perm][:, :, perm])
    assert torch.allclose(q2[:, 0], q[:, 1], atol=1e-5) and torch.allclose(q2[:, 2:], q[:, 2:], atol=1e-5)
    assert not torch.allclose(q, net(slots, ctx, torch.rand(2, 8, 8)))
    # padding rows never influence the valid ones
    s3 = slots.clone()
    s3[1, 6:, 1:] = 5.0
    assert torch.allclose(net(s3, ctx, pairs)[1, :6], q[1, :6], atol=1e-5)


def test_mp_agent_learns_saves_and_refines(arena, segmenter, manifest, tmp_path):
    env = PromptGame(arena, "defender", seed=0, strict=True)
    agent = DQNAgent.for_env(env, DQNConfig(arch="mp", buffer_size=300, batch_size=32, hidden=32, lr=1e-3,
                                            target_sync=10**9), seed=0)
    fill_buffer(agent, env, 300, np.random.default_rng(0))
    obs, _ = env.reset()
    before, after = td_loss_before_after(agent, 150, probe=256)
    assert after <= 0.8 * before, (before, after)
    agent.save(tmp_path / "defender")
    back = DQNAgent.load(tmp_path / "defender", expect_role="defender")
    assert back.cfg.arch == "mp" and back.needs_pairs
    assert np.array_equal(back.q_values(obs["slots"], obs["context"], obs["pairs"]),
                          agent.q_values(obs["slots"], obs["context"], obs["pairs"]))
    # the defender builds the pairs itself at inference
    s = pick(manifest, "ecssd", "val", 1)[0]
    d = Defender(back, segmenter=segmenter)
    d.set_image(s.image())
    res = d.refine([[10, 10], [50, 60], [100, 80]], [1, 1, 0])
    assert res.mask.shape == s.mask().shape


def test_defender_reference_keeps_the_target_current(segmenter, manifest):
    ref, tgt = pick(manifest, "ecssd", "val", 5)[3:5]
    d = Defender(segmenter=segmenter)
    d.set_image(tgt.image())
    sha = d.frame.image_sha256
    d.set_reference(ref.image(), ref.mask())
    assert d.frame.image_sha256 == sha and isinstance(d.reference, Reference)
    fm = FeatureMatcher(segmenter)
    fm.set_reference(ref.image(), ref.mask())
    assert np.allclose(fm.reference.frac, d.reference.frac)
    with pytest.raises(InvalidMaskError):
        d.set_reference(ref.image(), ref.mask()[:-1])
    with pytest.raises(InvalidMaskError):
        d.set_reference(ref.image(), np.zeros_like(ref.mask()))
    d.set_reference(None)
    assert d.reference is None


def test_cli_refine_ref_needs_its_mask(tmp_path, manifest, capsys):
    s = pick(manifest, "ecssd", "val", 1)[0]
    p = tmp_path / "p.json"
    p.write_text('{"points": [[10, 10]], "labels": [1]}')
    rc = main(["refine", str(s.image_path), "--prompts", str(p), "--out", str(tmp_path / "o"),
               "--ref", str(s.image_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--ref-mask" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    ref = pick(manifest, "ecssd", "val", 2)[1]  # with its mask: refined and written
    rc = main(["refine", str(s.image_path), "--prompts", str(p), "--out", str(tmp_path / "o"),
               "--ref", str(ref.image_path), "--ref-mask", str(ref.mask_path)])
    assert rc == 0 and (tmp_path / "o" / f"{s.image_path.stem}.mask.png").is_file()


def test_precision_auto_picks_a_working_decoder(manifest):
    from ppd.sam import Segmenter
    from ppd.sam.segmenter import bf16_is_faster

    seg = Segmenter(precision="auto", use_cache=False)
    assert seg.precision == ("bf16" if bf16_is_faster() else "fp32")
    with pytest.raises(ValueError):
        Segmenter(precision="fp16", use_cache=False)


def test_untrained_agent_keeps_the_shipped_features(segmenter):
    shipped = load_agent(None, "defender")
    assert load_agent("untrained", "defender", like=shipped).features == shipped.features
