"""nn.SqueezeExcitation and nn.NonLocal2d (minifcn/nn/attention.py): values against plain NumPy
loops written here, values and every gradient against PyTorch modules written here with the
same names (and torchvision's SqueezeExcitation when it is installed) in float64, gradcheck of
each block end to end, the non-local block's identity start and kept attention, errors."""
import math

import numpy as np
import pytest

import minifcn
from minifcn import Tensor, gradcheck, nn


def randomise(module, rng, scale=0.5):
    """Every parameter random (the non-local block's W starts at zero), float64."""
    module.double()
    module.load_state_dict({k: scale * rng.standard_normal(v.shape)
                            for k, v in module.state_dict().items()})
    return module


def conv1x1(x, w, b):
    """A 1x1 convolution of one image x (C, H, W) by loops over output channels."""
    out = np.empty((w.shape[0],) + x.shape[1:])
    for o in range(w.shape[0]):
        out[o] = b[o] + sum(w[o, c, 0, 0] * x[c] for c in range(x.shape[0]))
    return out


def slow_se(x, s):
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        z = x[n].mean(axis=(1, 2))[:, None, None]
        z = np.maximum(conv1x1(z, s["fc1.weight"], s["fc1.bias"]), 0)
        z = conv1x1(z, s["fc2.weight"], s["fc2.bias"])[:, 0, 0]
        out[n] = x[n] * np.array([1 / (1 + math.exp(-v)) for v in z])[:, None, None]
    return out


def slow_non_local(x, s):
    """Position by position: y_i = sum_j softmax_j(theta_i . phi_j) g_j, out = W y + x."""
    n, c, h, w = x.shape
    out, attn = np.empty_like(x), np.empty((n, h * w, h * w))
    for b in range(n):
        th, ph, g = (conv1x1(x[b], s[f"{k}.weight"], s[f"{k}.bias"]).reshape(-1, h * w)
                     for k in ("theta", "phi", "g"))
        y = np.empty_like(g)
        for i in range(h * w):
            logits = [float(th[:, i] @ ph[:, j]) for j in range(h * w)]
            m = max(logits)
            e = [math.exp(v - m) for v in logits]
            attn[b, i] = [v / sum(e) for v in e]
            y[:, i] = g @ attn[b, i]
        out[b] = conv1x1(y.reshape(-1, h, w), s["W.weight"], s["W.bias"]) + x[b]
    return out, attn


# ---------------------------------------------------------------- squeeze-and-excitation


