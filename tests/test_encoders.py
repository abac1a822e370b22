"""The compiled encoder paths (OpenVINO, ONNX Runtime) through the real model: accuracy against torch
eager, cache separation, the one-time build."""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import interior_point, need, pick
from ppd.errors import ConfigError
from ppd.metrics import iou
from ppd.sam import Segmenter

RUNTIME = {"openvino": "openvino", "onnx": "onnxruntime"}


@pytest.fixture(scope="module", params=["openvino", "onnx"])
def fast_seg(request, cache_dir):
    need(RUNTIME[request.param])
    return Segmenter(cache_dir=cache_dir, encoder=request.param)


@pytest.fixture(scope="module")
def eager_seg(cache_dir):
    return Segmenter(cache_dir=cache_dir, encoder="eager")


def test_fast_encoder_matches_eager(fast_seg, eager_seg, manifest):
    """Masks from fast-encoded frames agree with eager ones (IoU >= 0.99 each) on ECSSD, Kvasir and DSB2018
    val images; the embeddings differ only by float16 rounding of values within ~1e-5 of each other."""
    ious = []
    for ds in ("ecssd", "kvasir", "dsb2018"):
        s = pick(manifest, ds, "val", 1)[0]
        image, gt = s.image(), s.mask()
        fe, fo = eager_seg.frame(image), fast_seg.frame(image)
        e, o = fe.embedding.float(), fo.embedding.float()
        assert float((e - o).norm() / e.norm()) < 1e-3
        x, y = interior_point(gt)
        rng = np.random.default_rng(0)
        for _ in range(3):
            pts = np.r_[[[x, y]], rng.uniform([0, 0], gt.shape[::-1], (3, 2))]
            labs = np.r_[1, (gt[pts[1:, 1].astype(int), pts[1:, 0].astype(int)]).astype(int)]
            ious.append(iou(eager_seg.decode(fo, pts, labs).mask, eager_seg.decode(fe, pts, labs).mask))
    assert min(ious) >= 0.99, ious


def test_fast_encoder_gives_eager_start_sets(fast_seg, eager_seg, manifest):
    """The accuracy bound end to end (issue #18): one-shot start sets and masks from fast-encoded frames
    equal eager ones on Kvasir and ECSSD val pairs. Feature matching may differ by a candidate; the
    stable k-means seeding (ppd.matching.stable_plusplus) keeps the start set where it was."""
    from ppd.oneshot import OneShot

    ious = []
    for ds in ("kvasir", "ecssd"):
        ref, *targets = pick(manifest, ds, "val", 4)
        pipes = {}
        for name, seg in (("eager", eager_seg), ("fast", fast_seg)):
            pipes[name] = OneShot(seg, k=10)
            pipes[name].set_reference(ref.image(), ref.mask())
        for t in targets:
            image = t.image()
            fe = eager_seg.frame(image)
            pe, po = pipes["eager"].propose(fe), pipes["fast"].propose(image)
            assert abs(len(pe.candidates) - len(po.candidates)) <= 3
            ious.append(iou(eager_seg.decode(fe, pe.points, pe.labels).mask,
                            eager_seg.decode(fe, po.points, po.labels).mask))
    assert np.mean(ious) >= 0.99, ious


def test_fast_embeddings_are_cached_apart(fast_seg, eager_seg, manifest, cache_dir):
    """The paths never read each other's cache entries, and ppd eval keys rows by the path."""
    from ppd.evaluate.harness import Harness

    s = pick(manifest, "ph2", "val", 1)[0]
    image = s.image()
    fast_seg.frame(image)
    eager_seg.frame(image)
    sha = fast_seg.frame(image).image_sha256
    paths = {fast_seg.cache.path(sha, fast_seg.embed_key), eager_seg.cache.path(sha, eager_seg.embed_key)}
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert fast_seg.embed_key != eager_seg.embed_key == eager_seg.model_sha256
    assert fast_seg._fast_encoder.path.exists() and fast_seg._fast_encoder.path.parent.parent == cache_dir
    h_o, h_e = Harness(fast_seg, ["fm-kmeans"]), Harness(eager_seg, ["fm-kmeans"])
    assert h_o.key("fm-kmeans", s, s) != h_e.key("fm-kmeans", s, s)


def test_openvino_build_is_atomic_and_keyed_reproducibly(fast_seg, tmp_path):
    """A second build into another folder gives the same key (OpenVINO's generated layer names are left
    out of the hash); a finished build leaves no temporary folder, and a cached one is not rebuilt."""
    if fast_seg.encoder != "openvino":
        pytest.skip("OpenVINO only")
    from ppd.sam.openvino_encoder import build, ir_sha256

    first = fast_seg._fast_encoder.path
    other, took = build(fast_seg.model, fast_seg.model_sha256, tmp_path)
    assert took > 0 and ir_sha256(other) == ir_sha256(first) == fast_seg._fast_encoder.sha256
    assert (other / "encoder.xml").read_bytes() != (first / "encoder.xml").read_bytes()  # only names differ
    assert sorted(os.listdir(other.parent)) == [other.name]
    again, took_again = build(fast_seg.model, fast_seg.model_sha256, tmp_path)
    assert again == other and took_again == 0.0


def test_openvino_runs_in_float32(fast_seg):
    """OpenVINO would pick bfloat16 on a CPU with AMX; the encoder pins float32 (the accuracy bound)."""
    if fast_seg.encoder != "openvino":
        pytest.skip("OpenVINO only")
    req = fast_seg._fast_encoder._request
    assert str(req.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_unknown_encoder_is_refused():
    with pytest.raises(ConfigError, match="encoder"):
        Segmenter(encoder="tensorrt")


@pytest.mark.parametrize("encoder,module", [("openvino", "openvino"), ("onnx", "onnxruntime")])
def test_missing_runtime_is_one_clear_error(encoder, module, monkeypatch, tmp_path):
    """Without its runtime a compiled path is refused with a one-line error naming the extra to install."""
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"pip install 'ppd\[{encoder}\]'"):
        Segmenter(cache_dir=tmp_path, encoder=encoder)


def test_damaged_openvino_model_is_rebuilt(fast_seg, tmp_path):
    """A cached IR whose weights file was damaged is converted again, never loaded (no silent wrong
    embeddings); the rebuilt model has the original key."""
    if fast_seg.encoder != "openvino":
        pytest.skip("OpenVINO only")
    from ppd.sam.openvino_encoder import build, ir_sha256

    folder, _ = build(fast_seg.model, fast_seg.model_sha256, tmp_path)
    raw = bytearray((folder / "encoder.bin").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (folder / "encoder.bin").write_bytes(bytes(raw))
    again, took = build(fast_seg.model, fast_seg.model_sha256, tmp_path)
    assert again == folder and took > 0 and ir_sha256(folder) == fast_seg._fast_encoder.sha256
    (folder / "encoder.sha256").unlink()  # a folder without its hash (cut short, or older) is rebuilt too
    _, took = build(fast_seg.model, fast_seg.model_sha256, tmp_path)
    assert took > 0 and (folder / "encoder.sha256").is_file()
