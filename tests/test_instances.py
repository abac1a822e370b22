"""Many-object one-shot (ppd.instances): the mode switch and the per-positive union, through the real model."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import pick
from ppd.errors import ConfigError
from ppd.instances import count_instances, resolve_mode, start_k, union_of_instances


def test_count_instances_ignores_specks():
    m = np.zeros((100, 100), bool)
    m[10:40, 10:40] = True  # one object
    m[60, 60] = m[80, 5] = m[95, 95] = True  # 1-px specks, as some Kvasir masks carry
    assert count_instances(m) == 1 and resolve_mode("auto", m) == "single"
    m[50:60, 70:80] = m[70:78, 20:28] = True  # two more real objects
    assert count_instances(m) == 3 and resolve_mode("auto", m) == "many"
    assert resolve_mode("single", m) == "single" and resolve_mode("union", m[:5, :5]) == "union"
    assert start_k("many", 10) == 32 and start_k("single", 10) == 10 and start_k("union", 5) == 5
    assert count_instances(np.zeros((4, 4), bool)) == 0
    with pytest.raises(ConfigError):
        resolve_mode("multi", m)


def test_union_of_instances_through_the_model(segmenter, manifest):
    """On a DSB2018 "all nuclei" target: the union is exactly the OR of the kept per-positive masks, each
    decoded with every negative, kept when SAM is confident (IoU >= 0.7) and it is object-sized (<= 25 %)."""
    s = pick(manifest, "dsb2018", "val", 2)[1]
    image, gt = s.image(), s.mask()
    frame = segmenter.frame(image)
    from scipy import ndimage

    lab, n = ndimage.label(gt)
    centres = np.array([c[::-1] for c in ndimage.center_of_mass(gt, lab, range(1, n + 1))])[:6]
    bg = np.argwhere(~ndimage.binary_dilation(gt, iterations=8))[::997][:3, ::-1].astype(float)
    pts = np.vstack([centres, bg[:1], bg[1:]])
    labs = np.r_[np.ones(len(centres)), 1, np.zeros(len(bg) - 1)].astype(int)
    union, kept = union_of_instances(segmenter, frame, pts, labs)
    neg = pts[labs == 0]
    want = np.zeros_like(gt)
    for p, k in zip(pts[labs == 1], kept, strict=True):
        pred = segmenter.decode(frame, np.vstack([p[None], neg]), np.r_[1, np.zeros(len(neg), int)])
        assert k == (pred.iou >= 0.7 and pred.mask.mean() <= 0.25)
        if k:
            want |= pred.mask
    assert np.array_equal(union, want) and kept.any()


def test_oneshot_auto_mode_on_the_shipped_nuclei(segmenter):
    """The shipped fluorescence reference holds many nuclei: auto switches to the dense start set (32 per
    class, one SAM mask); an explicit single keeps K = 10; union segments each kept positive."""
    from importlib import resources

    from ppd.io import read_image, read_mask
    from ppd.oneshot import OneShot, propose

    root = resources.files("ppd") / "assets" / "oneshot"
    with resources.as_file(root / "fluo-ref.jpg") as p:
        ref = read_image(p)
    with resources.as_file(root / "fluo-ref.mask.png") as p:
        ref_mask = read_mask(p)
    with resources.as_file(root / "fluo-a.jpg") as p:
        tgt = read_image(p)
    pipes = {mode: OneShot(segmenter, None, instances=mode) for mode in ("auto", "single", "union")}
    for pipe in pipes.values():
        pipe.set_reference(ref, ref_mask)
    assert [p.mode for p in pipes.values()] == ["many", "single", "union"]
    frame = segmenter.frame(tgt)
    out = {mode: pipe.run(frame) for mode, pipe in pipes.items()}
    dense = propose(pipes["auto"].ref, frame, k=32)
    assert np.array_equal(out["auto"].proposal.index, dense.index) and len(dense.index) > 20
    assert len(out["single"].proposal.index) <= 20
    for mode in ("auto", "single"):
        p = out[mode].proposal
        assert np.array_equal(out[mode].mask, segmenter.decode(frame, p.points, p.labels).mask)
    p = out["union"].proposal
    assert np.array_equal(out["union"].mask, union_of_instances(segmenter, frame, p.points, p.labels)[0])


def test_choose_step_iou_margin():
    from ppd.refine import choose_step

    trace = [(0.90, 0.0, 0.0), (0.905, 0.0, 0.0), (0.93, 0.0, 0.0), (0.91, 0.0, 0.0)]
    assert choose_step(trace, "iou") == 2
    assert choose_step(trace, "iou", iou_margin=0.02) == 2
    assert choose_step(trace, "iou", iou_margin=0.05) == 0  # nothing beats the start set by 0.05
    assert choose_step(trace, "last", iou_margin=0.05) == 3


def test_many_mode_defender_keeps_a_state_only_past_the_iou_margin(segmenter):
    """Through the model on the shipped nuclei: in many mode the kept state beats the start set's predicted
    IoU by MANY_IOU_MARGIN, or the start set is kept whole; single mode is left as configured."""
    from importlib import resources

    from ppd.instances import MANY_IOU_MARGIN
    from ppd.io import read_image, read_mask
    from ppd.oneshot import OneShot
    from ppd.refine import Defender

    root = resources.files("ppd") / "assets" / "oneshot"
    with resources.as_file(root / "fluo-ref.jpg") as p, resources.as_file(root / "fluo-ref.mask.png") as m:
        ref, ref_mask = read_image(p), read_mask(m)
    defender = Defender(segmenter=segmenter)
    assert defender.config.iou_margin == 0.0 and defender.config.select == "iou"
    pipe = OneShot(segmenter, defender)
    pipe.set_reference(ref, ref_mask)
    assert pipe.mode == "many"
    for name in ("fluo-a.jpg", "fluo-b.jpg"):
        with resources.as_file(root / name) as p:
            res = pipe.run(read_image(p)).refined
        step = len(res.order)
        assert step == 0 or res.trace[step][0] >= res.trace[0][0] + MANY_IOU_MARGIN
        assert res.iou == pytest.approx(res.trace[step][0])
        best = int(np.argmax([t[0] for t in res.trace]))
        if res.trace[best][0] < res.trace[0][0] + MANY_IOU_MARGIN:  # the margin decided: start set kept
            assert res.kept.all()
