"""The GPU path: CuPy arrays, the CUDA kernels through cupy.RawModule, cuBLAS for the GEMMs.

Skipped without CuPy or a CUDA device. Run it on a GPU machine with
``python -m pytest tests/test_gpu.py``. What it checks:
- each kernel against the NumPy primitive on the same input (bit for bit where the kernel adds
  in NumPy's order), including one array past 2**31 elements (64-bit indices);
- every op of minifcn.opcases passes gradcheck in float64 with its arrays on the GPU;
- a small FCN-8s gives the same scores, loss and gradients on the GPU as on the CPU;
- a few SGD steps on the GPU follow the CPU's trajectory and lower the loss;
- batch norm (whole-array lines in CuPy) gives the CPU's channel loop's numbers, and a
  BatchNorm2d moved to the GPU keeps its running statistics there and its counter int64.
"""
import os

import numpy as np
import pytest

from minifcn import Tensor, backend, gradcheck, manual_seed
from minifcn.gpu import cuda
from minifcn import functional as F
from minifcn import primitives as P

cp = backend.cupy_or_none()
if cp is None:
    # on a machine that should have a GPU, MINIFCN_REQUIRE_GPU=1 turns this skip into a failure
    why = f"needs CuPy and a CUDA device ({backend.cupy_unavailable_reason()})"
    if os.environ.get("MINIFCN_REQUIRE_GPU") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)
pytestmark = pytest.mark.gpu


def gpu(a):
    return cp.asarray(a)


# ---------------------------------------------------------------- kernels against NumPy

