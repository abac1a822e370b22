"""The ppd CLI: real model, one-line errors, no partial outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import interior_point, pick
from ppd.cli import main
from ppd.metrics import dice

PPD = Path(sys.executable).parent / "ppd"


def test_segment_writes_mask_and_overlay(tmp_path, manifest, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("PPD_CACHE_DIR", str(cache_dir))
    s = pick(manifest, "ecssd", "val", 1)[0]
    gt = s.mask()
    x, y = interior_point(gt)
    out, ov = tmp_path / "m.png", tmp_path / "o.png"
    rc = main(["segment", str(s.image_path), "--point", f"{x},{y}", "--point", "1,1,0",
               "--multimask", "--out", str(out), "--overlay", str(ov)])
    assert rc == 0
    mask = np.asarray(Image.open(out)) > 0
    assert mask.shape == gt.shape and dice(mask, gt) > 0.8
    assert np.asarray(Image.open(ov)).shape == gt.shape + (3,)
    assert "foreground" in capsys.readouterr().out
    ys, xs = np.nonzero(gt)
    box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"
    assert main(["segment", str(s.image_path), "--box", box, "--out", str(out)]) == 0


@pytest.mark.parametrize("args,needle", [
    (["--point", "99999,5"], "outside"),
    (["--point", "nan,5"], "NaN"),
    (["--point", "5"], "--point must be"),
    (["--point", "5,5,7"], "label"),
    (["--box", "1,2,3"], "--box"),
    ([], "at least one"),
])
def test_bad_prompts_one_line_no_output(tmp_path, manifest, capsys, args, needle):
    s = manifest[0]
    out = tmp_path / "m.png"
    rc = main(["segment", str(s.image_path), *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_bad_image_and_unwritable_output(tmp_path, manifest, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert main(["segment", str(bad), "--point", "1,1", "--out", str(tmp_path / "m.png")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    # the output check happens before SAM is loaded: a bad checkpoint is never reached
    rc = main(["segment", str(manifest[0].image_path), "--point", "1,1", "--checkpoint", "/nonexistent.pt",
               "--out", str(tmp_path / "nodir" / "m.png")])
    assert rc == 2 and "output directory does not exist" in capsys.readouterr().err
    rc = main(["segment", str(manifest[0].image_path), "--point", "1,1", "--checkpoint", str(bad),
               "--out", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jpg"]


def test_console_script_and_debug(tmp_path, manifest, cache_dir):
    env = dict(os.environ, PPD_CACHE_DIR=str(cache_dir))
    r = subprocess.run([str(PPD), "segment", str(manifest[0].image_path), "--point=-3,4",
                        "--out", str(tmp_path / "m.png")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.startswith("ppd: error:") and len(r.stderr.splitlines()) == 1
    assert "outside" in r.stderr
    # argparse usage errors are one line as well
    r = subprocess.run([str(PPD), "segment", "x.jpg", "--point"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.startswith("ppd: error:") and len(r.stderr.splitlines()) == 1
    r = subprocess.run([str(PPD), "--debug", "segment", str(manifest[0].image_path), "--point=-3,4",
                        "--out", str(tmp_path / "m.png")], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_demo_runs_on_shipped_samples(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("PPD_CACHE_DIR", str(cache_dir))
    assert main(["demo", "--clicks", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    names = {p.name for p in tmp_path.iterdir()}
    for stem in ("dsb-he", "dsb-fluo", "chelsea", "coffee"):
        assert f"{stem}.mask.png" in names and f"{stem}.overlay.png" in names
    # the DSB samples have ground truth: their Dice is printed and high
    for line in text.splitlines():
        if line.startswith("dsb-"):
            assert float(line.split()[4]) > 0.7, line


def test_demo_oneshot_main_job(tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("PPD_CACHE_DIR", str(cache_dir))
    assert main(["demo", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for stem in ("fluo-a", "fluo-b", "coins-a", "coins-b", "coins-c"):
        for suffix in (".mask.png", ".overlay.png", ".prompts.json"):
            assert (tmp_path / f"{stem}{suffix}").is_file(), stem + suffix
        assert any(line.startswith(stem) for line in text.splitlines())


def test_eval_agents_cli(tmp_path, cache_dir, capsys):
    rc = main(["eval-agents", "--split", "val", "--datasets", "ecssd", "--limit", "2", "--no-oracle",
               "--out", str(tmp_path), "--cache-dir", str(cache_dir)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| ecssd | 2 |" in text and (tmp_path / "attack_defence.csv").is_file()
    rows = (tmp_path / "attack_defence.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("dataset,image,object,ideal")
