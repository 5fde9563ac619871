"""Every op: float64 gradient checks over the shared case table, forward values against slow
loop implementations written here, and the errors bad input must raise."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minifcn.functional as F
from minifcn import Tensor, gradcheck
from minifcn.opcases import CASES


@pytest.mark.parametrize("name,shapes,make", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, shapes, make):
    fn, inputs = make(np.random.default_rng(0))
    assert gradcheck(fn, inputs)


# ---------------------------------------------------------------- slow references (loops)


def conv2d_loop(x, w, b, stride, pad, dilation=(1, 1)):
    """Each output pixel: its window of the padded input (every d-th pixel over the span
    d*(k-1) + 1) times the kernel, summed."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    oh, ow = (h + 2 * ph - eh) // sh + 1, (wd + 2 * pw - ew) // sw + 1
    y = np.zeros((n, k, oh, ow))
    for i in range(n):
        for o in range(k):
            for r in range(oh):
                for q in range(ow):
                    win = xp[i, :, r * sh:r * sh + eh:dh, q * sw:q * sw + ew:dw]
                    y[i, o, r, q] = np.sum(win * w[o])
            if b is not None:
                y[i, o] += b[o]
    return y


def conv_transpose2d_loop(x, w, stride, pad):
    """Scatter each input pixel's kernel-weighted contribution into the output (the textbook
    definition, independent of im2col)."""
    (sh, sw), (ph, pw) = stride, pad
    n, cin, h, wd = x.shape
    _, cout, kh, kw = w.shape
    full = np.zeros((n, cout, (h - 1) * sh + kh, (wd - 1) * sw + kw))
    for i in range(n):
        for ci in range(cin):
            for r in range(h):
                for q in range(wd):
                    full[i, :, r * sh:r * sh + kh, q * sw:q * sw + kw] += x[i, ci, r, q] * w[ci]
    return full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]


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


@pytest.mark.parametrize("xs,ws,stride,pad", [
    ((2, 3, 7, 9), (4, 3, 3, 3), (1, 1), (1, 1)),
    ((1, 2, 13, 11), (3, 2, 3, 2), (2, 1), (2, 0)),
    ((1, 3, 8, 8), (2, 3, 4, 4), (2, 2), (1, 1)),
    ((2, 4, 5, 6), (3, 4, 1, 1), (1, 1), (0, 0)),
    ((1, 1, 9, 7), (1, 1, 7, 7), (3, 2), (2, 2)),
    ((2, 3, 5, 4), (2, 3, 3, 3), (1, 1), (6, 6)),  # a ring that sees only padding (conv1_1)
    ((1, 2, 4, 6), (3, 2, 3, 2), (1, 1), (2, 5)),  # the ring on one axis only, kH != kW
    ((1, 2, 6, 6), (2, 2, 3, 3), (2, 2), (4, 4)),  # stride 2: no shortcut, same answer
    ((1, 2, 9, 8), (3, 2, 4, 2), (2, 1), (1, 0)),  # kernel = whole strides: block-wise im2col
])
def test_conv2d_forward_matches_loop(rng, xs, ws, stride, pad):
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    y = F.conv2d(Tensor(x), Tensor(w), Tensor(b), stride, pad)
    np.testing.assert_allclose(y.data, conv2d_loop(x, w, b, stride, pad), rtol=1e-10, atol=1e-10)


DILATED_CONVS = [  # x, w, stride, padding, dilation: each names the path it goes through
    ((2, 3, 9, 8), (4, 3, 3, 3), (1, 1), (2, 2), (2, 2)),    # a rarefied 3x3 (conv5_x)
    ((1, 2, 5, 6), (3, 2, 3, 3), (1, 1), (7, 6), (2, 2)),    # padding past the span: the ring
    ((1, 2, 12, 10), (2, 2, 4, 4), (2, 2), (1, 1), (2, 2)),  # k = 2s: no stride blocks
    ((1, 2, 15, 14), (3, 2, 7, 7), (1, 1), (0, 0), (2, 2)),  # fc6 after a rarefied pool5
    ((1, 2, 11, 9), (3, 2, 3, 2), (2, 1), (1, 2), (2, 3)),   # unequal axes
    ((1, 3, 6, 7), (2, 3, 1, 1), (1, 1), (0, 0), (3, 3)),    # 1x1: dilation changes nothing
]


