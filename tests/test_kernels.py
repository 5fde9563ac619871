"""The CUDA kernels (kernels/*.cu), run on the CPU emulator, against the NumPy primitives.

minifcn.gpu.cuda's functions take NumPy arrays too: then the same .cu sources, compiled by g++ with
kernels/emulator.h, run every GPU thread on the CPU, through the same Python glue (output
allocation, argument types, grid size) as on a GPU. Only CuPy's final launch call is not run
here (tests/test_gpu.py runs it where there is a GPU).

im2col, col2im and max pooling must match NumPy bit for bit: the kernels add in NumPy's order,
with and without dilation (the strategies draw dh, dw in 1..3).
Max unpooling matches too, shared indices included (the emulator runs atomicAdd in thread order).
The softmax loss matches to rounding (exp and log differ in the last bits between libraries).
"""
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifcn import primitives as P
from minifcn.gpu import cuda

if not (shutil.which("g++") or shutil.which("c++")):
    pytest.skip("the CUDA emulator needs a C++ compiler (g++)", allow_module_level=True)

examples = settings(max_examples=60, deadline=None, derandomize=True)
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="module", autouse=True)
def built():
    """Compile the emulator once up front (a few seconds at most, then cached on disk)."""
    from minifcn.gpu import emulator

    emulator.library()


# ---------------------------------------------------------------- geometry strategies


@st.composite
def windows(draw, pool=False):
    """(kh, kw, sh, sw, ph, pw, h, w, dh, dw) with the padded input at least one (dilated)
    window big. Pooling pads at most half a window's extent (as F.max_pool2d requires)."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    eh, ew = P.extent(kh, dh), P.extent(kw, dw)
    if pool:
        ph, pw = draw(st.integers(0, eh // 2)), draw(st.integers(0, ew // 2))
    else:
        ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, eh - 2 * ph), 11))
    w = draw(st.integers(max(1, ew - 2 * pw), 11))
    return kh, kw, sh, sw, ph, pw, h, w, dh, dw


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- an independent reference


def naive_im2col(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """Element by element, straight from the definition (slow; tiny shapes only)."""
    n, c, h, w = x.shape
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    col = np.zeros((n, c, kh, kw, oh, ow), x.dtype)
    for idx in np.ndindex(col.shape):
        b, ch, i, j, y, xx = idx
        r, s = y * sh + i * dh - ph, xx * sw + j * dw - pw
        if 0 <= r < h and 0 <= s < w:
            col[idx] = x[b, ch, r, s]
    return col


def naive_maxpool(x, kh, kw, sh, sw, ph, pw, oh, ow, dh=1, dw=1):
    """Scan each window's real elements in order; the first strictly larger one wins."""
    n, c, h, w = x.shape
    y = np.full((n, c, oh, ow), -np.inf, x.dtype)
    arg = np.zeros((n, c, oh, ow), np.int32)
    for b, ch, oy, ox in np.ndindex(y.shape):
        for i in range(kh):
            for j in range(kw):
                r, s = oy * sh + i * dh - ph, ox * sw + j * dw - pw
                if 0 <= r < h and 0 <= s < w and x[b, ch, r, s] > y[b, ch, oy, ox]:
                    y[b, ch, oy, ox], arg[b, ch, oy, ox] = x[b, ch, r, s], i * kw + j
    return y, arg


def test_im2col_matches_naive_definition(rng):
    x = _random(rng, (2, 3, 6, 7), np.float64)
    for geom, dil in [((3, 3, 1, 1, 1, 1), (1, 1)), ((2, 3, 2, 1, 0, 2), (1, 1)),
                      ((4, 2, 3, 2, 2, 1), (1, 1)), ((3, 3, 1, 1, 2, 2), (2, 2)),
                      ((2, 3, 2, 1, 1, 0), (3, 2))]:
        want = naive_im2col(x, *geom, *dil)
        got = cuda.im2col(x, *geom, *want.shape[-2:], *dil)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(P.im2col(x, *geom, *dil), want)


