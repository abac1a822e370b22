"""The ONNX Runtime encoder path through the real model: accuracy against torch eager, cache separation."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import interior_point, pick
from ppd.errors import ConfigError
from ppd.metrics import iou
from ppd.sam import Segmenter


@pytest.fixture(scope="module")
def onnx_seg(cache_dir):
    pytest.importorskip("onnxruntime", reason="ppd[onnx] is installed by the README's setup; without it: skip")
    return Segmenter(cache_dir=cache_dir, encoder="onnx")


def test_onnx_encoder_matches_eager(onnx_seg, segmenter, manifest):
    """Masks from ONNX-encoded frames agree with eager ones (IoU >= 0.99 each) on ECSSD, Kvasir and DSB2018
    val images; the embeddings differ only by float16 rounding of values within 1e-6 of each other."""
    ious = []
    for ds in ("ecssd", "kvasir", "dsb2018"):
        s = pick(manifest, ds, "val", 1)[0]
        image, gt = s.image(), s.mask()
        fe, fo = segmenter.frame(image), onnx_seg.frame(image)
        e, o = fe.embedding.float(), fo.embedding.float()
        assert float((e - o).norm() / e.norm()) < 1e-3
        x, y = interior_point(gt)
        rng = np.random.default_rng(0)
        for _ in range(3):
            pts = np.r_[[[x, y]], rng.uniform([0, 0], gt.shape[::-1], (3, 2))]
            labs = np.r_[1, (gt[pts[1:, 1].astype(int), pts[1:, 0].astype(int)]).astype(int)]
            ious.append(iou(segmenter.decode(fo, pts, labs).mask, segmenter.decode(fe, pts, labs).mask))
    assert min(ious) >= 0.99, ious


def test_onnx_embeddings_are_cached_apart(onnx_seg, segmenter, manifest, cache_dir):
    """The two paths never read each other's cache entries, and ppd eval keys rows by the path."""
    from ppd.evaluate.harness import Harness

    s = pick(manifest, "ph2", "val", 1)[0]
    image = s.image()
    onnx_seg.frame(image)
    segmenter.frame(image)
    sha = onnx_seg.frame(image).image_sha256
    paths = {onnx_seg.cache.path(sha, onnx_seg.embed_key), segmenter.cache.path(sha, segmenter.embed_key)}
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert onnx_seg.embed_key != segmenter.embed_key == segmenter.model_sha256
    assert onnx_seg._onnx.path.is_file() and onnx_seg._onnx.path.parent.parent == cache_dir
    h_o, h_e = Harness(onnx_seg, ["fm-kmeans"]), Harness(segmenter, ["fm-kmeans"])
    assert h_o.key("fm-kmeans", s, s) != h_e.key("fm-kmeans", s, s)


def test_unknown_encoder_is_refused():
    with pytest.raises(ConfigError, match="encoder"):
        Segmenter(encoder="tensorrt")
