"""Tests for minifcn.io.importers: torchvision's VGG16 and the PyTorch FCN port's weights renamed
into minifcn's (with torchvision's normalisation folded into conv1_1, the port's BGR conv1_1
flipped), import_weights telling the kind, and merge_state.

The torch files under tests/fixtures/ were made by tests/fixtures/make_fixtures.py with real
torch; expected.npz holds what torch itself gave for each tensor, so these tests need no torch.
"""
import numpy as np
import pytest

from minifcn import io
from minifcn.io.torchfile import read_torch_state_dict

from _helpers import assert_same, expected, fixture

TV_MEAN = np.array([0.485, 0.456, 0.406])
TV_STD = np.array([0.229, 0.224, 0.225])
OUR_MEAN_RGB = np.array([122.67892, 116.66877, 104.00699])
TV_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
OUR_CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
             "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")


def conv_valid(x, w, b):
    """Slow reference 2-d convolution, no padding: x (C, H, W), w (O, C, kh, kw), b (O,)."""
    o_n, _, kh, kw = w.shape
    h_out, w_out = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((o_n, h_out, w_out))
    for o in range(o_n):
        for y in range(h_out):
            for z in range(w_out):
                out[o, y, z] = np.sum(w[o] * x[:, y:y + kh, z:z + kw]) + b[o]
    return out


# --- torchvision VGG16 import --------------------------------------------------------------

def test_vgg16_mapping_names_and_shapes():
    tv = expected("vgg16_tiny")
    ours = io.from_torchvision_vgg16(read_torch_state_dict(fixture("vgg16_tiny.pt")),
                                     fold_normalisation=False)
    names = OUR_CONVS + ("fc6", "fc7")
    assert list(ours) == [f"{n}.{p}" for n in names for p in ("weight", "bias")]
    for name, i in zip(OUR_CONVS, TV_CONVS):
        assert_same(ours[f"{name}.weight"], tv[f"features.{i}.weight"])
        assert_same(ours[f"{name}.bias"], tv[f"features.{i}.bias"])
    assert ours["fc6.weight"].shape == (16, 32, 7, 7) and ours["fc7.weight"].shape == (16, 16, 1, 1)
    assert_same(ours["fc7.weight"][:, :, 0, 0], tv["classifier.3.weight"])
    assert_same(ours["fc6.bias"], tv["classifier.0.bias"])


def test_vgg16_fc6_as_a_conv_computes_the_linear_layer():
    tv = expected("vgg16_tiny")
    ours = io.from_torchvision_vgg16(tv, fold_normalisation=False)
    pool5 = np.random.default_rng(2).standard_normal((32, 7, 7))
    w0, b0 = tv["classifier.0.weight"].astype(np.float64), tv["classifier.0.bias"]
    linear = w0 @ pool5.reshape(-1) + b0  # torch flattens (C, 7, 7) in C order
    conv = conv_valid(pool5, ours["fc6.weight"].astype(np.float64),
                      ours["fc6.bias"].astype(np.float64))
    np.testing.assert_allclose(conv[:, 0, 0], linear, rtol=1e-12, atol=1e-12)


def test_vgg16_fold_normalisation_is_exact_on_a_valid_conv():
    tv = {k: v.astype(np.float64) for k, v in expected("vgg16_tiny").items()}
    folded = io.from_torchvision_vgg16(tv)
    pixels = np.random.default_rng(3).uniform(0, 255, (3, 6, 7))  # RGB, 0..255
    seen_by_torchvision = (pixels / 255 - TV_MEAN[:, None, None]) / TV_STD[:, None, None]
    seen_by_minifcn = pixels - OUR_MEAN_RGB[:, None, None]
    want = conv_valid(seen_by_torchvision, tv["features.0.weight"], tv["features.0.bias"])
    got = conv_valid(seen_by_minifcn, folded["conv1_1.weight"], folded["conv1_1.bias"])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # float32 weights stay float32, to float32 accuracy
    folded32 = io.from_torchvision_vgg16(expected("vgg16_tiny"))
    assert folded32["conv1_1.weight"].dtype == folded32["conv1_1.bias"].dtype == np.float32
    got32 = conv_valid(seen_by_minifcn, folded32["conv1_1.weight"].astype(np.float64),
                       folded32["conv1_1.bias"].astype(np.float64))
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-5)


