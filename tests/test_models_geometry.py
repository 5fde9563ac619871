"""Tests of minifcn.models.geometry: coordinate maps, derived crop offsets, input limits.

The offsets are checked three independent ways: against the reference prototxts' numbers, by
their known shift with conv1_1's padding, and physically (a mirror-symmetric net on a
mirror-symmetric input must give a mirror-symmetric output only if every crop is centred).
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minifcn import Tensor, no_grad
from minifcn.models import fcn8s, fcn8s_atonce, fcn16s, fcn32s, geometry, padding
from minifcn.models.geometry import CoordMap, conv_map, crop_offsets, deconv_map, trace

TINY = 1 / 32
BUILDERS = {"32s": fcn32s, "16s": fcn16s, "8s": fcn8s, "8s-atonce": fcn8s_atonce}
REF_OFFSETS = {"32s": {"score": 19}, "16s": {"score_pool4c": 5, "score": 27},
               "8s": {"score_pool4c": 5, "score_pool3c": 9, "score": 31},
               "8s-atonce": {"score_pool4c": 5, "score_pool3c": 9, "score": 31}}


def test_layer_maps():
    # a 3x3 conv with padding 1 keeps coordinates; padding 100 shifts them by 99
    assert conv_map(3, 1, 1) == CoordMap(1, 0)
    assert conv_map(3, 1, 100) == CoordMap(1, -99)
    # a 2x2 stride-2 pool: output pixel x covers inputs 2x, 2x+1, centred at 2x + 1/2
    assert conv_map(2, 2, 0) == CoordMap(2, Fraction(1, 2))
    assert conv_map(7, 1, 0) == CoordMap(1, 3)
    for k, s, p in ((64, 32, 0), (4, 2, 0), (16, 8, 3), (5, 3, 1)):
        up, down = deconv_map(k, s, p), conv_map(k, s, p)
        assert down.compose(up) == CoordMap(1, 0) == up.compose(down)
    assert deconv_map(64, 32, 0) == CoordMap(Fraction(1, 32), Fraction(-63, 64))
    m = CoordMap(Fraction(2), Fraction(1, 2))
    assert m(3) == Fraction(13, 2)


@pytest.mark.parametrize("variant", BUILDERS)
@pytest.mark.parametrize("width", [TINY, 0.125, 0.3])
def test_derived_offsets_are_the_reference_offsets(variant, width):
    model = BUILDERS[variant](n_class=4, width=width)
    assert crop_offsets(model) == REF_OFFSETS[variant]
    assert model.offsets == REF_OFFSETS[variant]
    for name, offset in REF_OFFSETS[variant].items():
        assert getattr(model, name).offset == offset


@pytest.mark.parametrize("variant", BUILDERS)
@pytest.mark.parametrize("pad1", [69, 73, 81, 90, 100, 131])
def test_offsets_follow_the_first_padding(variant, pad1):
    # one pixel less padding leaves one pixel less to cut at the end; inner crops compare two
    # maps that both went through conv1_1, so they do not move
    ref = REF_OFFSETS[variant]
    final = ref["score"] - (100 - pad1)
    if final < 0:
        with pytest.raises(ValueError, match=rf"pad1={pad1} does not work.*smallest conv1_1 "
                                             rf"padding that does is {100 - ref['score']}"):
            BUILDERS[variant](n_class=2, width=TINY, pad1=pad1)
        return
    model = BUILDERS[variant](n_class=2, width=TINY, pad1=pad1)
    assert model.offsets == dict(ref, score=final)
    assert padding.min_pad1(model) == 100 - ref["score"]  # 81, 73, 69


def _mirror_symmetric(model, seed=0):
    """Make every kernel symmetric under a left-right flip, so the whole net commutes with the
    flip wherever its windows line up symmetrically."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.ndim == 4:
            w = rng.standard_normal(p.shape) * np.sqrt(2 / np.prod(p.shape[1:]))
            p.data = (w + w[..., ::-1]) / 2
        else:
            p.data = rng.uniform(0, 0.1, p.shape)
    return model


@pytest.mark.parametrize("variant", BUILDERS)
@pytest.mark.parametrize("pad1, size", [(100, 58), (100, 90), (81, 96)])
def test_crops_are_centred_a_mirror_symmetric_net_gives_a_mirror_symmetric_output(
        variant, pad1, size):
    # with conv1_1's output a multiple of 32 wide, every pool pairs columns symmetrically, so
    # a symmetric net on a symmetric input is symmetric at every depth; a crop keeps that
    # only if it cuts as much on the left as on the right
    assert (size + 2 * pad1 - 2) % 32 == 0
    model = _mirror_symmetric(BUILDERS[variant](n_class=2, width=TINY, pad1=pad1)).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 33, size))
    x = x + x[..., ::-1]

    def out():
        with no_grad():
            return model(Tensor(x)).numpy()

    y = out()
    assert y.shape == (1, 2, 33, size)
    np.testing.assert_allclose(y, y[..., ::-1], rtol=1e-10, atol=1e-10 * np.abs(y).max())
    # the test can fail: one pixel off at any crop breaks the symmetry
    for name, offset in model.offsets.items():
        crop = getattr(model, name)
        crop.offset = offset - 1 if offset > 0 else offset + 1
        try:
            y = out()
            assert not np.allclose(y, y[..., ::-1], rtol=1e-6), name
        except ValueError as e:  # or the shifted crop falls off the map
            assert "crop: offset" in str(e)
        crop.offset = offset


