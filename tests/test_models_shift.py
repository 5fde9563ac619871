"""minifcn.models.shift: filter rarefaction (rarefy) and shift-and-stitch (paper section 3.2).

The paper's claim, checked exactly (float64): the rarefied net's dense coarse scores equal
shift-and-stitch's interlaced scores, and at every f-th cell both equal the original net's.
Conditions (the module docstring says why): eval mode; conv biases of the trunk <= 0, so the
zero rows a shifted copy adds stay zero through the trunk, as the rarefied net's own zero
padding (minifcn's initialisation has zero biases; random negative ones here, so the bias is
not a trivial zero); then any input size and any pad1 that rarefy accepts. For rarefied ==
original at the f-th cells with arbitrary biases, every rarefied pool whose consumers pad
(pool4 when f = 4) must tile its input. The tests with positive biases show that each
condition is needed: without it the equality fails.
"""
import numpy as np
import pytest

from minifcn import Tensor, no_grad, summary
from minifcn.models import fcn16s, fcn32s, geometry, rarefy, shift_and_stitch
from minifcn.models.shift import (coarse_map, coarse_scores, stitched_map, stitched_scores,
                                   upsample_scores)

WIDTH = 0.0625  # 4-8-16-32-32 channels, fc 256
TOL = dict(rtol=1e-12, atol=1e-12)


def net(pad1=100, biases="negative", seed=0):
    """A tiny FCN-32s in float64, eval mode, random weights of He scale, score_fr random (its
    zero start would make every score 0). biases: 'negative' (the trunk's conv biases <= 0,
    fc6, fc7 and score_fr any sign) or 'positive' (every bias > 0)."""
    model = fcn32s(n_class=3, width=WIDTH, pad1=pad1).double().eval()
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.startswith("upscore"):
            continue
        if p.ndim == 4:
            p.data = rng.standard_normal(p.shape) * np.sqrt(2 / np.prod(p.shape[1:]))
        elif biases == "negative" and name.startswith("conv"):
            p.data = -np.abs(rng.standard_normal(p.shape)) * 0.1
        elif biases == "negative":
            p.data = rng.standard_normal(p.shape) * 0.1
        else:
            p.data = np.abs(rng.standard_normal(p.shape)) * 0.1 + 0.01
    model.conv1_1.weight.data /= 64  # pixels of std ~64 in, unit activations out
    return model


def image(h, w, seed=1):
    return Tensor(np.random.default_rng(seed).standard_normal((1, 3, h, w)) * 60)


def rarefied(model, pools):
    for pool in pools:
        model = rarefy(model, pool)
    return model


def maps(model, pools, h, w):
    """(coarse, dense, stitched) score maps of ``model`` for an h x w image, f = 2**len(pools)."""
    x = image(h, w)
    with no_grad():
        coarse = coarse_scores(model, x).data
        dense = coarse_scores(rarefied(model, pools), x).data
    return coarse, dense, shift_and_stitch(model, x, 2 ** len(pools)).data