def test_maxpool_matches_naive_definition(rng):
    x = rng.integers(-3, 3, size=(2, 2, 7, 6)).astype(np.float32)  # many ties
    for kh, kw, sh, sw, ph, pw, ceil, dh, dw in [
            (2, 2, 2, 2, 0, 0, True, 1, 1), (3, 2, 2, 1, 1, 1, True, 1, 1),
            (3, 3, 2, 3, 1, 0, False, 1, 1), (2, 2, 1, 1, 0, 0, True, 2, 2),
            (3, 2, 2, 1, 2, 1, True, 2, 3)]:
        oh = P.conv_out_size(7, kh, sh, ph, ceil, dh)
        ow = P.conv_out_size(6, kw, sw, pw, ceil, dw)
        want_y, want_arg = naive_maxpool(x, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw)
        y, arg = cuda.maxpool_forward(x, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(arg, want_arg)
        y, arg = P.maxpool_forward(x, kh, kw, sh, sw, ph, pw, ceil, dh, dw)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(arg, want_arg)


# ---------------------------------------------------------------- im2col / col2im


@examples
@given(geom=windows(), n=st.integers(1, 2), c=st.integers(1, 3), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_im2col_matches_numpy(geom, n, c, dtype, seed):
    kh, kw, sh, sw, ph, pw, h, w, dh, dw = geom
    x = _random(np.random.default_rng(seed), (n, c, h, w), dtype)
    want = P.im2col(x, kh, kw, sh, sw, ph, pw, dh, dw)
    got = cuda.im2col(x, kh, kw, sh, sw, ph, pw, *want.shape[-2:], dh, dw)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@examples
@given(geom=windows(), n=st.integers(1, 2), c=st.integers(1, 3), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16))
def test_col2im_matches_numpy_bit_for_bit(geom, n, c, dtype, seed):
    kh, kw, sh, sw, ph, pw, h, w, dh, dw = geom
    oh, ow = P.conv_out_size(h, kh, sh, ph, d=dh), P.conv_out_size(w, kw, sw, pw, d=dw)
    col = _random(np.random.default_rng(seed), (n, c, kh, kw, oh, ow), dtype)
    want = P.col2im(col, h, w, sh, sw, ph, pw, dh, dw)
    got = cuda.col2im(col, h, w, sh, sw, ph, pw, dh, dw)
    assert got.dtype == dtype and got.shape == (n, c, h, w)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("geom", [(3, 3, 1, 1, 1, 1, 1, 1), (4, 4, 2, 2, 1, 1, 1, 1),
                                  (3, 2, 3, 2, 2, 0, 1, 1), (16, 16, 8, 8, 0, 0, 1, 1),
                                  (3, 3, 1, 1, 2, 2, 2, 2), (3, 2, 2, 3, 1, 0, 3, 2),
                                  (7, 7, 1, 1, 0, 0, 2, 2)])
def test_col2im_is_the_adjoint_of_im2col(rng, geom):
    """<im2col(x), col> == <x, col2im(col)>: the defining property, independent of NumPy."""
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    h, w = 19, 17
    oh, ow = P.conv_out_size(h, kh, sh, ph, d=dh), P.conv_out_size(w, kw, sw, pw, d=dw)
    x = rng.standard_normal((2, 3, h, w))
    col = rng.standard_normal((2, 3, kh, kw, oh, ow))
    lhs = np.vdot(cuda.im2col(x, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw), col)
    rhs = np.vdot(x, cuda.col2im(col, h, w, sh, sw, ph, pw, dh, dw))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_col2im_upsampling_geometry(rng):
    """FCN's upscore layers fold (k, s) = (64, 32), (4, 2), (16, 8) windows, where a window's
    stride leftovers hang past the image; also an odd k that is not a multiple of s."""
    for k, s, size in [(64, 32, 3), (4, 2, 5), (16, 8, 4), (5, 3, 4)]:
        out = (size - 1) * s + k  # conv_transpose2d's output size, no padding
        col = rng.standard_normal((1, 2, k, k, size, size)).astype(np.float32)
        np.testing.assert_array_equal(cuda.col2im(col, out, out, s, s, 0, 0),
                                      P.col2im(col, out, out, s, s, 0, 0))


def test_im2col_1x1_is_a_view_of_the_image(rng):
    x = _random(rng, (2, 3, 4, 5), np.float32)
    col = cuda.im2col(x, 1, 1, 1, 1, 0, 0, 4, 5)
    assert col.shape == (2, 3, 1, 1, 4, 5) and np.shares_memory(col, x)
    # a strided 1x1 conv does run the kernel
    np.testing.assert_array_equal(cuda.im2col(x, 1, 1, 2, 2, 0, 0, 2, 3),
                                  P.im2col(x, 1, 1, 2, 2, 0, 0))


def test_non_contiguous_input(rng):
    x = _random(rng, (2, 5, 6, 3), np.float64).transpose(0, 3, 1, 2)  # (2, 3, 5, 6) view
    assert not x.flags.c_contiguous
    np.testing.assert_array_equal(cuda.im2col(x, 3, 3, 1, 1, 1, 1, 5, 6),
                                  P.im2col(x, 3, 3, 1, 1, 1, 1))


def test_empty_batch():
    x = np.zeros((0, 3, 5, 5), np.float32)
    assert cuda.im2col(x, 3, 3, 1, 1, 1, 1, 5, 5).shape == (0, 3, 3, 3, 5, 5)
    y, arg = cuda.maxpool_forward(x, 2, 2, 2, 2, 0, 0, 3, 3)
    assert y.shape == arg.shape == (0, 3, 3, 3)


# ---------------------------------------------------------------- max pooling


@examples
@given(geom=windows(pool=True), ceil=st.booleans(), n=st.integers(1, 2), c=st.integers(1, 3),
       dtype=st.sampled_from(DTYPES), ties=st.booleans(), negative=st.booleans(),
       seed=st.integers(0, 2**16))
def test_maxpool_matches_numpy(geom, ceil, n, c, dtype, ties, negative, seed):
    kh, kw, sh, sw, ph, pw, h, w, dh, dw = geom
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: the first maximum of a window must win, as in NumPy
        x = rng.integers(-2, 2, size=(n, c, h, w)).astype(dtype)
    else:
        x = _random(rng, (n, c, h, w), dtype)
    if negative:  # all below 0: a zero from the padding (DeZero's slip) would win
        x = x - np.abs(x).max() - 1
    want_y, want_arg = P.maxpool_forward(x, kh, kw, sh, sw, ph, pw, ceil, dh, dw)
    oh, ow = want_y.shape[-2:]
    y, arg = cuda.maxpool_forward(x, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw)
    assert y.dtype == dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(arg, want_arg)
    if negative:  # (a dilated window can skip every real element: then it holds -inf)
        assert (y < 0).all()

    gy = _random(rng, y.shape, dtype)
    want_gx = P.maxpool_backward(gy, want_arg, h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    gx = cuda.maxpool_backward(gy, arg, h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_array_equal(gx, want_gx)


def test_maxpool_ceil_mode_edge_windows(rng):
    """Caffe's pooling of FCN: 2x2 stride 2, ceil mode, odd sizes: the last window holds one
    row/column of real pixels (the rest hangs over the edge and must not win)."""
    x = -np.abs(_random(rng, (1, 2, 7, 5), np.float32)) - 1
    want_y, want_arg = P.maxpool_forward(x, 2, 2, 2, 2, 0, 0, True)
    assert want_y.shape == (1, 2, 4, 3)
    y, arg = cuda.maxpool_forward(x, 2, 2, 2, 2, 0, 0, 4, 3)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(arg, want_arg)
    np.testing.assert_array_equal(y[..., -1, -1], x[..., -1, -1])  # a 1x1 real corner


def test_maxpool_nan_and_infinities_follow_numpy():
    x = np.array([[[[np.nan, 1.0, -np.inf, -np.inf],
                    [2.0, np.nan, -np.inf, -np.inf],
                    [np.inf, 3.0, np.nan, np.nan],
                    [0.0, 0.0, np.nan, -1.0]]]])
    want_y, want_arg = P.maxpool_forward(x, 2, 2, 2, 2, 1, 1, True)
    y, arg = cuda.maxpool_forward(x, 2, 2, 2, 2, 1, 1, *want_y.shape[-2:])
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(arg, want_arg)


def test_maxpool_backward_checks_argmax_shape(rng):
    gy = _random(rng, (1, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="argmax has shape"):
        cuda.maxpool_backward(gy, np.zeros((1, 2, 3, 4), np.int32), 6, 6, 2, 2, 2, 2, 0, 0)


# ---------------------------------------------------------------- max unpooling


@examples
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6),
       oh=st.integers(1, 7), ow=st.integers(1, 7), dtype=st.sampled_from(DTYPES),
       index_dtype=st.sampled_from([np.int64, np.int32]), seed=st.integers(0, 2**16))
def test_maxunpool_matches_numpy(n, c, h, w, oh, ow, dtype, index_dtype, seed):
    """Random indices: in a small output plane many are shared, and their values are summed
    (atomicAdd here runs in thread order, np.add.at's order: bit for bit)."""
    rng = np.random.default_rng(seed)
    x = _random(rng, (n, c, h, w), dtype)
    idx = rng.integers(0, oh * ow, size=x.shape).astype(index_dtype)
    want = P.maxunpool_forward(x, idx, oh, ow)
    got = cuda.maxunpool_forward(x, idx, oh, ow)
    assert got.dtype == dtype and got.shape == (n, c, oh, ow)
    np.testing.assert_array_equal(got, want)
    slow = np.zeros((n, c, oh * ow), dtype)
    for b, ch, i, j in np.ndindex(x.shape):
        slow[b, ch, idx[b, ch, i, j]] += x[b, ch, i, j]
    np.testing.assert_array_equal(got, slow.reshape(want.shape))

    gy = _random(rng, (n, c, oh, ow), dtype)
    want_gx = P.maxunpool_backward(gy, idx)
    gx = cuda.maxunpool_backward(gy, idx)
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_array_equal(gx, want_gx)
    np.testing.assert_array_equal(gx, np.take_along_axis(gy.reshape(n, c, -1),
                                                         idx.reshape(n, c, -1), 2).reshape(x.shape))


def test_maxunpool_of_max_pool_indices_is_max_pool_backward(rng):
    """Unpooling values at a k3 s2 pool's (shared) indices is the pool's backward of them."""
    import minifcn.functional as F
    from minifcn import Tensor

    for dtype in DTYPES:
        x = _random(rng, (2, 3, 9, 7), dtype)
        y, idx = F.max_pool2d(Tensor(x), 3, 2, return_indices=True)
        _, arg = P.maxpool_forward(x, 3, 3, 2, 2, 0, 0, False)
        gy = _random(rng, y.shape, dtype)
        got = cuda.maxunpool_forward(gy, idx.data, 9, 7)
        want = cuda.maxpool_backward(gy, arg, 9, 7, 3, 3, 2, 2, 0, 0)
        tol = 1e-6 if dtype == np.float32 else 1e-15
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_maxunpool_skips_indices_out_of_range(rng):
    """The op refuses them before launching; the kernel still never writes outside y."""
    x = _random(rng, (1, 1, 2, 2), np.float64)
    idx = np.array([[[[0, -1], [4, 3]]]])
    np.testing.assert_array_equal(cuda.maxunpool_forward(x, idx, 2, 2).ravel(),
                                  [x[0, 0, 0, 0], 0, 0, x[0, 0, 1, 1]])
    np.testing.assert_array_equal(cuda.maxunpool_backward(np.ones((1, 1, 2, 2)), idx),
                                  [[[[1, 0], [0, 1]]]])
    with pytest.raises(ValueError, match="indices must be an integer array of shape"):
        cuda.maxunpool_forward(x, idx[..., :1], 2, 2)


# ---------------------------------------------------------------- softmax cross-entropy


TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


@examples
@given(n=st.integers(1, 2), c=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6),
       scale=st.sampled_from([1.0, 30.0]), ignore_index=st.sampled_from([255, -1]),
       dtype=st.sampled_from(DTYPES), broadcast_gloss=st.booleans(), seed=st.integers(0, 2**16))
def test_softmax_cross_entropy_matches_numpy(n, c, h, w, scale, ignore_index, dtype,
                                             broadcast_gloss, seed):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((n, c, h, w))).astype(dtype)
    target = rng.integers(0, c, size=(n, h, w))
    target[rng.random((n, h, w)) < 0.3] = ignore_index
    want = P.softmax_cross_entropy_forward(logits, target, ignore_index)
    got = cuda.softmax_cross_entropy_forward(logits, target, ignore_index)
    assert got.dtype == dtype and got.shape == (n, h, w)
    np.testing.assert_allclose(got, want, **TOL[dtype])
    assert (got[target == ignore_index] == 0).all()

    gloss = np.float64(0.37) if broadcast_gloss else rng.standard_normal((n, h, w))
    want_g = P.softmax_cross_entropy_backward(logits, target, ignore_index, gloss)
    got_g = cuda.softmax_cross_entropy_backward(logits, target, ignore_index, gloss)
    assert got_g.dtype == dtype and got_g.shape == logits.shape
    np.testing.assert_allclose(got_g, want_g, **TOL[dtype])
    assert (got_g.transpose(0, 2, 3, 1)[target == ignore_index] == 0).all()


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[[[1000.0]], [[0.0]], [[-1000.0]]]], np.float32)  # (1, 3, 1, 1)
    target = np.array([[[1]]])
    loss = cuda.softmax_cross_entropy_forward(logits, target, 255)
    np.testing.assert_allclose(loss, [[[1000.0]]], rtol=1e-6)  # -log softmax = 1000 - 0
    g = cuda.softmax_cross_entropy_backward(logits, target, 255, np.ones((1, 1, 1)))
    np.testing.assert_allclose(g[0, :, 0, 0], [1.0, -1.0, 0.0], atol=1e-6)


