"""x[key] on a Tensor (minifcn/indexing.py): NumPy's basic indexing forward, the gradient put
back where the view came from, PyTorch's values and gradients in float64, one-line errors."""
import numpy as np
import pytest

from minifcn import Tensor, gradcheck

KEYS = [(slice(None), slice(1, 3)), (1, Ellipsis, slice(None, None, 2), None), -1,
        (slice(None, None, -1), 0), (Ellipsis, slice(2, 3))]


@pytest.mark.parametrize("key", KEYS)
def test_getitem_forward_and_backward_against_a_loop(key):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5))
    t = Tensor(x, requires_grad=True)
    y = t[key]
    np.testing.assert_array_equal(y.data, x[key])
    g = rng.standard_normal(y.shape)
    y.backward(g)
    # independent adjoint: each input element's gradient is the upstream gradient of the output
    # element that reads it, found by indexing an array of flat positions the same way
    want = np.zeros(x.size)
    for out_pos, in_pos in np.ndenumerate(np.arange(x.size).reshape(x.shape)[key]):
        want[in_pos] += g[out_pos]
    np.testing.assert_array_equal(t.grad, want.reshape(x.shape))


@pytest.mark.parametrize("key", KEYS)
def test_getitem_gradcheck_in_float64(key):
    x = Tensor(np.random.default_rng(1).standard_normal((3, 4, 5)), requires_grad=True)
    assert gradcheck(lambda a: a[key], [x])


def test_getitem_matches_torch_in_float64():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 3, 4))
    g = rng.standard_normal((2, 2, 3, 4))
    t = Tensor(x, requires_grad=True)
    t[:, 1:3].backward(g)
    tt = torch.tensor(x, requires_grad=True)
    tt[:, 1:3].backward(torch.tensor(g))
    np.testing.assert_allclose(t[:, 1:3].data, tt[:, 1:3].detach().numpy())
    np.testing.assert_allclose(t.grad, tt.grad.numpy())


def test_getitem_refuses_advanced_indexing_and_out_of_range_in_one_line():
    t = Tensor(np.zeros((2, 3)))
    for key in ([0, 1], np.array([0]), (slice(None), [1]), True, 1.0):
        with pytest.raises(TypeError, match="getitem: only basic indexing"):
            t[key]
    with pytest.raises(IndexError, match=r"getitem: .*\(shape \(2, 3\)\)"):
        t[5]
