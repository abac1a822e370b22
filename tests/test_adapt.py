"""Test-time adaptation of the defender to the one-shot reference (ppd.train.adapt, session 19)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import pick
from ppd.agents import shipped_agent_path
from ppd.cli import main
from ppd.errors import CheckpointError, ConfigError, InvalidMaskError
from ppd.refine import Defender, load_agent
from ppd.train.adapt import (
    AdaptConfig,
    PairedDefender,
    adapt,
    adapt_defender,
    agreement,
    attacker_beside,
    dihedral_views,
    practice_views,
)

QUICK = AdaptConfig(decodes=300)  # a few dozen gradient steps: the mechanics, quickly


def test_dihedral_views_follow_image_and_mask():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    mask = np.zeros((5, 7), bool)
    mask[0, :2] = True
    views = dihedral_views(image, mask)
    assert len(views) == 8 and np.array_equal(views[0][0], image) and np.array_equal(views[0][1], mask)
    assert len({v.tobytes() + str(v.shape).encode() for v, _ in views}) == 8  # all different
    for im, m in views:  # the mask moved with its pixels: the masked pixels are the same values
        assert sorted(im[m].reshape(-1).tolist()) == sorted(image[mask].reshape(-1).tolist())
        assert im.flags.c_contiguous and m.shape == im.shape[:2]


def test_jittered_views_crop_and_recolour_with_their_masks():
    """``views="jitter"``: the first view is the reference as it is, the others are dihedral views cropped
    (keeping at least half the object) and re-coloured; each mask is its view's pixels of the object."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 100, (60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:60] = True
    image[mask] = 255  # the object is white: re-colouring is monotone per channel, so it stays the brightest
    views = practice_views(image, mask, "jitter", seed=3)
    assert len(views) == 8 and np.array_equal(views[0][0], image) and np.array_equal(views[0][1], mask)
    dihedral = dihedral_views(image, mask)
    assert any(v.shape != d.shape for (v, _), (d, _) in zip(views, dihedral, strict=True))  # some were cropped
    for (im, m), (d, _) in zip(views[1:], dihedral[1:], strict=True):
        assert m.shape == im.shape[:2] and im.dtype == np.uint8 and im.flags.c_contiguous
        assert m.sum() >= 0.5 * mask.sum() and im.shape[0] >= 0.6 * d.shape[0] - 1
        assert im.mean(axis=2)[m].min() > im.mean(axis=2)[~m].max()  # the mask still covers the object
        assert not np.array_equal(im, d)
    again = practice_views(image, mask, "jitter", seed=3)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(views, again, strict=True))  # seeded
    assert practice_views(image, mask, "dihedral")[3][0].tobytes() == dihedral[3][0].tobytes()
    assert "views" not in AdaptConfig(views="dihedral").key()
    tiny = practice_views(image[:10, :12], mask[:10, :12], "jitter")  # smaller than any crop: kept whole
    assert [im.shape for im, _ in tiny] == [d.shape for d, _ in dihedral_views(image[:10, :12], mask[:10, :12])]
    with pytest.raises(ConfigError, match="views"):
        AdaptConfig(views="crops")


def test_adapt_config_refuses_what_cannot_train():
    for bad in ({"decodes": 100}, {"decodes": 256}, {"decodes": 1.5e3}, {"eps_start": 2.0},
                {"learning_starts": 0}, {"decodes": 300, "learning_starts": 400}):
        with pytest.raises(ConfigError):
            AdaptConfig(**bad)
    assert AdaptConfig().key() == {"decodes": 1500, "eps_start": 0.3, "learning_starts": 256, "seed": 0,
                                   "views": "jitter", "choose": "iou"}
    assert "choose" not in AdaptConfig(choose="adapted").key()  # sessions 19-20's rows keep their keys
    with pytest.raises(ConfigError, match="choose"):
        AdaptConfig(choose="both")
    with pytest.raises(CheckpointError, match="attacker"):
        attacker_beside("somewhere/defender")
    d, image = load_agent(None, "defender"), np.zeros((32, 48, 3), np.uint8)
    for bad_mask in (np.zeros((32, 48), bool), np.ones((48, 32), bool)):  # empty; another size: before any work
        with pytest.raises(InvalidMaskError):
            adapt(d, load_agent(None, "attacker"), image, bad_mask, segmenter=None)


