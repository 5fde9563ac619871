"""Tests for minifcn.io's own format (minifcn.io.checkpoint): .npz weights and checkpoints, the
atomic writes behind them, and .safetensors chosen by the file name.

The torch files under tests/fixtures/ were made by tests/fixtures/make_fixtures.py with real
torch. The importers that rename other nets' weights into minifcn's: tests/test_io_importers.py;
the torch-file reader itself (minifcn.io.torchfile): tests/test_io_torchfile.py.
"""
import os

import numpy as np
import pytest

from minifcn import io

from _helpers import assert_same, assert_same_state, fixture


# --- .npz save / load ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npz_round_trip_is_exact(tmp_path, dtype):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    info = np.finfo(dtype)  # the extremes a finite weight can take (NaN and inf: refused)
    w.flat[:5] = [-0.0, info.max, -info.max, info.tiny, info.smallest_subnormal]
    state = {"conv1_1.weight": w, "conv1_1.bias": rng.standard_normal(4).astype(dtype),
             "scalar": np.array(3, dtype=dtype), "steps": np.arange(5, dtype=np.int64),
             "file": np.ones(2, dtype), "allow_pickle": np.zeros(1, dtype),  # np.savez's own kwargs
             "transposed": rng.standard_normal((3, 5)).astype(dtype).T}
    path = tmp_path / "w.npz"
    io.save(state, path)
    back = io.load(path)
    assert list(back) == list(state)
    for k in state:
        assert_same(back[k], np.array(state[k], order="C"))


def test_save_takes_a_model_and_tensor_like_values_and_keeps_the_name(tmp_path):
    class Holder:  # what a Parameter looks like to save(): an array in .data
        def __init__(self, data):
            self.data = data

    class Model:
        def state_dict(self):
            return {"a.weight": Holder(np.full((2, 2), 1.5, np.float32)), "a.bias": np.zeros(2)}

    path = tmp_path / "weights.bin"  # no .npz appended
    io.save(Model(), path)
    assert os.listdir(tmp_path) == ["weights.bin"]
    back = io.load(path)
    assert_same(back["a.weight"], np.full((2, 2), 1.5, np.float32))
    assert_same(back["a.bias"], np.zeros(2))


def test_save_rejects_bad_states(tmp_path):
    with pytest.raises(TypeError, match="save"):
        io.save([1, 2], tmp_path / "x.npz")
    with pytest.raises(TypeError, match="'bad'"):
        io.save({"bad": object()}, tmp_path / "x.npz")
    with pytest.raises(ValueError, match="__meta__"):
        io.save({"__meta__": np.zeros(1)}, tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.save({"a": np.zeros(1)}, tmp_path / "no" / "x.npz")
    assert os.listdir(tmp_path) == []


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        io.load(missing)
    text = tmp_path / "notes.npz"
    text.write_text("not a zip")
    with pytest.raises(ValueError, match="notes.npz.*not an .npz"):
        io.load(text)
    with pytest.raises(ValueError, match="PyTorch file"):
        io.load(fixture("vgg16_tiny.pt"))
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="objects.npz"):
        io.load(pickled)


# --- atomic writes of .npz (atomic_path itself: tests/test_io_atomic.py) --------------------

def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    old = {"a": np.arange(4.0)}
    io.save(old, path)
    real_write = np.lib.format.write_array
    calls = []

    def write_then_die(f, array, **kw):
        calls.append(1)
        if len(calls) == 2:  # the second array: half the bytes out, then the "crash"
            f.write(b"\x93NUMPY partial")
            raise OSError("disk full")
        real_write(f, array, **kw)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_die)
    with pytest.raises(OSError, match="disk full"):
        io.save({"a": np.ones(1000), "b": np.ones(1000)}, path)
    assert len(calls) == 2
    assert os.listdir(tmp_path) == ["w.npz"]
    assert_same(io.load(path)["a"], old["a"])


def test_checkpoint_round_trip(tmp_path):
    path = tmp_path / "ckpt.npz"
    arrays = {"conv1_1.weight": np.ones((2, 3, 3, 3), np.float32),
              "momentum.conv1_1.weight": np.zeros(3)}
    meta = {"step": 1200, "lr": 1e-4, "config": {"model": "fcn8s", "sizes": (64, 96)}, "best": None,
            "note": "ünïcode"}
    io.save_checkpoint(path, arrays, meta)
    back, meta_back = io.load_checkpoint(path)
    assert_same_state(back, arrays)
    # JSON turns the tuple into a list
    assert meta_back == {**meta, "config": {"model": "fcn8s", "sizes": [64, 96]}}
    assert list(io.load(path)) == list(arrays)  # plain load leaves the metadata out
    with np.load(path, allow_pickle=False) as npz:  # readable without pickle
        assert npz["__meta__"].shape == ()


def test_checkpoint_errors(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        io.save_checkpoint(tmp_path / "c.npz", {}, {"bad": object()})
    with pytest.raises(TypeError, match="meta must be a dict"):
        io.save_checkpoint(tmp_path / "c.npz", {}, [1])
    with pytest.raises(ValueError, match="reserved"):
        io.save_checkpoint(tmp_path / "c.npz", {"__meta__": np.zeros(1)}, {})
    assert os.listdir(tmp_path) == []
    io.save({"a": np.zeros(1)}, tmp_path / "plain.npz")
    with pytest.raises(ValueError, match="plain.npz.*no '__meta__'"):
        io.load_checkpoint(tmp_path / "plain.npz")


def test_io_save_and_load_choose_safetensors_by_the_file_name(tmp_path):
    import minifcn

    minifcn.manual_seed(0)
    model = minifcn.models.fcn8s(n_class=3, width=0.0625)
    path = tmp_path / "net.safetensors"
    io.save(model, path)
    assert path.read_bytes()[8:9] == b"{"  # an 8-byte header length, then the JSON header
    back = io.load(path)
    state = model.state_dict()
    assert list(back) == list(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k], err_msg=k)
    safetensors = pytest.importorskip("safetensors.numpy")
    theirs = safetensors.load_file(str(path))
    assert all(np.array_equal(theirs[k], state[k]) for k in state)
