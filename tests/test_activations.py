"""F.sigmoid, F.sqrt, F.softmax, F.log_softmax (minifcn/activations.py), nn.Sigmoid and nn.Softmax,
and batched F.matmul: values against plain loops written here and against PyTorch in float64
(values and gradients), stability at extreme inputs, and the errors bad input must raise.
(Gradient checks of each: minifcn.opcases, run by tests/test_functional.py.)"""
import math
import warnings

import numpy as np
import pytest

import minifcn.functional as F
from minifcn import Tensor, nn

# ---------------------------------------------------------------- plain references


def slow_sigmoid(x):
    out = np.empty(x.size)
    for i, v in enumerate(x.ravel().tolist()):
        out[i] = 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
    return out.reshape(x.shape)


def slow_softmax(x, dim, log=False):
    """Softmax of each 1-D slice along dim, one slice at a time with Python's math."""
    moved = np.moveaxis(np.asarray(x, np.float64), dim, -1)
    out = np.empty_like(moved)
    for idx in np.ndindex(moved.shape[:-1]):
        row = moved[idx].tolist()
        m = max(row)
        total = sum(math.exp(v - m) for v in row)
        out[idx] = [(v - m - math.log(total)) if log else math.exp(v - m) / total for v in row]
    return np.moveaxis(out, -1, dim)


SHAPES_DIMS = [((2, 5, 3, 4), 1), ((2, 5, 3, 4), -1), ((2, 5, 3, 4), 0), ((2, 5, 3, 4), -3),
               ((7,), 0), ((3, 6), -1)]


@pytest.mark.parametrize("shape,dim", SHAPES_DIMS)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_and_log_softmax_against_loops(rng, shape, dim, log):
    x = rng.standard_normal(shape) * 4
    fn = F.log_softmax if log else F.softmax
    np.testing.assert_allclose(fn(Tensor(x), dim).data, slow_softmax(x, dim, log),
                               rtol=1e-12, atol=1e-14)


def test_sigmoid_against_loops(rng):
    x = rng.standard_normal((3, 4, 5)) * 10
    np.testing.assert_allclose(F.sigmoid(Tensor(x)).data, slow_sigmoid(x), rtol=1e-14, atol=0)


def test_sqrt_against_loops_and_its_edges(rng):
    x = rng.random((3, 4, 5)) * 50
    want = np.array([math.sqrt(v) for v in x.ravel().tolist()]).reshape(x.shape)
    np.testing.assert_allclose(F.sqrt(Tensor(x)).data, want, rtol=1e-15, atol=0)
    t = Tensor(np.array([0.0, 4.0]), requires_grad=True)
    with np.errstate(divide="ignore"):
        F.sqrt(t).backward(np.ones(2))
    assert t.grad.tolist() == [math.inf, 0.25]  # torch.sqrt's too: a norm adds eps first


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_extremes_warn_nothing_and_keep_small_values(dtype):
    x = np.array([-1e4, -800, -100, -30, -1, 0, 1, 30, 100, 800, 1e4], dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        t = Tensor(x, requires_grad=True)
        y = F.sigmoid(t)
        y.backward(np.ones_like(x))
    assert y.dtype == dtype and np.isfinite(y.data).all() and np.isfinite(t.grad).all()
    assert y.data[5] == 0.5 and y.data[-1] == 1 and y.data[0] == 0
    tiny = np.finfo(dtype).tiny
    with np.errstate(under="ignore"):
        want = np.exp(-np.abs(x.astype(np.float64)))  # sigmoid(x) ~ exp(x) far below 0
    keep = (x < -20) & (want > tiny)  # representable normal values: relative precision kept
    np.testing.assert_allclose(y.data[keep], want[keep], rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax_of_huge_logits_are_finite(dtype):
    x = np.array([[1e4, 0.0, -1e4], [3e4, 3e4, -3e4]], dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        p = F.softmax(Tensor(x), 1).data
        lp = F.log_softmax(Tensor(x), -1).data
    np.testing.assert_allclose(p, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-7)
    # log(softmax) would give -inf where the probability underflows; log_softmax stays exact
    np.testing.assert_allclose(lp, [[0, -1e4, -2e4], [-math.log(2), -math.log(2), -6e4 - math.log(2)]],
                               rtol=1e-6)


# ---------------------------------------------------------------- PyTorch, float64


@pytest.mark.parametrize("shape,dim", SHAPES_DIMS)
@pytest.mark.parametrize("op", ["sigmoid", "softmax", "log_softmax"])
def test_matches_pytorch_values_and_gradients(rng, shape, dim, op):
    torch = pytest.importorskip("torch")
    x, g = rng.standard_normal(shape) * 3, rng.standard_normal(shape)
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    args = () if op == "sigmoid" else (dim,)
    y = getattr(F, op)(ours, *args)
    ty = getattr(torch, op)(theirs, *args)
    y.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_sqrt_matches_pytorch(rng, dtype, tol):
    torch = pytest.importorskip("torch")
    x = (rng.random((2, 5, 3, 4)) * 10 + 1e-3).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = F.sqrt(ours), torch.sqrt(theirs)
    y.backward(g)
    ty.backward(torch.tensor(g))
    assert y.dtype == dtype and ours.grad.dtype == dtype
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=tol, atol=0)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=tol, atol=0)


@pytest.mark.parametrize("op", ["sigmoid", "softmax", "log_softmax"])
def test_float32_stays_float32_and_near_pytorch(rng, op):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((2, 21, 6, 7)) * 5).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    args = () if op == "sigmoid" else (1,)
    y = getattr(F, op)(ours, *args)
    ty = getattr(torch, op)(theirs, *args)
    y.backward(g)
    ty.backward(torch.tensor(g))
    assert y.dtype == np.float32 and ours.grad.dtype == np.float32
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-4, atol=1e-5)


