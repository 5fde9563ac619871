"""minifcn.simple, the plain path: first against direct loops written here (so the plain path is
trusted), then the fast path (primitives, F.conv2d, F.max_pool2d) against the plain path over
every branch the fast path has (zero ring, stride blocks, 1x1, thread split, ceil mode), with
and without dilation."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minifcn.functional as F
from minifcn import Tensor, primitives as P
from minifcn.simple import col2im_simple, conv2d_simple, im2col_simple, max_pool2d_simple

# ---------------------------------------------------------------- independent loop references


def pair(v):
    return (v, v) if isinstance(v, int) else v


def conv2d_loop(x, w, b, stride, pad, dilation=1):
    """One multiply-add at a time; a tap outside the image is padding and adds nothing. Tap
    (i, j) of a dilated kernel sits (i*dh, j*dw) from its window's corner."""
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(pad), pair(dilation)
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, k, oh, ow))
    for a in range(n):
        for o in range(k):
            for r in range(oh):
                for q in range(ow):
                    acc = 0.0 if b is None else b[o]
                    for ci in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                yy, xx = r * sh - ph + i * dh, q * sw - pw + j * dw
                                if 0 <= yy < h and 0 <= xx < wd:
                                    acc += w[o, ci, i, j] * x[a, ci, yy, xx]
                    y[a, o, r, q] = acc
    return y


