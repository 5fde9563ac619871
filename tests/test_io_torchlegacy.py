"""minifcn.io.torchfile (via minifcn.io.torchlegacy) on torch's legacy (pre-1.6) stream format, the format
of torchvision's vgg16-397923af.pth and the PyTorch FCN port's *_from_caffe.pth files.

The committed fixtures (tests/fixtures/*legacy*.pt) were written by real torch with
``_use_new_zipfile_serialization=False`` (tests/fixtures/make_fixtures.py); expected.npz holds
what torch gave, so these tests need no torch. Storage views (view metadata), which torch no
longer writes, and damaged or hostile streams are assembled here by hand; tests that compare
with torch itself import it with pytest.importorskip.
"""
import os
import pickle
import shutil
import struct

import numpy as np
import pytest

from minifcn import io
from minifcn.io.torchfile import read_torch_file, read_torch_state_dict

from _helpers import assert_same, assert_same_state, expected, fixture, peak_bytes
from _torchfiles import (Evil, glob, num, reads_as_torch_gave, rebuild, refused, state_pickle,
                         tup, uni)

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}


def _pid(storage_type, key, numel, view=None, module="torch"):
    """('storage', type, key, 'cpu', numel, view metadata) as BINPERSID, as torch < 1.6 wrote."""
    meta = b"N" if view is None else tup([uni(view[0]), num(view[1]), num(view[2])])
    return tup([uni("storage"), glob(module, storage_type), uni(key), uni("cpu"),
                num(numel), meta]) + b"Q"


def legacy_stream(obj_pkl, storages, keys=None, magic=MAGIC, version=1001, sys_info=SYS_INFO,
                  counts=None):
    """A legacy stream: the three bookkeeping pickles, the object pickle, the key list, then per
    key its element count (little-endian int64) and bytes. ``storages``: {key: little-endian
    array}; ``keys``/``counts`` override what is written, to damage it; a bytes argument is
    written as it is (a hand-made pickle)."""
    keys = list(storages) if keys is None else keys
    counts = counts or {}
    head = b"".join(p if isinstance(p, bytes) else pickle.dumps(p, protocol=2)
                    for p in (magic, version, sys_info))
    tail = keys if isinstance(keys, bytes) else pickle.dumps(keys, protocol=2)
    data = b"".join(struct.pack("<q", counts.get(k, a.size)) + a.tobytes()
                    for k, a in storages.items())
    return head + obj_pkl + tail + data


def write(path, raw):
    path.write_bytes(raw)
    return path


ROOT = (np.arange(12) * 0.25 - 1).astype("<f4")


def _one_tensor_file(tmp_path, **damage):
    pkl = state_pickle([("w", rebuild(_pid("FloatStorage", "7", 12), 0, (12,), (1,)))])
    return write(tmp_path / "legacy.pth", legacy_stream(pkl, {"7": ROOT}, **damage))


# --- the committed fixtures (no torch needed) ------------------------------------------------

@pytest.mark.parametrize("stem, want", [("legacy_tiny", "legacy_tiny"),
                                        ("vgg16_tiny_legacy", "vgg16_tiny")])
def test_legacy_fixture_matches_what_torch_gave(stem, want):
    reads_as_torch_gave(stem + ".pt", want)


def test_legacy_views_of_one_storage_at_offsets_and_strides_are_right_and_independent():
    got = read_torch_state_dict(fixture("legacy_tiny.pt"))
    buf = np.arange(24.0, dtype=np.float32).reshape(4, 6) / 8  # what make_fixtures.py viewed
    assert_same(got["shared.rows"], buf[1:3].copy())
    assert_same(got["shared.cols"], buf[:, 1::2].T.copy())
    longs = np.arange(-6, 6, dtype=np.int64) * 10**12
    assert_same(got["i64.head"], longs[:4].reshape(2, 2))
    assert_same(got["i64.tail"], longs[7:])
    assert_same(got["u8"], np.array([[0, 7, 128], [200, 254, 255]], np.uint8))
    got["shared.rows"][:] = 0  # each its own copy, not a view of the file or of the other
    assert got["shared.cols"][0, 1] == buf[1, 1]


