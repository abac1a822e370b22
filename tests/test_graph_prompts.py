"""Pure logic of the graph, prompt sets, ideal prompts and the attack pool (small fakes),
plus the graph on a real embedding."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import pick
from ppd.graph import build_graph
from ppd.prompts import (
    BG_POS,
    BOUNDARY,
    DISTRACTOR,
    MISLABEL,
    OBJ_NEG,
    IdealConfig,
    PoolConfig,
    PromptSet,
    attack_pool,
    ideal_prompts,
    lattice_points,
)


def _disc(h=120, w=160, r=30, cx=70, cy=60):
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_lattice_counts_and_region():
    rng = np.random.default_rng(0)
    m = _disc()
    for n in (1, 5, 10, 37):
        pts = lattice_points(m, n, rng)
        assert len(pts) == n
        assert m[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    tiny = np.zeros((20, 20), bool)
    tiny[5, 5:8] = True
    assert len(lattice_points(tiny, 10, rng)) == 3  # fewer pixels than asked: all of them


def test_ideal_prompts_respect_mask_counts_and_margin():
    m = _disc()
    for seed in range(5):
        p = ideal_prompts(m, np.random.default_rng(seed), IdealConfig(n_pos=(5, 10), n_neg=(5, 10)))
        pos, neg = p.points[p.labels == 1], p.points[p.labels == 0]
        assert 5 <= len(pos) <= 10 and 5 <= len(neg) <= 10 and p.active.all()
        assert m[pos[:, 1].astype(int), pos[:, 0].astype(int)].all()
        assert not m[neg[:, 1].astype(int), neg[:, 0].astype(int)].any()
        d = np.hypot(pos[:, 0] - 70, pos[:, 1] - 60)
        assert (d <= 30 - 1).all()  # at least the 1 px margin (1 % of a 200 px diagonal) inside


def test_attack_pool_kinds_and_twins():
    m = _disc()
    rng = np.random.default_rng(1)
    ideal = ideal_prompts(m, rng)
    feats = rng.normal(size=(50, 8)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    centers = rng.uniform([0, 0], [160, 120], (50, 2)).astype(np.float32)
    cfg = PoolConfig(bg_pos=5, distractor=3, obj_neg=4, boundary=4)
    pool = attack_pool(m, ideal, rng, cfg, feats, centers)
    inside = m[pool.points[:, 1].astype(int), pool.points[:, 0].astype(int)]
    assert not pool.active.any()
    for kind, want_label, want_inside in ((BG_POS, 1, False), (DISTRACTOR, 1, False), (OBJ_NEG, 0, True)):
        sel = pool.kind == kind
        assert sel.any() and (pool.labels[sel] == want_label).all() and (inside[sel] == want_inside).all()
    assert (pool.kind == BOUNDARY).sum() == 4
    mis = pool.kind == MISLABEL
    assert mis.sum() == len(ideal)
    assert np.array_equal(pool.points[mis], ideal.points[pool.twin[mis]])
    assert np.array_equal(pool.labels[mis], 1 - ideal.labels[pool.twin[mis]])
    assert cfg.size(20) == 5 + 3 + 4 + 4 + 20


def test_promptset_validation_and_subset():
    p = PromptSet.from_points([[1, 2], [3, 4], [5, 6]], [1, 0, 1])
    assert len(p) == 3 and p.active.all()
    q = p.subset([2, 0])
    assert q.points.tolist() == [[5, 6], [1, 2]] and q.labels.tolist() == [1, 1]
    with pytest.raises(ValueError):
        PromptSet([[1, 2]], [1, 0], [True])


def test_graph_on_real_embedding(segmenter, manifest):
    s = pick(manifest, "ecssd", "val", 1)[0]
    image = s.image()
    segmenter.set_image(image)
    f = segmenter.features()
    h, w = image.shape[:2]
    t1 = time.perf_counter()
    g = build_graph(f.grid, f.valid, f.patch_size, (h, w), grid=32, k=8)
    t2 = time.perf_counter()
    assert t2 - t1 < 0.5  # far less than an encode (~1 s); the benchmark has the real figures
    assert g.n == f.valid.reshape(32, 2, 32, 2).any((1, 3)).sum()
    assert np.allclose(np.linalg.norm(g.feats, axis=1), 1, atol=1e-5)
    assert (g.centers[:, 0] < w).all() and (g.centers[:, 1] < h).all()
    assert g.knn_feat.shape == (g.n, 8) and not (g.knn_feat == np.arange(g.n)[:, None]).any()
    # node_of: a point lies in its node's cell
    pts = np.array([[0, 0], [w - 1, h - 1], [w / 2, h / 3]])
    ids = g.node_of(pts)
    assert (np.abs(g.centers[ids] - pts).max(1) <= g.patch_px).all()
    fd, pd = g.distances(np.arange(10), np.arange(10))
    assert np.allclose(fd, fd.T, atol=1e-6) and np.allclose(np.diag(fd), 0, atol=1e-3)
    assert (fd >= 0).all() and (fd <= 1).all() and (pd >= 0).all() and (pd <= 1).all()
