"""F.batch_norm and nn.BatchNorm2d (minifcn/norm.py, minifcn/nn/layers.py): values against plain loops
written here and against PyTorch in float64, gradients with gradcheck, the running statistics
(moved in place, unbiased variance, momentum=None), the state dict under PyTorch's names, and
the NumPy channel loop against the whole-array version it speeds up."""
import numpy as np
import pytest

import minifcn
import minifcn.functional as F
from minifcn import Tensor, gradcheck, nn, norm


def slow_batch_norm(x, rm, rv, w, b, training, momentum, eps):
    """Batch norm with a loop over channels and explicit sums: y, and the new running stats."""
    x = np.asarray(x, np.float64)
    y, rm, rv = np.empty_like(x), rm.copy(), rv.copy()
    for c in range(x.shape[1]):
        vals = x[:, c].ravel()
        m = len(vals)
        if training:
            mu = sum(vals) / m
            var = sum((v - mu) ** 2 for v in vals) / m
            rm[c] = (1 - momentum) * rm[c] + momentum * mu
            rv[c] = (1 - momentum) * rv[c] + momentum * var * m / (m - 1)
        else:
            mu, var = rm[c], rv[c]
        y[:, c] = (x[:, c] - mu) / np.sqrt(var + eps) * w[c] + b[c]
    return y, rm, rv


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (5, 3), (2, 3, 4), (2, 2, 48, 48)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_values_and_running_stats_against_loops(rng, shape, training):
    c = shape[1]
    x = rng.standard_normal(shape) * 3 + 2
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    want, want_rm, want_rv = slow_batch_norm(x, rm, rv, w, b, training, 0.2, 1e-3)
    got_rm, got_rv = rm.copy(), rv.copy()
    y = F.batch_norm(Tensor(x), got_rm, got_rv, Tensor(w), Tensor(b), training, 0.2, 1e-3)
    np.testing.assert_allclose(y.data, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got_rm, want_rm, rtol=1e-12, atol=1e-12)  # moved in place
    np.testing.assert_allclose(got_rv, want_rv, rtol=1e-12, atol=1e-12)


def test_batch_norm_buffers_move_in_place_and_none_tracks_nothing(rng):
    x = Tensor(rng.standard_normal((4, 3, 5, 5)))
    rm, rv = nn.Buffer(np.zeros(3)), nn.Buffer(np.ones(3))
    arrays = rm.data, rv.data
    F.batch_norm(x, rm, rv, training=True)
    assert rm.data is arrays[0] and rv.data is arrays[1]
    assert not np.allclose(rm.data, 0) and not np.allclose(rv.data, 1)
    want, _, _ = slow_batch_norm(x.data, np.zeros(3), np.ones(3), np.ones(3), np.zeros(3), True,
                                 0.1, 1e-5)
    np.testing.assert_allclose(F.batch_norm(x, None, None, training=True).data, want,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("loop_min", [norm._LOOP_MIN, 1])  # 1: the NumPy channel loop
def test_batch_norm_gradients_with_gradcheck(rng, monkeypatch, training, loop_min):
    monkeypatch.setattr(norm, "_LOOP_MIN", loop_min)
    c = 3
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5

    def fn(x, w, b):
        stats = (np.zeros(c), np.ones(c)) if training else (rm, rv)  # fresh: moved in place
        return F.batch_norm(x, *stats, w, b, training=training)

    inputs = [Tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, c, 4, 3), c, c)]
    assert gradcheck(fn, inputs)
    # without an affine part, and with only x needing a gradient
    assert gradcheck(lambda x: F.batch_norm(x, None, None, training=True), inputs[:1])
    w = Tensor(rng.standard_normal(c), requires_grad=True)
    assert gradcheck(lambda w: F.batch_norm(Tensor(inputs[0].data), None, None, w,
                                            training=True), [w])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_channel_loop_is_the_whole_array_version(rng, dtype):
    x3 = (rng.standard_normal((3, 5, 700)) * 2 + 1).astype(dtype)
    g3 = rng.standard_normal(x3.shape).astype(dtype)
    w, b = rng.standard_normal(5).astype(dtype), rng.standard_normal(5).astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    fast, plain = norm._train_forward_np(x3, w, b, 1e-5), norm._train_forward_xp(x3, w, b, 1e-5)
    for a, b_ in zip(fast, plain):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b_, **tol)
    mean, var = plain[1], plain[2]
    invstd = (1 / np.sqrt(var + dtype(1e-5))).astype(dtype)
    for a, b_ in zip(norm._train_backward_np(x3, g3, mean, invstd, w, True),
                     norm._train_backward_xp(x3, g3, mean, invstd, w, True)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b_, **tol)


def test_batch_norm_errors_are_one_line(rng):
    x = Tensor(rng.standard_normal((2, 3, 4, 4)))
    z, o = np.zeros(3), np.ones(3)
    cases = [
        (lambda: F.batch_norm(x, np.zeros(4), np.ones(4)), ValueError,
         r"batch_norm: running_mean must have shape \(3,\)"),
        (lambda: F.batch_norm(x, z, o, Tensor(np.ones(2))), ValueError,
         r"batch_norm: weight must have shape \(3,\)"),
        (lambda: F.batch_norm(Tensor(x.data[:1, :, :1, :1]), z, o, training=True), ValueError,
         "Expected more than 1 value per channel when training"),
        (lambda: F.batch_norm(Tensor(np.ones((2, 3, 4, 4), np.int64)), z, o), TypeError,
         "batch_norm: input must be a floating array"),
        (lambda: F.batch_norm(x, None, None), ValueError, "needed when not training"),
        (lambda: F.batch_norm(x, z, None, training=True), ValueError, "both"),
        (lambda: F.batch_norm(Tensor(np.ones(3)), None, None, training=True), ValueError,
         r"\(N, C\)"),
    ]
    for call, kind, match in cases:
        with pytest.raises(kind, match=f"(?i){match}") as e:
            call()
        assert "\n" not in str(e.value)
    F.batch_norm(Tensor(x.data[:1, :, :1, :1]), z, o, training=False)  # eval: one value is fine


