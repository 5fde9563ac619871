"""minifcn.io.torchfile on hostile and damaged files: it must not exhaust memory, and every failure
must be a one-line ValueError naming the file (what ``train --init-from`` prints).

Files come from real torch (those tests skip without it) or from the hand encoder of
tests/_torchfiles.py plus the few opcodes written here, so the bytes are known exactly.
"""
import pickle
import struct
import zipfile

import numpy as np
import pytest

from minifcn.io.torchfile import BUDGET_SLACK, read_torch_file, read_torch_state_dict

from _helpers import patch_central, peak_bytes
from _torchfiles import READERS, Evil, refused, state_pickle, tensor, uni, write_torch_zip


# --- stride-0 (expanded) tensors, as torch writes them ----------------------------------------

def test_expanded_tensor_from_torch_is_refused_naming_file_and_key_before_allocating(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "expanded.pth"
    torch.save({"w": torch.zeros(1).expand(100000, 100000)}, path)
    # what torch wrote: the view's stride-0 geometry over its 1-element storage, in 1.5 kB
    with zipfile.ZipFile(path) as zf:
        assert [i.file_size for i in zf.infolist() if "/data/" in i.filename] == [4]
    assert path.stat().st_size < 4096
    refused(path, r"tensor 'w' of size \(100000, 100000\) would take 37\.3 GiB built from the "
                  r"4 B of storage 0 \(an expand\(\)ed, stride-0 view\?")
    nested = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 3, "state_dict": {"conv.weight": torch.ones(2).expand(9000, 9000, 2)}},
               nested)
    refused(nested, r"tensor 'state_dict/conv\.weight' of size \(9000, 9000, 2\)")
    # 114 MiB, which NumPy could allocate: refused before it is (the old reader built it)
    small_file = tmp_path / "small.pth"
    torch.save({"w": torch.zeros(1).expand(5000, 6000)}, small_file)
    assert peak_bytes(read_torch_state_dict, small_file) < 8 * 2**20
    refused(small_file, "tensor 'w'")