@pytest.mark.parametrize("variant", BUILDERS)
def test_input_limits_follow_from_fc6(variant):
    # fc6's 7x7 window needs pool5 >= 7, i.e. ceil((L + 2p - 2) / 32) >= 7: L >= 195 - 2p
    min_pad = 100 - REF_OFFSETS[variant]["score"]
    for pad1 in (100, 97, min_pad):
        model = BUILDERS[variant](n_class=2, width=TINY, pad1=pad1).eval()
        assert model.min_input_size == max(1, 195 - 2 * pad1)
    smallest = model.min_input_size
    with no_grad():
        assert model(Tensor(np.zeros((1, 3, smallest, smallest + 4)))).shape[2:] == \
            (smallest, smallest + 4)
        with pytest.raises(ValueError, match=rf"input {smallest - 1}x{smallest + 4} is too small "
                                             rf"for pad1={min_pad}.*at least {smallest}; pad1="
                                             rf"{min_pad + 1} or more"):
            model(Tensor(np.zeros((1, 3, smallest - 1, smallest + 4))))
    assert padding.min_pad1(model, 1) == 97


_MODELS = {}


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), extra=st.integers(0, 60),
       variant=st.sampled_from(["32s", "16s", "8s"]))
def test_trace_gives_the_input_size_for_any_size_that_fits(h, w, extra, variant):
    pad1 = 100 - REF_OFFSETS[variant]["score"] + extra
    if (variant, pad1) not in _MODELS:  # geometry only: build each model once
        _MODELS[variant, pad1] = BUILDERS[variant](n_class=3, width=TINY, pad1=pad1)
    model = _MODELS[variant, pad1]
    if min(h, w) < model.min_input_size:
        with pytest.raises(ValueError):
            trace(model, (1, 3, h, w))
        return
    steps = trace(model, (2, 3, h, w))
    assert steps[-1].shape == (2, 3, h, w) and steps[-1].jump == 1
    assert steps[0].name == "data" and [s.name for s in steps[1:3]] == ["conv1_1", "relu1_1"]


def test_trace_refuses_layers_it_does_not_know():
    from minifcn.nn import Module

    class Odd(Module):
        def forward(self, x):
            return x

    model = fcn32s(n_class=2, width=TINY)
    model.relu1_1 = Odd()
    with pytest.raises(geometry.GeometryError, match="layer relu1_1 of type Odd"):
        trace(model)


def test_blob_maps_are_the_worked_ones():
    # composed by hand from the layer maps (conv1_1 b = 1 - 100, each pool x -> 2x + 1/2,
    # fc6 b = 3, upscore k s: x -> (x - (k - 1) / 2) / s), as in geometry.py's docstring
    steps = {s.name: s for s in trace(fcn8s(n_class=2, width=TINY))}
    want = {"conv1_1": (1, -99), "pool1": (2, -98.5), "pool2": (4, -97.5), "pool3": (8, -95.5),
            "pool4": (16, -91.5), "pool5": (32, -83.5), "fc6": (32, 12.5), "fc7": (32, 12.5),
            "score_fr": (32, 12.5), "upscore2": (16, -11.5), "score_pool4c": (16, -11.5),
            "upscore_pool4": (8, -23.5), "upscore8": (1, -31), "score": (1, 0)}
    for name, (a, b) in want.items():
        assert (steps[name].jump, steps[name].shift) == (a, Fraction(b)), name
    assert steps["score_pool4"].shift == Fraction(-91.5)


def test_min_pad1_takes_a_model_or_a_name():
    assert padding.min_pad1("fcn32s") == 81 == padding.min_pad1(fcn32s(n_class=2, width=TINY))
    assert padding.min_pad1("fcn16s") == 73 and padding.min_pad1("fcn8s") == 69
    # fc6 needs pool5 >= 7: 32 + 2p - 2 >= 193 -> p >= 81.5
    assert padding.min_pad1("fcn8s", 32) == 82 and padding.min_pad1("fcn8s", 96) == 69
    model = fcn8s(n_class=2, width=TINY, pad1=padding.min_pad1("fcn8s", 32)).eval()
    with no_grad():
        assert model(Tensor(np.zeros((1, 3, 32, 32)))).shape == (1, 2, 32, 32)


