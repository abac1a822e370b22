"""Bad input as a new user gives it (issue #14): one line and exit 2 from the CLI, a typed PPDError
from the API, nothing half-written, and no silent wrong result. Most checks fail before SAM loads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import interior_point, pick
from ppd.cli import main, output_stems
from ppd.errors import (
    CheckpointError,
    ConfigError,
    InvalidImageError,
    InvalidMaskError,
    InvalidPromptError,
    OutputError,
    PPDError,
    PPDWarning,
)
from ppd.io import OutputDir, check_points

PPD = Path(sys.executable).parent / "ppd"
ASSETS = Path(__file__).resolve().parents[1] / "src" / "ppd" / "assets"


def one_line_error(capsys, rc: int, needle: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- 1. prompt shapes
def test_points_are_never_reshaped():
    size = (100, 100)
    pts, labs = check_points([[10, 10, 1], [20, 20, 0]], None, size)  # (x, y, label) rows, no labels
    assert pts.tolist() == [[10, 10], [20, 20]] and labs.tolist() == [1, 0]
    with pytest.raises(InvalidPromptError, match=r"shape \(2, 3\).*only without separate labels"):
        check_points([[10, 10, 1], [20, 20, 0]], [1, 0], size)
    with pytest.raises(InvalidPromptError, match=r"shape \(4,\)"):
        check_points([10, 10, 20, 20], None, size)
    with pytest.raises(InvalidPromptError, match="ragged"):
        check_points([[1, 2], [3]], None, size)
    with pytest.raises(InvalidPromptError, match=r"shape \(2, 3\)"):
        check_points([[10, 10, 7], [20, 20, 0]], [1, 1], size)


def test_predict_reads_label_rows_as_labels(segmenter, manifest):
    s = pick(manifest, "ecssd", "val", 1)[0]
    segmenter.set_image(s.image())
    x, y = interior_point(s.mask())
    rows = segmenter.predict([[x, y, 1], [2, 2, 0]])
    split = segmenter.predict([[x, y], [2, 2]], [1, 0])
    assert np.array_equal(rows.mask, split.mask) and rows.iou == split.iou
    with pytest.raises(InvalidPromptError, match="only without separate labels"):
        segmenter.predict([[x, y, 1], [2, 2, 0]], [1, 0])


@pytest.mark.parametrize("body,needle", [
    ({"points": [[10, 10, 1], [20, 20, 0]], "labels": [1, 0]}, "shape (2, 3)"),
    ({"points": [10, 10, 20, 20]}, "shape (4,)"),
    ({"points": [[10, 10, 9]]}, "labels must be 1"),
    ([[10, 10]], "\"points\" list"),
])
def test_cli_prompts_json_shapes(tmp_path, manifest, capsys, body, needle):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(body))
    rc = main(["refine", str(manifest[0].image_path), "--prompts", str(p), "--out", str(tmp_path / "o")])
    one_line_error(capsys, rc, needle)
    assert not (tmp_path / "o").exists()


def test_cli_reads_label_rows(tmp_path, manifest, cache_dir, monkeypatch, capsys):
    """(x, y, label) rows without "labels" are the documented alternative: they refine like the split form."""
    monkeypatch.setenv("PPD_CACHE_DIR", str(cache_dir))
    s = pick(manifest, "ecssd", "val", 1)[0]
    x, y = interior_point(s.mask())
    (tmp_path / "rows.json").write_text(json.dumps({"points": [[x, y, 1], [1, 1, 0]]}))
    (tmp_path / "split.json").write_text(json.dumps({"points": [[x, y], [1, 1]], "labels": [1, 0]}))
    for name in ("rows", "split"):
        assert main(["refine", str(s.image_path), "--prompts", str(tmp_path / f"{name}.json"),
                     "--out", str(tmp_path / name)]) == 0
    a, b = (json.loads((tmp_path / n / f"{s.id}.prompts.json").read_text()) for n in ("rows", "split"))
    assert a == b and a["labels"] == [1, 0]


# ----------------------------------------------------------------------------- 2. agent integrity
def _copy_defender(tmp_path: Path) -> Path:
    for suffix in (".safetensors", ".json"):
        shutil.copy(ASSETS / f"defender{suffix}", tmp_path / f"d{suffix}")
    return tmp_path / "d"


def test_every_shipped_and_documented_agent_carries_a_matching_hash():
    from ppd.refine import load_agent

    paths = sorted(ASSETS.glob("*.safetensors")) + sorted((ASSETS.parents[2] / "docs" / "training").rglob(
        "*.safetensors"))
    assert len(paths) >= 4
    for p in paths:
        assert "weights_sha256" in json.loads(p.with_suffix(".json").read_text()), p
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_agent(p.with_suffix(""), json.loads(p.with_suffix(".json").read_text())["role"])


def test_tampered_agent_weights_are_refused(tmp_path, manifest, capsys):
    from ppd.refine import load_agent

    base = _copy_defender(tmp_path)
    w = base.with_suffix(".safetensors")
    data = bytearray(w.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 100] ^= 0xFF  # one weight byte, the header untouched: safetensors still parses it
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the sha256"):
        load_agent(base, "defender")
    (tmp_path / "p.json").write_text(json.dumps({"points": [[5, 5]], "labels": [1]}))
    rc = main(["refine", str(manifest[0].image_path), "--prompts", str(tmp_path / "p.json"), "--defender",
               str(base), "--out", str(tmp_path / "o")])
    one_line_error(capsys, rc, "do not match the sha256")
    assert not (tmp_path / "o").exists()


def test_older_agent_without_hash_loads_with_one_warning(tmp_path):
    from ppd.refine import load_agent

    base = _copy_defender(tmp_path)
    cfg = json.loads(base.with_suffix(".json").read_text())
    del cfg["weights_sha256"]
    base.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.warns(PPDWarning, match="no integrity hash"):
        agent = load_agent(base, "defender")
    assert agent.rows == cfg["rows"]
    # the CLI shows it as one line (a real process: warnings are formatted by ppd's main)
    r = subprocess.run([str(PPD), "oneshot", "--ref", "x.jpg", "--ref-mask", "x.png", "--target", "x.jpg",
                        "--out", str(tmp_path / "o"), "--defender", str(base), "-k", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["ppd: error: -k must be at least 1, got 0"]
    r = subprocess.run([str(PPD), "oneshot", "--ref", "missing.jpg", "--ref-mask", "x.png", "--target", "x.jpg",
                        "--out", str(tmp_path / "o"), "--defender", str(base)], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 2 and lines[0].startswith("ppd: warning: agent checkpoint")
    assert "image not found" in lines[1]


def test_role_message_uses_the_right_article(tmp_path):
    from ppd.refine import load_agent

    for suffix in (".safetensors", ".json"):
        shutil.copy(ASSETS / f"attacker{suffix}", tmp_path / f"a{suffix}")
    with pytest.raises(CheckpointError, match="is an attacker checkpoint, not a defender"):
        load_agent(tmp_path / "a", "defender")


# ----------------------------------------------------------------------------- 3 + 7 + 10: oneshot, real model
def test_oneshot_same_stems_threshold_and_progress(tmp_path, manifest, cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("PPD_CACHE_DIR", str(cache_dir))
    ref, t = pick(manifest, "ecssd", "val", 2)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(t.image_path, tmp_path / d / "img.jpg")
    soft = tmp_path / "soft.png"  # a non-binary mask: 0 / 100 / 255
    m = ref.mask().astype(np.uint8) * 255
    m[: m.shape[0] // 8][m[: m.shape[0] // 8] == 0] = 100
    Image.fromarray(m).save(soft)
    args = ["oneshot", "--ref", str(ref.image_path), "--ref-mask", str(soft), "--target",
            str(tmp_path / "a" / "img.jpg"), str(tmp_path / "b" / "img.jpg"), "--out", str(tmp_path / "o")]
    one_line_error(capsys, main(args), "--mask-threshold")
    assert not (tmp_path / "o").exists()
    assert main([*args, "--mask-threshold", "127"]) == 0
    cap = capsys.readouterr()
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == sorted(f"img-{i}.{k}" for i in (1, 2) for k in ("mask.png", "overlay.png", "prompts.json"))
    assert "loading SAM" in cap.err and "embedding the reference" in cap.err and "img-2.*" in cap.err
    results = [ln for ln in cap.out.splitlines() if "FM candidates" in ln]
    assert [ln.split(":")[0] for ln in results] == ["img-1", "img-2"]  # each result on a line of its own


def test_output_stems_are_unique():
    assert output_stems(["a/x.jpg", "b/y.jpg"]) == ["x", "y"]
    assert output_stems(["a/x.jpg", "b/x.png", "x-2.jpg"]) == ["x-1", "x-2", "x-2_"]


# ----------------------------------------------------------------------------- 4 + 8: outputs and odd images
def test_too_elongated_images(tmp_path, segmenter, capsys):
    for w, h in ((3000, 1), (1, 3000)):
        p = tmp_path / f"thin{w}.png"
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(p)
        rc = main(["segment", str(p), "--point", "0,0", "--out", str(tmp_path / "m.png")])
        one_line_error(capsys, rc, "too elongated")
        with pytest.raises(InvalidImageError, match="too elongated"):
            segmenter.set_image(np.full((h, w, 3), 90, np.uint8))
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("command", ["oneshot", "refine", "eval", "segment"])
def test_unusable_out_paths_fail_before_sam(tmp_path, manifest, capsys, command):
    s = manifest[0]
    (tmp_path / "p.json").write_text(json.dumps({"points": [[5, 5]], "labels": [1]}))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    loop = tmp_path / "loop"
    os.symlink(tmp_path / "loop2", loop)
    os.symlink(loop, tmp_path / "loop2")
    outs = ["/proc/ppd-out", str(loop)] + ([str(a_file)] if command != "segment" else [])
    for out in outs:
        if command == "segment":
            out = out if out.endswith(".png") or out == str(loop) else out + ".png"
        argv = {"oneshot": ["oneshot", "--ref", str(s.image_path), "--ref-mask", str(s.mask_path), "--target",
                            str(s.image_path), "--out", out],
                "refine": ["refine", str(s.image_path), "--prompts", str(tmp_path / "p.json"), "--out", out],
                "eval": ["eval", "--dataset", "ecssd", "--split", "val", "--limit", "1", "--out", out],
                "segment": ["segment", str(s.image_path), "--point", "5,5", "--out", out]}[command]
        rc = main([*argv, "--checkpoint", str(tmp_path / "no-such-weights.pt")])  # SAM would fail differently
        err = one_line_error(capsys, rc, "ppd: error:")
        assert "weights" not in err and "checkpoint" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "loop", "loop2", "p.json"]


@pytest.mark.parametrize("k", ["0", "-1"])
def test_oneshot_k_checked_before_sam(tmp_path, manifest, capsys, k):
    s = manifest[0]
    rc = main(["oneshot", "--ref", str(s.image_path), "--ref-mask", str(s.mask_path), "--target", str(s.image_path),
               "--out", str(tmp_path / "o"), f"-k={k}", "--checkpoint", str(tmp_path / "none.pt")])
    one_line_error(capsys, rc, f"-k must be at least 1, got {k}")
    assert not (tmp_path / "o").exists()


def test_mask_outputs_are_png_only(tmp_path, manifest, capsys):
    for name in ("m.jpg", "m"):
        rc = main(["segment", str(manifest[0].image_path), "--point", "5,5", "--out", str(tmp_path / name)])
        one_line_error(capsys, rc, "must end in .png")
    rc = main(["segment", str(manifest[0].image_path), "--point", "5,5", "--out", str(tmp_path / "m.PNG"),
               "--overlay", str(tmp_path / "o.jpeg")])
    one_line_error(capsys, rc, "must end in .png")
    assert list(tmp_path.iterdir()) == []


def test_output_dir_is_created_late_and_removed_when_a_run_fails(tmp_path):
    target = tmp_path / "new" / "deeper"
    out = OutputDir(target)
    assert not (tmp_path / "new").exists()  # checked, not created
    with pytest.raises(RuntimeError), out:
        out.ensure()
        raise RuntimeError("failed part-way")
    assert not (tmp_path / "new").exists()  # the folders it created, removed while empty
    out = OutputDir(target)
    with pytest.raises(RuntimeError), out:
        (out.ensure() / "first.png").write_text("finished")
        raise RuntimeError("failed on the second target")
    assert (target / "first.png").is_file()  # finished outputs stay (documented)
    with pytest.raises(OutputError, match="not a directory"):
        OutputDir(target / "first.png")


# ----------------------------------------------------------------------------- 5. large prompt sets
def test_oversized_prompt_set_refused_before_torch(tmp_path, manifest):
    pts = [[i % 50, i % 40] for i in range(10_000)]
    (tmp_path / "big.json").write_text(json.dumps({"points": pts}))
    # a missing SAM checkpoint proves the refusal comes first; a real process proves no model was built
    r = subprocess.run([str(PPD), "refine", str(manifest[0].image_path), "--prompts", str(tmp_path / "big.json"),
                        "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "none.pt")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "10000 prompts: the defender refines at most 64" in r.stderr and "-k 32" in r.stderr
    assert not (tmp_path / "o").exists()
    # the CLI's parser and the light checks never import torch (what keeps the refusal under a second)
    probe = "import sys, ppd.cli; ppd.cli.build_parser(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe]).returncode == 0
    from ppd.prompts import check_prompt_count

    check_prompt_count(64, 64)
    with pytest.raises(InvalidPromptError):
        check_prompt_count(65, 64)


# ----------------------------------------------------------------------------- 6 + 7. eval and messages
@pytest.mark.parametrize("argv,needle", [
    (["eval", "--methods", ",", "--dataset", "ecssd", "--out", "o"], "no method given"),
    (["eval", "--methods", "fm", "--dataset", "ecssd", "--split", "val", "-k", "0", "--out", "o"],
     "-k must be at least 1, got 0"),
    (["segment", "/", "--point", "1,1", "--out", "o.png"], "is a directory, not a file"),
    (["eval", "--methods", "fm-ppd", "--dataset", "ecssd", "--split", "val", "-k", "33", "--out", "o"],
     "use -k 32 or less"),
    (["demo", "-k", "33", "--out", "o"], "use -k 32 or less"),
])
def test_eval_and_messages(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, main(argv), needle)
    assert list(tmp_path.iterdir()) == []


def test_directory_as_checkpoint(tmp_path, manifest, capsys):
    rc = main(["segment", str(manifest[0].image_path), "--point", "1,1", "--out", str(tmp_path / "m.png"),
               "--checkpoint", str(tmp_path)])
    one_line_error(capsys, rc, "is a directory, not the weights file")


# ----------------------------------------------------------------------------- 9. every deliberate error is a PPDError
def test_api_errors_are_typed(segmenter, manifest):
    from ppd.oneshot import FeatureMatcher, kmeans_thin
    from ppd.refine import Defender
    from ppd.sam import Segmenter

    with pytest.raises(ConfigError):
        Segmenter(precision="fp16")
    with pytest.raises(ConfigError):
        kmeans_thin(np.zeros((3, 2)), np.ones(3, int), k=0)
    with pytest.raises(ConfigError):
        Defender(123)
    s = manifest[0]
    image = s.image()
    mask_list = s.mask().tolist()
    with pytest.raises(InvalidMaskError):
        Defender(segmenter=segmenter).set_reference(image, mask_list)
    with pytest.raises(InvalidMaskError):
        FeatureMatcher(segmenter).set_reference(image, mask_list)
    for exc in (ConfigError, InvalidMaskError, InvalidImageError, InvalidPromptError, OutputError, CheckpointError):
        assert issubclass(exc, PPDError)


def test_frame_api_errors(segmenter, manifest):
    """Frames are typed: an array where a frame is expected, or a box on the low-res path, is a clear error."""
    from ppd.errors import ConfigError
    from ppd.oneshot import OneShot
    from ppd.refine import Defender

    s = pick(manifest, "ecssd", "val", 1)[0]
    image = s.image()
    with pytest.raises(ConfigError, match="Frame"):
        segmenter.decode(image, [[5, 5]], [1])
    with pytest.raises(ConfigError, match="Frame"):
        Defender(segmenter=segmenter).refine_frame(image, [[5, 5]], [1])
    frame = segmenter.frame(image)
    with pytest.raises(InvalidPromptError, match="points only"):
        segmenter.decode(frame, [[5, 5]], [1], box=[0, 0, 9, 9], lowres=True)
    with pytest.raises(ConfigError, match="auto, single, many, union"):
        OneShot(segmenter, None, instances="multi")
