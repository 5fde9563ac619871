"""Read an .npz (a zip of ``<name>.npy`` records, as ``np.savez`` writes) with every record checked
before anything is allocated; what :func:`minifcn.io.load` and ``load_checkpoint`` stand on.

``np.load`` trusts what a file says: a 1 kB .npz whose header says shape (10**7, 10**6) float64
makes it allocate 73 TiB, and a record that is not an .npy at all comes back as raw bytes in
place of an array. Here each record must be stored or deflated (what numpy writes), claim no more
bytes than deflate can make of its compressed ones (``DEFLATE_MAX_RATIO``, 1032:1; so nothing is
allocated beyond 1032 x the file's size, and a plain ``np.savez`` file, stored, never beyond its
size), begin with an .npy header (format 1.0 or 2.0) whose shape and dtype account for exactly
the bytes it holds, and hold no Python objects (they would need pickle, which is never used).

Every failure is a ValueError (:class:`NpzFileError`) whose one-line message names the file, the
record and what was expected; a missing file is a FileNotFoundError.
"""
import math
import os
import zipfile

import numpy as np

from .errors import described as _described, one_line as _one_line

__all__ = ["read_npz", "NpzFileError"]

DEFLATE_MAX_RATIO = 1032  # the most deflate expands: a 258-byte match from each 2-bit code


class NpzFileError(ValueError):
    """An .npz that cannot be read; the message (one line) names the file and the record."""


def _fail(message):
    raise NpzFileError(_one_line(message))


def _check_record(zf, info, disk, where):
    """The record's shape and dtype from its header, once its sizes are proven consistent."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        _fail(f"{where} uses compression method {info.compress_type}; expected stored or "
              "deflated, as numpy writes")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else DEFLATE_MAX_RATIO
    if info.compress_size > disk or info.file_size > ratio * info.compress_size:
        _fail(f"{where} claims {info.file_size} bytes from {info.compress_size} compressed ones "
              f"in a {disk}-byte file: a damaged zip")
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError as e:
            _fail(f"{where} is not an .npy array ({e})")
        if version not in ((1, 0), (2, 0)):
            _fail(f"{where} is .npy format {version}; expected 1.0 or 2.0")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        try:
            shape, _, dtype = read_header(f)
        except ValueError as e:
            _fail(f"{where} has a damaged .npy header ({e})")
        header = f.tell()
    if dtype.hasobject:
        _fail(f"{where} holds Python objects ({dtype}), which need pickle: expected a numeric "
              "array")
    need = math.prod(shape) * dtype.itemsize
    if header + need != info.file_size:
        _fail(f"{where} says shape {tuple(shape)} {dtype} ({need} bytes) but holds "
              f"{info.file_size - header}")


def _read_records(zf, path, where):
    names = zf.namelist()
    if any(n.endswith("/data.pkl") for n in names):
        _fail(f"{where}: {path} is a PyTorch file, not an .npz; read it with "
              "minifcn.io.import_weights or read_torch_state_dict")
    others = [n for n in names if not n.endswith(".npy")]
    if others:
        _fail(f"{where}: {path} is a zip but not an .npz (members {others[:5]} are not .npy)")
    disk, arrays = os.path.getsize(path), {}
    for info in zf.infolist():
        _check_record(zf, info, disk, f"{where}: {path}: {info.filename}")
        with zf.open(info) as f:
            arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def read_npz(path, where="read_npz"):
    """``{name: ndarray}`` from the .npz at ``path``, in file order, every record checked first.
    ``where`` starts each error message (the public function the caller called)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: no such file {path!r}")
    if not zipfile.is_zipfile(path):
        _fail(f"{where}: {path} is not an .npz file (a zip of .npy arrays)")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_records(zf, path, where)
    except (NpzFileError, MemoryError):  # ours name the file; a real shortage stays one
        raise
    except Exception as e:  # zipfile, zlib, numpy's reader: a damaged record
        _fail(f"{where}: {path} is a damaged .npz ({_described(e)}); expected an intact "
              "zip of .npy arrays")
