"""Tensor, Function and the reverse-mode walk."""
import gc
import sys
import weakref

import numpy as np
import pytest

import minifcn
import minifcn.functional as F
from minifcn import Tensor, no_grad
from minifcn.autograd import Function


def test_float32_by_default_and_float64_kept():
    assert Tensor([1, 2, 3]).dtype == np.float32
    assert Tensor(2.0).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float64
    assert (Tensor(np.zeros(3, np.float32)) * 2.0).dtype == np.float32
    assert (Tensor(np.zeros(3)) * 2.0).dtype == np.float64


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), requires_grad=True)


def test_reused_tensor_accumulates():
    # b = a + a; c = b * b  ->  dc/da = 2 * 2b * 1 ... = 8a
    a = Tensor(np.array([1.5, -2.0]), requires_grad=True)
    b = a + a
    c = b * b
    c.backward(np.ones(2))
    np.testing.assert_allclose(a.grad, 8 * a.data)


def test_a_tensor_used_directly_and_through_a_later_input_gets_both_shares():
    # U-Net's skip: cat(skip, f(skip)); the walk once reached `a` before `a * 2` had passed its
    # share on, and a.grad was the first slab alone (10 instead of 10 + 2 * 100)
    from minifcn import functional as F

    for make in (lambda a: F.cat([a, a * 2], dim=1), lambda a: a + (a * 2) * 1):
        a = Tensor(np.ones((1, 1, 1, 1)), requires_grad=True)
        y = make(a)
        g = np.array([[[[10.0]], [[100.0]]]]) if y.shape[1] == 2 else np.full(y.shape, 10.0)
        y.backward(g)
        want = 10 + 2 * 100 if y.shape[1] == 2 else 10 + 2 * 10
        np.testing.assert_allclose(a.grad, want)


def test_grad_accumulates_across_backward_calls():
    a = Tensor(np.array([3.0]), requires_grad=True)
    (a * 2.0).backward()
    (a * 5.0).backward()
    np.testing.assert_allclose(a.grad, [7.0])


def test_deep_chain_does_not_recurse():
    limit = sys.getrecursionlimit()
    a = Tensor(np.array([1.0]), requires_grad=True)
    y = a
    for _ in range(max(10_000, 2 * limit)):
        y = y + 1.0
    y.backward()
    assert a.grad[0] == 1.0


def test_sixty_layer_net_backward():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 2, 5, 5)))
    ws = [Tensor(rng.standard_normal((2, 2, 3, 3)) * 0.3, requires_grad=True) for _ in range(60)]
    y = x
    for w in ws:
        y = F.relu(F.conv2d(y, w, padding=1)) + y
    y.sum().backward()
    assert all(w.grad is not None and w.grad.shape == w.shape for w in ws)


def test_backward_grad_shape_checked():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    y = a * 2.0
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        y.backward(np.ones(3))
    with pytest.raises(ValueError, match="single-element"):
        y.backward()
    y.backward(Tensor(np.ones((2, 3))))  # a Tensor is accepted as grad
    np.testing.assert_allclose(a.grad, 2.0)


def test_no_grad_records_nothing():
    a = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = a * 3.0
    assert not y.requires_grad and y.is_leaf
    assert minifcn.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_backward_frees_saved_buffers():
    a = Tensor(np.ones((4, 4)), requires_grad=True)
    big = Tensor(np.ones((4, 4)) * 2)
    y = a * big  # Mul saves both operands
    fn = y._fn
    ref = weakref.ref(fn)
    y.sum().backward()
    assert fn.saved == () and fn.inputs == ()
    assert y._fn is None
    del fn
    gc.collect()
    assert ref() is None


def test_wrong_backward_shape_is_caught():
    class Bad(minifcn.autograd.Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            return g[:1]

    a = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="Bad.backward returned a gradient of shape"):
        Bad.apply(a).sum().backward()


def test_retain_grad_on_intermediate():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = (a * 3.0).retain_grad()
    (b * b).sum().backward()
    np.testing.assert_allclose(b.grad, 2 * b.data)
    np.testing.assert_allclose(a.grad, 6 * b.data)


def test_operators_with_numbers_and_arrays():
    a = Tensor(np.array([2.0, 4.0]), requires_grad=True)
    y = (1.0 - a) / 2.0 + 3.0 * a - a / 4.0 + np.array([1.0, 1.0])
    y.backward(np.ones(2))
    np.testing.assert_allclose(a.grad, -0.5 + 3.0 - 0.25)


def _no_two_share(*arrays):
    return not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])


def test_leaf_gradients_never_share_memory():
    # add hands one array to both inputs, reshape and transpose hand views: each leaf must
    # still own its gradient, or changing one (clipping in place) would change the others
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    b = Tensor(np.ones((2, 3)), requires_grad=True)
    c = Tensor(np.ones((3, 2)), requires_grad=True)
    d = Tensor(np.ones(6), requires_grad=True)
    y = (a + b) + c.transpose((1, 0)) + d.reshape((2, 3))
    upstream = np.random.default_rng(0).standard_normal((2, 3))
    y.backward(upstream)
    grads = [a.grad, b.grad, c.grad, d.grad]
    assert _no_two_share(upstream, *grads)
    a.grad *= 0
    np.testing.assert_array_equal(b.grad, upstream)
    np.testing.assert_array_equal(c.grad, upstream.T)
    np.testing.assert_array_equal(d.grad, upstream.ravel())


def test_leaf_gradient_is_not_the_callers_array():
    x = Tensor(np.zeros((2, 2)), requires_grad=True)
    upstream = np.ones((2, 2))
    x.backward(upstream)  # a leaf given the caller's array itself
    y = Tensor(np.zeros(4), requires_grad=True)
    y.reshape((2, 2)).backward(upstream)  # and a view of it
    assert not np.shares_memory(x.grad, upstream) and not np.shares_memory(y.grad, upstream)
    upstream[:] = 5
    assert x.grad.sum() == 4 and y.grad.sum() == 4


def test_conv_weight_gradient_handed_over_without_a_copy(monkeypatch):
    # the fresh weight gradient of a conv is the leaf's .grad itself (fc6's is 410 MB at
    # width 1), not a copy of it
    from minifcn import conv
    made = {}
    real = conv._conv_weight_grad

    def spy(*args, **kwargs):
        made["gw"] = real(*args, **kwargs)
        return made["gw"]

    monkeypatch.setattr(conv, "_conv_weight_grad", spy)
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((1, 2, 5, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    assert w.grad is made["gw"]


def test_callers_raw_memory_and_custom_functions_are_copied():
    # a caller's gradient on raw memory (np.frombuffer, a memmap) is read, never kept; and a
    # Function written outside minifcn may return an array it saved: its leaf gets a copy
    raw = np.frombuffer(bytearray(np.ones(4).tobytes()), np.float64)
    x = Tensor(np.zeros(4), requires_grad=True)
    (x * 2.0).backward(raw)
    np.testing.assert_array_equal(x.grad, 2 * np.ones(4))
    x2 = Tensor(np.zeros(4), requires_grad=True)
    x2.backward(raw)
    assert not np.shares_memory(x2.grad, raw)

    class Saved(Function):
        def forward(self, a):
            self.saved = (np.ones_like(a),)
            return a.copy()

        def backward(self, g):
            return self.saved[0]  # an array the op keeps, not a fresh one

    z = Tensor(np.zeros(3), requires_grad=True)
    fn_out = Saved.apply(z)
    kept = fn_out._fn.saved[0]
    fn_out.backward(np.ones(3))
    assert not np.shares_memory(z.grad, kept)