def _fcn32s_coverage_by_hand(size, pad1):
    # FCN-32s: conv1_1 (k3, p=pad1) then 3x3 p1 convs keep the size; five 2x2 ceil pools; fc6
    # (7x7, no padding) -> an m x m map of ones, transposed-convolved with the k64 s32 bilinear
    # kernel, then cropped at the derived offset. In 1-D: T[32 j + k] += f(k), f the tent.
    n = size + 2 * pad1 - 2
    for _ in range(5):
        n = -(-n // 2)
    m = n - 6
    tent = 1 - np.abs(np.arange(64) - 31.5) / 32
    line = np.zeros(32 * (m - 1) + 64)
    for j in range(m):
        line[32 * j: 32 * j + 64] += tent
    c = fcn32s(n_class=1, width=1 / 64, pad1=pad1).offsets["score"]
    return np.outer(line[c: c + size], line[c: c + size])


@pytest.mark.parametrize("pad1", [81, 100, 113])
def test_score_coverage_is_the_tent_sum_for_fcn32s(pad1):
    np.testing.assert_allclose(padding.score_coverage("fcn32s", 96, pad1),
                               _fcn32s_coverage_by_hand(96, pad1), atol=1e-5)


def test_full_cover_pad1_covers_and_the_minimal_pads_do_not():
    for name in ("fcn32s", "fcn8s"):
        p = padding.full_cover_pad1(name, 96)
        assert padding.score_coverage(name, 96, p).min() >= 0.99
        assert padding.score_coverage(name, 96, padding.min_pad1(name, 96)).min() < 0.05
    assert padding.full_cover_pad1("fcn32s", 96) == 113  # by hand, the tent sum above:
    assert _fcn32s_coverage_by_hand(96, 113).min() >= 0.99 > _fcn32s_coverage_by_hand(96, 112).min()


# ---------------------------------------------------------------- dilation


def test_dilated_layer_maps():
    """A dilated window's taps span d*(k-1) + 1 pixels; the map's b is their centre, so a 3x3
    dilated by 2 with padding 2 keeps coordinates as a plain 3x3 with padding 1 does."""
    assert conv_map(3, 1, 2, 2) == CoordMap(1, 0) == conv_map(3, 1, 1)
    assert conv_map(2, 1, 0, 2) == CoordMap(1, 1)  # k2 d2: taps x and x + 2
    assert conv_map(7, 1, 0, 4) == CoordMap(1, 12)  # fc6 after rarefying pool5 and pool4
    assert conv_map(3, 2, 1, 3) == CoordMap(2, 2)


def _rarefied(pools, pad1=112):
    from minifcn.models import rarefy

    model = fcn32s(n_class=2, width=TINY, pad1=pad1)
    for pool in pools:
        model = rarefy(model, pool)
    return model


def test_a_dilated_layer_grows_the_receptive_field_by_d_times_k_minus_1():
    for pools in ([], ["pool5"], ["pool5", "pool4"], ["pool5", "pool4", "pool3"]):
        steps = {s.name: s for s in trace(_rarefied(pools), (1, 3, 60, 60))}
        fc6, before = steps["fc6"], steps["pool5"]
        assert fc6.dilation == 2 ** len(pools) and fc6.jump == 32 // 2 ** len(pools)
        assert fc6.rf - before.rf == fc6.dilation * 6 * before.jump == 192  # jump x d: constant
        assert steps["score_fr"].rf == 404  # the paper's receptive field, rarefied or not
        assert steps["score_fr"].shift == Fraction(25, 2) - 12  # cell 0 stays put (pad1 112)


@pytest.mark.parametrize("pools", [["pool5"], ["pool5", "pool4"], ["pool4", "pool3"]])
@pytest.mark.parametrize("size", [(45, 60), (61, 33)])
def test_traced_sizes_of_a_rarefied_net_are_the_real_ones(pools, size):
    from minifcn.models.shift import coarse_scores

    model = _rarefied(pools).eval()
    steps = {s.name: s for s in trace(model, (1, 3) + size)}
    x = Tensor(np.zeros((1, 3) + size, np.float32))
    with no_grad():
        assert coarse_scores(model, x).shape == steps["score_fr"].shape
        assert model(x).shape == steps["score"].shape == (1, 2) + size


def test_a_dilated_window_larger_than_its_input_is_named():
    model = _rarefied(["pool5", "pool4"])
    with pytest.raises(geometry.GeometryError, match=r"geometry: fc6: kernel 7 at dilation 4 "
                                                     r"\(span 25\) is larger than its padded"):
        trace(model, (1, 3, 1, 1), pad1=100)