def test_adapt_fine_tunes_a_copy_on_the_reference(segmenter, manifest):
    """Through the real MobileSAM on a Kvasir val reference: the defender returned is trained (its weights
    moved), the one given is untouched, its inference settings travel along, the same seed gives the
    same weights, and no practice view is written to the embedding cache."""
    ref, tgt = pick(manifest, "kvasir", "val", 2)
    shipped = load_agent(None, "defender")
    before = {k: v.clone() for k, v in shipped.q.state_dict().items()}
    attacker = load_agent(attacker_beside(None), "attacker")
    segmenter.frame(ref.image())  # the reference is in the embedding cache; its practice views must not go there
    stored = sorted(segmenter.cache.root.rglob("*.safetensors"))
    out = adapt(shipped, attacker, ref.image(), ref.mask(), segmenter, QUICK)
    assert sorted(segmenter.cache.root.rglob("*.safetensors")) == stored
    assert out is not shipped and out.buffer is None
    assert all(torch.equal(before[k], v) for k, v in shipped.q.state_dict().items())
    moved = sum(float((before[k] - v).abs().sum()) for k, v in out.q.state_dict().items())
    assert moved > 0
    assert out.meta["inference"] == shipped.meta["inference"] and out.meta["adapted"]["decodes_run"] >= 300
    again = adapt(shipped, attacker, ref.image(), ref.mask(), segmenter, QUICK)
    assert all(torch.equal(v, again.q.state_dict()[k]) for k, v in out.q.state_dict().items())
    d = Defender(out, segmenter=segmenter)
    d.set_image(tgt.image())
    assert d.refine(np.array([[40.0, 40.0], [200.0, 150.0]]), np.array([1, 0])).mask.shape == tgt.mask().shape


