"""Crash safety and odd inputs: kills, shared caches, huge images, property-based checks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from ppd.errors import InvalidPromptError
from ppd.prompts import PromptSet, ideal_prompts
from ppd.sam.segmenter import check_points

PY = sys.executable
EMBED = """
import sys
from ppd import data
from ppd.sam import Segmenter
seg = Segmenter(cache_dir=sys.argv[1])
for s in data.load_dataset(split="val")[: int(sys.argv[2])]:
    seg.embed(s.image())
    print("done", s.id, flush=True)
"""


def _entries(root: Path) -> list[Path]:
    return sorted(root.glob("embeddings/*/*/*.safetensors"))


def test_kill_during_embedding_leaves_no_corrupt_entry(tmp_path):
    proc = subprocess.Popen([PY, "-c", EMBED, str(tmp_path), "8"], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait for two finished entries, then kill mid-way through the third
        if line.startswith("done") and len(_entries(tmp_path)) >= 2:
            time.sleep(0.4)
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from safetensors import safe_open

    entries = _entries(tmp_path)
    assert len(entries) >= 2
    for p in entries:  # every entry that exists is complete and self-consistent
        with safe_open(str(p), framework="np") as f:
            meta = f.metadata()
            emb = f.get_tensor("embedding")
        assert emb.shape == (1, 256, 64, 64) and meta["image_sha256"] == p.stem


def test_two_processes_share_one_cache(tmp_path):
    procs = [subprocess.Popen([PY, "-c", EMBED, str(tmp_path), "3"], stdout=subprocess.DEVNULL) for _ in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    entries = _entries(tmp_path)
    assert len(entries) == 3
    assert not list(tmp_path.glob("embeddings/*/*/*.tmp"))
    out = subprocess.run([PY, "-c", EMBED, str(tmp_path), "3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "corrupt" not in out.stderr


def test_kill_during_training_then_resume(tmp_path, data_root):
    out = tmp_path / "run"
    ppd = str(Path(PY).parent / "ppd")
    args = [ppd, "train", "--data", str(data_root), "--out", str(out), "--images", "3", "--games", "2",
            "--decodes", "100000", "--learning-starts", "32", "--checkpoint-minutes", "0.05"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "checkpoint" / "state.json"
    t0 = time.time()
    while time.time() - t0 < 240:
        if state.is_file():
            import json

            if json.loads(state.read_text())["round"] >= 2:
                break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    import json

    saved = json.loads(state.read_text())
    rows_before = (out / "log.csv").read_text().splitlines()[1:]
    # at most one checkpoint interval (plus the round in flight) is lost
    assert len(rows_before) - saved["round"] <= 3
    st_cfg = saved["config"]
    st_cfg["decode_budget"] = saved["decodes"] + 40
    state.write_text(json.dumps(saved | {"config": st_cfg}))
    r = subprocess.run([ppd, "train", "--data", str(data_root), "--out", str(out), "--resume", "--images", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rounds = [int(x.split(",")[0]) for x in (out / "log.csv").read_text().splitlines()[1:]]
    assert rounds == list(range(1, len(rounds) + 1)) and rounds[-1] > saved["round"]
    assert not list(out.glob(".checkpoint.*"))
    # a checkpoint whose replay states point at other images is refused with a one-line error
    saved = json.loads(state.read_text())
    state.write_text(json.dumps(saved | {"images": ["0" * 64] * len(saved["images"])}))
    r = subprocess.run([ppd, "train", "--data", str(data_root), "--out", str(out), "--resume", "--images", "3"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "other images" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "other images" in r.stderr.strip().splitlines()[-1]  # after progress bars


def test_huge_image_within_memory(tmp_path, segmenter):
    big = tmp_path / "big.jpg"
    arr = np.zeros((9000, 12000, 3), np.uint8)
    arr[2000:7000, 3000:9000] = 200
    Image.fromarray(arr).save(big, quality=80)
    del arr
    from ppd.io import read_image

    image = read_image(big)
    assert image.shape == (9000, 12000, 3)
    segmenter.set_image(image)
    pred = segmenter.predict([[6000, 4500]], [1])
    assert pred.mask.shape == (9000, 12000) and pred.mask[4500, 6000]


coords = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(0, 6), st.just(2)), elements=coords),
       st.integers(1, 500), st.integers(1, 500))
def test_point_validation_property(pts, h, w):
    labs = np.ones(len(pts), int)
    ok = np.isfinite(pts).all() and ((pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)).all()
    if ok:
        p, lab = check_points(pts, labs, (h, w))
        assert p.shape == (len(pts), 2) and (lab == 1).all()
    else:
        with pytest.raises(InvalidPromptError):
            check_points(pts, labs, (h, w))


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(8, 40), st.integers(8, 40))), st.integers(0, 10**6))
def test_ideal_prompts_property(mask, seed):
    if not mask.any() or mask.all():
        return
    p = ideal_prompts(mask, np.random.default_rng(seed))
    xs, ys = p.points[:, 0].astype(int), p.points[:, 1].astype(int)
    assert (mask[ys, xs] == (p.labels == 1)).all()  # positives inside, negatives outside
    assert p.active.all() and len(p) == len(p.labels)
    q = p.subset(np.arange(len(p))[::-1])
    assert isinstance(q, PromptSet) and np.array_equal(q.points[::-1], p.points)
