"""Fine-tuning on a user's folder (issue #16 item 3) and choosing the training datasets (issue #20)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import pick, plain_folder
from ppd import data, train
from ppd.agents import DQNAgent, DQNConfig, shipped_agent_path
from ppd.cli import main, parse_weights
from ppd.errors import CheckpointError, ConfigError, DataError


def test_finetune_a_plain_folder_from_the_shipped_agents(tmp_path, segmenter, manifest):
    """A plain images/ + masks/ folder is training data (all of it, whatever --split says), and --init
    starts both agents from the shipped networks: with no update made, the saved agents equal them."""
    root = plain_folder(tmp_path / "polyps", pick(manifest, "kvasir", "train", 3))
    big = DQNConfig(learning_starts=10**6)  # no gradient step: the saved networks are the initial ones
    cfg = train.TrainConfig(n_games=2, decode_budget=40, max_minutes=5, checkpoint_minutes=0.0, init="shipped",
                            eps_start=0.2, attacker=big, defender=big, fm_refs_per_image=1)
    tr = train.run(str(root), "train", str(tmp_path / "run"), cfg=cfg, segmenter=segmenter, progress=False)
    assert len(tr.bank) == 3 and tr.cfg.game.dataset_weights == {"polyps": 1.0} and tr.decodes >= 40
    for role in ("attacker", "defender"):
        saved = DQNAgent.load(tmp_path / "run" / role, expect_role=role)
        shipped = DQNAgent.load(shipped_agent_path(role), expect_role=role)
        for a, b in zip(saved.q.parameters(), shipped.q.parameters(), strict=True):
            assert torch.equal(a, b)
        # the inference settings travel with a fine-tuned agent (ship7: select = iou)
        assert saved.meta.get("inference") == shipped.meta.get("inference")
    assert DQNAgent.load(shipped_agent_path("defender")).meta["inference"]
    with pytest.raises(CheckpointError, match="run folder"):
        train.run(str(root), "train", str(tmp_path / "run2"), cfg=train.TrainConfig(init=str(tmp_path / "none")),
                  segmenter=segmenter, progress=False)


@pytest.mark.parametrize("no_ref", [False, True])
def test_attacked_episodes_without_reference(tmp_path, segmenter, manifest, no_ref):
    """``attacked_no_reference``: the defender's episodes from attacked sets see no reference (the eval's
    ablation), whatever the game's ``ref_prob``; without it they draw one (ref_prob 1: always)."""
    from dataclasses import replace

    root = plain_folder(tmp_path / "polyps", pick(manifest, "kvasir", "train", 3))
    big = DQNConfig(learning_starts=10**6)
    cfg = train.TrainConfig(n_games=3, decode_budget=10, max_minutes=5, fm_fraction=0.0, attacker=big, defender=big,
                            attacked_no_reference=no_ref)
    samples = data.load_dataset(root, split=None)
    cfg = replace(cfg, game=replace(cfg.game, ref_prob=1.0, dataset_weights={samples[0].dataset: 1.0}))
    tr = train.Trainer(cfg, samples, tmp_path / "run", segmenter=segmenter, progress=False)
    tr.train()  # at least one round: its defender episodes all start from attacked sets (fm_fraction 0)
    refs = [e.reference for e in tr.def_envs]
    assert all(r is None for r in refs) if no_ref else all(r is not None for r in refs)
    assert train.config_from_dict(json.loads(json.dumps(asdict(cfg)))).attacked_no_reference is no_ref


@pytest.mark.parametrize("defect,needle", [("no_mask", "has no mask"), ("size", "but the image is"),
                                           ("empty", "mask is empty")])
def test_bad_training_folders_fail_before_any_work(tmp_path, manifest, capsys, defect, needle):
    s = pick(manifest, "kvasir", "train", 2)
    root = plain_folder(tmp_path / "polyps", s)
    m = root / "masks" / s[0].mask_path.name
    if defect == "no_mask":
        m.unlink()
    elif defect == "size":
        Image.fromarray(np.full((7, 9), 255, np.uint8)).save(m)
    else:
        Image.fromarray(np.zeros(np.asarray(Image.open(m)).shape, np.uint8)).save(m)
    rc = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--checkpoint", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_dataset_weights():
    assert parse_weights("ecssd:0.3,kvasir") == {"ecssd": 0.3, "kvasir": 1.0}
    assert parse_weights("all") == {"*": 1.0}
    for bad in ("ecssd:x", "ecssd:0", ":1"):
        with pytest.raises(ConfigError):
            parse_weights(bad)


def test_unknown_training_dataset_is_refused(tmp_path, data_root, segmenter):
    cfg = train.TrainConfig(game=train.GameConfig(dataset_weights={"kvasir": 1.0, "horses": 1.0}))
    with pytest.raises(DataError, match="horses"):
        train.run(data_root, "train", str(tmp_path / "run"), cfg=cfg, segmenter=segmenter, progress=False)
