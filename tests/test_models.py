"""Tests of minifcn.models: layer names, shapes, forward values against an independent NumPy
implementation written here, staged training, state dicts, gradients. (Initialisation:
tests/test_models_init.py; crop offsets and coordinate maps: tests/test_models_geometry.py.)"""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import minifcn
from minifcn import Tensor, no_grad
from minifcn.models import (FCN8s, FCN8sAtOnce, FCN16s, FCN32s, MODELS, bilinear_weight, build,
                            fcn8s, fcn8s_atonce, fcn16s, fcn32s)

from _helpers import TINY, VGG

VARIANTS = {"32s": fcn32s, "16s": fcn16s, "8s": fcn8s, "8s-atonce": fcn8s_atonce}
# the offsets of the authors' reference prototxts (FCN-FACTS.md), typed in here on purpose: the
# models must arrive at them on their own
REF_OFFSETS = {"32s": {"score": 19}, "16s": {"score_pool4c": 5, "score": 27},
               "8s": {"score_pool4c": 5, "score_pool3c": 9, "score": 31}}
REF_OFFSETS["8s-atonce"] = REF_OFFSETS["8s"]


def expected_keys(variant):
    keys = [f"{name}.{p}" for name, _ in VGG for p in ("weight", "bias")]
    keys += ["fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias", "score_fr.weight",
             "score_fr.bias"]
    if variant == "32s":
        return keys + ["upscore.weight"]
    keys += ["score_pool4.weight", "score_pool4.bias", "upscore2.weight"]
    if variant == "16s":
        return keys + ["upscore16.weight"]
    return keys + ["score_pool3.weight", "score_pool3.bias", "upscore_pool4.weight",
                   "upscore8.weight"]


