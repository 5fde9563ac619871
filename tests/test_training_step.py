"""minifcn.training.train_step: one SGD step, checked against the step written out by hand,
and fit() drives every iteration through it."""
import numpy as np
import pytest

import minifcn
from minifcn import nn, optim, training


def _net(seed=0):
    minifcn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))


def _batch(rng, n=2, h=5, w=6):
    x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
    y = rng.integers(0, 3, (n, h, w))
    y[0, 0, :2] = 255  # ignored pixels count for nothing
    return x, y


def _loss_by_hand(params, x, y):
    """Mean per-pixel cross-entropy of the 3x3-conv, ReLU, 1x1-conv net, in plain NumPy."""
    w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, w = x.shape
    h1 = np.zeros((n, 4, h, w))
    for i in range(3):
        for j in range(3):
            h1 += np.einsum("oc,nchw->nohw", w1[:, :, i, j], xp[:, :, i:i + h, j:j + w])
    h1 = np.maximum(h1 + b1[None, :, None, None], 0)
    s = np.einsum("oc,nchw->nohw", w2[:, :, 0, 0], h1) + b2[None, :, None, None]
    logp = s - s.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    keep = y != 255
    picked = np.take_along_axis(logp, np.where(keep, y, 0)[:, None], 1)[:, 0]
    return -picked[keep].mean()


def test_train_step_returns_the_loss_and_moves_the_weights_by_minus_lr_times_the_gradient():
    rng = np.random.default_rng(0)
    x, y = _batch(rng)
    model = _net()
    before = [p.data.copy() for p in model.parameters()]
    lr = 0.1
    opt = optim.SGD([{"params": list(model.parameters()), "lr_mult": 1.0, "decay_mult": 0.0}],
                    lr=lr, momentum=0.0, weight_decay=0.0)

    loss = training.train_step(model, opt, x, y)

    assert isinstance(loss, float)
    assert loss == pytest.approx(_loss_by_hand(before, x, y), rel=1e-5)
    # the gradient by central differences of the hand-written loss, at the weights before
    for k, (p, w0) in enumerate(zip(model.parameters(), before)):
        grad = np.zeros(w0.shape)
        for idx in np.ndindex(w0.shape):
            up = [b.astype(np.float64) for b in before]
            down = [b.astype(np.float64) for b in before]
            up[k][idx] += 1e-4
            down[k][idx] -= 1e-4
            grad[idx] = (_loss_by_hand(up, x, y) - _loss_by_hand(down, x, y)) / 2e-4
        np.testing.assert_allclose(p.data, w0 - lr * grad, rtol=1e-3, atol=1e-5,
                                   err_msg=f"parameter {k}")


def test_a_non_finite_loss_raises_before_any_weight_changes():
    rng = np.random.default_rng(1)
    x, y = _batch(rng)
    x[0, 0, 0, 0] = np.nan
    model = _net()
    before = [p.data.copy() for p in model.parameters()]
    opt = optim.SGD(optim.param_groups(model), lr=0.1)
    with pytest.raises(FloatingPointError, match="loss is nan"):
        training.train_step(model, opt, x, y)
    for p, w0 in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, w0)


def test_fit_runs_every_iteration_through_train_step(tmp_path, monkeypatch):
    calls = []
    real = training.loop.train_step

    def counting(model, optimizer, images, labels, *rest):
        calls.append(images.shape)
        return real(model, optimizer, images, labels, *rest)

    monkeypatch.setattr(training.loop, "train_step", counting)
    monkeypatch.setenv("MINIFCN_NO_PROGRESS", "1")
    config = training.resolve({**training.DEFAULTS, "size": 48, "n_train": 8, "n_val": 4,
                               "iters": 3, "epochs": None, "batch_size": 4, "device": "cpu",
                               "width": 0.03125})
    training.fit(config, tmp_path / "run", log=lambda *a: None)
    assert len(calls) == 3 and calls[0] == (4, 3, 48, 48)
