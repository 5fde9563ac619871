"""Tests for minifcn.io.torchfile, the reader of torch.save files that needs no torch.

The torch files under tests/fixtures/ were made by tests/fixtures/make_fixtures.py with real
torch; expected.npz holds what torch itself gave for each tensor, so these tests need no torch.
Tests that do use torch import it with pytest.importorskip.
"""
import pickle
import tarfile

import numpy as np
import pytest

from minifcn import io
from minifcn.io.torchfile import read_torch_file, read_torch_state_dict

from _helpers import assert_same, fixture
from _torchfiles import (Evil, glob, reads_as_torch_gave, state_pickle, tensor, tup, uni,
                         write_torch_zip)


# --- reading torch files (committed fixtures, no torch needed) ------------------------------

@pytest.mark.parametrize("stem", ["vgg16_tiny", "fcn8s_port_tiny", "dtypes_tiny"])
def test_torch_fixture_matches_what_torch_gave(stem):
    reads_as_torch_gave(stem + ".pt", stem)


def test_torch_fixture_views_and_wrapper():
    got = read_torch_state_dict(fixture("vgg16_tiny.pt"))
    # two views of one storage come back as independent arrays
    got["features.28.bias"][:] = 0
    assert np.any(got["classifier.0.bias"] != 0)
    whole = read_torch_file(fixture("fcn8s_port_tiny.pt"))
    assert whole["epoch"] == 3 and whole["arch"] == "FCN8s" and whole["best_mean_iu"] == 0.625
    unwrapped = read_torch_state_dict(fixture("fcn8s_port_tiny.pt"))
    assert list(whole["model_state_dict"]) == list(unwrapped)


@pytest.mark.parametrize("order", ["little", "big"])
def test_hand_built_file_with_either_byte_order(tmp_path, order):
    e = "<" if order == "little" else ">"
    f32 = (np.arange(12) * 1.5 - 4).astype(e + "f4")
    i64 = ((np.arange(4) - 2) * 10**15).astype(e + "i8")
    # w: a transposed view at offset 2; n: a plain int64 vector
    pkl = state_pickle([("w", tensor("0", 12, 2, (2, 3), (1, 4))),
                        ("n", tensor("1", 4, 0, (4,), (1,), "LongStorage"))])
    storages = {"0": f32.tobytes(), "1": i64.tobytes()}
    got = read_torch_state_dict(write_torch_zip(tmp_path / "m.pt", pkl, storages, order.encode()))
    want_w = np.array([[f32[2 + r + 4 * c] for c in range(3)] for r in range(2)])
    assert_same(got["w"], want_w.astype(np.float32))
    assert_same(got["n"], i64.astype(np.int64))


def test_hand_built_files_with_bad_geometry_are_refused(tmp_path):
    raw = np.zeros(6, "<f4").tobytes()
    past_end = state_pickle([("w", tensor("0", 6, 1, (2, 3), (3, 1)))])
    with pytest.raises(ValueError, match="runs past the end"):
        read_torch_state_dict(write_torch_zip(tmp_path / "a.pt", past_end, {"0": raw}))
    wrong_count = state_pickle([("w", tensor("0", 7, 0, (6,), (1,)))])
    with pytest.raises(ValueError, match="holds 24 bytes"):
        read_torch_state_dict(write_torch_zip(tmp_path / "b.pt", wrong_count, {"0": raw}))
    no_record = state_pickle([("w", tensor("9", 6, 0, (6,), (1,)))])
    with pytest.raises(ValueError, match="missing"):
        read_torch_state_dict(write_torch_zip(tmp_path / "c.pt", no_record, {"0": raw}))