# ---- nn.BatchNorm2d ------------------------------------------------------------------------

def test_batchnorm2d_starts_as_pytorch_and_counts_training_batches(rng):
    bn = nn.BatchNorm2d(4)
    state = bn.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    np.testing.assert_array_equal(state["weight"], 1)
    np.testing.assert_array_equal(state["bias"], 0)
    np.testing.assert_array_equal(state["running_mean"], 0)
    np.testing.assert_array_equal(state["running_var"], 1)
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"] == 0
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    x = Tensor(rng.standard_normal((2, 4, 3, 3)).astype(np.float32))
    bn(x), bn(x)
    assert bn.num_batches_tracked.item() == 2
    bn.eval()(x)
    assert bn.num_batches_tracked.item() == 2 and bn.num_batches_tracked.dtype == np.int64
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected a 4-D input"):
        bn(Tensor(np.ones((2, 4), np.float32)))
    assert list(nn.BatchNorm2d(3, affine=False, track_running_stats=False).state_dict()) == []


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm2d_running_stats_over_steps_against_loops(rng, momentum):
    bn = nn.BatchNorm2d(3, momentum=momentum).double()
    rm, rv = np.zeros(3), np.ones(3)
    for step in range(1, 5):
        x = rng.standard_normal((2, 3, 4, 5)) * step + step
        # momentum None: the cumulative average, batch k weighing 1/k
        _, rm, rv = slow_batch_norm(x, rm, rv, np.ones(3), np.zeros(3), True,
                                    1 / step if momentum is None else momentum, 1e-5)
        bn(Tensor(x))
    np.testing.assert_allclose(bn.running_mean.data, rm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bn.running_var.data, rv, rtol=1e-12, atol=1e-12)
    x = rng.standard_normal((2, 3, 4, 5))
    want, _, _ = slow_batch_norm(x, rm, rv, np.ones(3), np.zeros(3), False, 0, 1e-5)
    np.testing.assert_allclose(bn.eval()(Tensor(x)).data, want, rtol=1e-10, atol=1e-10)


def test_batchnorm2d_module_gradcheck(rng):
    minifcn.manual_seed(0)
    bn = nn.BatchNorm2d(3, track_running_stats=False).double()  # nothing moves between calls
    bn.weight.data = rng.standard_normal(3)
    assert gradcheck(bn, [Tensor(rng.standard_normal((2, 3, 3, 4)), requires_grad=True)])


# ---- against PyTorch in float64 ------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (2, 2, 48, 48), (6, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_pytorch(rng, shape, training):
    torch = pytest.importorskip("torch")
    c = shape[1]
    x, g = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    ours = [Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    our_rm, our_rv = rm.copy(), rv.copy()
    y = F.batch_norm(ours[0], our_rm, our_rv, *ours[1:], training, 0.3, 1e-4)
    y.backward(g)
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    t_rm, t_rv = torch.tensor(rm), torch.tensor(rv)
    ty = torch.nn.functional.batch_norm(theirs[0], t_rm, t_rv, *theirs[1:], training, 0.3, 1e-4)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, t.grad.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(our_rm, t_rm.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(our_rv, t_rv.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_matches_pytorch_over_training_steps_then_eval(rng, momentum):
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm2d(4, momentum=momentum, eps=1e-3).double()
    theirs = torch.nn.BatchNorm2d(4, momentum=momentum, eps=1e-3).double()
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    ours.weight.data, ours.bias.data = w.copy(), b.copy()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
        theirs.bias.copy_(torch.tensor(b))
    for step in range(5):
        x = rng.standard_normal((3, 4, 5, 6)) * (step + 1) - step
        np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-10, atol=1e-10)
    state, tstate = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(tstate)
    for k in tstate:
        assert state[k].dtype == tstate[k].numpy().dtype and state[k].shape == tstate[k].shape
        np.testing.assert_allclose(state[k], tstate[k].numpy(), rtol=1e-12, atol=1e-12)
    x = rng.standard_normal((2, 4, 5, 6))
    np.testing.assert_allclose(ours.eval()(Tensor(x)).data,
                               theirs.eval()(torch.tensor(x)).detach().numpy(), rtol=1e-10,
                               atol=1e-10)


def test_a_pytorch_batchnorm2d_state_dict_loads_into_ours(rng):
    torch = pytest.importorskip("torch")
    theirs = torch.nn.BatchNorm2d(3)
    theirs(torch.tensor(rng.standard_normal((4, 3, 5, 5)), dtype=torch.float32) * 3 + 1)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(rng.standard_normal(3)))
        theirs.bias.copy_(torch.tensor(rng.standard_normal(3)))
    ours = nn.BatchNorm2d(3).load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert ours.num_batches_tracked.dtype == np.int64 and ours.num_batches_tracked.item() == 1
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(ours.eval()(Tensor(x)).data,
                               theirs.eval()(torch.tensor(x)).detach().numpy(), rtol=1e-5,
                               atol=1e-5)
