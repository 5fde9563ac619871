"""The coordinate map (minifcn/viz_coords.py, ``python -m minifcn.models --coords``): its numbers
against geometry.trace, against a receptive-field recurrence written here, and against the
pixels that really change a unit; each figure at its stated size; the command's file checks."""
import io as stdio
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from minifcn import viz
from minifcn.autograd import Tensor
from minifcn.models import fcn8s, fcn32s, geometry
from minifcn.models.__main__ import main as models_main
from minifcn.models import record

# VGG16 then FCN-8s's head as (name, kernel, stride, padding): conv1_1's padding is P
VGG = [("conv1_1", 3, 1, "P"), ("conv1_2", 3, 1, 1), ("pool1", 2, 2, 0),
       ("conv2_1", 3, 1, 1), ("conv2_2", 3, 1, 1), ("pool2", 2, 2, 0),
       ("conv3_1", 3, 1, 1), ("conv3_2", 3, 1, 1), ("conv3_3", 3, 1, 1), ("pool3", 2, 2, 0),
       ("conv4_1", 3, 1, 1), ("conv4_2", 3, 1, 1), ("conv4_3", 3, 1, 1), ("pool4", 2, 2, 0),
       ("conv5_1", 3, 1, 1), ("conv5_2", 3, 1, 1), ("conv5_3", 3, 1, 1), ("pool5", 2, 2, 0),
       ("fc6", 7, 1, 0), ("fc7", 1, 1, 0), ("score_fr", 1, 1, 0)]


def classic_recurrence(pad1):
    """{layer: (jump, first centre, receptive field)} by the textbook recurrence, one layer at a
    time: j' = j s, r' = r + (k - 1) j, first' = first + ((k - 1) / 2 - p) j."""
    j, first, r, out = Fraction(1), Fraction(0), 1, {}
    for name, k, s, p in VGG:
        p = pad1 if p == "P" else p
        first += (Fraction(k - 1, 2) - p) * j
        r += (k - 1) * j
        j *= s
        out[name] = (j, first, r)
    return out


def png_size(fig):
    buf = stdio.BytesIO()
    fig.savefig(buf, format="png")
    return Image.open(buf).size


@pytest.mark.parametrize("pad1", [100, 69])
def test_layer_grids_match_the_textbook_recurrence_and_the_trace(pad1):
    model = fcn8s(n_class=3, width=1 / 64, pad1=pad1)
    grids = {g.name: g for g in viz.layer_grids(model, 96)}
    want = classic_recurrence(pad1)
    for name, (jump, first, rf) in want.items():
        g = grids[name]
        assert (g.stride, g.start, g.rf) == (jump, first, rf), name
    steps = {s.name: s for s in geometry.trace(model, (1, 3, 96, 96))}
    for g in grids.values():
        s = steps[g.name]
        assert (g.size, g.stride, g.start, g.rf, g.crop) == (s.shape[2], s.jump, s.shift, s.rf,
                                                              s.offset)
    # the reference numbers of the paper's FCN-VGG16 (pad 100): pool5 at 32x - 83.5, rf 404
    if pad1 == 100:
        assert (grids["pool5"].start, grids["score_fr"].rf) == (Fraction(-167, 2), 404)


@pytest.mark.parametrize("pad1", [100, 69])
def test_alignment_offsets_line_each_crop_up_with_its_reference(pad1):
    model = fcn8s(n_class=3, width=1 / 64, pad1=pad1)
    crops = viz.alignment(model, 96)
    assert {name: o for name, o, *_ in crops} == model.offsets == geometry.crop_offsets(model)
    want = classic_recurrence(pad1)
    # the upsampled maps by hand: a transposed conv k, s, no padding maps x -> (x - (k-1)/2)/s
    # in its input's pixels, so its pixel 0 sits at first - (k - 1)/2 * j_out
    j, first = want["score_fr"][0], want["score_fr"][1]
    up2 = (j / 2, first - Fraction(3, 2) * (j / 2))                       # upscore2 k4 s2
    j3, f3 = want["pool3"][:2]
    up4 = (up2[0] / 2, up2[1] - Fraction(3, 2) * (up2[0] / 2))            # upscore_pool4
    up8 = (up4[0] / 8, up4[1] - Fraction(15, 2) * (up4[0] / 8))           # upscore8 k16 s8
    by_hand = {"score_pool4c": (want["pool4"][1], up2[1], up2[0]),
               "score_pool3c": (f3, up4[1], j3), "score": (up8[1], Fraction(0), up8[0])}
    for name, offset, stride, start, ref_start in crops:
        src, ref, a = by_hand[name]
        assert (stride, start, ref_start) == (a, src, ref), name
        assert start + offset * stride == ref_start  # crop's pixel 0 on the reference's
    if pad1 == 100:
        assert [o for _, o, *_ in crops] == [5, 9, 31]