MATMUL_SHAPES = [((8, 30, 4), (8, 4, 30)),  # the non-local block's (N, HW, C') @ (N, C', HW)
                 ((8, 30, 30), (8, 30, 4)),  # and its (N, HW, HW) @ (N, HW, C')
                 ((2, 3, 5, 4), (2, 3, 4, 6)),  # 4-D
                 ((2, 1, 5, 4), (3, 4, 6)),  # batch axes broadcast both ways
                 ((5, 4), (2, 3, 4, 6)),  # a matrix against a stack
                 ((2, 3, 5, 4), (4, 6)),
                 ((4,), (2, 4, 6)), ((2, 5, 4), (4,)), ((4,), (4,))]  # 1-D operands


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_matches_pytorch(rng, sa, sb):
    torch = pytest.importorskip("torch")
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    y = ta @ tb
    ra, rb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ry = torch.matmul(ra, rb)
    assert y.shape == tuple(ry.shape)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ry.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ry.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ta.grad, ra.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tb.grad, rb.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_batched_matmul_against_loops(rng):
    a, b = rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((3, 4, 5))
    want = np.empty((2, 3, 3, 5))
    for i in range(2):
        for j in range(3):
            for r in range(3):
                for c in range(5):
                    want[i, j, r, c] = sum(a[i, 0, r, k] * b[j, k, c] for k in range(4))
    np.testing.assert_allclose(F.matmul(Tensor(a), Tensor(b)).data, want, rtol=1e-12)


# ---------------------------------------------------------------- modules and errors


def test_modules(rng):
    x = Tensor(rng.standard_normal((2, 3, 4)))
    np.testing.assert_array_equal(nn.Sigmoid()(x).data, F.sigmoid(x).data)
    np.testing.assert_array_equal(nn.Softmax(-2)(x).data, F.softmax(x, 1).data)
    assert repr(nn.Softmax(1)) == "Softmax(dim=1)" and nn.Sigmoid().state_dict() == {}
    with pytest.raises(TypeError, match="Softmax: dim must be an int"):
        nn.Softmax(None)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_errors(op):
    fn = getattr(F, op)
    x = Tensor(np.ones((2, 3)))
    for dim in (2, -3, 1.0, True, None):
        with pytest.raises(ValueError, match=rf"{op}: dim must be an int in \[-2, 1\]"):
            fn(x, dim)
    with pytest.raises(TypeError, match=f"{op}: input must be a floating array"):
        fn(Tensor(np.ones((2, 3), np.int64)), 1)
    with pytest.raises(ValueError, match=f"{op}: expected an input with at least one"):
        fn(Tensor(np.array(1.0)), 0)


def test_sigmoid_sqrt_and_matmul_errors():
    with pytest.raises(TypeError, match="sigmoid: input must be a floating array"):
        F.sigmoid(Tensor(np.ones(3, np.int32)))
    with pytest.raises(TypeError, match="sqrt: input must be a floating array"):
        F.sqrt(Tensor(np.ones(3, np.int64)))
    with pytest.raises(ValueError, match=r"matmul: batch shapes \(2,\) and \(3,\) do not"):
        F.matmul(Tensor(np.ones((2, 5, 4))), Tensor(np.ones((3, 4, 6))))
    with pytest.raises(ValueError, match=r"matmul: expected .* \(k 4 vs 5\)"):
        F.matmul(Tensor(np.ones((2, 5, 4))), Tensor(np.ones((5,))))
    with pytest.raises(ValueError, match="matmul: both operands need at least one dimension"):
        F.matmul(Tensor(np.array(2.0)), Tensor(np.ones(3)))
