"""minifcn.io.npzfile, the checked .npz reader behind io.load and io.load_checkpoint, on damaged
files: every failure is a one-line ValueError naming the file, and nothing is allocated that the
file does not hold. (Killed saves: tests/test_io_atomic.py.)

The .npz files are written by numpy (or by zipfile here, byte by byte, for the damaged ones).
"""
import io as _io
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from minifcn import io

from _helpers import patch_central, peak_bytes, refused

LOADERS = (io.load, io.load_checkpoint)


def npy_bytes(array=None, header=None, data=b""):
    """An .npy record: numpy's own for ``array``, or ``header`` (a dict) followed by ``data``."""
    buf = _io.BytesIO()
    if array is not None:
        np.lib.format.write_array(buf, array, allow_pickle=False)
    else:
        np.lib.format.write_array_header_1_0(buf, header)
        buf.write(data)
    return buf.getvalue()


def write_zip(path, members, compress_type=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compress_type) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    return path


def _flip(raw, at):
    raw = bytearray(raw)
    raw[at] ^= 0xFF
    return bytes(raw)


def np_savez_bytes(compressed=False):
    """An .npz by numpy, with a checkpoint's __meta__ record last (so that load_checkpoint, which
    looks for it before it unpacks anything, goes on to unpack the damaged record too)."""
    buf = _io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, a=np.arange(1000.0), b=np.ones(7),
                                                      __meta__=np.array("{}"))
    return buf.getvalue()


HUGE = {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**6)}


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(np_savez_bytes()[:300]), "is not an .npz file"),
    (lambda p: p.write_bytes(_flip(np_savez_bytes(), 200)),
     r"is a damaged \.npz \(zipfile\.BadZipFile: Bad CRC-32"),
    (lambda p: p.write_bytes(_flip(np_savez_bytes(compressed=True), 120)),
     r"is a damaged \.npz \(zlib\.error: Error -3 while decompressing"),
    (lambda p: write_zip(p, {"a.npy": npy_bytes(header=HUGE, data=bytes(80))}),
     r"a\.npy says shape \(10000000, 1000000\) float64 \(80000000000000 bytes\) but holds 80"),
    (lambda p: write_zip(p, {"a.npy": npy_bytes(header=HUGE, data=bytes(80))},
                         zipfile.ZIP_DEFLATED), "a.npy says shape"),
    (lambda p: write_zip(p, {"a.npy": b"garbage, not an array"}),
     r"a\.npy is not an \.npy array \(the magic string is not correct"),
    (lambda p: write_zip(p, {"a.npy": npy_bytes(np.arange(3.0))[:-5]}), r"a\.npy says shape"),
    (lambda p: write_zip(p, {"a.npy": npy_bytes(np.arange(3.0))}, zipfile.ZIP_BZIP2),
     "compression method 12; expected stored or deflated"),
    (lambda p: p.write_bytes(patch_central(
        write_zip(p, {"a.npy": npy_bytes(np.zeros(10**5))}, zipfile.ZIP_DEFLATED).read_bytes(),
        "a.npy", file_size=2**32 - 1)), "claims 4294967295 bytes from"),
])
def test_damaged_npz_is_a_one_line_value_error_naming_the_file(tmp_path, make, match):
    path = tmp_path / "weights.npz"
    make(path)
    refused(path, match, LOADERS)


def test_npz_header_asking_for_terabytes_is_refused_before_allocating(tmp_path):
    path = write_zip(tmp_path / "huge.npz", {"a.npy": npy_bytes(header=HUGE, data=bytes(80))})
    assert peak_bytes(io.load, path, match="huge.npz") < 8 * 2**20


def test_damaged_checkpoint_metadata_is_a_one_line_value_error(tmp_path):
    for text, name in (("{not json", "bad_json"), ("[1, 2]", "a_list")):
        path = write_zip(tmp_path / f"{name}.npz", {"w.npy": npy_bytes(np.zeros(2)),
                                                     "__meta__.npy": npy_bytes(np.array(text))})
        refused(path, r"'__meta__' record is not the JSON text of a dict", (io.load_checkpoint,))
    path = write_zip(tmp_path / "numbers.npz", {"__meta__.npy": npy_bytes(np.zeros(3))})
    refused(path, "'__meta__' record is not", (io.load_checkpoint,))


def test_import_weights_on_a_zip_with_a_damaged_directory(tmp_path):
    path = tmp_path / "vgg16.pth"
    write_zip(path, {"archive/data.pkl": b"\x80\x02}.", "archive/byteorder": b"little"})
    raw = path.read_bytes().replace(b"PK\x01\x02", b"PK\x01\x09", 1)  # the end record is intact
    path.write_bytes(raw)
    assert zipfile.is_zipfile(path)
    refused(path, "cannot be read as a torch.save file", (io.import_weights,))


# ---------------------------------------------------------------- issue 31: a damaged directory,
# a deflate bomb, the records a checkpoint needs

def savez_33(path):
    """np.savez of 33 arrays (as in the issue), __meta__ last; returns the arrays."""
    arrays = {f"w{i:02d}": np.full(i + 1, float(i)) for i in range(32)}
    np.savez(path, **arrays, __meta__=np.array("{}"))
    return arrays