GEOMETRIES = [  # kh, kw, sh, sw, ph, pw, h, w, dh, dw
    (3, 3, 1, 1, 1, 1, 9, 7, 1, 1), (2, 3, 2, 1, 0, 2, 8, 11, 1, 1),
    (4, 4, 2, 2, 1, 1, 13, 9, 1, 1), (1, 1, 2, 2, 0, 0, 7, 6, 1, 1),
    (7, 7, 1, 1, 0, 0, 7, 8, 1, 1), (16, 16, 8, 8, 0, 0, 30, 22, 1, 1),
    (3, 3, 1, 1, 2, 2, 9, 7, 2, 2), (3, 2, 2, 1, 1, 0, 11, 9, 3, 2),  # dilated (rarefied filters)
    (7, 7, 1, 1, 0, 0, 15, 16, 2, 2),  # fc6 after rarefying pool5
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_im2col_col2im_match_numpy(geom, dtype, rng):
    kh, kw, sh, sw, ph, pw, h, w, dh, dw = geom
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    want = P.im2col(x, kh, kw, sh, sw, ph, pw, dh, dw)
    got = P.im2col(gpu(x), kh, kw, sh, sw, ph, pw, dh, dw)  # dispatches to minifcn.gpu.cuda
    assert isinstance(got, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(got), want)
    col = rng.standard_normal(want.shape).astype(dtype)
    np.testing.assert_array_equal(cp.asnumpy(P.col2im(gpu(col), h, w, sh, sw, ph, pw, dh, dw)),
                                  P.col2im(col, h, w, sh, sw, ph, pw, dh, dw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geom", [(2, 2, 2, 2, 0, 0, 7, 9, True, 1, 1),
                                  (3, 3, 2, 2, 1, 1, 13, 11, True, 1, 1),
                                  (3, 2, 1, 2, 1, 0, 6, 7, False, 1, 1),
                                  (2, 2, 1, 1, 0, 0, 9, 8, True, 2, 2),  # a rarefied pool5
                                  (3, 2, 2, 1, 2, 1, 13, 11, True, 2, 3)])
def test_maxpool_matches_numpy(geom, dtype, rng):
    kh, kw, sh, sw, ph, pw, h, w, ceil, dh, dw = geom
    x = rng.integers(-3, 3, size=(2, 3, h, w)).astype(dtype) - 10  # ties, all negative
    want_y, want_arg = P.maxpool_forward(x, kh, kw, sh, sw, ph, pw, ceil, dh, dw)
    y, arg = P.maxpool_forward(gpu(x), kh, kw, sh, sw, ph, pw, ceil, dh, dw)
    np.testing.assert_array_equal(cp.asnumpy(y), want_y)
    np.testing.assert_array_equal(cp.asnumpy(arg), want_arg)
    gy = rng.standard_normal(want_y.shape).astype(dtype)
    np.testing.assert_array_equal(
        cp.asnumpy(P.maxpool_backward(gpu(gy), arg, h, w, kh, kw, sh, sw, ph, pw, dh, dw)),
        P.maxpool_backward(gy, want_arg, h, w, kh, kw, sh, sw, ph, pw, dh, dw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, s, ceil", [(2, 2, True), (3, 2, False)])  # k3 s2: shared indices
def test_max_pool_indices_and_unpool_match_numpy(k, s, ceil, dtype, rng):
    x = rng.standard_normal((2, 3, 13, 11)).astype(dtype)
    y, idx = F.max_pool2d(Tensor(x), k, s, 1, ceil_mode=ceil, return_indices=True)
    gy, gidx = F.max_pool2d(Tensor(gpu(x)), k, s, 1, ceil_mode=ceil, return_indices=True)
    np.testing.assert_array_equal(cp.asnumpy(gidx.data), idx.data)
    v = rng.standard_normal(y.shape).astype(dtype)
    want = P.maxunpool_forward(v, idx.data, 13, 11)
    got = cp.asnumpy(P.maxunpool_forward(gpu(v), gidx.data, 13, 11))
    # atomicAdd: a shared position's sum may round differently, in any order
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    g = rng.standard_normal(want.shape).astype(dtype)
    np.testing.assert_array_equal(cp.asnumpy(P.maxunpool_backward(gpu(g), gidx.data)),
                                  P.maxunpool_backward(g, idx.data))


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_softmax_cross_entropy_matches_numpy(dtype, tol, rng):
    logits = (20 * rng.standard_normal((2, 21, 9, 13))).astype(dtype)
    target = rng.integers(0, 21, size=(2, 9, 13)).astype(np.uint8)
    target[:, :3] = 255
    want = P.softmax_cross_entropy_forward(logits, target, 255)
    got = P.softmax_cross_entropy_forward(gpu(logits), gpu(target), 255)
    np.testing.assert_allclose(cp.asnumpy(got), want, rtol=tol, atol=tol)
    gloss = rng.standard_normal((2, 9, 13))
    want_g = P.softmax_cross_entropy_backward(logits, target, 255, gloss)
    got_g = P.softmax_cross_entropy_backward(gpu(logits), gpu(target), 255, gpu(gloss))
    np.testing.assert_allclose(cp.asnumpy(got_g), want_g, rtol=tol, atol=tol)


def test_64bit_indices():
    """A column array of more than 2**31 elements (9 GB of float32): the last image's columns
    sit past any 32-bit index and must equal those computed from that image alone."""
    x = cp.random.standard_normal((8, 64, 700, 700), dtype=cp.float32)
    col = cuda.im2col(x, 3, 3, 1, 1, 1, 1, 700, 700)
    assert col.size > 2**31
    assert bool(cp.array_equal(col[-1:], cuda.im2col(x[-1:], 3, 3, 1, 1, 1, 1, 700, 700)))
    img = cuda.col2im(col, 700, 700, 1, 1, 1, 1)
    assert bool(cp.array_equal(img[-1:], cuda.col2im(col[-1:], 700, 700, 1, 1, 1, 1)))
    del x, col, img
    cp.get_default_memory_pool().free_all_blocks()


# ---------------------------------------------------------------- gradients of every op


def _cases():
    from minifcn.opcases import CASES

    return CASES


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_gradcheck_on_gpu(case):
    name, _, make = case
    fn, inputs = make(np.random.default_rng(0))
    inputs = [t.to("cuda") if isinstance(t, Tensor) else t for t in inputs]
    assert all(t.device == "cuda" for t in inputs if isinstance(t, Tensor))
    assert fn(*inputs).device == "cuda", f"{name} left the GPU"
    assert gradcheck(fn, inputs, max_elements=60)


# ---------------------------------------------------------------- a whole net, CPU vs GPU


def _small_fcn(dtype, seed=0):
    """FCN-8s at 1/16 width, every learned parameter random (the score layers start at zero,
    which would make most gradients zero), no dropout: the same numbers on both devices."""
    from minifcn.models import fcn8s

    manual_seed(seed)
    model = fcn8s(n_class=5, width=0.0625, dropout=0.0)
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for name, p in model.named_parameters():
        if p.requires_grad:
            fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 10
            state[name] = rng.standard_normal(p.shape) * np.sqrt(2.0 / fan_in)
    model.load_state_dict(state)
    return model.to(dtype=dtype)


def _batch(n=2, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 37, 42))
    target = rng.integers(0, 5, size=(n, 37, 42))
    target[:, :5] = 255
    return x, target


def _forward_backward(model, x, target, device):
    model.to(device)
    model.zero_grad()
    xt = Tensor(x.astype(model.parameters()[0].dtype)).to(device)
    scores = model(xt)
    loss = F.softmax_cross_entropy(scores, backend.to_device(target, device), 255, "mean")
    loss.backward()
    grads = {n: backend.as_numpy(p.grad) for n, p in model.named_parameters() if p.requires_grad}
    return scores.numpy(), loss.item(), grads


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 2e-3)])
def test_fcn8s_forward_and_backward_agree_with_cpu(dtype, rtol):
    x, target = _batch()
    cpu = _forward_backward(_small_fcn(dtype).eval(), x, target, "cpu")
    gpu_ = _forward_backward(_small_fcn(dtype).eval(), x, target, "cuda")
    scores_cpu, loss_cpu, grads_cpu = cpu
    scores_gpu, loss_gpu, grads_gpu = gpu_
    assert scores_gpu.shape == (2, 5, 37, 42) and scores_gpu.dtype == dtype
    scale = np.abs(scores_cpu).max()
    np.testing.assert_allclose(scores_gpu, scores_cpu, rtol=rtol, atol=rtol * scale)
    assert loss_gpu == pytest.approx(loss_cpu, rel=rtol)
    assert grads_gpu.keys() == grads_cpu.keys()
    for name in grads_cpu:
        g = grads_cpu[name]
        assert np.abs(g).max() > 0, f"{name}: zero gradient makes this check vacuous"
        np.testing.assert_allclose(grads_gpu[name], g, rtol=rtol, atol=rtol * np.abs(g).max(),
                                   err_msg=name)


