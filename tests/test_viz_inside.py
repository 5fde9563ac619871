"""What a net computes inside (minifcn/viz_inside.py): every layer's feature maps, the scores
of FCN-8s before and after each skip, the upsampling kernels; each figure at its stated size."""
import io as stdio
import math

import numpy as np
import pytest
from PIL import Image

from minifcn import viz
from minifcn.autograd import Tensor
from minifcn.models import fcn8s, fcn32s, geometry
from minifcn.models import record


def png_size(fig):
    buf = stdio.BytesIO()
    fig.savefig(buf, format="png")
    return Image.open(buf).size


def trained_like(model, seed=0):
    """Random weights everywhere, score layers and upsampling included, so that every skip and
    every upsampling kernel carries something."""
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data = rng.normal(0, 0.3, p.data.shape).astype(np.float32)
    return model.eval()


def conv_by_loops(x, w, b, pad):
    """A stride-1 convolution with zero padding, one kernel tap at a time."""
    n, c, h, wd = x.shape
    k = w.shape[2]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    out = np.zeros((n, w.shape[0], ho, wo)) + b[None, :, None, None]
    for i in range(k):
        for j in range(k):
            out += np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[:, :, i:i + ho, j:j + wo])
    return out


def test_feature_maps_are_each_layers_output():
    model = trained_like(fcn8s(n_class=3, width=1 / 64))
    x = np.random.default_rng(1).normal(size=(3, 20, 20)).astype(np.float32)
    maps = viz.feature_maps(model, x)
    names = list(maps)
    assert names[:3] == ["conv1_1", "conv1_2", "pool1"] and names[-1] == "score"
    assert not any(n.startswith(("relu", "drop")) for n in names)
    want = conv_by_loops(x[None], model.conv1_1.weight.data, model.conv1_1.bias.data, 100)[0]
    np.testing.assert_allclose(maps["conv1_1"], want, rtol=1e-4, atol=1e-4)
    c12 = np.maximum(maps["conv1_2"], 0)  # pool1: 2x2 max of relu(conv1_2), ceil mode
    h = c12.shape[1]
    np.testing.assert_allclose(maps["pool1"][:, :h // 2, :h // 2],
                               c12[:, :h // 2 * 2, :h // 2 * 2].reshape(
                                   c12.shape[0], h // 2, 2, h // 2, 2).max(axis=(2, 4)))
    np.testing.assert_array_equal(maps["score"], model(Tensor(x[None])).data[0])


def test_feature_maps_of_the_classifier_end_in_its_class_scores():
    from minifcn.models import pretrained_classifier

    net = pretrained_classifier()
    x = np.random.default_rng(2).normal(size=(1, 3, 196, 196)).astype(np.float32)
    maps = viz.feature_maps(net, x)
    assert maps["fc8"].shape == (net.config["n_class"], 1, 1)
    np.testing.assert_allclose(maps["fc8"][:, 0, 0], net(Tensor(x)).data[0, :, 0, 0], rtol=1e-6)


def test_skip_scores_before_plus_skip_is_after_and_the_output_is_unchanged():
    model = trained_like(fcn8s(n_class=4, width=1 / 64))
    x = np.random.default_rng(3).normal(size=(1, 3, 30, 30)).astype(np.float32)
    before = model(Tensor(x)).data.copy()
    scores = viz.skip_scores(model, x)
    by = {name: s for name, _, s, _ in scores}
    assert list(by) == ["score_fr", "upscore2", "score_pool4c", "fuse_pool4", "upscore_pool4",
                        "score_pool3c", "fuse_pool3", "upscore8", "score"]
    np.testing.assert_allclose(by["fuse_pool4"], by["upscore2"] + by["score_pool4c"], rtol=1e-6)
    np.testing.assert_allclose(by["fuse_pool3"], by["upscore_pool4"] + by["score_pool3c"],
                               rtol=1e-6)
    # the skip is score_pool4 cropped at the derived offset to upscore2's size
    _, kept = record(model, x, ["score_pool4"])
    o, n = model.offsets["score_pool4c"], by["upscore2"].shape[1]
    np.testing.assert_array_equal(by["score_pool4c"], kept["score_pool4"][0, :, o:o + n, o:o + n])
    np.testing.assert_array_equal(by["score"], before[0])
    np.testing.assert_array_equal(model(Tensor(x)).data, before)
    steps = {s.name: s for s in geometry.trace(model, x.shape)}
    for name, _, s, (a, b) in scores:
        assert (a, b) == (steps[name].jump, steps[name].shift)
        assert s.shape[1:] == steps[name].shape[2:]
    assert [n for n, *_ in viz.skip_scores(fcn32s(n_class=2, width=1 / 64), x)] == \
        ["score_fr", "upscore", "score"]


def bilinear_by_formula(k):
    """The upsampling filter of the reference code (pytorch-fcn's get_upsampling_weight), one
    entry at a time."""
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    return np.array([[(1 - abs(i - centre) / factor) * (1 - abs(j - centre) / factor)
                      for j in range(k)] for i in range(k)])


def test_upsampling_kernels_start_bilinear_and_show_what_training_changed():
    model = fcn8s(n_class=3, width=1 / 64, learn_upsampling=True)
    kernels = viz.upsampling_kernels(model)
    assert list(kernels) == ["upscore2", "upscore_pool4", "upscore8"]
    for name, (bil, learned, off) in kernels.items():
        k = getattr(model, name).weight.shape[2]
        np.testing.assert_allclose(bil, bilinear_by_formula(k), rtol=1e-6)
        for c in range(3):
            np.testing.assert_allclose(learned[c], bilinear_by_formula(k), rtol=1e-6)
        assert off == 0
    model.upscore8.weight.data[1, 1, 2, 3] += 0.5    # "learned": one class's kernel moves
    model.upscore8.weight.data[0, 2, 5, 5] = -0.25   # and a class leaks into another
    bil, learned, off = viz.upsampling_kernels(model)["upscore8"]
    assert learned[1, 2, 3] == pytest.approx(bilinear_by_formula(16)[2, 3] + 0.5)
    assert off == 0.25
    with pytest.raises(ValueError, match="no transposed convolution"):
        viz.upsampling_kernels(trained_like(fcn8s(n_class=2, width=1 / 64)).conv1_1)


def test_each_figure_renders_at_its_stated_size():
    model = trained_like(fcn8s(n_class=5, width=1 / 64))
    x = np.random.default_rng(4).normal(size=(1, 3, 24, 24)).astype(np.float32)
    maps = viz.feature_maps(model, x, kinds=("conv1", "pool5"))
    channels, columns = 4, 3
    cols = min(columns, channels)
    rows = sum(math.ceil(min(channels, a.shape[0]) / cols) for a in maps.values())
    assert png_size(viz.feature_maps_figure(maps, channels, columns)) == \
        (round(110 * cols), round(100 * (1.1 * rows + 0.3 * len(maps))))
    scores = viz.skip_scores(model, x)
    image = np.zeros((24, 24, 3), np.uint8)
    panels = len(scores) + 1
    assert png_size(viz.skip_scores_figure(scores, image, 2)) == \
        (1040, 260 * math.ceil(panels / 4))
    assert png_size(viz.upsampling_figure(model, [0, 3])) == (round(220 * 4), 220 * 3)
    with pytest.raises(ValueError, match="classes must be in 0..4"):
        viz.upsampling_figure(model, [7])
    with pytest.raises(ValueError, match="class 9 outside"):
        viz.skip_scores_figure(scores, image, 9)