def test_vgg16_fold_differs_only_slightly_at_the_zero_padded_border():
    tv = {k: v.astype(np.float64) for k, v in expected("vgg16_tiny").items()}
    folded = io.from_torchvision_vgg16(tv)
    pixels = np.random.default_rng(4).uniform(0, 255, (3, 5, 5))
    pad = lambda x: np.pad(x, ((0, 0), (1, 1), (1, 1)))  # noqa: E731 -- zero padding 1, as VGG does
    want = conv_valid(pad((pixels / 255 - TV_MEAN[:, None, None]) / TV_STD[:, None, None]),
                      tv["features.0.weight"], tv["features.0.bias"])
    got = conv_valid(pad(pixels - OUR_MEAN_RGB[:, None, None]),
                     folded["conv1_1.weight"], folded["conv1_1.bias"])
    np.testing.assert_allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], rtol=1e-10, atol=1e-10)
    shift = OUR_MEAN_RGB - 255 * TV_MEAN  # about one grey level
    bound = np.abs(folded["conv1_1.weight"]).sum(axis=(1, 2, 3)) * np.abs(shift).max()
    assert np.all(np.abs(got - want) <= bound[:, None, None] + 1e-9)
    assert np.abs(got - want).max() > 1e-6  # the border really is approximate


def test_vgg16_mapping_errors():
    tv = expected("vgg16_tiny")
    with pytest.raises(ValueError, match=r"missing keys: \['features.28.bias'\]"):
        io.from_torchvision_vgg16({k: v for k, v in tv.items() if k != "features.28.bias"})
    with pytest.raises(ValueError, match="unexpected keys.*features.1.running_mean.*vgg16_bn"):
        io.from_torchvision_vgg16({**tv, "features.1.running_mean": np.zeros(4)})
    with pytest.raises(ValueError, match=r"classifier.0 .*\(F, 1568\)"):
        io.from_torchvision_vgg16({**tv, "classifier.0.weight": np.zeros((16, 1500), np.float32)})
    with pytest.raises(ValueError, match=r"features.5 \(conv2_1\)"):
        io.from_torchvision_vgg16({**tv, "features.5.weight": np.zeros((8, 5, 3, 3), np.float32)})


# --- FCN port import -----------------------------------------------------------------------

def test_fcn_port_mapping_is_identity_but_for_bgr():
    port = expected("fcn8s_port_tiny")
    ours = io.from_fcn_port(read_torch_state_dict(fixture("fcn8s_port_tiny.pt")))
    assert list(ours) == list(port)
    for k in port:
        if k != "conv1_1.weight":
            assert_same(ours[k], port[k])
    # the port feeds BGR - mean_bgr; we feed RGB - mean_rgb: same output from the flipped conv1_1
    rgb = np.random.default_rng(5).uniform(0, 255, (3, 5, 5))
    bgr_in = rgb[::-1] - OUR_MEAN_RGB[::-1, None, None]
    rgb_in = rgb - OUR_MEAN_RGB[:, None, None]
    want = conv_valid(bgr_in, port["conv1_1.weight"].astype(np.float64), port["conv1_1.bias"])
    got = conv_valid(rgb_in, ours["conv1_1.weight"].astype(np.float64), ours["conv1_1.bias"])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    unflipped = io.from_fcn_port(port, bgr_to_rgb=False)
    assert_same(unflipped["conv1_1.weight"], port["conv1_1.weight"])


