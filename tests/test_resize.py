"""minifcn.resize (F.interpolate) and F.adaptive_avg_pool2d: forward values and gradients against
slow loops written here from the coordinate rules, and against PyTorch in float64 (where
installed) over a grid of sizes, scale factors, modes and align_corners; the CUDA kernels
(kernels/resize.cu) on the CPU emulator against the NumPy path; the layers; the errors.
(Gradient checks: the opcases table, tests/test_functional.py.)"""
import math
import shutil

import numpy as np
import pytest

import minifcn.functional as F
import minifcn.nn as nn
from minifcn import Tensor

# ---------------------------------------------------------------- slow references (loops)


def linear_source(d, n_in, n_out, factor, align_corners):
    """Where output d samples the input (factor: the caller's scale_factor, or None)."""
    if align_corners:
        return d * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    scale = 1 / factor if factor is not None else n_in / n_out
    return max((d + 0.5) * scale - 0.5, 0.0)


def nearest_source(d, n_in, n_out, factor):
    """PyTorch's legacy nearest: floor(d * scale) in float32 (exact for 1x and 2x)."""
    if n_out == n_in:
        return d
    if n_out == 2 * n_in:
        return d // 2
    scale = np.float32(1 / factor) if factor is not None else np.float32(n_in) / np.float32(n_out)
    return min(int(math.floor(np.float32(d) * scale)), n_in - 1)


def taps(d, n_in, n_out, factor, mode, align_corners):
    """[(input, weight)] that output d reads along one axis."""
    if mode == "nearest":
        return [(nearest_source(d, n_in, n_out, factor), 1.0)]
    src = linear_source(d, n_in, n_out, factor, align_corners)
    i0 = min(int(math.floor(src)), n_in - 1)
    lam = src - i0
    return [(i0, 1 - lam), (min(i0 + 1, n_in - 1), lam)]


def resize_loop(x, out, factors=(None, None), mode="bilinear", align_corners=False, g=None):
    """The forward (g None) or, given an upstream g, the adjoint: each output's gradient
    scattered to its taps with their weights."""
    n, c, h, w = x.shape
    oh, ow = out
    y = np.zeros((n, c, oh, ow)) if g is None else np.zeros_like(x)
    for oy in range(oh):
        for ox in range(ow):
            for r, wr in taps(oy, h, oh, factors[0], mode, align_corners):
                for q, wq in taps(ox, w, ow, factors[1], mode, align_corners):
                    if g is None:
                        y[:, :, oy, ox] += wr * wq * x[:, :, r, q]
                    else:
                        y[:, :, r, q] += wr * wq * g[:, :, oy, ox]
    return y