def test_receptive_field_is_the_set_of_pixels_that_change_the_unit():
    # a net with positive weights and biases: raising one input pixel raises exactly the units
    # whose receptive field holds it (every conv, ReLU and max is increasing in it)
    model = fcn8s(n_class=1, width=1 / 64).double().eval()
    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():
        p.data = rng.uniform(0.1, 1.0, p.data.shape) + (0.01 if name.endswith("bias") else 0)
    size, layer = 64, "pool3"
    g = {g.name: g for g in viz.layer_grids(model, size)}[layer]
    i = j = (size // 2 - int(g.start)) // int(g.stride)
    top, left, bottom, right = (int(v) for v in viz.receptive_field(model, size, layer, (i, j)))
    assert 0 < top and bottom < size - 1 and bottom - top + 1 == g.rf

    def unit(x):
        return record(model, x, [layer])[1][layer][0, 0, i, j]

    base = unit(np.zeros((1, 3, size, size)))
    mid = (top + bottom) // 2
    for (r, c), inside in [((mid, left), True), ((mid, left - 1), False),
                           ((mid, right), True), ((mid, right + 1), False),
                           ((top, mid), True), ((top - 1, mid), False),
                           ((bottom, mid), True), ((bottom + 1, mid), False)]:
        x = np.zeros((1, 3, size, size))
        x[0, :, r, c] = 1.0
        assert (unit(x) > base) == inside, (r, c)


def test_receptive_field_refuses_a_pixel_outside_the_layer():
    with pytest.raises(ValueError, match="outside pool5"):
        viz.receptive_field(fcn32s(n_class=2, width=1 / 64), 64, "pool5", (0, 99))
    with pytest.raises(ValueError, match="no layer 'relu1_1'"):
        viz.receptive_field(fcn32s(n_class=2, width=1 / 64), 64, "relu1_1", (0, 0))


def test_each_figure_renders_at_its_stated_size():
    model = fcn8s(n_class=3, width=1 / 32)
    n = len(viz.layer_grids(model, 32))
    assert png_size(viz.layers_figure(model, 32)) == (1300, round(100 * (0.22 * n + 1)))
    assert png_size(viz.pixel_figure(model, 32, (0, 5))) == (900, 600)
    image = np.zeros((32, 32, 3), np.uint8)
    assert png_size(viz.pixel_figure(model, 32, (10, 5), image, ["pool3"])) == (900, 600)
    # rows: image, conv1_1, pool1 ... pool5, score_fr, upscore2, score_pool4 (cropped),
    # score_pool4c, upscore_pool4, score_pool3 (cropped), score_pool3c, upscore8 (cropped), score
    rows = 16
    assert png_size(viz.alignment_figure(model, 32)) == (1300, round(100 * (0.28 * rows + 1.2)))
    h = (0.22 * n + 1) + (0.28 * rows + 1.2) + 6
    assert png_size(viz.coords_figure(model, 32)) == (1300, round(100 * h))


def test_coords_command_writes_the_map_and_keeps_an_existing_file(tmp_path, capsys):
    out = tmp_path / "coords.png"
    assert models_main(["fcn8s", "--width", "0.015625", "--size", "40", "--coords",
                        str(out)]) == 0
    assert Image.open(out).size[0] == 1300
    before = out.read_bytes()
    with pytest.raises(SystemExit) as e:
        models_main(["fcn8s", "--width", "0.015625", "--size", "40", "--coords", str(out)])
    assert e.value.code == 2 and out.read_bytes() == before
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        models_main(["fcn8s", "--size", "40x50", "--coords", str(tmp_path / "b.png")])
    assert "square --size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        models_main(["fcn8s", "--size", "40", "--pixel", "3,40", "--coords",
                     str(tmp_path / "b.png")])
    assert "outside the 40x40 input" in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()


def test_record_keeps_each_output_and_leaves_the_net_unchanged():
    model = fcn8s(n_class=3, width=1 / 64).eval()
    x = np.random.default_rng(1).normal(size=(1, 3, 24, 24)).astype(np.float32)
    out, kept = record(model, x)
    np.testing.assert_array_equal(out.data, model(Tensor(x)).data)
    np.testing.assert_array_equal(kept["score"], out.data)
    # the conv's own output, not the in-place ReLU's that follows it
    assert (kept["conv1_1"] < 0).any()
    np.testing.assert_array_equal(kept["relu1_1"], np.maximum(kept["conv1_1"], 0))
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        record(model, x, ["conv9"])