@pytest.mark.parametrize("xs,ws,stride,pad,dilation", DILATED_CONVS)
def test_dilated_conv2d_forward_matches_loop(rng, xs, ws, stride, pad, dilation):
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    y = F.conv2d(Tensor(x), Tensor(w), Tensor(b), stride, pad, dilation)
    np.testing.assert_allclose(y.data, conv2d_loop(x, w, b, stride, pad, dilation),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs,ws,stride,pad,dilation", DILATED_CONVS)
def test_dilated_conv2d_matches_pytorch(rng, xs, ws, stride, pad, dilation):
    """Forward and both gradients against torch in float64 (where torch is installed)."""
    torch = pytest.importorskip("torch")
    x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = F.conv2d(xt, wt, Tensor(b), stride, pad, dilation)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b), stride, pad, dilation)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(wt.grad, tw.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs,ws,stride,pad", [
    ((1, 3, 4, 5), (3, 2, 4, 4), (2, 2), (0, 0)),
    ((2, 2, 5, 3), (2, 3, 3, 4), (1, 2), (1, 1)),
    ((1, 2, 3, 3), (2, 2, 64, 64), (32, 32), (0, 0)),  # FCN-32s upscore geometry
    ((1, 2, 4, 4), (2, 1, 16, 16), (8, 8), (3, 2)),
])
def test_conv_transpose2d_forward_matches_loop(rng, xs, ws, stride, pad):
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    y = F.conv_transpose2d(Tensor(x), Tensor(w), None, stride, pad)
    np.testing.assert_allclose(y.data, conv_transpose2d_loop(x, w, stride, pad), rtol=1e-10, atol=1e-10)


