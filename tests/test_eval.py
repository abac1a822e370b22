"""``ppd eval``: the one-shot harness through the real MobileSAM, its cache, and its pure logic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import pick, plain_folder
from ppd import data
from ppd.errors import ConfigError, DataError
from ppd.evaluate import baselines, harness
from ppd.metrics import dice, iou
from ppd.oneshot import FeatureMatcher, kmeans_thin


@pytest.fixture(scope="module")
def ecssd_val(data_root):
    return data.load_dataset(data_root, dataset="ecssd", split="val")


# ---------------------------------------------------------------- pure logic
def test_select_is_seeded_and_keeps_references_out(ecssd_val):
    refs, targets = harness.select(ecssd_val, references=3, limit=7, seed=4)
    again = harness.select(ecssd_val, references=3, limit=7, seed=4)
    assert [r.id for r in refs] == [r.id for r in again[0]]
    assert [t.id for t in targets] == [t.id for t in again[1]]
    assert len(refs) == 3 and len(targets) == 7
    assert not {r.id for r in refs} & {t.id for t in targets}
    other = harness.select(ecssd_val, references=3, limit=7, seed=5)
    assert [r.id for r in refs] != [r.id for r in other[0]]
    refs, targets = harness.select(ecssd_val, reference_id=ecssd_val[3].id)
    assert [r.id for r in refs] == [ecssd_val[3].id] and len(targets) == len(ecssd_val) - 1
    with pytest.raises(DataError):
        harness.select(ecssd_val, reference_id="no-such-id")
    with pytest.raises(DataError):
        harness.select(ecssd_val[:2], references=2)


def test_random_removal_respects_the_class_minimum():
    labels = np.array([1, 1, 1, 0, 0])
    for seed in range(20):
        keep = baselines.random_removal(labels, 3, np.random.default_rng(seed))
        assert keep.sum() == 2 and keep[labels == 1].any() and keep[labels == 0].any()
    keep = baselines.random_removal(labels, 10, np.random.default_rng(0))  # more than allowed: stops
    assert keep.sum() == 2


def test_gbmseg_rules_keep_one_prompt_per_class():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(64, 64, 8)).astype(np.float32)
    valid = np.ones((64, 64), bool)
    frac = np.zeros((64, 64))
    frac[20:40, 20:40] = 1.0
    pts = rng.uniform(0, 1000, size=(12, 2)).astype(np.float32)
    labels = np.array([1] * 6 + [0] * 6)
    keep = baselines.gbmseg_prune(pts, labels, grid, valid, frac, grid, 16.0)
    assert keep.shape == (12,) and keep[labels == 1].any() and keep[labels == 0].any()
    # target = reference: every prompt matches back to its own patch, so rule (1) keeps all three;
    # the negative 20 px from the positive is then dropped by the exclusive rule (2 patches = 32 px)
    pts2 = np.array([[630, 500], [650, 500], [100, 100]], np.float32)
    keep2 = baselines.gbmseg_prune(pts2, np.array([1, 0, 0]), grid, valid, frac, grid, 16.0)
    assert keep2.tolist() == [True, False, True]


def test_summary_is_mean_and_sd_over_references():
    rows = []
    for ref, vals in (("a", [0.2, 0.4]), ("b", [0.6, 0.8])):
        for t, v in zip(("t1", "t2"), vals, strict=True):
            rows.append(harness.Row("ds", "fm-kmeans", ref, t, v, v / 2, 0.1, 10, 10))
    rows.append(harness.Row("ds", "oracle-box", "-", "t1", 1.0, 1.0, 0.1, 0, 0))
    s = {x.method: x for x in harness.summarize(rows)}
    assert s["fm-kmeans"].mdsc == pytest.approx(50.0)
    assert s["fm-kmeans"].mdsc_sd == pytest.approx(np.std([30.0, 70.0], ddof=1))
    assert s["fm-kmeans"].n == 2 and s["fm-kmeans"].n_refs == 2
    assert np.isnan(s["oracle-box"].mdsc_sd) and s["oracle-box"].n_refs == 0
    table = harness.format_table(list(s.values()))
    assert "| fm-kmeans | 50.0 ± 28.3 |" in table


def test_result_cache_survives_a_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    c = harness.ResultCache(path)
    c.put(harness.Row("ds", "fm", "a", "t", 0.5, 0.3, 0.1, 3, 3, key="k1"))
    with open(path, "a") as f:
        f.write('{"dataset": "ds", "meth')  # a kill in the middle of a line
    c2 = harness.ResultCache(path)
    assert c2.get("k1").dice == 0.5 and len(c2.rows) == 1


def test_unknown_method_is_a_config_error(segmenter):
    with pytest.raises(ConfigError):
        harness.Harness(segmenter, ["fm", "no-such-method"])


# ---------------------------------------------------------------- real model
def test_harness_metrics_equal_a_direct_computation_and_rerun_uses_cache(segmenter, ecssd_val, tmp_path):
    refs, targets = harness.select(ecssd_val, references=1, limit=3, seed=0)
    cache = harness.ResultCache(tmp_path / "rows.jsonl")
    h = harness.Harness(segmenter, ["fm-kmeans", "oracle-box"], cache=cache)
    rows = h.run(refs, targets, progress=False)
    assert len(rows) == 2 * len(targets)
    fm = FeatureMatcher(segmenter)
    fm.set_reference(refs[0].image(), refs[0].mask())
    for t in targets:
        gt = t.mask()
        frame = segmenter.frame(t.image())
        cand = fm.match(frame)
        idx = kmeans_thin(cand.points, cand.labels, 10, seed=0)
        m = segmenter.decode(frame, cand.points[idx], cand.labels[idx]).mask
        row = next(r for r in rows if r.target == t.id and r.method == "fm-kmeans")
        assert row.dice == pytest.approx(dice(m, gt), abs=1e-9) and row.iou == pytest.approx(iou(m, gt), abs=1e-9)
        assert row.reference == refs[0].id and row.n_prompts == len(idx)
        box = baselines.mask_box(gt)
        mb = segmenter.decode(frame, box=box).mask
        row = next(r for r in rows if r.target == t.id and r.method == "oracle-box")
        assert row.dice == pytest.approx(dice(mb, gt), abs=1e-9)
    # second run: every row from the cache file, no SAM decode at all
    before = segmenter.decode_count
    h2 = harness.Harness(segmenter, ["fm-kmeans", "oracle-box"], cache=harness.ResultCache(tmp_path / "rows.jsonl"))
    rows2 = h2.run(refs, targets, progress=False)
    assert segmenter.decode_count == before
    assert h2.cache.hits >= len(rows2)
    assert [(r.method, r.target, r.dice) for r in rows2] == [(r.method, r.target, r.dice) for r in rows]
    # a different K is a different configuration: recomputed
    h3 = harness.Harness(segmenter, ["fm-kmeans"], cfg=harness.EvalConfig(k=3),
                         cache=harness.ResultCache(tmp_path / "rows.jsonl"))
    rows3 = h3.run(refs, targets[:1], progress=False)
    assert h3.cache.hits == 0 and rows3[0].n_prompts <= 6


def test_every_method_runs_on_a_real_image(segmenter, ecssd_val):
    refs, targets = harness.select(ecssd_val, references=1, limit=1, seed=1)
    h = harness.Harness(segmenter, list(harness.METHODS))
    rows = {r.method: r for r in h.run(refs, targets, progress=False)}
    assert set(rows) == set(harness.METHODS)
    for r in rows.values():
        assert 0.0 <= r.dice <= 1.0 and 0.0 <= r.iou <= r.dice + 1e-9 and r.seconds >= 0
    # the removal-only refinements start from the fm-kmeans set and only remove
    n = rows["fm-kmeans"].n_prompts
    for m in ("fm-ppd", "fm-random", "fm-gbmseg", "fm-greedy-oracle"):
        assert rows[m].n_prompts == n and 1 <= rows[m].n_kept <= n
    assert rows["fm-random"].n_kept == rows["fm-ppd"].n_kept  # as many removals as the defender made
    assert rows["fm-greedy-oracle"].dice >= rows["fm-kmeans"].dice - 0.02  # greedy only removes when it helps
    assert rows["fm"].n_prompts > n
    assert rows["ideal-attacked-random"].n_kept == rows["ideal-attacked-defended"].n_kept
    assert rows["ideal-attacked-random"].n_prompts == rows["ideal-attacked"].n_prompts
    assert rows["ideal-attacked"].n_prompts >= rows["ideal"].n_prompts - 8
    # with a reference the defender refines the same attacked set (once per reference)
    assert rows["ideal-attacked-defended-ref"].n_prompts == rows["ideal-attacked"].n_prompts
    assert rows["ideal-attacked-defended-ref"].reference == refs[0].id and rows["ideal-attacked"].reference == "-"


def test_cli_eval_on_aplain_folder(tmp_path, ecssd_val, cache_dir, capsys):
    from ppd.cli import main

    folder = plain_folder(tmp_path / "mydata", ecssd_val[:3])
    out = tmp_path / "out"
    rc = main(["eval", "--data", str(folder), "--methods", "fm-kmeans,fm-ppd", "--reference", ecssd_val[0].id,
               "--out", str(out), "--cache-dir", str(cache_dir)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| fm-ppd |" in text and "| method | mDSC | mIoU | s/img | n |" in text
    info = json.loads((out / "run.json").read_text())
    assert info["references"] == [ecssd_val[0].id] and info["n_targets"] == 2
    assert len(info["hashes"]["sam"]) == 64 and len(info["hashes"]["defender"]) == 64
    lines = (out / "per_image.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 2
    assert not list(out.glob("*.tmp"))


@pytest.mark.parametrize("argv, message", [
    (["--methods", "fm,bogus"], "unknown method"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--dataset", "nope"], "no eval images of dataset"),
    (["--split", "val"], "choose one with --dataset"),
])
def test_cli_eval_bad_input_is_one_line(tmp_path, argv, message, capsys):
    from ppd.cli import main

    rc = main(["eval", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_report_from_a_real_eval_run(segmenter, tmp_path, data_root):
    """docs/RESULTS.md's generator on a tiny real run: tables, bootstrap line, chart and overlays."""
    from ppd.evaluate import report

    res = tmp_path / "results"
    harness.run(data_root, "ecssd", "val", ["fm-kmeans", "fm-ppd", "fm-greedy-oracle", "persam"], references=2,
                limit=3, out_dir=res / "ecssd", segmenter=segmenter, cache_path=tmp_path / "rows.jsonl",
                progress=False)
    text = report.build(res, tmp_path / "RESULTS.md")
    assert (tmp_path / "RESULTS.md").read_text() == text
    assert "### ecssd" in text and "| **fm-ppd** |" in text and "share of oracle gain" in text
    assert (res / "bars.png").stat().st_size > 1000
    pngs = list((res / "overlays").glob("ecssd_*.jpg"))
    assert 1 <= len(pngs) <= 3 and all(f"results/overlays/{p.name}" in text for p in pngs)
    rows = report._read_csv(res / "ecssd" / "per_image.csv")
    km, pp = report.per_target(rows, "fm-kmeans"), report.per_target(rows, "fm-ppd")
    gain, lo, hi = report.paired_bootstrap(pp, km)
    assert lo <= gain <= hi
    assert gain == pytest.approx(100 * np.mean([pp[t] - km[t] for t in km]))
    assert f"{gain:+.1f} [{lo:+.1f}, {hi:+.1f}]" in text
    # the greedy oracle run on a target subset of its own (`make results`): read from <results>/oracle/<ds>
    sub = tmp_path / "results2"
    harness.run(data_root, "ecssd", "val", ["fm-kmeans", "fm-ppd", "persam"], references=2, limit=3,
                out_dir=sub / "ecssd", segmenter=segmenter, cache_path=tmp_path / "rows.jsonl", progress=False)
    shutil.copytree(res / "ecssd", sub / "oracle" / "ecssd")
    orc = next(float(s["mDSC"]) for s in report._read_csv(res / "ecssd" / "summary.csv")
               if s["method"] == "fm-greedy-oracle")
    text2 = report.build(sub, tmp_path / "RESULTS2.md", overlays=False)
    line = next(x for x in text2.splitlines() if x.startswith("| ecssd |"))
    assert f"| {orc:.1f} (3 targets, 1 start set) |" in line
    assert line.split(" | ")[6] == next(x for x in text.splitlines() if x.startswith("| ecssd |")).split(" | ")[6]