def test_legacy_torchvision_vgg16_imports_as_the_zip_file_of_the_same_weights():
    from_legacy = io.import_weights(fixture("vgg16_tiny_legacy.pt"))
    from_zip = io.import_weights(fixture("vgg16_tiny.pt"))
    assert "conv1_1.weight" in from_legacy
    assert_same_state(from_legacy, from_zip)


def test_format_is_told_by_the_bytes_not_the_name(tmp_path):
    as_zip = shutil.copy(fixture("legacy_tiny.pt"), tmp_path / "weights.zip")
    as_legacy = shutil.copy(fixture("dtypes_tiny.pt"), tmp_path / "vgg16-397923af.pth")
    assert_same(read_torch_state_dict(as_zip)["u8"], expected("legacy_tiny")["u8"])
    assert_same(read_torch_state_dict(as_legacy)["u8"], expected("dtypes_tiny")["u8"])


# --- hand-built streams: storage views and Python 2 strings -----------------------------------

def _views_file(tmp_path):
    """Root storage '7' (12 floats); view 'v' = root[2:10], viewed by two tensors (one strided);
    view 'u' = root[9:12]; and the root itself."""
    view_v, view_u = ("v", 2, 8), ("u", 9, 3)
    pkl = state_pickle([
        ("a", rebuild(_pid("FloatStorage", "7", 12, view_v), 1, (2, 3), (1, 2))),
        ("b", rebuild(_pid("FloatStorage", "7", 12, view_v), 6, (2,), (1,))),
        ("c", rebuild(_pid("FloatStorage", "7", 12, view_u), 0, (3,), (1,))),
        ("root", rebuild(_pid("FloatStorage", "7", 12), 0, (3, 4), (4, 1))),
    ])
    return write(tmp_path / "views.pth", legacy_stream(pkl, {"7": ROOT}))


def test_storage_views_are_sliced_from_their_root_storage(tmp_path):
    got = read_torch_state_dict(_views_file(tmp_path))
    v = ROOT[2:10]
    assert_same(got["a"], np.array([[v[1 + r + 2 * c] for c in range(3)] for r in range(2)],
                                   np.float32))
    assert_same(got["b"], v[6:8].astype(np.float32))
    assert_same(got["c"], ROOT[9:12].astype(np.float32))
    assert_same(got["root"], ROOT.reshape(3, 4).astype(np.float32))


def test_python2_pre_0_4_file_with_cuda_storage_is_read(tmp_path):
    def py2(s):  # SHORT_BINSTRING: a Python 2 str, bytes to Python 3 unless decoded
        return b"U" + bytes([len(s)]) + s.encode()
    pid = (b"(" + py2("storage") + glob("torch.cuda", "LongStorage") + py2("140") + py2("cuda:0")
           + num(3) + b"Nt" + b"Q")
    # torch < 0.4 (2017): _rebuild_tensor(storage, offset, size, stride), in an OrderedDict
    old_rebuild = (glob("torch._utils", "_rebuild_tensor")
                   + tup([pid, num(0), tup([num(3)]), tup([num(1)])]) + b"R")
    pkl = (b"\x80\x02" + glob("collections", "OrderedDict") + b"]" + py2("conv1_1.bias")
           + old_rebuild + b"\x86a\x85R.")
    raw = legacy_stream(pkl, {"140": np.array([5, -6, 7], "<i8")},
                        keys=b"\x80\x02](" + py2("140") + b"e.")
    got = read_torch_state_dict(write(tmp_path / "py2.pth", raw))
    assert list(got) == ["conv1_1.bias"]
    assert_same(got["conv1_1.bias"], np.array([5, -6, 7], np.int64))


# --- hostile and damaged streams ---------------------------------------------------------------

MARKER_ENV = "MINIFCN_TEST_MARKER"


def leave_marker():
    """A harmless stand-in for an attacker's payload: if it ever runs, the test sees its file."""
    open(os.environ[MARKER_ENV], "w").close()