def im2col_loop(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    n, c, h, w = x.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    col = np.zeros((n, c, kh, kw, oh, ow))
    for i, j, r, q in np.ndindex(kh, kw, oh, ow):
        yy, xx = r * sh - ph + i * dh, q * sw - pw + j * dw
        if 0 <= yy < h and 0 <= xx < w:
            col[:, :, i, j, r, q] = x[:, :, yy, xx]
    return col


def pool_starts(size, k, s, p, ceil, d=1):
    """Window starts (in unpadded coordinates), enumerated one by one: floor mode keeps the
    windows inside the padded input; ceil mode adds windows until the padded input is covered,
    but never one that starts in the right padding (it would see no real element). A dilated
    window of k taps spans d*(k-1) + 1 elements: that span is what must fit."""
    k = d * (k - 1) + 1
    starts, t = [], 0
    while True:
        start = t * s - p
        if ceil:
            covered = t > 0 and start - s + k >= size + p
            if covered or start >= size:
                return starts
        elif start + k > size + p:
            return starts
        starts.append(start)
        t += 1


def max_pool_loop(x, k, s, p, ceil, d=1):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = pair(k), pair(s), pair(p), pair(d)
    n, c, h, w = x.shape
    rows, cols = pool_starts(h, kh, sh, ph, ceil, dh), pool_starts(w, kw, sw, pw, ceil, dw)
    y = np.full((n, c, len(rows), len(cols)), -np.inf, x.dtype)
    for r, r0 in enumerate(rows):
        for q, q0 in enumerate(cols):
            taps_y = [r0 + i * dh for i in range(kh) if 0 <= r0 + i * dh < h]
            taps_x = [q0 + j * dw for j in range(kw) if 0 <= q0 + j * dw < w]
            if taps_y and taps_x:  # else every tap is padding: -inf, as PyTorch
                y[:, :, r, q] = x[:, :, taps_y][:, :, :, taps_x].max(axis=(2, 3))
    return y


# ---------------------------------------------------------------- the plain path is right


def geom(k, s, p, d=1):
    """(kh, kw, sh, sw, ph, pw, dh, dw) from ints or pairs, in the primitives' argument order."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = pair(k), pair(s), pair(p), pair(d)
    return kh, kw, sh, sw, ph, pw, dh, dw


@pytest.mark.parametrize("xs,k,s,p,d", [
    ((1, 2, 5, 5), 3, 1, 0, 1), ((2, 2, 5, 6), 3, 1, 1, 1), ((1, 3, 7, 6), 3, 2, 1, 1),
    ((1, 1, 4, 4), 3, 1, 4, 1), ((1, 2, 6, 6), 4, 2, 1, 1), ((1, 2, 3, 3), 1, 1, 0, 1),
    ((1, 1, 7, 8), 7, 1, 0, 1), ((1, 1, 5, 5), 2, 3, 0, 1),
    ((1, 2, 7, 6), (3, 2), (2, 1), (0, 2), 1),
    ((1, 2, 7, 8), 3, 1, 2, 2), ((1, 2, 9, 7), 3, 2, 1, 3), ((1, 1, 13, 14), 7, 1, 0, 2),
    ((1, 2, 8, 9), (3, 2), (1, 2), (2, 1), (2, 3)),
])
def test_plain_conv2d_and_im2col_equal_direct_loops(rng, xs, k, s, p, d):
    kh, kw, sh, sw, ph, pw, dh, dw = g = geom(k, s, p, d)
    x = rng.standard_normal(xs)
    w, b = rng.standard_normal((3, xs[1], kh, kw)), rng.standard_normal(3)
    np.testing.assert_allclose(conv2d_simple(x, w, b, s, p, d), conv2d_loop(x, w, b, s, p, d),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv2d_simple(x, w, None, s, p, d),
                               conv2d_loop(x, w, None, s, p, d), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(im2col_simple(x, *g), im2col_loop(x, *g))


def test_pool_starts_reference_is_caffe_and_pytorch():
    # hand-worked: h=5, k=2, s=2 ceil -> windows at 0, 2, 4 (the last holds one real row);
    # h=5, k=3, s=3, p=1 ceil -> Caffe's formula says 3, but the third starts in the right
    # padding (row 5) and is dropped, as Caffe and PyTorch do when p > 0
    assert pool_starts(5, 2, 2, 0, True) == [0, 2, 4]
    assert pool_starts(5, 2, 2, 0, False) == [0, 2]
    assert pool_starts(5, 3, 3, 1, True) == [-1, 2]
    assert pool_starts(6, 3, 2, 0, True) == [0, 2, 4]
    assert pool_starts(6, 3, 2, 0, False) == [0, 2]
    assert pool_starts(6, 3, 2, 1, True) == [-1, 1, 3, 5]
    assert pool_starts(5, 1, 3, 0, True) == [0, 3]
    # dilated: k2 d2 spans 3; h=6, s=2 ceil -> starts 0, 2, 4 (the last one's second tap, row 6,
    # hangs over the edge); floor keeps only the windows whose span fits: 0, 2
    assert pool_starts(6, 2, 2, 0, True, d=2) == [0, 2, 4]
    assert pool_starts(6, 2, 2, 0, False, d=2) == [0, 2]
    assert pool_starts(6, 2, 1, 0, True, d=2) == [0, 1, 2, 3]


@pytest.mark.parametrize("xs,k,s,p,ceil,d", [
    ((2, 3, 6, 6), 2, 2, 0, False, 1), ((1, 2, 5, 7), 2, 2, 0, True, 1),
    ((1, 2, 5, 5), 3, 3, 1, True, 1), ((1, 2, 7, 6), 3, 2, 1, True, 1),
    ((1, 2, 7, 6), 3, 2, 1, False, 1), ((1, 1, 9, 9), 3, 1, 1, False, 1),
    ((1, 2, 5, 5), 1, 2, 0, True, 1), ((1, 2, 7, 8), (3, 2), (2, 3), (1, 0), True, 1),
    ((1, 2, 9, 8), 2, 1, 0, True, 2), ((1, 2, 10, 9), 2, 2, 0, True, 2),
    ((1, 2, 11, 10), 3, 2, 1, True, 2), ((1, 2, 11, 10), (3, 2), (2, 1), (1, 0), False, (2, 3)),
])
def test_plain_max_pool_equals_window_loop_on_negative_inputs(rng, xs, k, s, p, ceil, d):
    x = -np.abs(rng.standard_normal(xs)) - 1  # all negative: a zero pad would win every edge
    y = max_pool2d_simple(x, k, s, p, d, ceil)
    assert y.max() < 0
    np.testing.assert_array_equal(y, max_pool_loop(x, k, s, p, ceil, d))


def test_plain_max_pool_matches_pytorch_ceil_mode(rng):
    torch = pytest.importorskip("torch")
    for xs, k, s, p, d in [((1, 2, 5, 7), 2, 2, 0, 1), ((1, 2, 5, 5), 3, 3, 1, 1),
                           ((2, 1, 9, 8), 3, 2, 1, 1), ((1, 1, 7, 8), (3, 2), (2, 3), (1, 0), 1),
                           ((1, 2, 10, 9), 2, 2, 0, 2), ((1, 1, 11, 12), 3, 2, 1, (2, 3))]:
        x = rng.standard_normal(xs) - 2
        expect = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil_mode=True)
        np.testing.assert_array_equal(max_pool2d_simple(x, k, s, p, d, True), expect.numpy())


def test_plain_conv2d_matches_pytorch_dilated(rng):
    torch = pytest.importorskip("torch")
    for xs, k, s, p, d in [((1, 2, 9, 8), 3, 1, 2, 2),
                           ((1, 2, 11, 9), (3, 2), (2, 1), (1, 2), (2, 3))]:
        x, w = rng.standard_normal(xs), rng.standard_normal((3, xs[1], *pair(k)))
        expect = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, s, p, d)
        np.testing.assert_allclose(conv2d_simple(x, w, None, s, p, d), expect.numpy(), atol=1e-12)


def test_plain_col2im_is_the_adjoint_of_plain_im2col(rng):
    for xs, k, s, p, d in [((2, 3, 7, 6), 3, 2, 1, 1), ((1, 2, 6, 6), 4, 2, 1, 1),
                           ((1, 1, 4, 5), 3, 1, 4, 1), ((1, 2, 8, 7), (2, 3), (1, 2), (1, 0), 1),
                           ((1, 2, 9, 8), 3, 1, 2, 2), ((1, 2, 12, 11), 4, 2, 1, (2, 3))]:
        g = geom(k, s, p, d)
        x = rng.standard_normal(xs)
        col = im2col_simple(x, *g)
        c = rng.standard_normal(col.shape)
        back = col2im_simple(c, *xs[2:], *g[2:])
        assert back.shape == xs
        assert np.vdot(col, c) == pytest.approx(np.vdot(x, back), rel=1e-12)


# ---------------------------------------------------------------- the fast path equals it

# (x shape, kernel, stride, padding, dilation): each row names the fast-path branch it exercises
CONV_TABLE = [
    ((2, 3, 7, 9), 3, 1, 1, 1),     # plain offset loop
    ((1, 2, 9, 8), 3, 2, 1, 1),     # stride > 1
    ((1, 2, 6, 5), 3, 1, 7, 1),     # padding wider than the kernel: the zero ring
    ((1, 3, 4, 4), 3, 1, 100, 1),   # FCN's conv1_1 padding (and big enough for the thread split)
    ((1, 2, 6, 6), 3, 2, 5, 1),     # padding wider than the kernel at stride 2: no ring
    ((1, 2, 6, 7), (3, 1), 1, (4, 0), 1),  # a ring on one axis only
    ((1, 2, 10, 9), 4, 2, 1, 1),    # kernel = 2 strides: the stride blocks
    ((1, 2, 33, 34), 16, 8, 4, 1),  # FCN's upscore geometry (k 16, s 8)
    ((1, 2, 9, 11), (4, 6), (2, 3), (1, 2), 1),  # stride blocks, unequal axes
    ((2, 4, 5, 6), 1, 1, 0, 1),     # 1x1: the no-copy im2col
    ((1, 2, 9, 10), 7, 1, 0, 1),    # fc6's 7x7
    ((1, 2, 9, 10), 7, 1, 3, 1),    # 7x7 with padding
    ((1, 2, 8, 9), (3, 2), (2, 1), (1, 0), 1),  # unequal kernel, stride and padding per axis
    # dilated (rarefied filters, paper section 3.2)
    ((2, 3, 9, 8), 3, 1, 2, 2),     # a rarefied 3x3 (conv5_x after pool4 at stride 1)
    ((1, 2, 6, 5), 3, 1, 9, 2),     # padding wider than the dilated span (4): the zero ring
    ((1, 2, 12, 11), 4, 2, 1, 2),   # kernel = 2 strides but dilated: no stride blocks
    ((1, 2, 15, 16), 7, 1, 0, 2),   # fc6 after a rarefied pool5
    ((2, 4, 5, 6), 1, 1, 0, 3),     # 1x1: dilation changes nothing, still no copy
    ((1, 2, 11, 9), (3, 2), (2, 1), (1, 2), (2, 3)),  # unequal axes
    ((1, 64, 20, 20), 3, 1, 4, 4),  # big enough for the thread split
]
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k,s,p,d", CONV_TABLE)
def test_fast_conv2d_equals_plain(rng, xs, k, s, p, d, dtype):
    kh, kw = pair(k)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((3, xs[1], kh, kw)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    fast = F.conv2d(Tensor(x), Tensor(w), Tensor(b), s, p, d).data
    plain = conv2d_simple(x, w, b, s, p, d)
    assert fast.dtype == plain.dtype == dtype and fast.shape == plain.shape
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(fast, plain, rtol=tol, atol=tol * np.abs(plain).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k,s,p,d", CONV_TABLE)
def test_fast_im2col_and_col2im_equal_plain(rng, xs, k, s, p, d, dtype):
    g = geom(k, s, p, d)
    x = rng.standard_normal(xs).astype(dtype)
    col = im2col_simple(x, *g)
    np.testing.assert_array_equal(P.im2col(x, *g), col)
    c = rng.standard_normal(col.shape).astype(dtype)
    # both sum the kernel offsets in the same order, so they agree bit for bit
    np.testing.assert_array_equal(P.col2im(c, *xs[2:], *g[2:]),
                                  col2im_simple(c, *xs[2:], *g[2:]))


def test_undilated_conv_is_bit_identical_with_dilation_one_spelled_out(rng):
    """dilation=1 (the default) and (1, 1) run the very same paths: bit for bit, every branch."""
    for xs, k, s, p, _ in CONV_TABLE[:13]:
        x = rng.standard_normal(xs).astype(np.float32)
        w = Tensor(rng.standard_normal((3, xs[1], *pair(k))).astype(np.float32), requires_grad=True)
        xt = Tensor(x, requires_grad=True)
        y0 = F.conv2d(xt, w, None, s, p)
        g = rng.standard_normal(y0.shape).astype(np.float32)
        y0.backward(g)
        gx0, gw0 = xt.grad.copy(), w.grad.copy()
        xt.grad = w.grad = None
        y1 = F.conv2d(xt, w, None, s, p, (1, 1))
        y1.backward(g)
        assert y0.data.tobytes() == y1.data.tobytes()
        assert gx0.tobytes() == xt.grad.tobytes() and gw0.tobytes() == w.grad.tobytes()


def test_dilated_kernels_bypass_the_stride_blocks():
    """A kernel of whole strides moves in s x s blocks; dilated, its taps leave gaps, so the
    blocks would copy the wrong pixels: the primitives must take the loop over taps."""
    assert P._stride_blocks(4, 4, 2, 2) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert P._stride_blocks(4, 4, 2, 2, 2, 2) == [] and P._stride_blocks(4, 4, 2, 2, 1, 2) == []


POOL_TABLE = [
    ((2, 3, 8, 8), 2, 2, 0, False, 1),   # FCN's pools on even sizes: the no-padding fast case
    ((1, 2, 7, 9), 2, 2, 0, True, 1),    # ceil mode, a partial last window
    ((1, 2, 5, 5), 3, 3, 1, True, 1),    # ceil mode, the last window dropped (starts in padding)
    ((1, 2, 9, 8), 3, 2, 1, False, 1),   # padding, floor
    ((1, 2, 9, 8), 3, 2, 1, True, 1),    # padding, ceil
    ((1, 1, 7, 7), 3, 1, 1, False, 1),   # overlapping windows
    ((1, 2, 6, 7), 1, 2, 0, True, 1),    # kernel smaller than the stride
    ((1, 2, 7, 8), (3, 2), (2, 3), (1, 0), True, 1),  # unequal axes, ceil
    ((1, 64, 75, 75), 2, 2, 0, True, 1),  # big enough for the thread split, odd size
    ((1, 2, 9, 9), 2, 1, 0, True, 2),    # dilated, no padding and no overhang: the fast case
    ((1, 2, 10, 9), 2, 2, 0, True, 2),   # dilated, ceil: the last window's tap past the edge
    ((1, 2, 11, 10), 3, 2, 1, False, 2),  # dilated with padding
    ((1, 64, 40, 41), 2, 1, 0, True, 4),  # dilated, the thread split
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k,s,p,ceil,d", POOL_TABLE)
def test_fast_max_pool2d_equals_plain_on_negative_inputs(rng, xs, k, s, p, ceil, d, dtype):
    x = (rng.standard_normal(xs) - 3).astype(dtype)
    fast = F.max_pool2d(Tensor(x), k, s, p, d, ceil).data
    plain = max_pool2d_simple(x, k, s, p, d, ceil)
    assert fast.dtype == plain.dtype == dtype
    np.testing.assert_array_equal(fast, plain)


@st.composite
def geometries(draw, pool=False):
    """(x shape, k, s, p, d), each of k, s, p, d a pair, with the padded input at least one
    (dilated) window big; pooling pads at most half a window, as F.max_pool2d requires."""
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = tuple(draw(st.integers(0, a // 2 if pool else 6)) for a in k)
    span = [b * (a - 1) + 1 for a, b in zip(k, d)]
    h, w = (draw(st.integers(max(1, a - 2 * b), 13)) for a, b in zip(span, p))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), k, s, p, d


@given(geometry=geometries(), seed=st.integers(0, 2**16))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_fast_conv_primitives_equal_plain_property(geometry, seed):
    xs, k, s, p, d = geometry
    g = geom(k, s, p, d)
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(xs), rng.standard_normal((2, xs[1], *k))
    np.testing.assert_allclose(F.conv2d(Tensor(x), Tensor(w), None, s, p, d).data,
                               conv2d_simple(x, w, None, s, p, d), rtol=1e-12, atol=1e-12)
    col = im2col_simple(x, *g)
    np.testing.assert_array_equal(P.im2col(x, *g), col)
    np.testing.assert_array_equal(P.col2im(col, *xs[2:], *g[2:]),
                                  col2im_simple(col, *xs[2:], *g[2:]))


@given(geometry=geometries(pool=True), ceil=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_fast_max_pool2d_equals_plain_property(geometry, ceil, seed):
    xs, k, s, p, d = geometry
    x = np.random.default_rng(seed).standard_normal(xs) - 1
    plain = max_pool2d_simple(x, k, s, p, d, ceil)
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), k, s, p, d, ceil).data, plain)
    np.testing.assert_array_equal(plain, max_pool_loop(x, k, s, p, ceil, d))