def test_cli_eval_mask_size_mismatch(tmp_path, ecssd_val, cache_dir, capsys):
    from PIL import Image

    from ppd.cli import main

    folder = plain_folder(tmp_path / "bad", ecssd_val[:2])
    for p in (folder / "masks").iterdir():
        m = Image.open(p)
        m.resize((m.width // 2, m.height // 2), Image.NEAREST).save(p)
    out = tmp_path / "out"
    rc = main(["eval", "--data", str(folder), "--methods", "oracle-box", "--reference", ecssd_val[0].id,
               "--out", str(out), "--cache-dir", str(cache_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "mask is" in err and len(err.strip().splitlines()) == 1
    assert not (out / "summary.md").exists() and not (out / "per_image.csv").exists()


def test_base_run_supplies_the_methods_not_rerun(segmenter, data_root, tmp_path):
    kw = {"references": 1, "limit": 2, "segmenter": segmenter, "cache_path": tmp_path / "rows.jsonl",
          "progress": False}
    harness.run(data_root, "ecssd", "val", ["oracle-box", "fm-kmeans"], out_dir=tmp_path / "a", **kw)
    first = (tmp_path / "a" / "per_image.csv").read_text().splitlines()
    rows, summary = harness.run(data_root, "ecssd", "val", ["fm-kmeans"], out_dir=tmp_path / "b",
                                base=tmp_path / "a", **kw)
    assert sorted((tmp_path / "b" / "per_image.csv").read_text().splitlines()) == sorted(first)
    assert {s.method for s in summary} == {"oracle-box", "fm-kmeans"}
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["base"]["methods"] == ["oracle-box"] and info["methods"] == ["fm-kmeans"]
    with pytest.raises(ConfigError, match="references"):  # another seed picks other references
        harness.run(data_root, "ecssd", "val", ["fm-kmeans"], base=tmp_path / "a", cfg=harness.EvalConfig(seed=3),
                    **kw)
    with pytest.raises(ConfigError, match="not a readable"):
        harness.run(data_root, "ecssd", "val", ["fm-kmeans"], base=tmp_path / "nowhere", **kw)


def test_untrained_rows_are_keyed_by_the_defender_they_imitate():
    """ideal-attacked-untrained is shaped and set like the evaluated defender, so its cache key follows that
    defender (pure logic: the harness only reads the segmenter's weight hash here)."""
    from types import SimpleNamespace

    from ppd.agents.dqn import shipped_agent_path

    seg = SimpleNamespace(model_sha256="sam")
    twin = Path(__file__).parents[1] / "docs" / "training" / "ship7x" / "defender"
    a = harness.Harness(seg, ["ideal-attacked-untrained"])
    b = harness.Harness(seg, ["ideal-attacked-untrained"], defender=twin)
    c = harness.Harness(seg, ["ideal-attacked-untrained"], defender_opts={"select": "last"})
    assert len({a.hashes["untrained"], b.hashes["untrained"], c.hashes["untrained"]}) == 3
    assert a.hashes["untrained"] == harness.Harness(seg, ["ideal-attacked-untrained"],
                                                    defender=shipped_agent_path("defender")).hashes["untrained"]


def test_votes_in_eval_rows(segmenter, data_root, tmp_path):
    """``EvalConfig(votes=5)``: fm-kmeans and fm-ppd score the majority mask of five voted start sets (the
    fifth on the target flipped left-right), exactly as OneShot(votes=5) makes it; votes=1 rows keep their
    earlier cache keys."""
    from ppd.evaluate.keys import config_key
    from ppd.oneshot import OneShot
    from ppd.refine import Defender

    assert "votes" not in config_key(harness.EvalConfig()) and config_key(harness.EvalConfig(votes=3))["votes"] == 3
    # not the rows of session 10 (seeds only) or sessions 11-15 (reference flips, then seeds)
    assert config_key(harness.EvalConfig(votes=3))["vote_plan"] == "flips+target"
    kw = {"references": 1, "limit": 2, "segmenter": segmenter, "progress": False, "cache_path": tmp_path / "rows.jsonl"}
    harness.run(data_root, "kvasir", "val", ["fm-gbmseg"], **kw)
    rows, _ = harness.run(data_root, "kvasir", "val", ["fm-kmeans", "fm-ppd", "fm-gbmseg"],
                          cfg=harness.EvalConfig(votes=5), **kw)
    cached = (tmp_path / "rows.jsonl").read_text()
    assert cached.count('"fm-gbmseg"') == 2  # a method that does not vote keeps its rows
    rows = [r for r in rows if r.method != "fm-gbmseg"]
    samples = {s.id: s for s in data.load_dataset(data_root, split="val") if s.dataset == "kvasir"}
    d = Defender(segmenter=segmenter)
    for r in rows:
        ref, tgt = samples[r.reference], samples[r.target]
        pipe = OneShot(segmenter, d if r.method == "fm-ppd" else None, k=10, seed=0, votes=5)
        pipe.set_reference(ref.image(), ref.mask())
        assert r.dice == pytest.approx(dice(pipe.run(tgt.image()).mask, tgt.mask()), abs=1e-9)
    assert len(rows) == 4


@pytest.mark.parametrize("cmd", ["eval", "oneshot"])
def test_cli_bad_votes_is_one_line(tmp_path, manifest, capsys, cmd):
    from ppd.cli import main

    s = pick(manifest, "kvasir", "val", 1)[0]
    argv = (["eval", "--out", str(tmp_path / "o"), "--dataset", "kvasir", "--split", "val"] if cmd == "eval" else
            ["oneshot", "--ref", str(s.image_path), "--ref-mask", str(s.mask_path), "--target", str(s.image_path),
             "--out", str(tmp_path / "o")])
    rc = main([*argv, "--votes", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--votes must be" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