class CallsMarker:
    def __reduce__(self):
        return (leave_marker, ())


@pytest.mark.parametrize("where", ["magic", "sys_info", "object", "nested", "keys"])
@pytest.mark.parametrize("payload", ["os.system", "marker function"])
def test_legacy_pickle_calling_code_is_refused_and_never_runs(tmp_path, monkeypatch, where,
                                                             payload):
    marker = tmp_path / "MARKER"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    trap = Evil(f"touch {marker}") if payload == "os.system" else CallsMarker()
    bad = pickle.dumps(trap if where != "nested" else {"w": 1.0, "x": [trap]}, protocol=2)
    ok = state_pickle([("w", rebuild(_pid("FloatStorage", "7", 12), 0, (12,), (1,)))])
    raw = legacy_stream(bad if where in ("object", "nested") else ok, {"7": ROOT},
                        magic=bad if where == "magic" else MAGIC,
                        sys_info=bad if where == "sys_info" else SYS_INFO,
                        keys=bad if where == "keys" else None)
    path = write(tmp_path / "model.pth", raw)
    name = r"\w+\.system" if payload == "os.system" else r"test_io_torchlegacy\.leave_marker"
    refused(path, rf"refusing to load {name} from .*model\.pth: only tensor state_dicts")
    assert not marker.exists()


def _bomb(opcodes):
    return b"\x80\x02" + opcodes


@pytest.mark.parametrize("damage, match", [
    (dict(magic=42), r"is a pickle, not a torch.save file \(expected torch's magic number "
                     r"0x1950a86a20f9469cfc6c first, found 42\)"),
    (dict(version=1000), "legacy format version 1000, expected 1001"),
    (dict(counts={"7": 11}), r"storage '7' holds 11 elements, the pickle says 12"),
    (dict(keys=[]), r"storage '7' has no data \(it is not in the storage key list\)"),
    (dict(keys=["7", "8"]), r"names storages the pickle does not use .*unused: \['8'\]"),
    (dict(keys=["7", "7"]), "or names one twice"),
    (dict(keys={"7": 1}), r"storage key list is \{'7': 1\}, expected a list of strings"),
    (dict(sys_info=_bomb(b"\x8e" + struct.pack("<Q", 2**40) + b"xx.")),
     "the sys_info pickle is damaged .*expected 1099511627776 bytes in a bytes8"),
    (dict(sys_info=_bomb(b"}r\xff\xff\xff\x7f.")), r"the sys_info pickle asks for memo slot "
                                                   r"2147483647, beyond its own length"),
])
def test_damaged_legacy_stream_is_a_one_line_error_naming_the_file(tmp_path, damage, match):
    refused(_one_tensor_file(tmp_path, **damage), match)


@pytest.mark.parametrize("cut, match", [
    (4 * 12 + 3, r"is truncated: storage '7''s element count is missing"),
    (4 * 5, r"is truncated: storage '7' needs 48 bytes, 28 remain"),
    (4 * 12 + 8 + 3, "the storage key list is damaged"),
])
def test_truncated_legacy_stream_is_refused(tmp_path, cut, match):
    path = _one_tensor_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-cut])
    refused(path, match)


