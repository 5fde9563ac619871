"""Helpers that more than one test file needs (plain functions and constants, not fixtures)."""
import os
import struct
import tracemalloc

import numpy as np
import pytest

from minifcn import Tensor, export, models, no_grad

# ---------------------------------------------------------------- torch fixtures
# (tests/test_io*.py; the torch files the tests build by hand: tests/_torchfiles.py)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture(name):
    return os.path.join(FIXTURES, name)


def expected(stem):
    """{key: array} that torch gave for fixture ``stem``, in the file's key order."""
    with np.load(fixture("expected.npz")) as npz:
        return {k.split("/", 1)[1]: npz[k] for k in npz.files if k.startswith(stem + "/")}


def assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()  # bit-exact, NaN and -0.0 included


def assert_same_state(got, want):
    """The same keys in the same order, and each array the same to the bit (assert_same)."""
    assert list(got) == list(want)
    for k in want:
        assert_same(got[k], want[k])


# ---------------------------------------------------------------- damaged and hostile files
# (tests/test_io_npzfile.py, tests/test_io_torchfile_limits.py, tests/test_io_torchlegacy.py)

def refused(path, match, readers):
    """Each reader raises a ValueError matching ``match`` whose one-line message names the file."""
    for reader in readers:
        with pytest.raises(ValueError, match=match) as e:
            reader(path)
        message = str(e.value)
        assert str(path) in message and "\n" not in message, message
    return message


def peak_bytes(fn, *args, match=None):
    """The most memory Python and NumPy held at once while ``fn(*args)`` ran, which must raise a
    ValueError (matching ``match``)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def patch_central(raw, name, compress_size=None, file_size=None):
    """Rewrite the sizes the zip's central directory declares for record ``name``."""
    raw = bytearray(raw)
    at = raw.index(b"PK\x01\x02")  # the first central directory header
    while raw[at + 46: at + 46 + len(name)] != name.encode():
        at = raw.index(b"PK\x01\x02", at + 4)
    if compress_size is not None:
        raw[at + 20: at + 24] = struct.pack("<I", compress_size)
    if file_size is not None:
        raw[at + 24: at + 28] = struct.pack("<I", file_size)
    return bytes(raw)


# ---------------------------------------------------------------- datasets
# (tests/test_data_synthetic.py and tests/test_data_readers.py)

def check_interface(ds, n_class):
    assert ds.n_class == n_class and len(ds.class_names) == n_class
    assert all(isinstance(c, str) for c in ds.class_names)
    assert ds.ignore_index == 255 and isinstance(ds.name, str) and ds.name
    image, label = ds[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert label.dtype == np.int64 and label.shape == image.shape[:2]
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds[-len(ds) - 1]
    np.testing.assert_array_equal(ds[-1][1], ds[len(ds) - 1][1])


# ---------------------------------------------------------------- models
# (tests/test_models.py and tests/test_models_init.py)

TINY = 1 / 32  # 2-4-8-16-16 channels, fc 128
VGG = [("conv1_1", 64), ("conv1_2", 64), ("conv2_1", 128), ("conv2_2", 128), ("conv3_1", 256),
       ("conv3_2", 256), ("conv3_3", 256), ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512),
       ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)]


# ---------------------------------------------------------------- exported nets
# (tests/test_export.py, test_io_export.py, test_io_onnx.py and test_io_torchwrite.py)

NETS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
WIDTH, N_CLASS = 0.0625, 5  # 4-8-16-32-32 channels, fc 256

PORT_TRUNK = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
              "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7",
              "score_fr"]
# the port's state dict keys beyond the trunk (torchfcn/models/fcn32s.py, fcn16s.py, fcn8s.py)
PORT_HEAD = {
    "fcn32s": ["upscore.weight"],
    "fcn16s": ["score_pool4.weight", "score_pool4.bias", "upscore2.weight", "upscore16.weight"],
    "fcn8s": ["score_pool3.weight", "score_pool3.bias", "score_pool4.weight", "score_pool4.bias",
              "upscore2.weight", "upscore8.weight", "upscore_pool4.weight"],
}
PORT_HEAD["fcn8s-atonce"] = PORT_HEAD["fcn8s"]


def port_keys(name):
    return {f"{n}.{p}" for n in PORT_TRUNK for p in ("weight", "bias")} | set(PORT_HEAD[name])


def random_model(name, seed=0, **options):
    """A small FCN with every parameter random (score layers and upscores too: minifcn starts
    them at zero and bilinear, which would hide a mix-up), scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    model = models.build(name, n_class=N_CLASS, width=WIDTH, dropout=0.5, **options).eval()
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".bias"):
            state[key] = rng.normal(0, 0.1, value.shape)
        else:
            std = np.sqrt(2.0 / np.prod(value.shape[1:]))
            if key.startswith("upscore"):  # (C, C, k, k) at stride k/2: ~4 taps per output
                std = np.sqrt(1.0 / (4 * value.shape[0]))
            state[key] = rng.normal(0, std / (50 if key == "conv1_1.weight" else 1), value.shape)
    model.load_state_dict(state)
    return model


def scores(model, x):
    with no_grad():
        return model(Tensor(x)).data


def write_for_port(model, path, writer):
    """The port's state dict at ``path``: by minifcn's own writer (``to_pytorch``), or, as a
    reference, by torch.save of the same arrays (the test may import torch; minifcn never does)."""
    if writer == "by-hand":
        export.to_pytorch(model, path)
        return
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in export.pytorch_state_dict(model).items()}, path)
