"""minifcn.pooling's indices and unpooling: max_pool2d(return_indices=True) and max_unpool2d
against slow loops written here and PyTorch (float64, where installed), the sum where indices
are shared (overlapping windows) against a loop and against max pooling's own backward, the
module forms, and the errors bad input must raise. (Gradient checks: minifcn.opcases.)"""
import numpy as np
import pytest

import minifcn.functional as F
import minifcn.nn as nn
from minifcn import Tensor

# ---------------------------------------------------------------- slow references (loops)


def pool_indices_loop(x, k, s, p, d, ceil):
    """PyTorch's CPU loop: each window's real taps in order, the first strictly larger value
    wins, and a window with none above -inf names its first real row and column."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = [v if isinstance(v, tuple) else (v, v)
                                              for v in (k, s, p, d)]
    n, c, h, w = x.shape

    def out(size, k, s, p, d):
        e = d * (k - 1) + 1
        o = -(-(size + 2 * p - e) // s) + 1 if ceil else (size + 2 * p - e) // s + 1
        return o - 1 if ceil and (o - 1) * s >= size + p else o

    oh, ow = out(h, kh, sh, ph, dh), out(w, kw, sw, pw, dw)
    idx = np.zeros((n, c, oh, ow), np.int64)
    for b, ch, r, q in np.ndindex(idx.shape):
        r0, q0 = r * sh - ph, q * sw - pw
        while r0 < 0:
            r0 += dh
        while q0 < 0:
            q0 += dw
        best, at = -np.inf, r0 * w + q0
        for i in range(r0, min(r * sh - ph + (kh - 1) * dh + 1, h), dh):
            for j in range(q0, min(q * sw - pw + (kw - 1) * dw + 1, w), dw):
                if x[b, ch, i, j] > best:
                    best, at = x[b, ch, i, j], i * w + j
        idx[b, ch, r, q] = at
    return idx


def unpool_loop(x, idx, oh, ow):
    """One value at a time, added at its index (the sum where indices are shared)."""
    y = np.zeros(x.shape[:2] + (oh * ow,), x.dtype)
    for b, ch, i, j in np.ndindex(x.shape):
        y[b, ch, idx[b, ch, i, j]] += x[b, ch, i, j]
    return y.reshape(x.shape[:2] + (oh, ow))


POOLS = [  # x shape, k, s, p, d, ceil
    ((2, 3, 8, 10), 2, 2, 0, 1, False),
    ((2, 3, 7, 9), 2, 2, 0, 1, True),       # FCN's ceil-mode pools over odd sizes
    ((2, 3, 7, 9), 2, 2, 0, 1, False),
    ((1, 2, 13, 11), 3, 2, 1, 1, True),     # overlapping windows, padding
    ((1, 2, 11, 10), 3, 2, 1, 2, True),     # dilated
    ((1, 2, 10, 9), (3, 2), (2, 1), (1, 1), (2, 1), False),
    ((2, 2, 9, 12), 3, 3, 1, 1, True),
]


@pytest.mark.parametrize("xs,k,s,p,d,ceil", POOLS)
def test_indices_match_loop_and_pytorch(rng, xs, k, s, p, d, ceil):
    x = rng.standard_normal(xs) - 3  # negative: a zero from the padding would win a wrong max
    x[0, 0, :3, :] = -np.inf  # windows whose real elements are all -inf (PyTorch's first one)
    x[:, :, ::4, 1] = np.round(x[:, :, ::4, 1])  # some ties: the first maximum wins
    y, idx = F.max_pool2d(Tensor(x), k, s, p, d, ceil, return_indices=True)
    assert isinstance(idx, Tensor) and idx.dtype == np.int64 and not idx.requires_grad
    np.testing.assert_array_equal(idx.data, pool_indices_loop(x, k, s, p, d, ceil))
    np.testing.assert_array_equal(y.data, F.max_pool2d(Tensor(x), k, s, p, d, ceil).data)
    torch = pytest.importorskip("torch")
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil,
                                              return_indices=True)
    np.testing.assert_array_equal(y.data, ty.numpy())
    np.testing.assert_array_equal(idx.data, tidx.numpy())


def test_indices_split_over_threads_match_the_loop(rng, monkeypatch):
    """On the CPU the indices (and unpooling's gather) are computed per channel block, one
    per thread."""
    from minifcn import primitives as P

    if P._POOL is None:
        pytest.skip("one CPU: never split")
    monkeypatch.setattr(P, "_PARALLEL_MIN_BYTES", 0)
    x = rng.standard_normal((2, 5, 9, 8)) - 3
    x[:, 1, :2] = -np.inf
    _, idx = F.max_pool2d(Tensor(x), 3, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(idx.data, pool_indices_loop(x, 3, 2, 1, 1, True))
    g = rng.standard_normal(x.shape)  # unpooling's backward gathers per block of planes too
    want = np.array([g[b, c].ravel()[idx.data[b, c]] for b in range(2) for c in range(5)])
    np.testing.assert_array_equal(P.maxunpool_backward(g, idx.data), want.reshape(idx.shape))


def test_indices_of_the_array_module_branch(rng, monkeypatch):
    """The lines CuPy runs (no threads, no take(out=)), run here with NumPy in CuPy's place."""
    import types

    from minifcn import pooling

    fake = types.ModuleType("not_numpy")
    fake.__dict__.update(np.__dict__)
    monkeypatch.setattr(pooling, "get_array_module", lambda a: fake)
    for xs, k, s, p, d, ceil in POOLS:
        x = rng.standard_normal(xs)
        x[0, 0, :3, :] = -np.inf
        _, idx = F.max_pool2d(Tensor(x), k, s, p, d, ceil, return_indices=True)
        np.testing.assert_array_equal(idx.data, pool_indices_loop(x, k, s, p, d, ceil))


def test_gradient_flows_through_y_only(rng):
    x = Tensor(rng.standard_normal((1, 2, 6, 6)), requires_grad=True)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    want = np.zeros(36 * 2)
    np.add.at(want, (idx.data.reshape(2, -1) + [[0], [36]]).ravel(), g.ravel())
    np.testing.assert_array_equal(x.grad, want.reshape(x.shape))


# ---------------------------------------------------------------- unpooling: unique indices


UNIQUE = [  # x shape, k, s, p, ceil, output_size (the pool's and unpool's geometry)
    ((2, 3, 8, 10), 2, 2, 0, False, None),             # SegNet's 2x2 s2
    ((2, 3, 7, 9), 2, 2, 0, True, (7, 9)),              # ceil-mode indices, odd size given
    ((2, 3, 7, 9), 2, 2, 0, False, "shape"),            # floor mode, the whole (N, C, H, W)
    ((1, 2, 9, 11), 3, 3, 1, True, (9, 11)),            # padding
    ((1, 2, 8, 9), (2, 3), (2, 3), 0, True, None),
]


@pytest.mark.parametrize("xs,k,s,p,ceil,size", UNIQUE)
def test_unpool_matches_loop_and_pytorch(rng, xs, k, s, p, ceil, size):
    x = rng.standard_normal(xs)
    y, idx = F.max_pool2d(Tensor(x), k, s, p, ceil_mode=ceil, return_indices=True)
    size = xs if size == "shape" else size
    v = Tensor(rng.standard_normal(y.shape), requires_grad=True)
    u = F.max_unpool2d(v, idx, k, s, p, size)
    oh, ow = u.shape[2:]
    np.testing.assert_array_equal(u.data, unpool_loop(v.data, idx.data, oh, ow))
    gu = rng.standard_normal(u.shape)
    u.backward(gu)
    np.testing.assert_array_equal(  # a gather at the indices
        v.grad, np.take_along_axis(gu.reshape(*gu.shape[:2], -1),
                                   idx.data.reshape(*idx.shape[:2], -1), 2).reshape(v.shape))
    torch = pytest.importorskip("torch")
    tv = torch.from_numpy(v.data).requires_grad_()
    tu = torch.nn.functional.max_unpool2d(tv, torch.from_numpy(idx.data), k, s, p, size)
    np.testing.assert_array_equal(u.data, tu.detach().numpy())
    tu.backward(torch.from_numpy(gu))
    np.testing.assert_array_equal(v.grad, tv.grad.numpy())


def test_default_output_size_is_pytorchs(rng):
    for h, k, s, p in [(4, 2, 2, 0), (5, 3, 2, 1), (3, 4, 3, 1), (6, 2, 1, 0)]:
        v = Tensor(rng.standard_normal((1, 1, h, h + 1)))
        u = F.max_unpool2d(v, np.zeros(v.shape, np.int64), k, s, p)
        assert u.shape[2:] == ((h - 1) * s - 2 * p + k, h * s - 2 * p + k)


# ---------------------------------------------------------------- shared indices: a sum


def test_shared_indices_are_summed_as_max_pool_backward(rng):
    """Kernel 3 stride 2: a pixel that wins several windows is named by each; unpooling adds
    their values there, exactly what max pooling's backward does with gradients."""
    x = rng.standard_normal((2, 3, 9, 11))
    x[:, :, 4, 4] = 10  # the max of the four windows around it
    xt = Tensor(x, requires_grad=True)
    y, idx = F.max_pool2d(xt, 3, 2, return_indices=True)
    counts = np.array([np.bincount(p.ravel()).max() for p in idx.data.reshape(6, -1)])
    assert (counts == 4).all()
    g = rng.standard_normal(y.shape)
    u = F.max_unpool2d(Tensor(g), idx, 3, 2, output_size=x.shape[2:])
    np.testing.assert_allclose(u.data, unpool_loop(g, idx.data, 9, 11), rtol=1e-15, atol=0)
    y.backward(g)
    np.testing.assert_allclose(u.data, xt.grad, rtol=1e-15, atol=0)


def test_shared_indices_backward_is_the_gather(rng):
    idx = rng.integers(0, 6, size=(2, 2, 3, 3))  # many collisions in a 2x3 plane
    v = Tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)
    u = F.max_unpool2d(v, idx, 2, 2, 2, output_size=(2, 3))
    np.testing.assert_allclose(u.data, unpool_loop(v.data, idx, 2, 3), rtol=1e-14)
    g = rng.standard_normal(u.shape)
    u.backward(g)
    for b, c, i, j in np.ndindex(idx.shape):
        assert v.grad[b, c, i, j] == g[b, c].ravel()[idx[b, c, i, j]]
    # <unpool(v), g> == <v, gather(g)>: the adjoint, whatever the collisions
    assert np.vdot(u.data, g) == pytest.approx(np.vdot(v.data, v.grad), rel=1e-12)