def central_entries(raw):
    """[(start, end)] of each central directory entry, found by its signature and lengths."""
    out, at = [], raw.index(b"PK\x01\x02")
    while raw[at: at + 4] == b"PK\x01\x02":
        name, extra, comment = struct.unpack("<HHH", raw[at + 28: at + 34])
        end = at + 46 + name + extra + comment
        out.append((at, end))
        at = end
    return out


def without_entry(raw, k):
    """The zip with central directory entry ``k`` cut out and the end record's count and
    directory size made to agree: a well-formed zip that no longer lists one record."""
    start, end = central_entries(raw)[k]
    raw = raw[:start] + raw[end:]
    eocd = raw.rindex(b"PK\x05\x06")
    count, count_all, size = struct.unpack("<HHI", raw[eocd + 8: eocd + 16])
    return raw[:eocd + 8] + struct.pack("<HHI", count - 1, count_all - 1, size - (end - start)) \
        + raw[eocd + 16:]


def test_an_npz_whose_directory_lost_an_entry_is_refused_not_read_in_part(tmp_path):
    path = tmp_path / "w.npz"
    savez_33(path)
    path.write_bytes(without_entry(path.read_bytes(), 5))
    with zipfile.ZipFile(path) as zf:  # zipfile and np.load see 32 records and no fault
        assert len(zf.namelist()) == 32
    refused(path, r"bytes \d+\.\.\d+ belong to no record its zip directory lists", LOADERS)


def test_an_npz_whose_directory_stops_early_is_refused_not_read_in_part(tmp_path):
    # the fuzzed case of the issue: one entry's comment length grown over the entries after it,
    # so zipfile lists the first 8 of 33 records and stops
    path = tmp_path / "w.npz"
    savez_33(path)
    raw = bytearray(path.read_bytes())
    entries = central_entries(raw)
    start, end = entries[7]
    struct.pack_into("<H", raw, start + 32, entries[-1][1] - end)
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) == 8
    refused(path, "belong to no record its zip directory lists", LOADERS)


def test_an_npz_listing_a_record_twice_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("a.npy", npy_bytes(np.zeros(2)))
        zf.writestr("a.npy", npy_bytes(np.ones(2)))
    refused(path, "lists the record 'a.npy' twice", LOADERS)


def deflate_bomb(path, declared, meta=True):
    """An .npz of one deflated record of ``declared`` bytes of zeros (an .npy of uint8), written
    in 1 MiB pieces so that the test never holds it; a few hundred kB on disk."""
    header = npy_bytes(header={"descr": "|u1", "fortran_order": False, "shape": (declared,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        if meta:
            zf.writestr("__meta__.npy", npy_bytes(np.array("{}")))
        with zf.open("bomb.npy", "w", force_zip64=True) as f:
            f.write(header)
            for _ in range(declared // 2**20):
                f.write(bytes(2**20))
    return path


def test_an_npz_deflate_bomb_is_refused_before_anything_is_unpacked(tmp_path):
    path = deflate_bomb(tmp_path / "bomb.npz", 200 * 2**20)
    assert path.stat().st_size < 1_000_000
    message = refused(path, r"its records unpack to 200\.0 MiB, more than the 64\.\d MiB this "
                            r"reader unpacks from a \d+\.\d kB file \(4 x its size \+ 64\.0 MiB; a "
                            r"deflate bomb\?\)", LOADERS)
    assert "set MINIFCN_MAX_NPZ_BYTES" in message
    assert peak_bytes(io.load, path) < 8 * 2**20


def test_an_npz_without_a_checkpoints_meta_is_refused_before_anything_is_unpacked(tmp_path):
    # the bomb had no __meta__: np.load unpacked 3.1 GB before saying so
    path = deflate_bomb(tmp_path / "bomb.npz", 64 * 2**20, meta=False)
    refused(path, "has no '__meta__' record; it is a plain weights file", (io.load_checkpoint,))
    assert peak_bytes(io.load_checkpoint, path) < 8 * 2**20


def test_minifcn_max_npz_bytes_sets_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.zeros(1000))  # an 8000-byte array
    monkeypatch.setenv("MINIFCN_MAX_NPZ_BYTES", "8000")
    refused(path, r"unpack to 7\.9 kB, more than the 7\.8 kB .* \(MINIFCN_MAX_NPZ_BYTES=8000\)",
            (io.load,))
    monkeypatch.setenv("MINIFCN_MAX_NPZ_BYTES", "8128")
    assert io.load(path)["a"].shape == (1000,)
    monkeypatch.setenv("MINIFCN_MAX_NPZ_BYTES", "lots")
    refused(path, r"MINIFCN_MAX_NPZ_BYTES='lots': expected a number of bytes", (io.load,))


def test_checkpoint_meta_is_read_without_unpacking_the_arrays(tmp_path):
    path = deflate_bomb(tmp_path / "bomb.npz", 32 * 2**20)
    assert io.checkpoint.load_checkpoint_meta(path) == {}
    assert peak_bytes_of(io.checkpoint.load_checkpoint_meta, path) < 8 * 2**20
    path.write_bytes(without_entry(path.read_bytes(), 1))  # and checks the directory
    refused(path, "belong to no record", (io.checkpoint.load_checkpoint_meta,))


def peak_bytes_of(fn, *args):
    tracemalloc.start()
    try:
        fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_folder_is_named_a_folder_not_a_missing_file(tmp_path):
    refused(tmp_path, "is a folder, expected a weights file", LOADERS + (io.import_weights,))
