"""Tests of minifcn.models.init: the bilinear kernels of FCN's upsampling (paper section 3.3)
and the initialisation of every layer, as the reference code does it."""
import numpy as np
import pytest

import minifcn
from minifcn import Tensor
from minifcn.models import bilinear_kernel, bilinear_weight, fcn8s, fcn32s

from _helpers import TINY, VGG


def test_bilinear_kernel_is_the_standard_one():
    np.testing.assert_allclose(bilinear_kernel(4), np.outer(*[[0.25, 0.75, 0.75, 0.25]] * 2))
    np.testing.assert_allclose(bilinear_kernel(3), np.outer(*[[0.5, 1, 0.5]] * 2))
    for k in (2, 5, 16, 32, 64):
        # independent: a 1-D hat of half-width f = ceil(k/2) centred in the kernel, from np.interp
        f = (k + 1) // 2
        c = (k - 1) / 2
        hat = np.interp(np.arange(k), [c - f, c, c + f], [0, 1, 0])
        np.testing.assert_allclose(bilinear_kernel(k), np.outer(hat, hat), atol=1e-7)
    with pytest.raises(ValueError, match="bilinear_kernel: k"):
        bilinear_kernel(0)


@pytest.mark.parametrize("k, s", [(4, 2), (16, 8), (32, 16), (64, 32)])
def test_bilinear_upsampling_keeps_constants_and_ramps_and_classes_apart(k, s):
    n, h, w = 3, 5, 6
    weight = bilinear_weight(n, k).astype(np.float64)
    assert weight.shape == (n, n, k, k)
    const = np.arange(1, n + 1, dtype=np.float64)[None, :, None, None] * np.ones((1, n, h, w))
    up = minifcn.functional.conv_transpose2d(Tensor(const), Tensor(weight), stride=s).numpy()
    inner = up[:, :, s:h * s, s:w * s]  # every pixel here lies between two input pixels
    np.testing.assert_allclose(inner, np.broadcast_to(const[:, :, :1, :1], inner.shape))
    # a ramp along x stays a ramp, sampled where each output pixel sits: x_in = (x - (k-1)/2)/s
    ramp = np.broadcast_to(np.arange(w, dtype=np.float64), (1, n, h, w)).copy()
    up = minifcn.functional.conv_transpose2d(Tensor(ramp), Tensor(weight), stride=s).numpy()
    xs = np.arange(up.shape[3])
    expect = (xs - (k - 1) / 2) / s
    np.testing.assert_allclose(up[0, 0, h * s // 2, s:w * s], expect[s:w * s], atol=1e-12)


def test_initialisation_follows_the_paper():
    model = fcn8s(n_class=6, width=0.25)
    for name, _ in VGG + [("fc6", 0), ("fc7", 0)]:
        layer = getattr(model, name)
        w = layer.weight.numpy()
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        # He-normal: mean 0, std sqrt(2 / fan_in) (loose for the small first layers); conv1_1
        # sees raw pixels (std ~64, not 1), so its std is divided by 64
        std = np.sqrt(2 / fan_in) / (64.0 if name == "conv1_1" else 1.0)
        tol = 4 / np.sqrt(w.size)
        assert abs(w.std() / std - 1) < tol, name
        assert abs(w.mean()) < 4 * std / np.sqrt(w.size), name
        assert not layer.bias.numpy().any(), name
        assert layer.weight.requires_grad
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = getattr(model, name)
        assert not layer.weight.numpy().any() and not layer.bias.numpy().any()
        assert layer.weight.requires_grad
    for name, k in (("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)):
        layer = getattr(model, name)
        np.testing.assert_array_equal(layer.weight.numpy(), bilinear_weight(6, k))
        assert layer.bias is None
        assert not layer.weight.requires_grad  # the reference code fixes them (lr 0)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert id(model.upscore8.weight) not in trainable and id(model.fc6.weight) in trainable


@pytest.mark.parametrize("learn, learned", [
    (False, set()), (True, {"upscore2", "upscore_pool4", "upscore8"}),
    ("intermediate", {"upscore2", "upscore_pool4"})])
def test_learn_upsampling_choices(learn, learned):
    model = fcn8s(n_class=2, width=TINY, learn_upsampling=learn)
    got = {n for n in ("upscore2", "upscore_pool4", "upscore8")
           if getattr(model, n).weight.requires_grad}
    assert got == learned
    m32 = fcn32s(n_class=2, width=TINY, learn_upsampling="intermediate")
    assert not m32.upscore.weight.requires_grad  # its only upsampling is the final one
