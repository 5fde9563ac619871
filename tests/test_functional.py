"""minifcn.functional: float64 gradient checks of every op over the shared case table
(minifcn.opcases), the shape ops and activations it holds (crop, cat, dropout, in-place relu),
and the errors bad input to them must raise. Each op family has its own file beside this one:
tests/test_conv.py, tests/test_pooling.py, tests/test_norm.py, tests/test_loss.py."""
import numpy as np
import pytest

import minifcn
import minifcn.functional as F
from minifcn import Tensor, gradcheck
from minifcn.opcases import CASES


@pytest.mark.parametrize("name,shapes,make", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, shapes, make):
    fn, inputs = make(np.random.default_rng(0))
    assert gradcheck(fn, inputs)


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


# ---------------------------------------------------------------- bad input


def _x(*shape):
    return Tensor(np.zeros(shape, np.float32))


@pytest.mark.parametrize("call,err,match", [
    (lambda: F.crop(_x(1, 1, 8, 8), (4, 4), (5, 5)), ValueError, r"crop: offset \(4, 4\) \+ size \(5, 5\)"),
    (lambda: F.add(_x(2, 3), _x(4, 3)), ValueError, r"add: shapes \(2, 3\) and \(4, 3\) do not broadcast"),
    (lambda: F.matmul(_x(2, 3), _x(4, 3)), ValueError, r"matmul: expected"),
    (lambda: F.dropout(_x(2, 3), 1.0), ValueError, r"dropout: p must be in \[0, 1\)"),
])
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def slow_cat(arrays, dim):
    """Concatenation element by element: out[..., offset + i, ...] = arrays[k][..., i, ...]."""
    shape = list(arrays[0].shape)
    shape[dim] = sum(a.shape[dim] for a in arrays)
    out, offset = np.empty(shape), 0
    for a in arrays:
        for idx in np.ndindex(a.shape):
            at = list(idx)
            at[dim] += offset
            out[tuple(at)] = a[idx]
        offset += a.shape[dim]
    return out


@pytest.mark.parametrize("shapes,dim", [([(2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5)], 1),
                                        ([(2, 3), (1, 3)], 0), ([(2, 3), (2, 4)], -1),
                                        ([(1, 2, 3, 3)], -3)])
def test_cat_values_and_gradients_match_loops_and_pytorch(rng, shapes, dim):
    arrays = [rng.standard_normal(s) for s in shapes]
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    y = minifcn.cat(ts, dim)
    np.testing.assert_array_equal(y.data, slow_cat(arrays, dim % len(shapes[0])))
    g = rng.standard_normal(y.shape)
    y.backward(g)
    torch = pytest.importorskip("torch")
    tt = [torch.tensor(a, requires_grad=True) for a in arrays]
    ty = torch.cat(tt, dim)
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    for t, theirs in zip(ts, tt):
        np.testing.assert_array_equal(t.grad, theirs.grad.numpy())


def test_cat_skips_inputs_without_grad_and_takes_arrays(rng):
    a = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = rng.standard_normal((2, 2))  # a plain array: a constant
    y = F.cat([a, b], dim=1)
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(a.grad, np.ones((2, 3)))
    np.testing.assert_array_equal(y.data[:, 3:], b)


def test_cat_errors_are_one_line(rng):
    a = Tensor(rng.standard_normal((2, 3, 4)))
    cases = [
        (lambda: F.cat([], 0), ValueError, "cat: expected a non-empty list"),
        (lambda: F.cat(a, 0), TypeError, "cat: expected a list or tuple"),
        (lambda: F.cat([a, a], 3), ValueError, r"cat: dim must be an int in \[-3, 2\]"),
        (lambda: F.cat([a, Tensor(np.ones((2, 3)))], 0), ValueError, "tensor 1 is 2-D"),
        (lambda: F.cat([a, Tensor(np.ones((2, 4, 4)))], 0), ValueError,
         r"sizes must match except along dim 0: tensor 0 has shape \(2, 3, 4\), tensor 1 "
         r"\(2, 4, 4\)"),
        (lambda: F.cat([a, Tensor(np.ones((2, 3, 4), np.float32))], 0), TypeError,
         "tensor 1 is float32, tensor 0 float64"),
        (lambda: F.cat([Tensor(np.array(1.0))], 0), ValueError, "zero-dimensional"),
    ]
    for call, kind, match in cases:
        with pytest.raises(kind, match=match) as e:
            call()
        assert "\n" not in str(e.value)