def adaptive_loop(x, out):
    n, c, h, w = x.shape
    y = np.zeros((n, c) + out)
    for i in range(out[0]):
        for j in range(out[1]):
            r0, r1 = i * h // out[0], math.ceil((i + 1) * h / out[0])
            c0, c1 = j * w // out[1], math.ceil((j + 1) * w / out[1])
            y[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


def _grad(fn, x, g):
    xt = Tensor(x, requires_grad=True)
    y = fn(xt)
    y.backward(g)
    return y.data, xt.grad.data if hasattr(xt.grad, "data") else xt.grad


# ---------------------------------------------------------------- against the loops


LOOP_CASES = [  # (input H, W), size or None, scale_factor or None, mode, align_corners
    ((4, 5), (8, 10), None, "bilinear", False),
    ((9, 5), (5, 7), None, "bilinear", False),
    ((4, 5), (7, 9), None, "bilinear", True),
    ((5, 7), None, 1.5, "bilinear", False),
    ((5, 7), None, (0.6, 2.5), "bilinear", True),
    ((6, 6), (1, 1), None, "bilinear", False),
    ((1, 1), (3, 4), None, "bilinear", True),
    ((3, 4), (7, 9), None, "nearest", None),
    ((9, 8), (4, 3), None, "nearest", None),
    ((5, 7), None, 1.5, "nearest", None),
    ((6, 5), None, (2, 1 / 3), "nearest", None),
]


@pytest.mark.parametrize("hw,size,factor,mode,corners", LOOP_CASES)
def test_forward_and_backward_match_the_loop(rng, hw, size, factor, mode, corners):
    x = rng.standard_normal((2, 3) + hw)
    kw = {} if corners is None else {"align_corners": corners}
    y = F.interpolate(Tensor(x), size, factor, mode, **kw).data
    factors = (None, None) if factor is None else (
        factor if isinstance(factor, tuple) else (factor, factor))
    out = size if size is not None else tuple(int(math.floor(s * f)) for s, f in zip(hw, factors))
    assert y.shape == (2, 3) + out
    np.testing.assert_allclose(y, resize_loop(x, out, factors, mode, bool(corners)),
                               rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    _, gx = _grad(lambda t: F.interpolate(t, size, factor, mode, **kw), x, g)
    np.testing.assert_allclose(gx, resize_loop(x, out, factors, mode, bool(corners), g=g),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hw,out", [((7, 5), (3, 2)), ((5, 6), (1, 1)), ((4, 4), (4, 4)),
                                    ((3, 5), (6, 7)), ((10, 9), (4, 1)), ((1, 1), (2, 2))])
def test_adaptive_avg_pool_matches_the_loop(rng, hw, out):
    x = rng.standard_normal((2, 3) + hw)
    y = F.adaptive_avg_pool2d(Tensor(x), out).data
    np.testing.assert_allclose(y, adaptive_loop(x, out), rtol=1e-12, atol=1e-12)


def test_adaptive_avg_pool_backward_spreads_evenly(rng):
    x = rng.standard_normal((1, 2, 7, 5))
    g = rng.standard_normal((1, 2, 3, 2))
    _, gx = _grad(lambda t: F.adaptive_avg_pool2d(t, (3, 2)), x, g)
    want = np.zeros_like(x)
    for i in range(3):
        for j in range(2):
            r0, r1 = i * 7 // 3, math.ceil((i + 1) * 7 / 3)
            c0, c1 = j * 5 // 2, math.ceil((j + 1) * 5 / 2)
            want[:, :, r0:r1, c0:c1] += g[:, :, i:i + 1, j:j + 1] / ((r1 - r0) * (c1 - c0))
    np.testing.assert_allclose(gx, want, rtol=1e-12, atol=1e-12)
    _, gx = _grad(lambda t: F.adaptive_avg_pool2d(t, 1), x, g[:, :, :1, :1])
    np.testing.assert_allclose(gx, np.broadcast_to(g[:, :, :1, :1] / 35, x.shape), rtol=1e-14)


def test_adaptive_avg_pool_none_keeps_a_size(rng):
    x = rng.standard_normal((1, 2, 6, 5))
    np.testing.assert_allclose(F.adaptive_avg_pool2d(Tensor(x), (None, 2)).data,
                               adaptive_loop(x, (6, 2)), rtol=1e-12)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(Tensor(x), [3, None]).data,
                               adaptive_loop(x, (3, 5)), rtol=1e-12)


def test_float32_stays_float32(rng):
    x = Tensor(rng.standard_normal((1, 2, 5, 6)).astype(np.float32))
    for y in (F.interpolate(x, scale_factor=2), F.interpolate(x, size=3, mode="nearest"),
              F.adaptive_avg_pool2d(x, 1), F.adaptive_avg_pool2d(x, (2, 4))):
        assert y.dtype == np.float32


# ---------------------------------------------------------------- PyTorch parity (float64)

SHAPES = [(1, 1), (5, 7), (12, 12), (3, 8)]
SIZES = [(1, 1), (4, 9), (10, 13), (24, 24), (7, 3)]
FACTORS = [0.5, 1.5, 2, 3, 0.3, 1 / 3, 2.5, 7 / 3, (1.7, 0.6), (8, 8)]
MODES = [("bilinear", False), ("bilinear", True), ("nearest", None)]


def _torch_pair(torch, x, g, **options):
    xt = torch.from_numpy(x).requires_grad_()
    y = torch.nn.functional.interpolate(xt, **options)
    y.backward(torch.from_numpy(g))
    return y.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("mode,corners", MODES)
