"""The classifier FCNs start from (minifcn.models.VGGClassifier), convolutionalisation, and the
classification set it learns (minifcn.data.ShapesClassification): forward values against an
independent NumPy VGG written here (test_models's reference ops), gradients with gradcheck, the
paper's equivalence (an FCN's fc7 at a position = the classifier's fc7 on that position's
window), and --init-from a classifier into every FCN."""
import numpy as np
import pytest

import minifcn
from minifcn import Tensor, no_grad
from minifcn.data import Loader, ShapesClassification, get_dataset
from minifcn.data.shapes_cls import CATEGORIES, MASKS
from minifcn.models import build
from minifcn.models.classifier import VGGClassifier, convolutional_state, convolutionalize
from minifcn.models.vgg import trunk
from minifcn.training.build import load_weights_into

from _helpers import TINY, VGG
from test_models import ref_conv, ref_pool


def randomized(model, seed=0, bias=(-0.1, 0.1)):
    """Every parameter random: weights N(0, 2/fan_in), biases uniform in ``bias``."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.data = rng.uniform(*bias, p.shape).astype(p.dtype)
        else:
            p.data = (rng.standard_normal(p.shape) * np.sqrt(2 / np.prod(p.shape[1:]))).astype(p.dtype)
    return model


def ref_features(sd, x):
    """fc7 of VGG16 as a classifier, the slow way: padded-by-1 convs, ceil pools, then fc6/fc7
    as matrix products on the flattened (c, y, x) pool5."""
    h = x
    for name, _ in VGG:
        h = np.maximum(ref_conv(h, sd[f"{name}.weight"], sd[f"{name}.bias"], 1), 0)
        if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"):
            h = ref_pool(h)
    h = h.reshape(len(h), -1)
    h = np.maximum(h @ sd["fc6.weight"].T + sd["fc6.bias"], 0)
    return np.maximum(h @ sd["fc7.weight"].T + sd["fc7.bias"], 0)


def state(model):
    return {k: v.astype(np.float64) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- the classifier


def test_classifier_forward_matches_an_independent_numpy_vgg():
    model = randomized(VGGClassifier(5, width=TINY)).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32) * 50
    with no_grad():
        scores = model(Tensor(x)).numpy()
    sd = state(model)
    want = ref_features(sd, x.astype(np.float64)) @ sd["fc8.weight"].T + sd["fc8.bias"]
    assert scores.shape == (2, 5, 1, 1)
    np.testing.assert_allclose(scores[:, :, 0, 0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_classifier_takes_193_to_224_and_names_the_range_otherwise():
    model = VGGClassifier(3, width=TINY).eval()
    with no_grad():
        assert model(Tensor(np.zeros((1, 3, 193, 200), np.float32))).shape == (1, 3, 1, 1)
    for side in (192, 225, 96):
        with pytest.raises(ValueError, match=r"VGGClassifier: input .* 193\.\.224"):
            model(Tensor(np.zeros((1, 3, side, 224), np.float32)))


@pytest.mark.slow
def test_gradcheck_the_classifier():
    model = randomized(VGGClassifier(3, width=TINY), seed=2).eval().double()
    x = Tensor(np.random.default_rng(2).standard_normal((1, 3, 193, 193)) * 10, requires_grad=True)
    assert minifcn.gradcheck(model, [x], max_elements=1, seed=3, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------- convolutionalize


def fcn_fc7(fcn, x):
    with no_grad():
        return fcn.backbone(Tensor(x))[2].numpy()


def classifier_fc7(classifier, x):
    with no_grad():
        return classifier.features(Tensor(x)).numpy()


def test_fc7_at_each_position_is_the_classifiers_fc_layers_on_the_7x7_pool5_block_it_reads():
    """Exact for any weights and any image: fc6 as a 7x7 convolution computes, at (i, j), the
    classifier's fully connected fc6 on the pool5 block [i:i+7, j:j+7], and fc7 as 1x1 its fc7."""
    classifier = randomized(VGGClassifier(4, width=TINY), seed=4).eval().double()
    fcn = convolutionalize(classifier, build("fcn32s", n_class=4, width=TINY)).eval().double()
    image = np.random.default_rng(5).standard_normal((1, 3, 150, 170)) * 50
    got = fcn_fc7(fcn, image)
    with no_grad():
        pool5 = trunk(fcn, Tensor(image))[2].numpy()
        assert got.shape[2:] == (pool5.shape[2] - 6, pool5.shape[3] - 6)
        for i in range(got.shape[2]):
            for j in range(got.shape[3]):
                block = Tensor(np.ascontiguousarray(pool5[:, :, i:i + 7, j:j + 7]))
                want = classifier.fully_connected(block).numpy()
                np.testing.assert_allclose(got[0, :, i, j], want[0], rtol=1e-12, atol=1e-9)