def randomize(model, seed=0, bias=0.1):
    """Every parameter random (score layers included, else outputs are all zero): weights
    N(0, 2/fan_in), biases U(0, bias)."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.data = rng.uniform(0, bias, p.shape).astype(p.dtype)
        else:
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            p.data = (rng.standard_normal(p.shape) * np.sqrt(2 / fan_in)).astype(p.dtype)
    return model


# ----------------------------------------------------------------- independent NumPy reference


def ref_conv(x, w, b=None, pad=0):
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    win = sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, oh, ow, k, k)
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    return y if b is None else y + b[None, :, None, None]


def ref_pool(x):
    """2x2 stride-2 max pool rounding the size up: a missing last row/column never wins."""
    n, c, h, w = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    padded = np.full((n, c, 2 * oh, 2 * ow), -np.inf)
    padded[:, :, :h, :w] = x
    return padded.reshape(n, c, oh, 2, ow, 2).max(axis=(3, 5))


def ref_deconv(x, w, s):
    """Transposed conv the slow way: every input pixel paints a weighted kernel."""
    n, c, h, wd = x.shape
    k = w.shape[-1]
    out = np.zeros((n, w.shape[1], (h - 1) * s + k, (wd - 1) * s + k))
    for i in range(h):
        for j in range(wd):
            out[:, :, i * s:i * s + k, j * s:j * s + k] += np.einsum("nc,cokl->nokl",
                                                                     x[:, :, i, j], w)
    return out


def ref_crop(x, o, like):
    h, w = like.shape[2:]
    assert o >= 0 and o + h <= x.shape[2] and o + w <= x.shape[3]
    return x[:, :, o:o + h, o:o + w]


def ref_trunk(sd, x, pad1=100):
    """(pool3, pool4, score_fr) of the VGG16 trunk, eval mode, float64."""
    h = x
    pools = []
    for name, _ in VGG:
        h = np.maximum(ref_conv(h, sd[f"{name}.weight"], sd[f"{name}.bias"],
                                pad1 if name == "conv1_1" else 1), 0)
        if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"):
            h = ref_pool(h)
            pools.append(h)
    h = np.maximum(ref_conv(h, sd["fc6.weight"], sd["fc6.bias"]), 0)
    h = np.maximum(ref_conv(h, sd["fc7.weight"], sd["fc7.bias"]), 0)
    return pools[2], pools[3], ref_conv(h, sd["score_fr.weight"], sd["score_fr.bias"])


def ref_forward(sd, variant, x, offsets=None, pad1=100):
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    o = offsets or REF_OFFSETS[variant]
    pool3, pool4, score = ref_trunk(sd, x, pad1)
    if variant == "32s":
        return ref_crop(ref_deconv(score, sd["upscore.weight"], 32), o["score"], x)
    scale4, scale3 = (0.01, 1e-4) if variant == "8s-atonce" else (1, 1)
    up2 = ref_deconv(score, sd["upscore2.weight"], 2)
    fuse = up2 + ref_crop(ref_conv(pool4 * scale4, sd["score_pool4.weight"],
                                   sd["score_pool4.bias"]), o["score_pool4c"], up2)
    if variant == "16s":
        return ref_crop(ref_deconv(fuse, sd["upscore16.weight"], 16), o["score"], x)
    up4 = ref_deconv(fuse, sd["upscore_pool4.weight"], 2)
    fuse = up4 + ref_crop(ref_conv(pool3 * scale3, sd["score_pool3.weight"],
                                   sd["score_pool3.bias"]), o["score_pool3c"], up4)
    return ref_crop(ref_deconv(fuse, sd["upscore8.weight"], 8), o["score"], x)


def run(model, x):
    with no_grad():
        return model(Tensor(x)).numpy()


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_are_the_reference_layer_names(variant):
    model = VARIANTS[variant](n_class=5, width=TINY)
    keys = list(model.state_dict())
    assert sorted(keys) == sorted(expected_keys(variant))
    assert len(keys) == len(set(keys))


def test_width_scales_every_hidden_channel_and_keeps_the_topology():
    model = fcn8s(n_class=7, width=0.125)
    sd = model.state_dict()
    for name, channels in VGG:
        assert sd[f"{name}.weight"].shape[0] == channels // 8
        assert sd[f"{name}.weight"].shape[2:] == (3, 3)
    assert sd["conv1_1.weight"].shape == (8, 3, 3, 3)
    assert sd["fc6.weight"].shape == (512, 64, 7, 7)
    assert sd["fc7.weight"].shape == (512, 512, 1, 1)
    assert sd["score_fr.weight"].shape == (7, 512, 1, 1)
    assert sd["score_pool4.weight"].shape == (7, 64, 1, 1)
    assert sd["score_pool3.weight"].shape == (7, 32, 1, 1)
    assert sd["upscore2.weight"].shape == sd["upscore_pool4.weight"].shape == (7, 7, 4, 4)
    assert sd["upscore8.weight"].shape == (7, 7, 16, 16)
    assert "upscore8.bias" not in sd and "upscore2.bias" not in sd
    assert fcn32s(n_class=3, width=1e-4).state_dict()["fc6.weight"].shape == (1, 1, 7, 7)


def test_build_and_models_map_names_to_the_classes():
    assert set(MODELS) == {"fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce", "segnet", "segnet-basic",
                           "deconvnet", "unet", "deeplab-largefov", "deeplab-aspp", "fcn8s-se",
                           "fcn8s-nonlocal", "fcn8s-embed", "fcn8s-centres"}
    for name, cls in (("fcn32s", FCN32s), ("fcn16s", FCN16s), ("fcn8s", FCN8s),
                      ("fcn8s-atonce", FCN8sAtOnce), ("fcn8s_atonce", FCN8sAtOnce)):
        model = build(name, n_class=4, width=TINY, pad1=90)
        assert type(model) is cls and model.config["pad1"] == 90
        assert model.score_fr.out_channels == 4
    with pytest.raises(ValueError, match="build: unknown model 'fcn4s'"):
        build("fcn4s")


@pytest.mark.parametrize("option, value, error", [
    ("n_class", 0, ValueError), ("n_class", 2.5, TypeError), ("width", 0, ValueError),
    ("width", -1.0, ValueError), ("pad1", -1, ValueError), ("pad1", 1.5, TypeError),
    ("dropout", 1.0, ValueError), ("learn_upsampling", "yes", ValueError),
    ("learn_upsampling", 1, ValueError)])
def test_bad_options_are_refused_naming_the_option(option, value, error):
    with pytest.raises(error, match=f"FCN8s: {option}"):
        fcn8s(**dict(dict(width=TINY), **{option: value}))


def test_input_of_the_wrong_shape_is_refused():
    model = fcn32s(n_class=2, width=TINY).eval()
    with pytest.raises(ValueError, match=r"FCN32s: input must be \(N, 3, H, W\)"):
        model(Tensor(np.zeros((1, 1, 40, 40), np.float32)))
    with pytest.raises(ValueError, match=r"FCN32s: input must be"):
        model(Tensor(np.zeros((3, 40, 40), np.float32)))


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(1, 3, 37, 53), (1, 3, 64, 64), (1, 3, 97, 113),
                                   (1, 3, 224, 224)])
def test_output_has_the_input_height_and_width(variant, shape):
    model = VARIANTS[variant](n_class=3, width=TINY).eval()
    out = run(model, np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    assert out.shape == (shape[0], 3) + shape[2:]


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_an_independent_numpy_fcn(variant):
    model = randomize(VARIANTS[variant](n_class=3, width=TINY), seed=1).eval().double()
    x = np.random.default_rng(2).standard_normal((2, 3, 37, 53)) * 50
    got = run(model, x)
    want = ref_forward(model.state_dict(), variant, x)
    assert got.shape == want.shape == (2, 3, 37, 53)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("variant, pad1", [("32s", 85), ("8s", 69)])
def test_forward_with_a_smaller_first_padding_matches_the_reference(variant, pad1):
    model = randomize(VARIANTS[variant](n_class=2, width=TINY, pad1=pad1), 3).eval().double()
    x = np.random.default_rng(4).standard_normal((1, 3, 61, 70))
    # final offsets move with the padding: one pixel less padding, one pixel less to cut
    offsets = dict(REF_OFFSETS[variant], score=REF_OFFSETS[variant]["score"] - (100 - pad1))
    got = run(model, x)
    np.testing.assert_allclose(got, ref_forward(model.state_dict(), variant, x, offsets, pad1),
                               rtol=1e-9, atol=1e-12)
    assert got.shape == (1, 2, 61, 70)


def test_eval_turns_dropout_off():
    model = randomize(fcn32s(n_class=2, width=0.125), seed=5)
    x = np.random.default_rng(6).standard_normal((1, 3, 40, 40)).astype(np.float32)
    minifcn.manual_seed(0)
    a, b = run(model.train(), x), run(model, x)
    assert not np.allclose(a, b)  # dropout draws a new mask each call
    model.eval()
    c, d = run(model, x), run(model, x)
    np.testing.assert_array_equal(c, d)
    assert not model.drop6.training and not model.drop7.training


def test_at_once_scales_pool4_and_pool3():
    # scaling a skip's input by s is the same as scaling its score layer's weights by s
    atonce = randomize(fcn8s_atonce(n_class=3, width=TINY), seed=7).eval().double()
    plain = fcn8s(n_class=3, width=TINY).eval().double()
    sd = atonce.state_dict()
    sd["score_pool4.weight"] = sd["score_pool4.weight"] * 0.01
    sd["score_pool3.weight"] = sd["score_pool3.weight"] * 1e-4
    plain.load_state_dict(sd)
    x = np.random.default_rng(8).standard_normal((1, 3, 45, 39)) * 100
    a, p = run(atonce, x), run(plain, x)
    np.testing.assert_allclose(a, p, rtol=1e-10, atol=1e-12 * np.abs(p).max())
    # and the scaling matters: without it the output is different
    unscaled = fcn8s(n_class=3, width=TINY).eval().double().load_state_dict(atonce.state_dict())
    assert not np.allclose(run(unscaled, x), a)
    assert atonce.scale_pool4.factor == 0.01 and atonce.scale_pool3.factor == 1e-4


# ----------------------------------------------------------------------------- staged training


def test_fcn16s_from_fcn32s_starts_from_the_32s_coarse_scores():
    m32 = randomize(fcn32s(n_class=3, width=TINY, pad1=90), seed=9).eval().double()
    m16 = FCN16s.from_fcn32s(m32)
    assert type(m16) is FCN16s and m16.config == m32.config and not m16.training
    sd32, sd16 = m32.state_dict(), m16.state_dict()
    for key in sd32:
        if key != "upscore.weight":
            np.testing.assert_array_equal(sd16[key], sd32[key], err_msg=key)
    assert not sd16["score_pool4.weight"].any() and not sd16["score_pool4.bias"].any()
    np.testing.assert_array_equal(sd16["upscore2.weight"], bilinear_weight(3, 4))
    np.testing.assert_array_equal(sd16["upscore16.weight"], bilinear_weight(3, 32))
    assert m16.fc6.weight.data is not m32.fc6.weight.data  # a copy, not shared
    assert m16.fc6.weight.dtype == np.float64

    x = np.random.default_rng(10).standard_normal((1, 3, 41, 35)) * 50
    _, _, score = ref_trunk({k: v for k, v in sd32.items()}, x, pad1=90)
    up = ref_deconv(ref_deconv(score, bilinear_weight(3, 4).astype(np.float64), 2),
                    bilinear_weight(3, 32).astype(np.float64), 16)
    want = ref_crop(up, 27 - 10, x)
    np.testing.assert_allclose(run(m16, x), want, rtol=1e-9, atol=1e-12)


def test_fcn8s_from_fcn16s_keeps_the_16s_fused_scores():
    m16 = randomize(fcn16s(n_class=3, width=TINY), seed=11).eval().double()
    m8 = FCN8s.from_fcn16s(m16)
    assert type(m8) is FCN8s
    sd16, sd8 = m16.state_dict(), m8.state_dict()
    for key in sd16:
        if key != "upscore16.weight":
            np.testing.assert_array_equal(sd8[key], sd16[key], err_msg=key)
    assert not sd8["score_pool3.weight"].any()
    x = np.random.default_rng(12).standard_normal((1, 3, 33, 47)) * 50
    _, pool4, score = ref_trunk(sd16, x)
    up2 = ref_deconv(score, sd16["upscore2.weight"], 2)  # random: copied from 16s
    fuse = up2 + ref_crop(ref_conv(pool4, sd16["score_pool4.weight"], sd16["score_pool4.bias"]),
                          5, up2)
    up = ref_deconv(ref_deconv(fuse, bilinear_weight(3, 4).astype(np.float64), 2),
                    bilinear_weight(3, 16).astype(np.float64), 8)
    np.testing.assert_allclose(run(m8, x), ref_crop(up, 31, x), rtol=1e-9, atol=1e-12)


def test_staging_refuses_the_wrong_parent():
    with pytest.raises(TypeError, match="FCN16s.from_fcn32s: expected a FCN32s, got FCN8s"):
        FCN16s.from_fcn32s(fcn8s(n_class=2, width=TINY))
    with pytest.raises(TypeError, match="FCN8s.from_fcn16s: expected a FCN16s"):
        FCN8s.from_fcn16s(fcn32s(n_class=2, width=TINY))


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip_gives_identical_outputs(variant):
    a = randomize(VARIANTS[variant](n_class=4, width=TINY), seed=13).eval()
    b = VARIANTS[variant](n_class=4, width=TINY).eval()
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(14).standard_normal((1, 3, 29, 31)).astype(np.float32)
    np.testing.assert_array_equal(run(a, x), run(b, x))
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], value)
    assert b.score_fr.weight.data is not a.score_fr.weight.data
    with pytest.raises(ValueError, match="shape mismatch: conv1_1.weight"):
        VARIANTS[variant](n_class=4, width=0.125).load_state_dict(a.state_dict())


# ----------------------------------------------------------------------------- gradients


def _gradcheck(model, shape, seed):
    model = randomize(model, seed=seed).eval().double()
    x = Tensor(np.random.default_rng(seed).standard_normal(shape) * 10, requires_grad=True)
    # every parameter tensor is sampled (max_elements picks elements within each)
    checked = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(checked) == len(model.state_dict())
    assert minifcn.gradcheck(model, [x], max_elements=1, seed=seed, atol=1e-6, rtol=1e-4)


@pytest.mark.slow  # ~90 forward passes each; the engine's small-GEMM speed sets the time
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_every_variant_at_the_default_padding(variant):
    _gradcheck(VARIANTS[variant](n_class=3, width=TINY, learn_upsampling=True), (1, 3, 7, 5),
               seed=15)


@pytest.mark.slow
@pytest.mark.parametrize("variant, pad1", [("8s", 70)])
def test_gradcheck_with_a_smaller_first_padding(variant, pad1):
    _gradcheck(VARIANTS[variant](n_class=2, width=TINY, pad1=pad1, learn_upsampling=True),
               (1, 3, 57, 59), seed=16)


def test_width_above_the_bound_is_refused_before_building_anything():
    from minifcn.models.vgg import MAX_WIDTH
    assert MAX_WIDTH == 4.0
    for value in (4.01, 100, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"FCN8s: width must be a number in \(0, 4\.0\]") as e:
            fcn8s(n_class=2, width=value)  # width 100 would ask for 1.3 T parameters
        assert "\n" not in str(e.value)
    assert fcn32s(n_class=2, width=TINY).config["width"] == TINY  # inside the bound: built