# ---------------------------------------------------------------- modules


def test_modules_match_the_functions(rng):
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    pool = nn.MaxPool2d(2, 2, 0, 1, True, ceil_mode=True)  # return_indices: PyTorch's 5th
    unpool = nn.MaxUnpool2d(2)
    y, idx = pool(Tensor(x))
    want_y, want_idx = F.max_pool2d(Tensor(x), 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(y.data, want_y.data)
    np.testing.assert_array_equal(idx.data, want_idx.data)
    u = unpool(y, idx, output_size=x.shape)
    np.testing.assert_array_equal(u.data, F.max_unpool2d(y, idx, 2, output_size=(7, 9)).data)
    assert u.dtype == np.float32 and u.shape == x.shape
    np.testing.assert_array_equal(unpool(y, idx, np.array(x.shape[2:])).data, u.data)
    assert repr(unpool) == "MaxUnpool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))"
    assert repr(pool).endswith("ceil_mode=True, return_indices=True)")
    assert "return_indices" not in repr(nn.MaxPool2d(2))
    assert not isinstance(nn.MaxPool2d(2)(Tensor(x)), tuple)


def test_plain_array_indices(rng):
    v = rng.standard_normal((1, 2, 2, 2))
    idx = np.array([[[[0, 3], [10, 15]]] * 2], np.int32)
    u = F.max_unpool2d(Tensor(v), idx, 2)
    np.testing.assert_array_equal(u.data, unpool_loop(v, idx, 4, 4))


# ---------------------------------------------------------------- bad input


def _v(*shape):
    return Tensor(np.zeros(shape))


def _i(*shape):
    return np.zeros(shape, np.int64)


@pytest.mark.parametrize("call,err,match", [
    (lambda: F.max_unpool2d(_v(4, 4), _i(4, 4), 2), ValueError, r"^max_unpool2d: input must be 4-D"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), _i(1, 1, 2, 3), 2), ValueError,
     r"^max_unpool2d: indices shape \(1, 1, 2, 3\) must equal the input's \(1, 1, 2, 2\)$"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), np.zeros((1, 1, 2, 2)), 2), TypeError,
     r"^max_unpool2d: indices must be an integer array"),
    (lambda: F.max_unpool2d(Tensor(np.zeros((1, 1, 2, 2), np.int64)), _i(1, 1, 2, 2), 2),
     TypeError, r"^max_unpool2d: input must be a floating array"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), _i(1, 1, 2, 2) + 16, 2), ValueError,
     r"^max_unpool2d: indices must lie in \[0, 16\) for an output of 4x4, got values from 16 to 16$"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), _i(1, 1, 2, 2) - 1, 2), ValueError,
     r"^max_unpool2d: indices must lie in \[0, 16\)"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), _i(1, 1, 2, 2), 2, output_size=(6, 4)), ValueError,
     r"^max_unpool2d: output_size \(6, 4\): dim 0 must be between 2 and 6 \(exclusive\)"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), _i(1, 1, 2, 2), 2, output_size=(4, 4, 4)), TypeError,
     r"^max_unpool2d: output_size must be \(oh, ow\) or \(N, C, oh, ow\)"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), _i(1, 1, 2, 2), 2, output_size=(2, 1, 4, 4)),
     ValueError, r"^max_unpool2d: output_size \(2, 1, 4, 4\) must have the input's \(N, C\)"),
    (lambda: F.max_unpool2d(_v(1, 1, 1, 1), _i(1, 1, 1, 1), 2, padding=1), ValueError,
     r"^max_unpool2d: the output size \(0, 0\) .* is empty$"),
    (lambda: F.max_unpool2d(_v(1, 1, 2, 2), _i(1, 1, 2, 2), 2, stride=0), ValueError,
     r"^max_unpool2d: stride must be >= 1"),
    (lambda: nn.MaxUnpool2d(0), ValueError, r"^MaxUnpool2d: kernel_size must be >= 1"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_output_size_range_is_pytorchs():
    """The sizes PyTorch accepts for each dim, and no others: strictly within a stride of the
    default."""
    torch = pytest.importorskip("torch")
    v, idx = np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3), np.int64)
    for k, s, p in [(2, 2, 0), (3, 2, 1), (2, 3, 0)]:
        default = (3 - 1) * s - 2 * p + k
        for oh in range(default - s - 1, default + s + 2):
            try:
                torch.nn.functional.max_unpool2d(torch.from_numpy(v), torch.from_numpy(idx),
                                                 k, s, p, (oh, default))
                ok = True
            except (ValueError, RuntimeError):
                ok = False
            try:
                F.max_unpool2d(Tensor(v), idx, k, s, p, (oh, default))
                mine = True
            except ValueError:
                mine = False
            assert mine == ok, (k, s, p, oh)
