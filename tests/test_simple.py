"""minifcn.simple, the plain path: first against direct loops written here (so the plain path is
trusted), then the fast path (primitives, F.conv2d, F.max_pool2d) against the plain path over
every branch the fast path has (zero ring, stride blocks, 1x1, thread split, ceil mode)."""
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


def conv2d_loop(x, w, b, stride, pad):
    """One multiply-add at a time; a tap outside the image is padding and adds nothing."""
    (sh, sw), (ph, pw) = pair(stride), pair(pad)
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, k, oh, ow))
    for a in range(n):
        for o in range(k):
            for r in range(oh):
                for q in range(ow):
                    acc = 0.0 if b is None else b[o]
                    for ci in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                yy, xx = r * sh - ph + i, q * sw - pw + j
                                if 0 <= yy < h and 0 <= xx < wd:
                                    acc += w[o, ci, i, j] * x[a, ci, yy, xx]
                    y[a, o, r, q] = acc
    return y


def im2col_loop(x, kh, kw, sh, sw, ph, pw):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    col = np.zeros((n, c, kh, kw, oh, ow))
    for i, j, r, q in np.ndindex(kh, kw, oh, ow):
        yy, xx = r * sh - ph + i, q * sw - pw + j
        if 0 <= yy < h and 0 <= xx < w:
            col[:, :, i, j, r, q] = x[:, :, yy, xx]
    return col


def pool_starts(size, k, s, p, ceil):
    """Window starts (in unpadded coordinates), enumerated one by one: floor mode keeps the
    windows inside the padded input; ceil mode adds windows until the padded input is covered,
    but never one that starts in the right padding (it would see no real element)."""
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


