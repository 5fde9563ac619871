"""minifcn.loss: softmax_cross_entropy against the direct formula, stable for huge logits, zero
with a zero gradient when every pixel is ignored, and the errors bad input must raise.
(Gradient checks: tests/test_functional.py.)"""
import numpy as np
import pytest

import minifcn.functional as F
from minifcn import Tensor


def test_softmax_cross_entropy_matches_direct_formula(rng):
    x = rng.standard_normal((2, 4, 3, 5)) * 3
    t = rng.integers(0, 4, (2, 3, 5))
    t[1, 2, :2] = 255
    loss = F.softmax_cross_entropy(Tensor(x), t, reduction="none").data
    for n, r, q in np.ndindex(2, 3, 5):
        expect = 0.0 if t[n, r, q] == 255 else -np.log(np.exp(x[n, t[n, r, q], r, q])
                                                      / np.exp(x[n, :, r, q]).sum())
        assert loss[n, r, q] == pytest.approx(expect)
    total = F.softmax_cross_entropy(Tensor(x), t, reduction="sum").item()
    mean = F.softmax_cross_entropy(Tensor(x), t).item()
    assert total == pytest.approx(loss.sum()) and mean == pytest.approx(loss.sum() / 28)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    x = np.zeros((1, 3, 1, 2))
    x[0, 0] = 1e4
    loss = F.softmax_cross_entropy(Tensor(x), np.array([[[0, 1]]]), reduction="none").data
    np.testing.assert_allclose(loss, [[[0.0, 1e4]]])


def test_all_ignored_mean_is_zero_with_zero_grad():
    x = Tensor(np.ones((1, 2, 2, 2)), requires_grad=True)
    loss = F.softmax_cross_entropy(x, np.full((1, 2, 2), 255))
    loss.backward()
    assert loss.item() == 0 and not x.grad.any()


# ---------------------------------------------------------------- bad input


def _x(*shape):
    return Tensor(np.zeros(shape, np.float32))


@pytest.mark.parametrize("call,err,match", [
    (lambda: F.softmax_cross_entropy(_x(1, 3, 4, 4), np.zeros((1, 4, 5), int)), ValueError, r"softmax_cross_entropy: target shape \(1, 4, 5\) does not match logits \(1, 3, 4, 4\)"),
    (lambda: F.softmax_cross_entropy(_x(1, 3, 2, 2), np.array([[[0, 3], [1, 255]]])), ValueError, r"softmax_cross_entropy: target holds class indices \[3\]"),
    (lambda: F.softmax_cross_entropy(_x(1, 3, 2, 2), np.zeros((1, 2, 2))), TypeError, "softmax_cross_entropy: target must be an integer array"),
    (lambda: F.softmax_cross_entropy(_x(3, 2, 2), np.zeros((3, 2), int)), ValueError, "softmax_cross_entropy: logits must be 4-D"),
    (lambda: F.softmax_cross_entropy(_x(1, 3, 2, 2), np.zeros((1, 2, 2), int), reduction="avg"), ValueError, "reduction must be one of"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
