"""minifcn.pooling: max_pool2d, called through minifcn.functional: forward values against a slow
loop written here (and PyTorch, where installed) with padding, ceil mode and dilation, where the
gradient goes (the winning tap, one winner on ties, the first maximum in the CPU's tiling
backward), and the errors bad input must raise. (Gradient checks: tests/test_functional.py.)"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minifcn.functional as F
from minifcn import Tensor


# ---------------------------------------------------------------- slow references (loops)


def max_pool_loop(x, k, s, p, ceil, d=1):
    """PyTorch's output size (extent e = d*(k-1) + 1 in place of k), then each window's real
    taps r0 + i*d, maxed; a window whose taps all miss the input is -inf."""
    n, c, h, w = x.shape
    e = d * (k - 1) + 1

    def out(size):
        if ceil:
            o = math.ceil((size + 2 * p - e) / s) + 1
            if (o - 1) * s >= size + p:  # a window must start inside input + left padding
                o -= 1
            return o
        return (size + 2 * p - e) // s + 1

    oh, ow = out(h), out(w)
    y = np.full((n, c, oh, ow), -np.inf)
    for r in range(oh):
        for q in range(ow):
            rows = [r * s - p + i * d for i in range(k) if 0 <= r * s - p + i * d < h]
            cols = [q * s - p + j * d for j in range(k) if 0 <= q * s - p + j * d < w]
            if rows and cols:
                y[:, :, r, q] = x[:, :, rows][:, :, :, cols].max(axis=(2, 3))
    return y


@pytest.mark.parametrize("xs,k,s,p,ceil", [
    ((2, 3, 7, 9), 2, 2, 0, True),
    ((2, 3, 7, 9), 2, 2, 0, False),
    ((1, 2, 13, 11), 3, 2, 1, True),
    ((1, 2, 10, 10), 3, 3, 1, True),
    ((1, 1, 5, 5), 2, 2, 1, True),
])
def test_max_pool2d_forward_matches_loop(rng, xs, k, s, p, ceil):
    x = rng.standard_normal(xs)
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), k, s, p, ceil_mode=ceil).data,
                                  max_pool_loop(x, k, s, p, ceil))


DILATED_POOLS = [  # x, k, s, p, d, ceil
    ((1, 2, 9, 8), 2, 1, 0, 2, True),    # pool5 after rarefying pool4 (k2 s1 d2)
    ((1, 2, 10, 9), 2, 2, 0, 2, True),   # k2 s2 d2, ceil: the last window hangs over the edge
    ((1, 2, 11, 10), 3, 2, 1, 2, True),  # padding (at most half the taps, as PyTorch)
    ((1, 2, 11, 10), 3, 2, 1, 2, False),
    ((1, 1, 2, 5), 2, 1, 1, 3, True),    # windows whose taps all miss the input: -inf
    ((2, 3, 12, 7), 2, 3, 1, 3, True),   # a stride above the kernel
]


@pytest.mark.parametrize("xs,k,s,p,d,ceil", DILATED_POOLS)
def test_dilated_max_pool2d_matches_loop_and_pytorch(rng, xs, k, s, p, d, ceil):
    x = rng.standard_normal(xs) - 3  # negative: a zero from the padding would win a wrong max
    y = F.max_pool2d(Tensor(x), k, s, p, d, ceil).data
    np.testing.assert_array_equal(y, max_pool_loop(x, k, s, p, ceil, d))
    assert xs[2] > 2 or np.isneginf(y).all()  # the -inf row: as PyTorch, not a padding value
    by_name = F.max_pool2d(Tensor(x), k, s, p, dilation=d, ceil_mode=ceil).data
    np.testing.assert_array_equal(by_name, y)
    try:
        import torch
    except ImportError:
        return
    expect = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil_mode=ceil)
    np.testing.assert_array_equal(y, expect.numpy())


def test_dilated_max_pool2d_gradient_goes_to_the_winning_tap():
    """k2 d2: the window at 0 compares x[0] and x[2]; the winner gets the gradient, the pixel
    between them (x[1]) none (it belongs to the next window only)."""
    x = Tensor(np.array([[[[1.0, 5.0, 3.0, 0.0]]]]), requires_grad=True)
    y = F.max_pool2d(x, (1, 2), 1, 0, (1, 2))
    np.testing.assert_array_equal(y.data, [[[[3.0, 5.0]]]])
    y.backward(np.array([[[[10.0, 1.0]]]]))
    np.testing.assert_array_equal(x.grad, [[[[0.0, 1.0, 10.0, 0.0]]]])


def test_max_pool2d_padding_never_wins():
    x = -1.0 - np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)  # all negative
    y = F.max_pool2d(Tensor(x), 3, 2, 1, ceil_mode=True).data
    assert (y < 0).all()
    np.testing.assert_array_equal(y, max_pool_loop(x, 3, 2, 1, True))


def test_max_pool2d_tie_sends_gradient_to_one_winner():
    x = Tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
    F.max_pool2d(x, 2, 2).backward(np.ones((1, 1, 2, 2)))
    assert x.grad.sum() == 4 and (x.grad[0, 0, ::2, ::2] == 1).all()


@given(h=st.integers(2, 12), w=st.integers(2, 12), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), ceil=st.booleans())
@settings(max_examples=40, deadline=None)
def test_max_pool2d_shapes_property(h, w, k, s, p, ceil):
    if 2 * p > k or h + 2 * p < k or w + 2 * p < k:
        return
    x = np.random.default_rng(h * 100 + w).standard_normal((1, 2, h, w))
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), k, s, p, ceil_mode=ceil).data,
                                  max_pool_loop(x, k, s, p, ceil))


@given(h=st.integers(2, 14), w=st.integers(2, 14), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 3), d=st.integers(1, 3), ceil=st.booleans())
@settings(max_examples=40, deadline=None)
def test_dilated_max_pool2d_shapes_property(h, w, k, s, p, d, ceil):
    e = d * (k - 1) + 1
    if 2 * p > k or h + 2 * p < e or w + 2 * p < e:
        return
    x = np.random.default_rng(h * 100 + w).standard_normal((1, 2, h, w))
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), k, s, p, d, ceil).data,
                                  max_pool_loop(x, k, s, p, ceil, d))


# ---------------------------------------------------------------- bad input


def _x(*shape):
    return Tensor(np.zeros(shape, np.float32))


@pytest.mark.parametrize("call,err,match", [
    (lambda: F.max_pool2d(_x(8, 8), 2), ValueError, r"max_pool2d: input must be 4-D"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, stride=0), ValueError, "max_pool2d: stride must be >= 1"),
    (lambda: F.max_pool2d(_x(1, 1, 2, 2), 5), ValueError, "max_pool2d: kernel .* larger than the padded input"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, 2, 2), ValueError, "max_pool2d: padding"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, dilation=0), ValueError, r"^max_pool2d: dilation must be >= 1, got 0$"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, dilation=-2), ValueError, r"^max_pool2d: dilation must be >= 1, got -2$"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, dilation=2.0), TypeError, r"^max_pool2d: dilation must be an int or a pair of ints, got 2.0$"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, 2, 0, True), TypeError, r"max_pool2d: dilation must be .* got True \(ceil_mode comes after dilation"),
    (lambda: F.max_pool2d(_x(1, 1, 4, 4), 3, dilation=2), ValueError, r"^max_pool2d: kernel \(3, 3\) at dilation \(2, 2\) spans \(5, 5\), larger than the padded input \(4, 4\)$"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 3, 2, 2, dilation=2), ValueError, r"^max_pool2d: padding \(2, 2\) must be at most half the kernel \(3, 3\)$"),  # PyTorch's rule: half the taps, not the span
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---------------------------------------------------------------- the CPU's fast paths


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 7, 5)])
def test_max_pool_tiling_backward_matches_the_general_loop(shape):
    """2x2 stride-2 pools whose windows tile the input take the write-once backward; the
    ceil-mode odd sizes take the general loop: both route each gradient to the first max."""
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal(shape), 1)  # ties, so that "first max" matters
    xt = Tensor(x, requires_grad=True)
    y = F.max_pool2d(xt, 2, 2, ceil_mode=True)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    want = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*y.shape):
        win = np.full((2, 2), -np.inf)
        part = x[n, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
        win[:part.shape[0], :part.shape[1]] = part
        a, b = np.unravel_index(np.argmax(win), (2, 2))  # np.argmax: the first maximum
        want[n, c, 2 * i + a, 2 * j + b] += g[n, c, i, j]
    np.testing.assert_array_equal(xt.grad, want)
