import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ppd.errors import InvalidMaskError
from ppd.metrics import dice, iou


def test_known_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 px
    b[1:3] = True  # 8 px, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert iou(a, b) == pytest.approx(4 / 12)


def test_empty_conventions():
    e = np.zeros((3, 3), bool)
    f = np.ones((3, 3), bool)
    assert dice(e, e) == 1.0 and iou(e, e) == 1.0
    assert dice(e, f) == 0.0 and iou(f, e) == 0.0


def test_shape_mismatch_is_typed():
    with pytest.raises(InvalidMaskError):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


masks = arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@given(masks, st.data())
def test_properties(a, d):
    b = d.draw(arrays(bool, a.shape))
    di, io = dice(a, b), iou(a, b)
    assert 0.0 <= io <= di <= 1.0 + 1e-12  # IoU never exceeds Dice
    assert di == pytest.approx(dice(b, a)) and io == pytest.approx(iou(b, a))
    if a.any() or b.any():
        assert di == pytest.approx(2 * io / (1 + io))
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