def centred_patch(size=64, seed=5):
    """An image that is zero but for a random size x size patch centred in the window of fc7's
    position (3, 3): FCN-32s's conv1_1 pads by 100 where the classifier's pads by 1, so the FCN
    is the classifier's convolutions over the image zero-extended by 99, and its fc7 at (i, j)
    reads the 224-pixel window from (32 i, 32 j) of that extended image: (96, 96) for (3, 3)."""
    image = np.zeros((1, 3, 260, 260))
    c = 96 + 112 - 99 - size // 2
    image[:, :, c:c + size, c:c + size] = np.random.default_rng(seed).standard_normal(
        (3, size, size)) * 50
    window = np.pad(image, ((0, 0), (0, 0), (99, 99 + 224), (99, 99 + 224)))[:, :, 96:320, 96:320]
    return image, window


@pytest.mark.parametrize("biases, size, equal", [((-0.2, 0.0), 64, True),   # the paper's claim
                                                 ((-0.2, 0.0), 96, False),  # the border counts
                                                 ((0.2, 0.4), 64, False)])  # so does ReLU(bias)
def test_fc7_at_a_position_is_the_classifiers_fc7_on_the_window_it_sees(biases, size, equal):
    """The whole chain: FCN fc7 at (3, 3) = the classifier's fc7 on that position's 224-pixel
    window, exactly, where the classifier's zero padding is what the FCN sees around the window
    at every layer: the image is zero beyond a 64-pixel patch centred in the window (no unit
    outside the window reaches it) and ReLU keeps zeros zero (trunk biases <= 0). A 96-pixel
    patch reaches units beyond the window's border, and positive biases make the zeros around
    it nonzero deeper in: then the two differ, as VGG's padding makes them at image borders."""
    classifier = randomized(VGGClassifier(4, width=TINY), seed=4, bias=biases).eval().double()
    fcn = convolutionalize(classifier, build("fcn32s", n_class=4, width=TINY)).eval().double()
    image, window = centred_patch(size)
    got, want = fcn_fc7(fcn, image)[0, :, 3, 3], classifier_fc7(classifier, window)[0]
    assert np.abs(want).max() > 1  # the patch reaches fc7
    assert np.allclose(got, want, rtol=1e-10, atol=1e-8) == equal


def test_convolutionalize_reshapes_fc6_fc7_copies_the_trunk_and_leaves_the_scores_at_zero():
    classifier = randomized(VGGClassifier(16, width=TINY), seed=6)
    for name in ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"):
        fcn = convolutionalize(classifier, build(name, n_class=5, width=TINY))
        c = classifier.conv5_3.out_channels
        np.testing.assert_array_equal(fcn.fc6.weight.data.reshape(len(fcn.fc6.weight.data), -1),
                                      classifier.fc6.weight.data)
        assert fcn.fc6.weight.shape == (classifier.fc6.out_features, c, 7, 7)
        np.testing.assert_array_equal(fcn.fc7.weight.data[:, :, 0, 0], classifier.fc7.weight.data)
        for layer, _ in VGG:
            np.testing.assert_array_equal(getattr(fcn, layer).weight.data,
                                          getattr(classifier, layer).weight.data)
        scores = {k: p.data for k, p in fcn.named_parameters() if k.startswith("score")}
        assert scores and all(not v.any() for v in scores.values())
        fcn.fc6.weight.data[:] = 0  # a copy: the classifier keeps its weights
        assert classifier.fc6.weight.data.any()