def pool4_tiles(pad1, size):
    """Whether pool4's input has an even length (pools 1-4 halve, rounding up)."""
    n = size + 2 * pad1 - 2
    for _ in range(3):
        n = -(-n // 2)
    return n % 2 == 0


# ---------------------------------------------------------------- the layers rarefy changes


def test_rarefy_sets_the_stride_to_1_and_dilates_every_later_layer():
    model = net(pad1=105)
    one = rarefy(model, "pool5")
    assert one.pool5.stride == (1, 1) and one.rarefied == ("pool5",)
    for name in ("fc6", "fc7", "score_fr"):
        assert getattr(one, name).dilation == (2, 2) and getattr(one, name).padding == (0, 0)
    assert one.conv5_3.dilation == (1, 1) and one.pool4.stride == 2
    two = rarefy(one, "pool4")
    assert two.pool4.stride == (1, 1) and two.rarefied == ("pool5", "pool4")
    for name in ("conv5_1", "conv5_2", "conv5_3"):  # 3x3 padding 1 on the old grid: 2 on this
        assert getattr(two, name).dilation == (2, 2) and getattr(two, name).padding == (2, 2)
    assert two.pool5.dilation == (2, 2) and two.pool5.stride == (1, 1)
    assert two.fc6.dilation == (4, 4) and two.conv4_3.dilation == (1, 1)
    # the other order gives the same net: pool5 keeps its stride 2 until it is rarefied itself
    other = rarefy(model, "pool4")
    assert other.pool5.stride == 2 and other.pool5.dilation == (2, 2)
    assert other.fc6.dilation == (2, 2)
    other = rarefy(other, "pool5")
    for name in ("pool4", "conv5_1", "pool5", "fc6", "score_fr"):
        a, b = getattr(two, name), getattr(other, name)
        assert (_pair(a.stride), a.dilation, _pair(a.padding)) == \
            (_pair(b.stride), b.dilation, _pair(b.padding)), name


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def test_rarefy_leaves_its_argument_alone_and_shares_no_weights():
    model = net()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    dense = rarefy(model, "pool5")
    dense.fc6.weight.data[...] = 0.0
    assert model.pool5.stride == 2 and model.fc6.dilation == (1, 1)
    assert model.offsets == {"score": 19}
    assert not hasattr(model, "rarefied")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_the_coarse_stride_halves_per_rarefied_pool_and_the_crop_is_derived():
    model = net(pad1=105)
    assert coarse_map(model).a == 32
    one = rarefy(model, "pool5")
    two = rarefy(one, "pool4")
    assert coarse_map(one).a == 16 and coarse_map(two).a == 8
    assert coarse_map(one).b == coarse_map(model).b == coarse_map(two).b  # cell 0 stays put
    # the upsampling: fixed bilinear by the new stride; the offsets from the coordinate maps
    assert two.upscore.kernel_size == (16, 16) and two.upscore.stride == (8, 8)
    assert not two.upscore.weight.requires_grad and two.upscore.weight.dtype == np.float64
    assert model.offsets == {"score": 24} and one.offsets == {"score": 8}
    assert two.offsets == {"score": 0} == geometry.crop_offsets(two)
    rows = {s.name: s for s in geometry.trace(two, (1, 3, 41, 41))}
    assert rows["fc6"].jump == 8 and rows["fc6"].dilation == 4
    assert rows["score_fr"].rf == rows["fc6"].rf == 404  # the receptive field does not shrink
    table = summary(two, (1, 3, 41, 41))
    assert "dilation 4" in table and "dilation 2" in table


# ---------------------------------------------------------------- the paper's equivalence


@pytest.mark.parametrize("pad1,pools,size", [
    (100, ["pool5"], (58, 61)),            # f = 2
    (97, ["pool5"], (61, 66)),             # f = 2 at the smallest pad1 rarefy accepts
    (100, ["pool5"], (59, 90)),
    (105, ["pool5", "pool4"], (41, 44)),   # f = 4; pool4 tiles
    (105, ["pool5", "pool4"], (34, 50)),   # f = 4; pool4 does not tile: zero borders suffice
    (112, ["pool5", "pool4"], (26, 33)),
])
def test_rarefied_scores_equal_shift_and_stitch(pad1, pools, size):
    f = 2 ** len(pools)
    coarse, dense, stitched = maps(net(pad1), pools, *size)
    rows = min(dense.shape[2], stitched.shape[2] - (f - 1))
    cols = min(dense.shape[3], stitched.shape[3] - (f - 1))
    assert rows >= 3 and cols >= 3  # a real comparison, several cells of each copy
    np.testing.assert_allclose(dense[..., :rows, :cols],
                               stitched[..., f - 1:f - 1 + rows, f - 1:f - 1 + cols], **TOL)
    # at the original positions both are the original net's coarse scores
    h, w = (min(c, len(range(0, d, f))) for c, d in zip(coarse.shape[2:], dense.shape[2:]))
    assert h >= 1 and w >= 2
    np.testing.assert_allclose(dense[..., ::f, ::f][..., :h, :w], coarse[..., :h, :w], **TOL)
    np.testing.assert_array_equal(stitched[..., f - 1::f, f - 1::f][..., :coarse.shape[2],
                                                                     :coarse.shape[3]], coarse)
    assert np.abs(coarse).max() > 0.1  # not a map of zeros


@pytest.mark.parametrize("pools,size,tiles", [
    (["pool5"], (34, 37), None),          # f = 2: fc6 does not pad, any size
    (["pool5", "pool4"], (41, 44), True),
    (["pool5", "pool4"], (34, 34), False),
])
def test_rarefied_equals_the_coarse_net_at_every_fth_cell_with_any_biases(pools, size, tiles):
    """Positive biases: the padding of each map is no longer zero inside the net, yet the
    rarefied net is the coarse one at its f-th cells, as long as pool4 tiles its input (where
    it does not, the coarse net's half-empty last window meets the rarefied net's zeros)."""
    f, pad1 = 2 ** len(pools), 105
    assert tiles is None or pool4_tiles(pad1, size[0]) == tiles == pool4_tiles(pad1, size[1])
    coarse, dense, _ = maps(net(pad1, "positive"), pools, *size)
    h, w = (min(c, len(range(0, d, f))) for c, d in zip(coarse.shape[2:], dense.shape[2:]))
    got, want = dense[..., ::f, ::f][..., :h, :w], coarse[..., :h, :w]
    if tiles is False:
        assert np.abs(got - want).max() > 1e-3
    else:
        np.testing.assert_allclose(got, want, **TOL)


def test_shift_and_stitch_needs_the_padding_to_stay_zero():
    """Positive trunk biases turn the zero rows of a shifted copy into non-zero activations:
    the copies no longer see what the rarefied net sees, and the two disagree."""
    f = 2
    _, dense, stitched = maps(net(100, "positive"), ["pool5"], 58, 61)
    diff = dense[..., :3, :3] - stitched[..., f - 1:f + 2, f - 1:f + 2]
    assert np.abs(diff).max() > 1e-3


def test_shift_and_stitch_with_f_1_is_the_coarse_net():
    model, x = net(), image(30, 35)
    with no_grad():
        want = coarse_scores(model, x).data
    np.testing.assert_array_equal(shift_and_stitch(model, x, 1).data, want)


# ---------------------------------------------------------------- full-size scores


def test_both_give_full_size_scores_and_agree_inside_the_rarefied_map():
    """The rarefied FCN-32s upsamples its own dense map; stitched_scores upsamples the stitched
    one, which has f - 1 more cells before the first. Between the rarefied map's first and last
    cell centres the bilinear interpolation reads the same cells: the scores are the same."""
    for pad1, pools, (h, w) in [(100, ["pool5"], (58, 61)), (105, ["pool5", "pool4"], (41, 44))]:
        model, x, f = net(pad1), image(h, w), 2 ** len(pools)
        dense_net = rarefied(model, pools)
        with no_grad():
            y = dense_net(x).data
            cells = coarse_scores(dense_net, x).shape[2:]
        s = stitched_scores(model, x, f).data
        assert y.shape == s.shape == (1, 3, h, w)
        m = coarse_map(dense_net)
        lo = int(np.ceil(m.b))
        hi = [int(m.a * (n - 1) + m.b) + 1 for n in cells]
        assert hi[0] - lo > 10 and hi[1] - lo > 10
        np.testing.assert_allclose(y[..., lo:hi[0], lo:hi[1]], s[..., lo:hi[0], lo:hi[1]], **TOL)
        assert np.abs(y - s).max() > 1e-3  # outside that the stitched map knows more


def test_the_stitched_map_lands_on_the_coarse_nets_final_crop():
    model = net()
    for f, b in [(1, 12.5), (2, 12.5 - 16), (4, 12.5 - 24), (32, 12.5 - 31)]:
        m = stitched_map(model, f)
        assert m.a == 32 // f and m.b == b
        up = m.compose(geometry.deconv_map(2 * m.a, m.a, 0))
        assert -up.b == 19  # the FCN-32s crop offset at pad1 = 100, for every f
    dense = Tensor(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match=r"^upsample_scores: the upsampled map .* does not cover"):
        upsample_scores(dense, coarse_map(model), (200, 200))


# ---------------------------------------------------------------- what they refuse


def test_rarefy_refuses_in_one_line_naming_the_argument():
    model = net()
    cases = [
        (lambda: rarefy(fcn16s(n_class=2, width=WIDTH), "pool5"), ValueError,
         r"^rarefy: rarefy takes an FCN32s .*FCN16s's skips"),
        (lambda: rarefy("fcn32s", "pool5"), TypeError, r"^rarefy: model must be an FCN"),
        (lambda: rarefy(model, "fc6"), ValueError,
         r"^rarefy: layer must name one of the model's pools \['pool1', .*'pool5'\], got 'fc6'$"),
        (lambda: rarefy(model, 5), ValueError, r"^rarefy: layer must name .* got 5$"),
        (lambda: rarefy(rarefy(model, "pool5"), "pool5"), ValueError,
         r"^rarefy: pool5 already has stride 1"),
        (lambda: rarefy(rarefy(model, "pool5"), "pool4"), ValueError,
         r"^rarefy: at stride 8 .* at pad1=100; build the FCN32s with pad1 >= 105"),
    ]
    for call, err, match in cases:
        with pytest.raises(err, match=match) as e:
            call()
        assert "\n" not in str(e.value)


def test_shift_and_stitch_refuses_in_one_line_naming_the_argument():
    model, x = net(), image(20, 20)
    cases = [
        (lambda: shift_and_stitch(model, x, 3), r"^shift_and_stitch: f must divide the coarse "
                                                r"stride 32, got 3$"),
        (lambda: shift_and_stitch(model, x, 0), r"^shift_and_stitch: f must be a positive int"),
        (lambda: shift_and_stitch(model, x, 2.0), r"^shift_and_stitch: f must be a positive int"),
        (lambda: shift_and_stitch(rarefy(model, "pool5"), x, 32),
         r"^shift_and_stitch: f must divide the coarse stride 16, got 32$"),
        (lambda: shift_and_stitch(model, x.data[0], 2), r"^shift_and_stitch: x must be \(N, C"),
        (lambda: shift_and_stitch(net().train(), x, 2),
         r"^shift_and_stitch: the model is in training mode.*model.eval\(\)$"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