def test_se_shapes_names_and_values_against_loops(rng):
    se = nn.SqueezeExcitation(32)
    assert se.squeeze_channels == 2 and nn.SqueezeExcitation(8).squeeze_channels == 1
    assert list(se.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert se.fc1.weight.shape == (2, 32, 1, 1) and se.fc2.weight.shape == (32, 2, 1, 1)
    randomise(se, rng)
    x = rng.standard_normal((2, 32, 3, 5))
    np.testing.assert_allclose(se(Tensor(x)).data, slow_se(x, se.state_dict()), rtol=1e-12)


def _torch_se(torch, c, squeeze):
    class SE(torch.nn.Module):  # torchvision.ops.SqueezeExcitation's lines
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Conv2d(c, squeeze, 1)
            self.fc2 = torch.nn.Conv2d(squeeze, c, 1)

        def forward(self, x):
            s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
    return SE()


def _torch_module(name, torch, c, squeeze):
    if name == "torchvision":
        ops = pytest.importorskip("torchvision.ops")
        return ops.SqueezeExcitation(c, squeeze)
    return _torch_se(torch, c, squeeze)


def compare_with_torch(torch, ours, theirs, x, rtol=1e-10):
    """Forward and backward of both with one random upstream gradient: output, input
    gradient and every parameter's gradient under the same name."""
    theirs.double().load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    g = np.random.default_rng(5).standard_normal(x.shape)
    xt, rx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ry = ours(xt), theirs(rx)
    ry = ry[0] if isinstance(ry, tuple) else ry
    y.backward(g)
    ry.backward(torch.tensor(g))
    np.testing.assert_allclose(y.data, ry.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(xt.grad, rx.grad.numpy(), rtol=rtol, atol=rtol)
    theirs_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        want = theirs_grads[name].grad.numpy()
        assert np.abs(want).max() > 0, f"{name}: a zero gradient makes the check vacuous"
        np.testing.assert_allclose(p.grad, want, rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize("reference", ["written here", "torchvision"])
def test_se_matches_pytorch(rng, reference):
    torch = pytest.importorskip("torch")
    se = randomise(nn.SqueezeExcitation(16, reduction=4), rng)
    theirs = _torch_module(reference, torch, 16, 4)
    compare_with_torch(torch, se, theirs, rng.standard_normal((2, 16, 5, 6)))


def test_se_gradcheck(rng):
    se = randomise(nn.SqueezeExcitation(6, reduction=2), rng)
    assert gradcheck(se, [Tensor(rng.standard_normal((2, 6, 3, 4)), requires_grad=True)])


# ---------------------------------------------------------------- non-local block


def test_non_local_starts_as_the_identity(rng):
    minifcn.manual_seed(0)
    block = nn.NonLocal2d(6).double()
    assert block.inter_channels == 3 and nn.NonLocal2d(1).inter_channels == 1
    assert list(block.state_dict()) == ["g.weight", "g.bias", "W.weight", "W.bias",
                                        "theta.weight", "theta.bias", "phi.weight", "phi.bias"]
    assert block.g.weight.shape == (3, 6, 1, 1) and block.W.weight.shape == (6, 3, 1, 1)
    x = Tensor(rng.standard_normal((2, 6, 4, 5)), requires_grad=True)
    y = block(x)
    np.testing.assert_array_equal(y.data, x.data)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_array_equal(x.grad, g)  # through the residual only
    assert np.abs(block.W.weight.grad).max() > 0  # ... but W learns from the first step
    assert np.abs(block.W.bias.grad).max() > 0


def test_non_local_values_and_attention_against_loops(rng):
    block = randomise(nn.NonLocal2d(4, keep_attention=True), rng)
    x = rng.standard_normal((2, 4, 3, 4))
    want, want_attn = slow_non_local(x, block.state_dict())
    np.testing.assert_allclose(block(Tensor(x)).data, want, rtol=1e-12, atol=1e-12)
    assert block.last_attention.shape == (2, 12, 12)
    np.testing.assert_allclose(block.last_attention, want_attn, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(block.last_attention.sum(-1), 1, rtol=1e-12)


def test_non_local_keeps_no_attention_by_default(rng):
    block = nn.NonLocal2d(4)
    block(Tensor(rng.standard_normal((1, 4, 3, 3)).astype(np.float32)))
    assert block.last_attention is None and "keep_attention" not in repr(block)


def _torch_non_local(torch, c, ci):
    class NonLocal(torch.nn.Module):  # AlexHex7's NONLocalBlock2D, no sub-sampling, no BN
        def __init__(self):
            super().__init__()
            self.g = torch.nn.Conv2d(c, ci, 1)
            self.W = torch.nn.Conv2d(ci, c, 1)
            self.theta = torch.nn.Conv2d(c, ci, 1)
            self.phi = torch.nn.Conv2d(c, ci, 1)

        def forward(self, x):
            n = x.size(0)
            g_x = self.g(x).view(n, ci, -1).permute(0, 2, 1)
            theta_x = self.theta(x).view(n, ci, -1).permute(0, 2, 1)
            phi_x = self.phi(x).view(n, ci, -1)
            f = torch.nn.functional.softmax(torch.matmul(theta_x, phi_x), dim=-1)
            y = torch.matmul(f, g_x).permute(0, 2, 1).contiguous().view(n, ci, *x.size()[2:])
            return self.W(y) + x, f
    return NonLocal()


@pytest.mark.parametrize("c,ci,shape", [(8, None, (2, 8, 5, 6)), (6, 2, (1, 6, 7, 3))])
def test_non_local_matches_pytorch(rng, c, ci, shape):
    torch = pytest.importorskip("torch")
    block = randomise(nn.NonLocal2d(c, ci, keep_attention=True), rng)
    theirs = _torch_non_local(torch, c, block.inter_channels)
    x = rng.standard_normal(shape)
    compare_with_torch(torch, block, theirs, x)
    _, f = theirs(torch.tensor(x))
    np.testing.assert_allclose(block.last_attention, f.detach().numpy(), rtol=1e-10, atol=1e-14)


def test_non_local_gradcheck_with_w_not_zero(rng):
    block = randomise(nn.NonLocal2d(4), rng)
    assert np.abs(block.W.weight.data).min() > 0
    x = Tensor(rng.standard_normal((2, 4, 3, 3)), requires_grad=True)
    assert gradcheck(block, [x])


def test_float32_runs_in_float32(rng):
    x = Tensor(rng.standard_normal((2, 8, 4, 4)).astype(np.float32), requires_grad=True)
    for block in (nn.SqueezeExcitation(8, 4), nn.NonLocal2d(8)):
        y = block(x)
        y.backward(np.ones(y.shape, np.float32))
        assert y.dtype == np.float32 and x.grad.dtype == np.float32


def test_errors():
    for build in (lambda: nn.SqueezeExcitation(0), lambda: nn.SqueezeExcitation(8, 0),
                  lambda: nn.NonLocal2d(2.0), lambda: nn.NonLocal2d(4, inter_channels=0)):
        with pytest.raises(ValueError, match="must be a positive int"):
            build()
    for block, name in ((nn.SqueezeExcitation(8), "SqueezeExcitation"),
                        (nn.NonLocal2d(8), "NonLocal2d")):
        for shape in ((2, 4, 3, 3), (2, 8, 3)):
            with pytest.raises(ValueError, match=rf"{name}: expected a 4-D input \(N, 8, H, W\)"):
                block(Tensor(np.ones(shape, np.float32)))