@pytest.mark.parametrize("nested", [False, True])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path, nested):
    marker = tmp_path / "pwned"
    evil = Evil(f"echo pwned > {marker}")
    obj = {"conv1_1.weight": 1.0, "trap": [evil]} if nested else evil
    path = write_torch_zip(tmp_path / "model.pt", pickle.dumps(obj, protocol=2))
    for reader in (read_torch_state_dict, read_torch_file, io.import_weights):
        with pytest.raises(ValueError,
                           match=r"refusing to load \w+\.system from .*model\.pt"):
            reader(path)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("torch", "load"),
                                         ("torch._utils", "_rebuild_qtensor"), ("numpy", "dtype")])
def test_other_globals_are_refused(tmp_path, module, name):
    pkl = b"\x80\x02" + glob(module, name) + tup([uni("1+1")]) + b"R."
    with pytest.raises(ValueError, match=f"refusing to load {module}.{name}"):
        read_torch_file(write_torch_zip(tmp_path / "m.pt", pkl))


def test_not_torch_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        read_torch_state_dict(tmp_path / "nothing.pt")
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"rest")  # legacy magic
    with pytest.raises(ValueError, match="legacy.pt: the protocol version pickle is damaged"):
        read_torch_state_dict(legacy)
    with tarfile.open(tmp_path / "old.tar", "w") as tf:
        tf.add(legacy, arcname="sys_info")
    with pytest.raises(ValueError, match=r"old.tar is in torch's legacy tar format .*re-save"):
        read_torch_state_dict(tmp_path / "old.tar")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello")
    with pytest.raises(ValueError, match="junk.pt is not a file written by torch.save"):
        read_torch_state_dict(junk)
    npz = tmp_path / "w.npz"
    io.save({"a": np.zeros(2)}, npz)
    with pytest.raises(ValueError, match="not a torch.save archive"):
        read_torch_state_dict(npz)
    listy = write_torch_zip(tmp_path / "list.pt", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(ValueError, match="holds a list"):
        read_torch_state_dict(listy)
    truncated = write_torch_zip(tmp_path / "cut.pt", pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(ValueError, match="cut.pt"):
        read_torch_state_dict(truncated)
    mixed = write_torch_zip(tmp_path / "mixed.pt", pickle.dumps({"a": 1, "b": "x"}, protocol=2))
    with pytest.raises(ValueError, match="not a flat state_dict"):
        read_torch_state_dict(mixed)


# --- reading torch files written here and now (needs torch) ---------------------------------

def test_fresh_torch_save_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=g, dtype=torch.float64)
    x = torch.randn(4, dtype=torch.complex64, generator=g)
    state = {
        "a.weight": torch.randn(8, 3, 3, 3, generator=g),
        "a.bias": torch.randn(8, generator=g).half(),
        "t": base.t(), "slice": base[1:5:2, 1:], "bf": torch.randn(7, generator=g).bfloat16(),
        "steps": torch.randint(-10**12, 10**12, (3, 2), generator=g),
        "conj": x.conj(), "p": torch.nn.Parameter(torch.ones(2)),
    }
    path = tmp_path / "fresh.pt"
    torch.save(state, path)
    got = read_torch_state_dict(path)
    assert list(got) == list(state)
    for k, t in state.items():
        t = t.detach().resolve_conj()
        assert_same(got[k], (t.float() if t.dtype == torch.bfloat16 else t).numpy())
    neg = x.conj().imag  # a lazily negated view
    torch.save({"n": neg}, path)
    assert_same(read_torch_state_dict(path)["n"], neg.resolve_neg().numpy())
    # DataParallel prefix and a checkpoint wrapper, and a file without the byteorder record
    torch.save({"epoch": 1, "state_dict": {"module.w": base}}, path, _disable_byteorder_record=True)
    assert list(read_torch_state_dict(path)) == ["w"]


def test_hand_built_big_endian_file_agrees_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    f32 = np.arange(12, dtype=">f4") / 3
    pkl = state_pickle([("w", tensor("0", 12, 2, (2, 3), (1, 4)))])
    path = write_torch_zip(tmp_path / "m.pt", pkl, {"0": f32.tobytes()}, b"big")
    assert_same(read_torch_state_dict(path)["w"], torch.load(path, weights_only=True)["w"].numpy())