def test_oneshot_and_eval_with_adapt(tmp_path, segmenter, manifest, cache_dir, monkeypatch, capsys):
    """``ppd oneshot --adapt`` writes what the API gives with the adapted defender, and ``ppd eval --adapt``
    scores that same mask; its rows are keyed apart from the plain defender's, the training-free ones are not.
    Bad settings: one line, exit 2, before SAM loads."""
    from ppd.evaluate.harness import Harness
    from ppd.evaluate.keys import EvalConfig, config_key
    from ppd.metrics import dice
    from ppd.oneshot import OneShot

    monkeypatch.setenv("PPD_CACHE_DIR", str(cache_dir))
    ref, tgt = pick(manifest, "kvasir", "val", 2)
    flags = ["--adapt-decodes", "300"]
    out = tmp_path / "one"
    assert main(["oneshot", "--ref", str(ref.image_path), "--ref-mask", str(ref.mask_path), "--target",
                 str(tgt.image_path), "--out", str(out), *flags]) == 0
    assert "adapting the defender" in capsys.readouterr().err
    cli_mask = np.asarray(Image.open(out / f"{tgt.id}.mask.png")) > 0
    # the API: the same adaptation (the CLI's seed and warm-up are the defaults), then the usual pipeline
    cfg = AdaptConfig(decodes=300)
    pipe = OneShot(segmenter, adapt_defender(Defender(segmenter=segmenter), ref.image(), ref.mask(), config=cfg))
    pipe.set_reference(ref.image(), ref.mask())
    api_mask = pipe.run(tgt.image()).mask
    assert np.array_equal(cli_mask, api_mask)
    plain, adapted = (Harness(segmenter, ["fm-kmeans", "fm-ppd"], EvalConfig(adapt=a)) for a in (0, 300))
    rows = adapted.run([ref], [tgt], progress=False)
    assert next(r for r in rows if r.method == "fm-ppd").dice == pytest.approx(dice(api_mask, tgt.mask()))
    assert config_key(EvalConfig(adapt=300))["adapt"] == cfg.key() and "adapt" not in config_key(EvalConfig())
    assert "views" not in config_key(EvalConfig(adapt=300, adapt_views="dihedral"))["adapt"]  # session 19's rows
    assert plain.key("fm-kmeans", tgt, ref) == adapted.key("fm-kmeans", tgt, ref)
    assert plain.key("fm-ppd", tgt, ref) != adapted.key("fm-ppd", tgt, ref)
    for bad in (["--adapt-decodes", "50"], ["--adapt", "--no-defender"], ["--adapt-views", "jitter", "--no-defender"],
                ["--adapt-choose", "adapted", "--no-defender"]):
        rc = main(["oneshot", "--ref", "x.jpg", "--ref-mask", "x.png", "--target", "y.jpg", "--out",
                   str(tmp_path / "bad"), *bad])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "adapt" in err
    with pytest.raises(SystemExit) as e:  # argparse's refusal: one line, exit 2
        main(["oneshot", "--ref", "x.jpg", "--ref-mask", "x.png", "--target", "y.jpg", "--out", str(tmp_path / "bad"),
              "--adapt-views", "crops"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["oneshot", "--ref", "x.jpg", "--ref-mask", "x.png", "--target", "y.jpg", "--out", str(tmp_path / "bad"),
              "--adapt-choose", "both"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["eval", "--dataset", "kvasir", "--split", "val", "--out", str(tmp_path / "bad"),
                 "--adapt-decodes", "10"]) == 2
    lone = tmp_path / "lone"  # a defender without the attacker it was trained with
    lone.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(shipped_agent_path("defender").with_suffix(suffix), lone / f"defender{suffix}")
    capsys.readouterr()
    assert main(["eval", "--dataset", "kvasir", "--split", "val", "--methods", "fm-ppd", "--defender",
                 str(lone / "defender"), "--adapt", "--out", str(tmp_path / "bad")]) == 2
    assert "attacker" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_paired_defender_keeps_the_result_with_the_higher_score(segmenter, manifest):
    """Through the real MobileSAM on Kvasir val: by default the adapted defender comes paired with the given
    one; on each start set both refine, and the result with the higher SAM-predicted IoU (or, with "agree",
    agreement with the reference object), each recomputed here from the two defenders alone, is returned.
    Without a reference, "agree" has nothing to judge by: the adapted defender's result."""
    from ppd.oneshot import OneShotReference, propose

    ref, *targets = pick(manifest, "kvasir", "val", 4)
    given = Defender(segmenter=segmenter)
    paired = adapt_defender(given, ref.image(), ref.mask(), config=QUICK)
    assert isinstance(paired, PairedDefender) and paired.score == "iou" and paired.given is given
    alone = adapt_defender(given, ref.image(), ref.mask(), config=AdaptConfig(decodes=300, choose="adapted"))
    assert type(alone) is Defender and paired.agent is not given.agent
    assert all(torch.equal(v, paired.agent.q.state_dict()[k]) for k, v in alone.agent.q.state_dict().items())
    agree = PairedDefender(alone, given, "agree")
    with pytest.raises(ConfigError, match="score"):
        PairedDefender(alone, given, "dice")
    oref = OneShotReference.make(segmenter.frame(ref.image()), ref.mask())
    gref = oref.graph_reference(given.config.graph_grid)
    for t in targets:
        frame = segmenter.frame(t.image())
        p = propose(oref, frame, 10, seed=0)
        a, g = (d.refine_frame(frame, p.points, p.labels, reference=gref) for d in (alone, given))
        assert np.isfinite(agreement(a)) and np.isfinite(agreement(g))
        for d, want in ((paired, g if g.iou > a.iou else a), (agree, g if agreement(g) > agreement(a) else a)):
            got = d.refine_frame(frame, p.points, p.labels, reference=gref)
            assert np.array_equal(got.mask, want.mask) and np.array_equal(got.kept, want.kept)
            assert ("given defender" in got.stop_reason) == (want is g)
        plain = agree.refine_frame(frame, p.points, p.labels, reference=None)
        assert np.array_equal(plain.mask, alone.refine_frame(frame, p.points, p.labels).mask)


def test_paired_defender_ties_and_missing_scores_keep_the_adapted_result(monkeypatch):
    """The choice rule alone (both defenders' results faked): the given defender's result only when its score
    is strictly higher; a tie or a NaN score keeps the adapted one's; "agree" without a reference never asks
    the given defender."""
    from ppd.refine import RefineResult

    def result(iou: float, fg: float, bg: float) -> RefineResult:
        return RefineResult(points=np.zeros((2, 2)), labels=np.array([1, 0]), kept=np.ones(2, bool), iou=iou,
                            trace=[(iou, fg, bg)], stop_reason="stop")

    class Given:
        def __init__(self, res):
            self.res, self.calls = res, 0

        def refine_frame(self, *args):
            self.calls += 1
            return self.res

    def paired(adapted_res, given_res, score):
        monkeypatch.setattr(Defender, "refine_frame", lambda self, *a, **k: adapted_res)
        d = PairedDefender.__new__(PairedDefender)
        d.given, d.score = Given(given_res), score
        return d

    a = result(0.80, 0.5, 0.2)
    for score, g, want_given in (("iou", result(0.81, 0.0, 0.0), True), ("iou", result(0.80, 0.9, 0.0), False),
                                 ("iou", result(float("nan"), 0.9, 0.0), False),
                                 ("agree", result(0.1, 0.9, 0.2), True), ("agree", result(0.9, 0.5, 0.2), False),
                                 ("agree", result(0.9, float("nan"), 0.0), False)):
        got = paired(a, g, score).refine_frame(None, None, None, "a reference")
        assert (got is g) == want_given and (got is a) != want_given
        assert ("given defender" in got.stop_reason) == want_given
        g.stop_reason = "stop"
    d = paired(a, result(0.99, 0.9, 0.0), "agree")
    assert d.refine_frame(None, None, None, None) is a and d.given.calls == 0