def test_conv_transpose2d_is_adjoint_of_conv2d(rng):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> for the same weight array."""
    x, w = rng.standard_normal((2, 3, 9, 11)), rng.standard_normal((4, 3, 3, 3))
    y = F.conv2d(Tensor(x), Tensor(w), None, 2, 1).data
    g = rng.standard_normal(y.shape)
    xt = F.conv_transpose2d(Tensor(g), Tensor(w), None, 2, 1).data
    assert xt.shape == x.shape  # odd sizes: stride 2 leaves no input row unread
    assert np.isclose((y * g).sum(), (x * xt).sum())


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


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (4, 2, 1), (2, 2, 0), (3, 2, 1)])
def test_primitives_split_over_threads_match_one_thread(rng, monkeypatch, k, s, p):
    """im2col, col2im and max pooling split big arrays over channel blocks, one per thread:
    the split must give exactly the single-thread result (each thread owns its channels)."""
    from minifcn import primitives as P

    if P._POOL is None:
        pytest.skip("one CPU: the primitives never split")
    x = rng.standard_normal((2, 5, 11, 12))
    oh, ow = P.conv_out_size(11, k, s, p), P.conv_out_size(12, k, s, p)
    col = rng.standard_normal((2, 5, k, k, oh, ow))

    def run():
        y, arg = P.maxpool_forward(x, k, k, s, s, p // 2, p // 2, True)
        return [P.im2col(x, k, k, s, s, p, p), P.col2im(col, 11, 12, s, s, p, p), y, arg,
                P.maxpool_backward(y * 0.5 + 1, arg, 11, 12, k, k, s, s, p // 2, p // 2)]

    monkeypatch.setattr(P, "_PARALLEL_MIN_BYTES", 1 << 60)
    serial = run()
    monkeypatch.setattr(P, "_PARALLEL_MIN_BYTES", 0)
    for got, want in zip(run(), serial):
        np.testing.assert_array_equal(got, want)


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


@given(h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 4), s=st.integers(1, 3),
       p=st.integers(0, 2), d=st.integers(1, 3))
@settings(max_examples=40, deadline=None)
def test_conv2d_shapes_property(h, w, k, s, p, d):
    e = d * (k - 1) + 1
    if h + 2 * p < e or w + 2 * p < e:
        return
    rng = np.random.default_rng(h * 100 + w)
    x, wt = rng.standard_normal((1, 2, h, w)), rng.standard_normal((3, 2, k, k))
    np.testing.assert_allclose(F.conv2d(Tensor(x), Tensor(wt), None, s, p, d).data,
                               conv2d_loop(x, wt, None, (s, s), (p, p), (d, d)), atol=1e-10)


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


def test_crop_values(rng):
    x = rng.standard_normal((1, 2, 7, 9))
    np.testing.assert_array_equal(F.crop(Tensor(x), (2, 3), (4, 5)).data, x[:, :, 2:6, 3:8])
    np.testing.assert_array_equal(F.crop(Tensor(x), 1, Tensor(np.zeros((1, 1, 3, 3)))).data,
                                  x[:, :, 1:4, 1:4])


def test_dropout_statistics_and_eval():
    import minifcn

    minifcn.manual_seed(0)
    x = Tensor(np.ones((100, 100), np.float32))
    y = F.dropout(x, 0.3, training=True).data
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((y == 0).mean() - 0.3) < 0.02
    assert F.dropout(x, 0.3, training=False) is x


# ---------------------------------------------------------------- bad input


def _x(*shape):
    return Tensor(np.zeros(shape, np.float32))


@pytest.mark.parametrize("call,err,match", [
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 2, 3, 3)), ValueError, r"conv2d: weight .*2 input channels.*has 3"),
    (lambda: F.conv2d(_x(3, 8, 8), _x(4, 3, 3, 3)), ValueError, r"conv2d: input must be 4-D.*\(3, 8, 8\)"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), stride=0), ValueError, "conv2d: stride must be >= 1"),
    (lambda: F.conv2d(_x(1, 3, 4, 4), _x(4, 3, 7, 7), padding=1), ValueError, r"conv2d: kernel \(7, 7\) is larger than the padded input \(6, 6\)"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), bias=_x(3)), ValueError, r"conv2d: bias must have shape \(4,\)"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), stride=1.5), TypeError, "conv2d: stride must be an int"),
    (lambda: F.conv_transpose2d(_x(1, 3, 4, 4), _x(2, 3, 4, 4)), ValueError, r"conv_transpose2d: weight .*expects 2 input channels"),
    (lambda: F.conv_transpose2d(_x(1, 3, 4), _x(3, 3, 4, 4)), ValueError, "conv_transpose2d: input must be 4-D"),
    (lambda: F.conv_transpose2d(_x(1, 3, 4, 4), _x(3, 3, 4, 4), stride=0), ValueError, "conv_transpose2d: stride"),
    (lambda: F.max_pool2d(_x(8, 8), 2), ValueError, r"max_pool2d: input must be 4-D"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, stride=0), ValueError, "max_pool2d: stride must be >= 1"),
    (lambda: F.max_pool2d(_x(1, 1, 2, 2), 5), ValueError, "max_pool2d: kernel .* larger than the padded input"),
    (lambda: F.max_pool2d(_x(1, 1, 8, 8), 2, 2, 2), ValueError, "max_pool2d: padding"),
    (lambda: F.crop(_x(1, 1, 8, 8), (4, 4), (5, 5)), ValueError, r"crop: offset \(4, 4\) \+ size \(5, 5\)"),
    (lambda: F.softmax_cross_entropy(_x(1, 3, 4, 4), np.zeros((1, 4, 5), int)), ValueError, r"softmax_cross_entropy: target shape \(1, 4, 5\) does not match logits \(1, 3, 4, 4\)"),
    (lambda: F.softmax_cross_entropy(_x(1, 3, 2, 2), np.array([[[0, 3], [1, 255]]])), ValueError, r"softmax_cross_entropy: target holds class indices \[3\]"),
    (lambda: F.softmax_cross_entropy(_x(1, 3, 2, 2), np.zeros((1, 2, 2))), TypeError, "softmax_cross_entropy: target must be an integer array"),
    (lambda: F.softmax_cross_entropy(_x(3, 2, 2), np.zeros((3, 2), int)), ValueError, "softmax_cross_entropy: logits must be 4-D"),
    (lambda: F.softmax_cross_entropy(_x(1, 3, 2, 2), np.zeros((1, 2, 2), int), reduction="avg"), ValueError, "reduction must be one of"),
    (lambda: F.add(_x(2, 3), _x(4, 3)), ValueError, r"add: shapes \(2, 3\) and \(4, 3\) do not broadcast"),
    (lambda: F.matmul(_x(2, 3), _x(4, 3)), ValueError, r"matmul: expected"),
    (lambda: F.dropout(_x(2, 3), 1.0), ValueError, r"dropout: p must be in \[0, 1\)"),
    (lambda: F.conv2d(Tensor(np.zeros((1, 3, 8, 8), int)), _x(4, 3, 3, 3)), TypeError, "conv2d: input must be a floating"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=0), ValueError, r"^conv2d: dilation must be >= 1, got 0$"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=(2, -1)), ValueError, r"^conv2d: dilation must be >= 1, got \(2, -1\)$"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=1.5), TypeError, r"^conv2d: dilation must be an int or a pair of ints, got 1.5$"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=(2, 2, 2)), TypeError, "conv2d: dilation must be an int or a pair"),
    (lambda: F.conv2d(_x(1, 3, 4, 4), _x(4, 3, 3, 3), padding=1, dilation=3), ValueError, r"^conv2d: kernel \(3, 3\) at dilation \(3, 3\) spans \(7, 7\), larger than the padded input \(6, 6\)$"),
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


def test_inplace_relu_reuses_the_buffer_and_keeps_gradients(rng):
    x = Tensor(rng.standard_normal((1, 2, 4, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    assert gradcheck(lambda x, w: F.relu(F.conv2d(x, w, padding=1), inplace=True), [x, w])
    h = F.conv2d(x, w, padding=1)
    y = F.relu(h, inplace=True)
    assert y.data is h.data and (h.data >= 0).all()
    leaf = Tensor(np.array([-1.0, 2.0]))
    F.relu(leaf, inplace=True)
    np.testing.assert_array_equal(leaf.data, [-1.0, 2.0])  # a leaf is never overwritten


# ---------------------------------------------------------------- the CPU's fast paths


@pytest.mark.parametrize("xs, ws, stride, pad, dil", [
    ((2, 3, 17, 13), (4, 3, 3, 3), 1, 1, 1),   # the flipped input gradient, in row blocks
    ((2, 2, 15, 12), (5, 2, 3, 3), 1, 1, 1),   # more output than input channels: flipped too
    ((1, 2, 20, 19), (3, 2, 3, 3), 2, 2, 1),   # stride 2: the general input gradient
    ((2, 3, 19, 15), (2, 3, 3, 3), 1, 2, 2),   # dilated
])
def test_conv2d_row_blocks_give_the_one_piece_numbers(monkeypatch, xs, ws, stride, pad, dil):
    """A conv whose im2col columns would pass COL_BYTES runs in blocks of output rows: the
    forward and both gradients are the one-piece path's (float64, to rounding)."""
    import minifcn.conv as C

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)

    def run():
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        y = F.conv2d(xt, wt, None, stride, pad, dil)
        y.backward(np.cos(np.arange(y.size)).reshape(y.shape))
        return y.data, xt.grad, wt.grad

    whole = run()
    monkeypatch.setattr(C, "COL_BYTES", 8 * 3 * 9 * 20)  # a few output rows per block
    oh = whole[0].shape[2]
    assert C._row_block(xs[0], xs[1] * 9, oh, whole[0].shape[3], 8) < oh  # blocks do happen
    for a, b in zip(whole, run()):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


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