@pytest.mark.parametrize("hw", SHAPES)
def test_matches_pytorch(rng, hw, mode, corners):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3) + hw)
    kw = {} if corners is None else {"align_corners": corners}
    calls = [{"size": s} for s in SIZES + [(2 * hw[0], 2 * hw[1]), hw]]
    calls += [{"scale_factor": f} for f in FACTORS]
    for options in calls:
        try:
            want = torch.nn.functional.interpolate(torch.from_numpy(x), mode=mode, **options, **kw)
        except RuntimeError:  # an empty output: ours must refuse it too
            with pytest.raises(ValueError, match="interpolate: scale_factor"):
                F.interpolate(Tensor(x), mode=mode, **options, **kw)
            continue
        g = rng.standard_normal(tuple(want.shape))
        want_y, want_gx = _torch_pair(torch, x, g, mode=mode, **options, **kw)
        y, gx = _grad(lambda t: F.interpolate(t, mode=mode, **options, **kw), x, g)
        assert y.shape == want_y.shape, options
        np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12, err_msg=str(options))
        np.testing.assert_allclose(gx, want_gx, rtol=1e-12, atol=1e-12, err_msg=str(options))


@pytest.mark.parametrize("hw,out", [((7, 5), (3, 2)), ((12, 12), 1), ((9, 11), (4, 5)),
                                    ((5, 5), (8, 7)), ((6, 9), (None, 4)), ((13, 6), 13)])
def test_adaptive_avg_pool_matches_pytorch(rng, hw, out):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3) + hw)
    xt = torch.from_numpy(x).requires_grad_()
    want = torch.nn.functional.adaptive_avg_pool2d(xt, out)
    g = rng.standard_normal(tuple(want.shape))
    want.backward(torch.from_numpy(g))
    y, gx = _grad(lambda t: F.adaptive_avg_pool2d(t, out), x, g)
    np.testing.assert_allclose(y, want.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the CUDA kernels (emulator)

needs_gxx = pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                               reason="the CUDA emulator needs a C++ compiler (g++)")


@needs_gxx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hw,options", [
    ((5, 7), {"size": (11, 4)}), ((12, 12), {"scale_factor": 8}),
    ((7, 5), {"size": (3, 2), "align_corners": True}), ((1, 3), {"size": (4, 1)}),
    ((5, 7), {"scale_factor": 1.5}), ((9, 8), {"size": (4, 3), "mode": "nearest"}),
    ((3, 4), {"size": (7, 9), "mode": "nearest"}),
    ((6, 5), {"scale_factor": 2, "mode": "nearest"})])
def test_kernels_match_the_numpy_path(rng, monkeypatch, hw, options, dtype):
    """The whole op with its loops handed to minifcn.gpu.cuda (the CuPy branch: tables moved
    to the array module, the kernels launched), run on the CPU emulator."""
    from minifcn import primitives as P
    from minifcn.gpu import cuda

    x = rng.standard_normal((2, 3) + hw).astype(dtype)
    want_y, want_gx = None, None
    for gpu in (None, cuda):
        monkeypatch.setattr(P, "_gpu", lambda xp, gpu=gpu: gpu)
        xt = Tensor(x, requires_grad=True)
        y = F.interpolate(xt, **options)
        if want_y is None:
            g = rng.standard_normal(y.shape).astype(dtype)
        y.backward(g)
        if want_y is None:
            want_y, want_gx = y.data, xt.grad.data
            continue
        tol = 1e-5 if dtype == np.float32 else 1e-12
        if options.get("mode") == "nearest":
            np.testing.assert_array_equal(y.data, want_y)  # a copy: exactly
        np.testing.assert_allclose(y.data, want_y, rtol=tol, atol=tol)
        np.testing.assert_allclose(xt.grad.data, want_gx, rtol=tol, atol=tol)
        assert y.dtype == xt.grad.dtype == dtype