def max_pool_loop(x, k, s, p, ceil):
    (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(s), pair(p)
    n, c, h, w = x.shape
    rows, cols = pool_starts(h, kh, sh, ph, ceil), pool_starts(w, kw, sw, pw, ceil)
    y = np.empty((n, c, len(rows), len(cols)), x.dtype)
    for r, r0 in enumerate(rows):
        for q, q0 in enumerate(cols):
            y[:, :, r, q] = x[:, :, max(r0, 0):r0 + kh, max(q0, 0):q0 + kw].max(axis=(2, 3))
    return y


# ---------------------------------------------------------------- the plain path is right


def geom(k, s, p):
    """(kh, kw, sh, sw, ph, pw) from ints or pairs, in the primitives' argument order."""
    (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(s), pair(p)
    return kh, kw, sh, sw, ph, pw


@pytest.mark.parametrize("xs,k,s,p", [
    ((1, 2, 5, 5), 3, 1, 0), ((2, 2, 5, 6), 3, 1, 1), ((1, 3, 7, 6), 3, 2, 1),
    ((1, 1, 4, 4), 3, 1, 4), ((1, 2, 6, 6), 4, 2, 1), ((1, 2, 3, 3), 1, 1, 0),
    ((1, 1, 7, 8), 7, 1, 0), ((1, 1, 5, 5), 2, 3, 0), ((1, 2, 7, 6), (3, 2), (2, 1), (0, 2)),
])
def test_plain_conv2d_and_im2col_equal_direct_loops(rng, xs, k, s, p):
    kh, kw, sh, sw, ph, pw = g = geom(k, s, p)
    x = rng.standard_normal(xs)
    w, b = rng.standard_normal((3, xs[1], kh, kw)), rng.standard_normal(3)
    np.testing.assert_allclose(conv2d_simple(x, w, b, s, p), conv2d_loop(x, w, b, s, p),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv2d_simple(x, w, None, s, p), conv2d_loop(x, w, None, s, p),
                               rtol=1e-12, atol=1e-12)
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


@pytest.mark.parametrize("xs,k,s,p,ceil", [
    ((2, 3, 6, 6), 2, 2, 0, False), ((1, 2, 5, 7), 2, 2, 0, True), ((1, 2, 5, 5), 3, 3, 1, True),
    ((1, 2, 7, 6), 3, 2, 1, True), ((1, 2, 7, 6), 3, 2, 1, False), ((1, 1, 9, 9), 3, 1, 1, False),
    ((1, 2, 5, 5), 1, 2, 0, True), ((1, 2, 7, 8), (3, 2), (2, 3), (1, 0), True),
])
def test_plain_max_pool_equals_window_loop_on_negative_inputs(rng, xs, k, s, p, ceil):
    x = -np.abs(rng.standard_normal(xs)) - 1  # all negative: a zero pad would win every edge
    y = max_pool2d_simple(x, k, s, p, ceil)
    assert y.max() < 0
    np.testing.assert_array_equal(y, max_pool_loop(x, k, s, p, ceil))


def test_plain_max_pool_matches_pytorch_ceil_mode(rng):
    torch = pytest.importorskip("torch")
    for xs, k, s, p in [((1, 2, 5, 7), 2, 2, 0), ((1, 2, 5, 5), 3, 3, 1), ((2, 1, 9, 8), 3, 2, 1),
                        ((1, 1, 7, 8), (3, 2), (2, 3), (1, 0))]:
        x = rng.standard_normal(xs) - 2
        expect = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=True)
        np.testing.assert_array_equal(max_pool2d_simple(x, k, s, p, True), expect.numpy())


def test_plain_col2im_is_the_adjoint_of_plain_im2col(rng):
    for xs, k, s, p in [((2, 3, 7, 6), 3, 2, 1), ((1, 2, 6, 6), 4, 2, 1), ((1, 1, 4, 5), 3, 1, 4),
                        ((1, 2, 8, 7), (2, 3), (1, 2), (1, 0))]:
        g = geom(k, s, p)
        x = rng.standard_normal(xs)
        col = im2col_simple(x, *g)
        c = rng.standard_normal(col.shape)
        back = col2im_simple(c, *xs[2:], *g[2:])
        assert back.shape == xs
        assert np.vdot(col, c) == pytest.approx(np.vdot(x, back), rel=1e-12)


# ---------------------------------------------------------------- the fast path equals it

# (x shape, kernel, stride, padding): each row names the fast-path branch it exercises
CONV_TABLE = [
    ((2, 3, 7, 9), 3, 1, 1),     # plain offset loop
    ((1, 2, 9, 8), 3, 2, 1),     # stride > 1
    ((1, 2, 6, 5), 3, 1, 7),     # padding wider than the kernel: the zero ring
    ((1, 3, 4, 4), 3, 1, 100),   # FCN's conv1_1 padding (and big enough for the thread split)
    ((1, 2, 6, 6), 3, 2, 5),     # padding wider than the kernel at stride 2: no ring
    ((1, 2, 6, 7), (3, 1), 1, (4, 0)),  # a ring on one axis only
    ((1, 2, 10, 9), 4, 2, 1),    # kernel = 2 strides: the stride blocks
    ((1, 2, 33, 34), 16, 8, 4),  # FCN's upscore geometry (k 16, s 8)
    ((1, 2, 9, 11), (4, 6), (2, 3), (1, 2)),  # stride blocks, unequal axes
    ((2, 4, 5, 6), 1, 1, 0),     # 1x1: the no-copy im2col
    ((1, 2, 9, 10), 7, 1, 0),    # fc6's 7x7
    ((1, 2, 9, 10), 7, 1, 3),    # 7x7 with padding
    ((1, 2, 8, 9), (3, 2), (2, 1), (1, 0)),  # unequal kernel, stride and padding per axis
]
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k,s,p", CONV_TABLE)
def test_fast_conv2d_equals_plain(rng, xs, k, s, p, dtype):
    kh, kw = pair(k)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((3, xs[1], kh, kw)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    fast = F.conv2d(Tensor(x), Tensor(w), Tensor(b), s, p).data
    plain = conv2d_simple(x, w, b, s, p)
    assert fast.dtype == plain.dtype == dtype and fast.shape == plain.shape
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(fast, plain, rtol=tol, atol=tol * np.abs(plain).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k,s,p", CONV_TABLE)
def test_fast_im2col_and_col2im_equal_plain(rng, xs, k, s, p, dtype):
    g = geom(k, s, p)
    x = rng.standard_normal(xs).astype(dtype)
    col = im2col_simple(x, *g)
    np.testing.assert_array_equal(P.im2col(x, *g), col)
    c = rng.standard_normal(col.shape).astype(dtype)
    # both sum the kernel offsets in the same order, so they agree bit for bit
    np.testing.assert_array_equal(P.col2im(c, *xs[2:], *g[2:]),
                                  col2im_simple(c, *xs[2:], *g[2:]))


POOL_TABLE = [
    ((2, 3, 8, 8), 2, 2, 0, False),   # FCN's pools on even sizes: the no-padding fast case
    ((1, 2, 7, 9), 2, 2, 0, True),    # ceil mode, a partial last window
    ((1, 2, 5, 5), 3, 3, 1, True),    # ceil mode, the last window dropped (starts in padding)
    ((1, 2, 9, 8), 3, 2, 1, False),   # padding, floor
    ((1, 2, 9, 8), 3, 2, 1, True),    # padding, ceil
    ((1, 1, 7, 7), 3, 1, 1, False),   # overlapping windows
    ((1, 2, 6, 7), 1, 2, 0, True),    # kernel smaller than the stride
    ((1, 2, 7, 8), (3, 2), (2, 3), (1, 0), True),  # unequal axes, ceil
    ((1, 64, 75, 75), 2, 2, 0, True),  # big enough for the thread split, odd size
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,k,s,p,ceil", POOL_TABLE)
def test_fast_max_pool2d_equals_plain_on_negative_inputs(rng, xs, k, s, p, ceil, dtype):
    x = (rng.standard_normal(xs) - 3).astype(dtype)
    fast = F.max_pool2d(Tensor(x), k, s, p, ceil).data
    plain = max_pool2d_simple(x, k, s, p, ceil)
    assert fast.dtype == plain.dtype == dtype
    np.testing.assert_array_equal(fast, plain)


@st.composite
def geometries(draw, pool=False):
    """(x shape, k, s, p), each of k, s, p a pair, with the padded input at least one window
    big; pooling pads at most half a window, as F.max_pool2d requires."""
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = tuple(draw(st.integers(0, a // 2 if pool else 6)) for a in k)
    h, w = (draw(st.integers(max(1, a - 2 * b), 11)) for a, b in zip(k, p))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), k, s, p


@given(geometry=geometries(), seed=st.integers(0, 2**16))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_fast_conv_primitives_equal_plain_property(geometry, seed):
    xs, k, s, p = geometry
    g = geom(k, s, p)
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(xs), rng.standard_normal((2, xs[1], *k))
    np.testing.assert_allclose(F.conv2d(Tensor(x), Tensor(w), None, s, p).data,
                               conv2d_simple(x, w, None, s, p), rtol=1e-12, atol=1e-12)
    col = im2col_simple(x, *g)
    np.testing.assert_array_equal(P.im2col(x, *g), col)
    np.testing.assert_array_equal(P.col2im(col, *xs[2:], *g[2:]),
                                  col2im_simple(col, *xs[2:], *g[2:]))


@given(geometry=geometries(pool=True), ceil=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=60, deadline=None, derandomize=True)
def test_fast_max_pool2d_equals_plain_property(geometry, ceil, seed):
    xs, k, s, p = geometry
    x = np.random.default_rng(seed).standard_normal(xs) - 1
    plain = max_pool2d_simple(x, k, s, p, ceil)
    np.testing.assert_array_equal(F.max_pool2d(Tensor(x), k, s, p, ceil).data, plain)
    np.testing.assert_array_equal(plain, max_pool_loop(x, k, s, p, ceil))
