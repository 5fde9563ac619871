"""minifcn.conv: conv2d and conv_transpose2d, called through minifcn.functional as a learner calls
them: forward values against slow loop implementations written here, dilation against PyTorch in
float64, the adjoint identity, the CPU's row blocks, and the errors bad input must raise.
(Gradient checks of every op: tests/test_functional.py; the plain path: tests/test_simple.py.)"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minifcn.functional as F
from minifcn import Tensor


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
    (lambda: F.conv2d(Tensor(np.zeros((1, 3, 8, 8), int)), _x(4, 3, 3, 3)), TypeError, "conv2d: input must be a floating"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=0), ValueError, r"^conv2d: dilation must be >= 1, got 0$"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=(2, -1)), ValueError, r"^conv2d: dilation must be >= 1, got \(2, -1\)$"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=1.5), TypeError, r"^conv2d: dilation must be an int or a pair of ints, got 1.5$"),
    (lambda: F.conv2d(_x(1, 3, 8, 8), _x(4, 3, 3, 3), dilation=(2, 2, 2)), TypeError, "conv2d: dilation must be an int or a pair"),
    (lambda: F.conv2d(_x(1, 3, 4, 4), _x(4, 3, 3, 3), padding=1, dilation=3), ValueError, r"^conv2d: kernel \(3, 3\) at dilation \(3, 3\) spans \(7, 7\), larger than the padded input \(6, 6\)$"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


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