def _train(device, steps=4):
    from minifcn.optim import SGD, param_groups

    model = _small_fcn(np.float64).train().to(device)
    opt = SGD(param_groups(model), lr=1e-3, momentum=0.9)
    x, target = _batch(n=1)
    xt = Tensor(x).to(device)
    t = backend.to_device(target, device)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.softmax_cross_entropy(model(xt), t, 255, "mean")
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model


def test_sgd_steps_on_gpu_follow_the_cpu():
    gpu_losses, model = _train("cuda")
    assert all(p.device == "cuda" for p in model.parameters())
    cpu_losses, _ = _train("cpu")
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-8)
    assert np.isfinite(gpu_losses).all() and gpu_losses[-1] < gpu_losses[0]


def test_dropout_runs_on_gpu():
    manual_seed(3)
    x = Tensor(cp.ones((2, 3, 8, 8), dtype=cp.float32), requires_grad=True)
    y = F.dropout(x, 0.5, training=True)
    assert y.device == "cuda"
    kept = float((y.data != 0).mean())
    assert 0.3 < kept < 0.7
    y.sum().backward()
    assert bool(cp.array_equal(x.grad, y.data))  # the gradient is the same scaled mask


def test_devices():
    assert backend.check_device("auto") == "cuda"
    t = Tensor(np.arange(6.0).reshape(2, 3)).to("cuda")
    assert t.device == "cuda" and isinstance(t.data, cp.ndarray)
    assert isinstance(t.numpy(), np.ndarray) and t.to("cpu").device == "cpu"


def test_numbers_and_numpy_arrays_meet_gpu_tensors_on_either_side():
    t = Tensor(cp.arange(3.0))
    for y in (1.0 + t, t + 1.0, np.float64(2.0) * t, sum([t, t]), t - np.ones(3)):
        assert y.device == "cuda"
    np.testing.assert_array_equal((1.0 + t).numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(sum([t, t]).numpy(), [0.0, 2.0, 4.0])


# ---------------------------------------------------------------- batch norm


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_on_gpu_matches_the_cpu(training, rng):
    shape = (4, 3, 40, 40)  # 6400 values per channel: the CPU takes its channel loop
    x, g = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    w, b = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    out = {}
    for device in ("cpu", "cuda"):
        ts = [Tensor(backend.to_device(a, device), requires_grad=True) for a in (x, w, b)]
        stats = [backend.to_device(a.copy(), device) for a in (rm, rv)]
        y = F.batch_norm(ts[0], *stats, *ts[1:], training=training, momentum=0.3)
        assert y.device == device
        y.backward(backend.to_device(g, device))
        out[device] = [y.numpy()] + [backend.as_numpy(a) for a in [t.grad for t in ts] + stats]
    for a, b_ in zip(out["cpu"], out["cuda"]):
        np.testing.assert_allclose(b_, a, rtol=1e-9, atol=1e-9)


def test_batchnorm2d_on_gpu_keeps_its_statistics_there_and_its_counter_int64(rng):
    from minifcn import nn

    gpu_bn, cpu_bn = nn.BatchNorm2d(3).to("cuda"), nn.BatchNorm2d(3)
    assert gpu_bn.running_var.device == gpu_bn.num_batches_tracked.device == "cuda"
    assert gpu_bn.num_batches_tracked.dtype == np.int64
    for _ in range(3):
        x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
        gpu_bn(Tensor(x).to("cuda"))
        cpu_bn(Tensor(x))
    got, want = gpu_bn.state_dict(), cpu_bn.state_dict()
    assert got["num_batches_tracked"].dtype == np.int64 and got["num_batches_tracked"] == 3
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(gpu_bn.eval()(Tensor(x).to("cuda")).numpy(),
                               cpu_bn.eval()(Tensor(x)).data, rtol=1e-5, atol=1e-5)