def test_fcn_port_upscore_bias_and_errors():
    port = expected("fcn8s_port_tiny")
    with pytest.warns(UserWarning, match="dropping upscore8.bias"):
        ours = io.from_fcn_port({**port, "upscore8.bias": np.zeros(3, np.float32)})
    assert "upscore8.bias" not in ours
    with pytest.raises(ValueError, match="upscore8.bias is non-zero"):
        io.from_fcn_port({**port, "upscore8.bias": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="unexpected keys.*bn1.weight"):
        io.from_fcn_port({**port, "bn1.weight": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="missing keys.*score_fr.weight"):
        io.from_fcn_port({k: v for k, v in port.items() if k != "score_fr.weight"})
    with pytest.raises(ValueError, match="fc7.bias has shape"):
        io.from_fcn_port({**port, "fc7.bias": np.zeros(5, np.float32)})


def test_import_weights_detects_the_kind(tmp_path):
    tv = io.import_weights(fixture("vgg16_tiny.pt"))
    assert "fc6.weight" in tv and not any(k.startswith("features.") for k in tv)
    for k, v in io.from_torchvision_vgg16(expected("vgg16_tiny")).items():
        assert_same(tv[k], v)
    port = io.import_weights(fixture("fcn8s_port_tiny.pt"))
    assert "upscore8.weight" in port
    for k, v in io.import_weights(expected("fcn8s_port_tiny")).items():  # a dict works too
        assert_same(port[k], v)
    npz = tmp_path / "tv.npz"
    io.save(expected("vgg16_tiny"), npz)
    for k, v in io.import_weights(npz).items():
        assert_same(tv[k], v)
    ours = tmp_path / "ours.npz"  # minifcn's names in an .npz: RGB or BGR? refuse to guess
    io.save(expected("fcn8s_port_tiny"), ours)
    with pytest.raises(ValueError, match="ours.npz.*minifcn.io.load"):
        io.import_weights(ours)
    with pytest.raises(ValueError, match="unknown kind"):
        io.import_weights(npz, kind="caffe")
    with pytest.raises(ValueError, match="missing keys"):  # torchvision forced through the port
        io.import_weights(fixture("vgg16_tiny.pt"), kind="fcn_port")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        io.import_weights(tmp_path / "nope.pt")


# --- merge_state ---------------------------------------------------------------------------

def test_merge_state_substitutes_by_name_and_casts():
    model = {"conv1_1.weight": np.zeros((2, 3, 3, 3), np.float32),
             "conv1_1.bias": np.zeros(2, np.float32),
             "score_fr.weight": np.full((4, 2, 1, 1), 7, np.float32)}
    imported = {"conv1_1.weight": np.ones((2, 3, 3, 3)), "conv1_1.bias": np.arange(2.0)}

    class Model:
        def state_dict(self):
            return model

    merged = io.merge_state(Model(), imported)
    assert list(merged) == list(model)
    assert_same(merged["conv1_1.weight"], np.ones((2, 3, 3, 3), np.float32))
    assert_same(merged["conv1_1.bias"], np.arange(2, dtype=np.float32))
    assert_same(merged["score_fr.weight"], model["score_fr.weight"])
    assert np.all(model["conv1_1.weight"] == 0)  # the input is not modified


def test_merge_state_errors():
    model = {"conv1_1.weight": np.zeros((2, 3, 3, 3), np.float32),
             "conv1_1.bias": np.zeros(2, np.float32)}
    with pytest.raises(ValueError,
                       match=r"conv1_1.weight has shape \(4, 3, 3, 3\).*\(2, 3, 3, 3\)"):
        io.merge_state(model, {"conv1_1.weight": np.zeros((4, 3, 3, 3))})
    with pytest.raises(ValueError, match=r"does not have: \['fc6.weight', 'fc6.bias'\]"):
        io.merge_state(model, {"conv1_1.bias": np.zeros(2), "fc6.weight": np.zeros(1),
                               "fc6.bias": np.zeros(1)})
    with pytest.raises(TypeError, match="conv1_1.bias is complex128"):
        io.merge_state(model, {"conv1_1.bias": np.zeros(2, complex)})


def test_our_mean_is_the_data_pipelines_mean():
    # fold_normalisation is only right if it folds in the mean that minifcn.data subtracts
    from minifcn.data import MEAN_RGB

    assert io.MEAN_RGB == tuple(MEAN_RGB)
    np.testing.assert_allclose(io.MEAN_RGB, OUR_MEAN_RGB)


# ---------------------------------------------------------------- issue 31: one-line errors


def test_import_weights_refuses_an_empty_tensor_name_in_one_line(tmp_path):
    from _torchfiles import state_pickle, tensor, write_torch_zip

    path = tmp_path / "empty-name.pth"
    write_torch_zip(path, state_pickle([("", tensor("0", 2, 0, [2], [1])),
                                        ("features.0.bias", tensor("1", 2, 0, [2], [1]))]),
                    {"0": bytes(8), "1": bytes(8)})
    with pytest.raises(ValueError, match="holds a tensor with an empty name") as e:
        io.import_weights(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["vgg16.pth", "weights.npz"])
def test_import_weights_refuses_a_zip_of_a_newer_version_in_one_line(tmp_path, name):
    import zipfile

    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}.")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"PK\x01\x02")
    raw[at + 6] = 99  # the central directory's "version needed to extract": 9.9
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"uses a zip feature Python's zipfile cannot read "
                                         r"\(NotImplementedError: zip file version 9\.9\)") as e:
        io.import_weights(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_import_weights_names_a_folder_a_folder(tmp_path):
    folder = tmp_path / "vgg16.pth"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder, expected a weights file"):
        io.import_weights(folder)


def test_import_weights_names_the_file_whose_layers_do_not_fit(tmp_path):
    from _torchfiles import state_pickle, tensor, write_torch_zip

    path = tmp_path / "other-net.pth"
    write_torch_zip(path, state_pickle([("encoder.weight", tensor("0", 2, 0, [2], [1]))]),
                    {"0": bytes(8)})
    with pytest.raises(io.errors.WeightFileError,
                       match=r"import_weights: .*other-net\.pth: from_fcn_port: missing keys") as e:
        io.import_weights(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="^from_fcn_port: missing keys"):  # a dict: as it was
        io.import_weights({"encoder.weight": np.zeros(2)})