def test_convolutionalize_refuses_another_width_naming_the_layer():
    classifier = VGGClassifier(16, width=TINY)
    with pytest.raises(ValueError, match=r"convolutionalize: .*conv1_1\.weight.*same width"):
        convolutionalize(classifier, build("fcn32s", n_class=5, width=2 * TINY))
    with pytest.raises(TypeError, match="convolutionalize: expected a VGGClassifier"):
        convolutionalize(build("fcn32s", width=TINY), build("fcn32s", width=TINY))


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"])
def test_init_from_a_classifier_checkpoint_works_for_every_fcn(tmp_path, name):
    classifier = randomized(VGGClassifier(16, width=TINY), seed=7)
    path = tmp_path / "classifier.npz"
    minifcn.io.save_checkpoint(path, {f"model/{k}": v.astype(np.float16)
                                      for k, v in classifier.state_dict().items()}, {})
    fcn = build(name, n_class=5, width=TINY)
    lines = []
    load_weights_into(fcn, path, log=lines.append)
    want = convolutional_state({k: v.astype(np.float16) for k, v in classifier.state_dict().items()})
    for k, v in want.items():
        np.testing.assert_array_equal(dict(fcn.named_parameters())[k].data, v.astype(np.float32))
    assert "fc8" not in " ".join(k for k, _ in fcn.named_parameters())
    assert all(not p.data.any() for k, p in fcn.named_parameters() if k.startswith("score"))
    assert "kept at init" in lines[0] and "score_fr.weight" in lines[0]


# ----------------------------------------------------------------------------- shapes-cls


def test_shapes_cls_is_deterministic_one_label_per_image_and_covers_every_category():
    ds = ShapesClassification("train", n=400)
    assert ds.n_class == len(ds.class_names) == 16 and ds.name == "shapes-cls"
    image, label = ds[3]
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert label.shape == (1, 1) and label.dtype == np.int64
    np.testing.assert_array_equal(image, ShapesClassification("train", n=400)[3][0])
    labels = [int(ds[i][1][0, 0]) for i in range(400)]
    assert set(labels) == set(range(16))
    counts = np.bincount(labels, minlength=16)
    assert counts.min() > 0.4 * counts.mean()  # no category starved
    val = ShapesClassification("val", n=5)
    assert not any(np.array_equal(val[i][0], ds[i][0]) for i in range(5))
    assert isinstance(get_dataset("shapes-cls", "val", n=2), ShapesClassification)
    assert ShapesClassification("val", n=2, size=193)[0][0].shape == (193, 193, 3)


def test_every_category_draws_a_shape_of_its_own():
    """Each mask is non-empty, fits in its 1.5 r window and differs from every other category's
    mask drawn at the same size (mean IoU < 0.93 over a few random draws: a disc and a hexagon of
    about its size already overlap 0.89, a disc and a square pi/4; a bug that draws one category
    for another gives 1)."""
    size, r = 96, 30.0
    yy, xx = np.meshgrid(np.arange(size) + 0.5 - 48, np.arange(size) + 0.5 - 48, indexing="ij")
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    masks = {}
    for name, fn in CATEGORIES.items():
        m = fn(np.random.default_rng(0), yy, xx, r)
        assert m.dtype == bool and 0.1 * r * r < m.sum(), name
        assert not (m & (np.maximum(abs(yy), abs(xx)) > 1.5 * r)).any(), name
        masks[name] = m
    names = list(masks)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            ious = []
            for seed in range(4):
                ma = CATEGORIES[names[a]](np.random.default_rng(seed), yy, xx, r)
                mb = CATEGORIES[names[b]](np.random.default_rng(seed + 10), yy, xx, r)
                ious.append((ma & mb).sum() / (ma | mb).sum())
            assert np.mean(ious) < 0.93, (names[a], names[b], ious)
    assert len(MASKS) == 16


def test_loader_flips_a_classification_image_but_not_its_label():
    ds = ShapesClassification("train", n=6)
    x, y = next(Loader(ds, 6, shuffle=False, flip=True, seed=3).epoch(0))
    assert x.shape == (6, 3, 224, 224) and y.shape == (6, 1, 1)
    np.testing.assert_array_equal(y[:, 0, 0], [ds[i][1][0, 0] for i in range(6)])
    plain, _ = next(Loader(ds, 6, shuffle=False).epoch(0))
    flipped = [not np.array_equal(x[i], plain[i]) for i in range(6)]
    assert any(flipped)
    for i in np.flatnonzero(flipped):
        np.testing.assert_array_equal(x[i], plain[i][:, :, ::-1])

