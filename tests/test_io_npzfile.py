"""minifcn.io.npzfile, the checked .npz reader behind io.load and io.load_checkpoint, on damaged
files: every failure is a one-line ValueError naming the file, and nothing is allocated that the
file does not hold. (Killed saves: tests/test_io_atomic.py.)

The .npz files are written by numpy (or by zipfile here, byte by byte, for the damaged ones).
"""
import io as _io
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
    buf = _io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, a=np.arange(1000.0), b=np.ones(7))
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