@needs_gxx
def test_backward_kernel_is_the_adjoint(rng):
    """<forward(x), g> == <x, backward(g)>, kernel against kernel, for both modes."""
    from minifcn import resize as R
    from minifcn.gpu import cuda

    x = rng.standard_normal((1, 2, 7, 10))
    rows, cols = R.linear_axis(7, 15, None, False), R.linear_axis(10, 4, None, True)
    y = cuda.resize_bilinear_forward(x, *rows[:3], *cols[:3])
    g = rng.standard_normal(y.shape)
    gx = cuda.resize_bilinear_backward(g, 7, 10, *rows[:3], *cols[:3], *rows[3:], *cols[3:])
    assert abs((y * g).sum() - (x * gx).sum()) < 1e-12
    rows, cols = R.nearest_axis(7, 15, None), R.nearest_axis(10, 4, None)
    y = cuda.resize_nearest_forward(x, rows.i0, cols.i0)
    gx = cuda.resize_nearest_backward(g, 7, 10, *rows[3:], *cols[3:])
    assert abs((y * g).sum() - (x * gx).sum()) < 1e-12
    assert (gx[..., 1::2] == 0).any()  # (downsampled columns: some inputs nobody reads)


# ---------------------------------------------------------------- layers


def test_layers_match_the_functions(rng):
    x = Tensor(rng.standard_normal((1, 2, 5, 6)))
    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(up(x).data,
                                  F.interpolate(x, scale_factor=2, align_corners=True).data)
    np.testing.assert_array_equal(nn.Upsample(size=(3, 4), mode="nearest")(x).data,
                                  F.interpolate(x, size=(3, 4), mode="nearest").data)
    np.testing.assert_array_equal(nn.AdaptiveAvgPool2d((2, None))(x).data,
                                  F.adaptive_avg_pool2d(x, (2, 6)).data)
    assert "scale_factor=2" in repr(up) and "align_corners=True" in repr(up)
    assert "output_size=1" in repr(nn.AdaptiveAvgPool2d(1))
    assert not list(up.parameters()) and not list(nn.AdaptiveAvgPool2d(1).parameters())
    assert nn.Upsample(scale_factor=2).mode == "nearest"  # PyTorch's default for the layer


# ---------------------------------------------------------------- bad input


def _x(*shape, dtype=np.float64):
    return Tensor(np.zeros(shape, dtype))


@pytest.mark.parametrize("call,err,match", [
    (lambda: F.interpolate(_x(1, 2, 4, 4), size=3, scale_factor=2), ValueError,
     "interpolate: give exactly one of size and scale_factor, got both"),
    (lambda: F.interpolate(_x(1, 2, 4, 4)), ValueError,
     "interpolate: give exactly one of size and scale_factor, got neither"),
    (lambda: F.interpolate(_x(2, 4, 4), size=3), ValueError, r"interpolate: input must be 4-D"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), size=3, mode="bicubic"), ValueError,
     "interpolate: mode must be 'bilinear' or 'nearest', got 'bicubic'"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), size=3, mode="nearest", align_corners=False),
     ValueError, "interpolate: align_corners is only for mode='bilinear'"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), size=(0, 3)), ValueError,
     r"interpolate: size must be positive, got \(0, 3\)"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), size=-2), ValueError, "interpolate: size must be"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), size=2.5), TypeError,
     "interpolate: size must be an int or a pair of ints"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), size=(1, 2, 3)), TypeError, "interpolate: size"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), scale_factor=-1.0), ValueError,
     "interpolate: scale_factor must be positive"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), scale_factor=0.1), ValueError,
     r"interpolate: scale_factor 0.1 makes an empty output \(0, 0\)"),
    (lambda: F.interpolate(_x(1, 2, 4, 4), scale_factor=True), TypeError,
     "interpolate: scale_factor must be a number or a pair of numbers"),
    (lambda: F.interpolate(_x(1, 2, 0, 4), size=3), ValueError, "interpolate: input must have"),
    (lambda: F.interpolate(_x(1, 2, 4, 4, dtype=np.int64), size=3), TypeError,
     "interpolate: input must be a floating array"),
    (lambda: F.adaptive_avg_pool2d(_x(2, 4, 4), 1), ValueError,
     "adaptive_avg_pool2d: input must be 4-D"),
    (lambda: F.adaptive_avg_pool2d(_x(1, 2, 4, 4), 0), ValueError,
     "adaptive_avg_pool2d: output_size must be positive"),
    (lambda: F.adaptive_avg_pool2d(_x(1, 2, 4, 4), (2, 1.5)), TypeError,
     "adaptive_avg_pool2d: output_size must be an int or a pair"),
    (lambda: F.adaptive_avg_pool2d(_x(1, 2, 0, 4), 1), ValueError,
     "adaptive_avg_pool2d: input must have"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