def test_softmax_cross_entropy_target_dtypes(rng):
    """uint8 labels (PNG masks) and int32 are widened to the kernel's int64."""
    logits = _random(rng, (1, 4, 3, 5), np.float32)
    target = rng.integers(0, 4, size=(1, 3, 5))
    target[0, 0, 0] = 255
    want = P.softmax_cross_entropy_forward(logits, target, 255)
    for dt in (np.uint8, np.int32, np.int64):
        got = cuda.softmax_cross_entropy_forward(logits, target.astype(dt), 255)
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_softmax_cross_entropy_bad_label_gives_nan_not_a_stray_read(rng):
    logits = _random(rng, (1, 3, 2, 2), np.float64)
    target = np.array([[[0, 3], [-5, 1]]])
    loss = cuda.softmax_cross_entropy_forward(logits, target, 255)
    assert np.isnan(loss[0, 0, 1]) and np.isnan(loss[0, 1, 0])
    assert np.isfinite(loss[0, 0, 0]) and np.isfinite(loss[0, 1, 1])
    g = cuda.softmax_cross_entropy_backward(logits, target, 255, 1.0)
    assert np.isnan(g[0, :, 0, 1]).all() and np.isfinite(g[0, :, 0, 0]).all()


def test_softmax_cross_entropy_checks_shapes(rng):
    logits = _random(rng, (1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="target has shape"):
        cuda.softmax_cross_entropy_forward(logits, np.zeros((1, 2, 3), np.int64), 255)
    with pytest.raises(TypeError, match="integer"):
        cuda.softmax_cross_entropy_forward(logits, np.zeros((1, 2, 2)), 255)
