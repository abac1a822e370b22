"""Label hypotheses (ppd.hypotheses): the split logic alone, and the defender that uses them through the real model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import pick
from ppd.errors import ConfigError
from ppd.hypotheses import DRAWS, label_hypotheses, medoid
from ppd.refine import Defender, DefenderConfig, load_agent, parse_overrides


def test_label_hypotheses_split_by_features():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.05, (5, 8)) + 1, rng.normal(0, 0.05, (4, 8)) - 1
    hyps = label_hypotheses(np.r_[a, b], draws=3)
    truth = np.r_[np.ones(5), np.zeros(4)].astype(int)
    assert len(hyps) == 6  # two ways per draw, repeats kept
    assert any(np.array_equal(h, truth) for h in hyps) and any(np.array_equal(h, 1 - truth) for h in hyps)
    assert all(0 < h.sum() < len(h) for h in hyps)
    assert label_hypotheses(np.ones((1, 8)), draws=3) == []
    assert label_hypotheses(np.ones((6, 8)), draws=2) == []  # one point cloud: no split, no hypothesis


def test_medoid_is_the_mask_the_others_agree_with():
    base = np.zeros((40, 40), bool)
    base[10:30, 10:30] = True
    near = np.roll(base, 2, axis=1)
    far = np.zeros_like(base)
    far[:5, :5] = True
    assert medoid([far, base, near, base]) == 1
    assert medoid([far]) == 0
    assert medoid([far, base, far], weights=[1, 1, 1]) == 0 and medoid([far, base, far], weights=[0, 5, 0]) == 1
    with pytest.raises(ValueError):
        medoid([])


def test_hypotheses_setting_is_checked():
    with pytest.raises(ConfigError, match="hypotheses"):
        DefenderConfig(hypotheses=-1)
    with pytest.raises(ConfigError, match="hypotheses"):
        parse_overrides(["hypotheses=two"])
    assert parse_overrides(["hypotheses=3"]) == {"hypotheses": 3}


def test_hypotheses_in_cache_keys():
    """Off (0) leaves the eval cache keys of earlier rows as they were; on changes them. (A bad value from the
    CLI: test_refine_oneshot.test_defender_settings_travel_with_the_agent.)"""
    from ppd.evaluate.keys import agent_sha, refine_settings

    assert "hypotheses" not in refine_settings(None) and refine_settings(None, {"hypotheses": 8})["hypotheses"] == 8
    assert refine_settings(None, {"hypotheses": 8})["hypotheses_select"] == "lowres-valid"  # not 17-18's rows
    assert agent_sha(None, "defender") == agent_sha(None, "defender", {"hypotheses": 0})
    assert agent_sha(None, "defender") != agent_sha(None, "defender", {"hypotheses": 8})


def _attacked(segmenter, sample):
    from ppd.evaluate.attack_defence import attack, attacker_game

    frame = segmenter.frame(sample.image())
    _, att = attack(attacker_game(segmenter, sample, frame), load_agent(None, "attacker"), 0, -1, 8)
    return frame, att


def test_defender_with_hypotheses_repairs_mislabelled_sets(segmenter, manifest):
    """Against the shipped attacker (mostly label flips), refining label hypotheses repairs more than
    removal alone; the result is exactly the plain defender's on the labels it chose."""
    from ppd.metrics import dice

    plain, hyp = Defender(segmenter=segmenter), Defender(segmenter=segmenter, hypotheses=3)
    got = {"plain": [], "hyp": [], "attacked": []}
    for s in pick(manifest, "ph2", "val", 4) + pick(manifest, "ecssd", "val", 4):
        frame, att = _attacked(segmenter, s)
        gt = s.mask()
        res = hyp.refine_frame(frame, att.points, att.labels)
        assert np.array_equal(res.relabeled, res.labels != att.labels)
        again = plain.refine_frame(frame, att.points, res.labels)  # the chosen labels, refined without hypotheses
        assert np.array_equal(again.kept, res.kept) and np.array_equal(again.mask, res.mask)
        js = res.to_json()
        assert js["labels"] == [int(v) for v in res.labels] and js["relabeled"] == [bool(v) for v in res.relabeled]
        got["hyp"].append(dice(res.mask, gt))
        got["plain"].append(dice(plain.refine_frame(frame, att.points, att.labels).mask, gt))
        got["attacked"].append(dice(segmenter.decode(frame, att.points, att.labels).mask, gt))
    mean = {k: float(np.mean(v)) for k, v in got.items()}
    assert mean["hyp"] > mean["plain"] + 0.05 and mean["hyp"] > mean["attacked"] + 0.2, mean


@pytest.mark.parametrize("flags, draws", [(["--defender-opt", "hypotheses=3"], 3), (["--check-labels"], DRAWS)])
def test_cli_refine_with_hypotheses_writes_what_the_api_returns(flags, draws, tmp_path, manifest, segmenter, cache_dir,
                                                               monkeypatch):
    """``ppd refine --defender-opt hypotheses=3`` (and ``--check-labels``, the browser's box: ``DRAWS``) on an
    attacked set: the prompts JSON and mask are the API's."""
    import json

    from PIL import Image

    from ppd.cli import main

    monkeypatch.setenv("PPD_CACHE_DIR", str(cache_dir))
    s = pick(manifest, "ph2", "val", 2)[1]
    frame, att = _attacked(segmenter, s)
    (tmp_path / "p.json").write_text(json.dumps({"points": att.points.tolist(), "labels": att.labels.tolist()}))
    assert main(["refine", str(s.image_path), "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "o"),
                 *flags]) == 0
    stem = s.image_path.stem
    js = json.loads((tmp_path / "o" / f"{stem}.prompts.json").read_text())
    api = Defender(segmenter=segmenter, hypotheses=draws).refine_frame(frame, att.points, att.labels)
    assert api.relabeled.any()  # this attacked set is repaired by relabelling, so the new fields are exercised
    assert js["labels"] == api.labels.tolist() and js["relabeled"] == api.relabeled.tolist()
    assert js["status"] == ["kept" if k else "suppressed" for k in api.kept]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / f"{stem}.mask.png")) > 0, api.mask)
