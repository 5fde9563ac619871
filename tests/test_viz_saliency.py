"""Occlusion sensitivity and Grad-CAM (minifcn/viz_saliency.py): occlusion against a plain loop
that reruns the net for each patch; Grad-CAM's channel weights against central differences of
the score when a whole channel of the layer is shifted (float64, no autograd)."""
import copy
import io as stdio

import numpy as np
import pytest
from PIL import Image

from minifcn import viz
from minifcn.autograd import Tensor, no_grad
from minifcn.models import fcn8s
from minifcn.models import record


def random_net(dtype=np.float32, seed=0):
    model = fcn8s(n_class=3, width=1 / 64, pad1=100)
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data = rng.normal(0, 0.3, p.data.shape).astype(dtype)
    return model


def score(model, x, cls, r, c):
    with no_grad():
        return float(model(Tensor(x)).data[0, cls, r, c])


def test_occlusion_matches_rerunning_the_net_for_every_patch():
    model = random_net()
    x = np.random.default_rng(1).normal(size=(1, 3, 20, 20)).astype(np.float32)
    pixel, cls, patch, stride = (7, 12), 2, 6, 5
    drops, tops, lefts, got_cls = viz.occlusion(model, x, pixel, cls, patch, stride, batch=4)
    assert got_cls == cls and list(tops) == [0, 5, 10, 14] and list(lefts) == [0, 5, 10, 14]
    model.eval()
    base = score(model, x, cls, *pixel)
    for i, t in enumerate(tops):
        for j, lf in enumerate(lefts):
            xo = x.copy()
            xo[0, :, t:t + patch, lf:lf + patch] = 0
            assert drops[i, j] == pytest.approx(base - score(model, xo, cls, *pixel), abs=1e-5)
    # the default class is the one predicted at the pixel
    with no_grad():
        predicted = int(model(Tensor(x)).data[0, :, 7, 12].argmax())
    assert viz.occlusion(model, x, pixel, None, patch, stride)[3] == predicted
    spread = viz.occlusion_image(drops, tops, lefts, patch, (20, 20))
    assert spread[0, 0] == drops[0, 0] and spread[19, 19] == drops[-1, -1]
    assert spread[5, 0] == pytest.approx((drops[0, 0] + drops[1, 0]) / 2)


def test_grad_cam_weights_are_the_mean_gradient_by_central_differences():
    model = random_net(np.float64, seed=2).eval()
    x = np.random.default_rng(3).normal(size=(1, 3, 24, 24))
    pixel, cls, layer = (9, 15), 1, "pool4"
    grads_before = [p.grad for p in model.parameters()]
    flags_before = [p.requires_grad for p in model.parameters()]
    cam, alpha, (a, b), got = viz.grad_cam(model, x, pixel, cls, layer)
    assert got == cls
    assert [p.grad for p in model.parameters()] == grads_before  # nothing accumulated
    assert [p.requires_grad for p in model.parameters()] == flags_before
    acts = record(model, x, [layer])[1][layer][0]
    k_all, h, w = acts.shape

    def shifted(k, eps):
        """The score with eps added to every value of channel k of ``layer``'s output."""
        ghost, real = copy.copy(model), getattr(model, layer)

        def layer_plus(*args):
            out = real(*args)
            bump = np.zeros(out.shape)
            bump[:, k] = eps
            return out + Tensor(bump)

        setattr(ghost, layer, layer_plus)
        return score(ghost, x, cls, *pixel)

    eps = 1e-6
    for k in range(k_all):
        fd = (shifted(k, eps) - shifted(k, -eps)) / (2 * eps) / (h * w)
        assert alpha[k] == pytest.approx(fd, rel=1e-5, abs=1e-9), k
    np.testing.assert_allclose(cam, np.maximum(np.tensordot(alpha, acts, axes=1), 0))
    assert cam.shape == (h, w) and a == 16


def test_saliency_figure_renders_at_its_stated_size_and_bad_input_is_named():
    model = random_net()
    x = np.random.default_rng(4).normal(size=(3, 16, 16)).astype(np.float32)
    cam, _, place, cls = viz.grad_cam(model, x, (3, 4))
    image = np.zeros((16, 16, 3), np.uint8)
    fig = viz.saliency_figure(image, (3, 4), cls, np.zeros((16, 16)), (cam, place))
    buf = stdio.BytesIO()
    fig.savefig(buf, format="png")
    assert Image.open(buf).size == (960, 360)
    with pytest.raises(ValueError, match="pixel \\(16, 0\\) outside the 16x16 output"):
        viz.occlusion(model, x, (16, 0))
    with pytest.raises(ValueError, match="one image"):
        viz.grad_cam(model, np.zeros((2, 3, 16, 16), np.float32), (0, 0))
    with pytest.raises(ValueError, match="give occlusion_map, cam or both"):
        viz.saliency_figure(image, (3, 4), cls)