@pytest.mark.parametrize("pid, geometry, match", [
    (_pid("FloatStorage", "7", 2**40), (0, (1,), (1,)),
     r"storage '7' claims 1099511627776 elements, more than the whole file holds"),
    (_pid("FloatStorage", "7", 12, ("v", 8, 5)), (0, (1,), (1,)),
     r"storage view \('v', 8, 5\) of storage '7' \(48 bytes\) is not \(key, offset, size\)"),
    (_pid("FloatStorage", "7", 12, ("v", -1, 2)), (0, (1,), (1,)), "storage view"),
    (_pid("FloatStorage", "7", 12, ("7", 0, 2)), (0, (1,), (1,)),
     "names both a storage and a view"),
    (_pid("FloatStorage", "7", 12, ("v", 2, 8)), (1, (2, 4), (4, 1)),
     r"tensor 'w' \(offset 1, size \(2, 4\), stride \(4, 1\)\) runs past the end of storage v "
     r"\(8 elements\)"),
    (_pid("FloatStorage", "7", 12), (0, (4, 4), (4, 1)), "runs past the end of storage 7"),
    (_pid("UntypedStorage", "7", 12), (0, (1,), (1,)), "is a UntypedStorage, expected a typed"),
    (tup([uni("module"), glob("torch", "FloatStorage"), b"N", b"N"]) + b"Q", (0, (1,), (1,)),
     r"holds a pickled nn.Module \(torch.save\(model\)\), not a state_dict"),
    (tup([uni("storage"), uni("7")]) + b"Q", (0, (1,), (1,)), "unexpected persistent id"),
])
def test_bad_storages_and_views_in_the_pickle_are_refused(tmp_path, pid, geometry, match):
    pkl = state_pickle([("w", rebuild(pid, *geometry))])
    path = write(tmp_path / "bad.pth", legacy_stream(pkl, {"7": ROOT}))
    refused(path, match)


def test_legacy_pickle_that_would_make_the_unpickler_allocate_is_refused(tmp_path):
    obj = b"\x80\x02}r\xff\xff\xff\x7f."  # LONG_BINPUT 2**31 - 1: a 16 GiB memo table
    path = write(tmp_path / "bomb.pth", legacy_stream(obj, {}))
    refused(path, r"the object pickle asks for memo slot 2147483647, beyond its own length")


# --- compared with torch itself (needs torch) ---------------------------------------------------

def _torch_arrays(torch, path):
    state = torch.load(path, weights_only=True)
    state = state.get("state_dict", state)
    return {k: (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()
            for k, t in state.items()}


@pytest.mark.parametrize("name", ["legacy_tiny.pt", "vgg16_tiny_legacy.pt"])
def test_legacy_fixture_agrees_with_torch_load(name):
    torch = pytest.importorskip("torch")
    want = _torch_arrays(torch, fixture(name))
    assert_same_state(read_torch_state_dict(fixture(name)), want)


def test_hand_built_storage_views_agree_with_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    path = _views_file(tmp_path)
    assert_same_state(read_torch_state_dict(path), _torch_arrays(torch, path))


def test_fresh_legacy_save_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 5, generator=g, dtype=torch.float64)
    state = {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g), "t": base.t(),
        "slice": base[1:5:2, 1:], "bf": torch.randn(7, generator=g).bfloat16(),
        "half": torch.randn(3, generator=g).half(),
        "steps": torch.randint(-10**12, 10**12, (3, 2), generator=g),
        "mask": torch.rand(5, generator=g) > 0.5, "bytes": torch.arange(250, 256).to(torch.uint8),
        "c": torch.randn(2, dtype=torch.complex128, generator=g),
        "p": torch.nn.Parameter(torch.ones(2)),
    }
    path = tmp_path / "fresh.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    want, got = _torch_arrays(torch, path), read_torch_state_dict(path)
    assert list(got) == list(state)
    for k in want:
        assert_same(got[k], want[k])
    # a checkpoint wrapper and nn.DataParallel's prefix, as in the zip format
    torch.save({"epoch": 2, "state_dict": {"module.w": base}}, path,
               _use_new_zipfile_serialization=False)
    assert list(read_torch_state_dict(path)) == ["w"]
    assert read_torch_file(path)["epoch"] == 2


def test_legacy_expanded_tensor_is_refused_before_allocating(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "expanded.pth"
    torch.save({"w": torch.zeros(1).expand(100000, 100000)}, path,
               _use_new_zipfile_serialization=False)
    assert path.stat().st_size < 4096
    refused(path, r"tensor 'w' of size \(100000, 100000\) would take 37\.3 GiB built from the "
                  r"4 B of storage \d+ \(an expand\(\)ed, stride-0 view\?")
    assert peak_bytes(read_torch_state_dict, path) < 8 * 2**20