def test_small_expanded_tensor_is_built_as_torch_gives(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(6.0).reshape(3, 2)
    state = {"bias": base[:, 1:].expand(3, 4096), "row": base[1].expand(5, 2)}
    path = tmp_path / "small_expand.pth"
    torch.save(state, path)
    got = read_torch_state_dict(path)
    for key, t in state.items():
        np.testing.assert_array_equal(got[key], t.contiguous().numpy())
        assert got[key].flags.c_contiguous and got[key].flags.writeable
    got["bias"][0, 0] = -1.0  # its own memory, not a stride-0 view: one element changes
    assert np.count_nonzero(got["bias"] == -1.0) == 1


def test_many_tensors_built_from_one_storage_are_refused(tmp_path):
    raw = np.zeros(65536, "<f4").tobytes()  # 256 kB, viewed whole by each tensor
    def file_with(n):
        pkl = state_pickle([(f"t{i}", tensor("0", 65536, 0, (65536,), (1,))) for i in range(n)])
        return write_torch_zip(tmp_path / f"views{n}.pt", pkl, {"0": raw})
    got = read_torch_state_dict(file_with(10))  # 2.5 MiB of arrays from one storage: fine
    got["t0"][0] = 1.0
    assert got["t1"][0] == 0.0  # and each its own copy
    assert 300 * len(raw) > BUDGET_SLACK + 4 * len(raw) + 10**5  # what the next file asks
    refused(file_with(300), r"tensor 't\d+' of size \(65536,\) would take 256\.0 kB .*beyond "
                            r"what this reader builds from a 2\d\d\.\d kB file", READERS[:2])


def test_one_tensor_pickled_twice_comes_back_as_two_arrays(tmp_path):
    # BINPUT the tensor under 'a', BINGET it for 'b': the pickle's own sharing (tied weights)
    pkl = (b"\x80\x02}(" + uni("a") + tensor("0", 4, 0, (4,), (1,)) + b"q\x07"
           + uni("b") + b"h\x07u.")
    got = read_torch_state_dict(write_torch_zip(tmp_path / "tied.pt", pkl,
                                                {"0": np.arange(4, dtype="<f4").tobytes()}))
    got["a"][:] = 0
    np.testing.assert_array_equal(got["b"], np.arange(4, dtype=np.float32))


# --- sizes, strides, offsets and numels the file made up --------------------------------------

@pytest.mark.parametrize("numel, offset, size, stride, match", [
    (6, 0, (-1, 6), (6, 1), "bad geometry"),
    (6, 0, (2, 3), (-3, 1), "bad geometry"),
    (6, -1, (6,), (1,), "bad geometry"),
    (6, 0, (2, 3), (3,), "bad geometry"),
    (6, 0, (1,) * 65, (1,) * 65, "bad geometry"),
    (6, 0, (2**62,), (1,), r"runs past the end of storage 0 \(6 elements\)"),
    (6, 2**62, (1,), (1,), "runs past the end"),
    (6, 0, (2**20, 2**20), (0, 0), r"tensor 'w' of size \(1048576, 1048576\) would take 4\.0 TiB"),
    (6, 0, (0, 2**62, 2**62), (1, 1, 1), r"tensor 'w' of size \(0, 4611686018427387904"),
    (-1, 0, (6,), (1,), r"storage '0' holds 24 bytes, expected -1 elements"),
    (2**62, 0, (6,), (1,), r"storage '0' holds 24 bytes, expected 4611686018427387904 elements"),
])
def test_bad_sizes_in_the_pickle_are_refused_naming_the_tensor(tmp_path, numel, offset, size,
                                                              stride, match):
    pkl = state_pickle([("w", tensor("0", numel, offset, size, stride))])
    path = write_torch_zip(tmp_path / "geometry.pt", pkl, {"0": np.zeros(6, "<f4").tobytes()})
    refused(path, match)


def test_storage_record_shorter_than_its_numel_is_refused(tmp_path):
    pkl = state_pickle([("w", tensor("0", 7, 0, (7,), (1,)))])
    path = write_torch_zip(tmp_path / "short.pt", pkl, {"0": np.zeros(6, "<f4").tobytes()})
    refused(path, r"storage '0' holds 24 bytes, expected 7 elements of 4 bytes")


# --- the pickle itself -------------------------------------------------------------------------

@pytest.mark.parametrize("body, match", [
    (b"}r\xff\xff\xff\x7f.", r"memo slot 2147483647, beyond its own length"),  # LONG_BINPUT
    (b"\x8e" + struct.pack("<Q", 2**40) + b"xx.", "expected 1099511627776 bytes in a bytes8"),
    (b"\x8d" + struct.pack("<Q", 2**40) + b"xx.", "in a unicodestring8"),
    (b"\x8b" + struct.pack("<i", 2**31 - 1) + b"xx.", "long4"),
    (b"}(X\x01\x00\x00\x00a", "pickle exhausted before seeing STOP"),  # truncated
])
def test_pickle_that_would_make_the_unpickler_allocate_is_refused(tmp_path, body, match):
    path = write_torch_zip(tmp_path / "bomb.pt", b"\x80\x04" + body)
    refused(path, f"data.pkl .*{match}")
    assert peak_bytes(read_torch_file, path) < 8 * 2**20


def test_arbitrary_global_is_refused_as_a_value_error_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = write_torch_zip(tmp_path / "model.pt",
                           pickle.dumps({"w": Evil(f"touch {marker}")}, protocol=2))
    refused(path, r"refusing to load \w+\.system from .*model\.pt: only tensor state_dicts")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # what it always was, for callers catching that
        read_torch_file(path)


def test_deep_and_cyclic_containers(tmp_path):
    deep = write_torch_zip(tmp_path / "deep.pt", b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b".")
    refused(deep, "containers nested more than 100 deep", READERS[1:2])
    # a list holding itself and a tensor: each container visited once, the tensor built
    pkl = b"\x80\x02]q\x00(h\x00" + tensor("0", 2, 0, (2,), (1,)) + b"e."
    got = read_torch_file(write_torch_zip(tmp_path / "cycle.pt", pkl,
                                          {"0": np.ones(2, "<f4").tobytes()}))
    assert got[0] is got
    np.testing.assert_array_equal(got[1], np.ones(2, np.float32))


# --- the zip around it -------------------------------------------------------------------------

def _good_file(tmp_path):
    pkl = state_pickle([("w", tensor("0", 1000, 0, (1000,), (1,)))])
    path = write_torch_zip(tmp_path / "good.pt", pkl, {"0": np.arange(1000, dtype="<f4").tobytes()})
    return path.read_bytes()


def _flip_inside(raw, needle):
    raw = bytearray(raw)
    raw[raw.index(needle) + 10] ^= 0xFF
    return bytes(raw)


@pytest.mark.parametrize("damage, match", [
    (lambda raw: raw[: len(raw) // 2], "looks like a damaged or truncated zip"),
    (lambda raw: raw[:-10], "looks like a damaged or truncated zip"),
    (lambda raw: _flip_inside(raw, np.arange(1000, dtype="<f4").tobytes()[400:420]),
     r"BadZipFile: Bad CRC-32 for file 'archive/data/0'"),
    (lambda raw: _flip_inside(raw, b"_rebuild_tensor_v2"),
     "Bad CRC-32 for file 'archive/data.pkl'"),
    (lambda raw: patch_central(raw, "archive/data/0", compress_size=2**31),
     r"record 'archive/data/0' claims 2147483648 bytes, more than the whole file"),
    (lambda raw: patch_central(raw, "archive/data.pkl", 2**31, 2**31), "claims 2147483648 bytes"),
    (lambda raw: patch_central(raw, "archive/data/0", file_size=4000 - 4),
     r"storage '0' holds 3996 bytes, expected 1000 elements"),
])
def test_damaged_zip_is_a_one_line_value_error_naming_the_file(tmp_path, damage, match):
    path = tmp_path / "damaged.pt"
    path.write_bytes(damage(_good_file(tmp_path)))
    refused(path, match)


def test_compressed_storage_beyond_the_budget_is_refused_before_it_is_inflated(tmp_path):
    n = 25 * 2**20  # 100 MiB of zeros deflates to ~100 kB: beyond 4 x that + 64 MiB
    pkl = state_pickle([("w", tensor("0", n, 0, (n,), (1,)))])
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", b"little")
        zf.writestr("archive/data/0", bytes(4 * n), compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    refused(path, r"record 'archive/data/0' would take 100\.0 MiB, beyond what this reader")
    assert peak_bytes(read_torch_file, path) < 8 * 2**20
