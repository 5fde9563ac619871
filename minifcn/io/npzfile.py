"""Read an .npz (a zip of ``<name>.npy`` records, as ``np.savez`` writes) with every record checked
before anything is allocated; what :func:`minifcn.io.load` and ``load_checkpoint`` stand on.

``np.load`` trusts what a file says: a 1 kB .npz whose header says shape (10**7, 10**6) float64
makes it allocate 73 TiB, a 3 MB one of deflated zeros unpacks to 3 GB, a record that is not an
.npy at all comes back as raw bytes in place of an array, and a zip directory that lost entries
gives the arrays it still lists. Here, in this order, before any record is unpacked:

1. the zip's directory must account for the whole file: its records lie back to back from the
   first byte to the directory, each listed once, so a damaged directory is refused rather than
   read in part;
2. each record must be stored or deflated (what numpy writes), claim no more bytes than deflate
   can make of its compressed ones (``DEFLATE_MAX_RATIO``, 1032:1), begin with an .npy header
   (format 1.0 or 2.0; only its bytes are unpacked) whose shape and dtype account for exactly
   the bytes the record holds, and hold no Python objects (they would need pickle, never used);
3. the records the caller requires (a checkpoint's ``__meta__``) must be there;
4. the records to read must unpack to at most ``BUDGET_FACTOR`` (4) x the file's size +
   ``BUDGET_SLACK`` (64 MiB), as :mod:`minifcn.io.torchfile`'s budget: a stored .npz (numpy's
   and minifcn's) unpacks to its own size, a deflated one of weights to about 1.1 x; the
   environment variable ``MINIFCN_MAX_NPZ_BYTES`` (a number of bytes) replaces the budget.

Every failure is a :class:`NpzFileError` (a :class:`~minifcn.io.errors.WeightFileError`, a
ValueError) whose one-line message names the file, the record and what was expected; a missing
file is a FileNotFoundError.
"""
import math
import os
import struct
import zipfile

import numpy as np

from .errors import WeightFileError, human_bytes as _human, require_file, short
from .errors import described as _described, one_line as _one_line

__all__ = ["read_npz", "NpzFileError", "max_bytes"]

DEFLATE_MAX_RATIO = 1032  # the most deflate expands: a 258-byte match from each 2-bit code
BUDGET_FACTOR = 4  # all the records read unpack to at most this many times the file's size ...
BUDGET_SLACK = 64 * 2**20  # ... plus this (as minifcn.io.torchfile's budget), unless
MAX_BYTES_VARIABLE = "MINIFCN_MAX_NPZ_BYTES"  # this environment variable says otherwise


class NpzFileError(WeightFileError):
    """An .npz that cannot be read; the message (one line) names the file and the record."""


def _fail(message):
    raise NpzFileError(_one_line(message))


def _check_record(zf, info, disk, where):
    """The record's (shape, dtype) from its header, once its sizes are proven consistent; only
    the header's bytes are decompressed."""
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
    return shape, dtype


def _check_layout(zf, path, where):
    """The records lie back to back from the file's first byte to its central directory, each
    listed once. A directory that lost an entry (or whose sizes were altered so that zipfile
    stops early) leaves bytes that no listed record accounts for: refused, never read in part."""
    at, seen = 0, set()
    with open(path, "rb") as f:
        for info in sorted(zf.infolist(), key=lambda i: i.header_offset):
            if info.filename in seen:
                _fail(f"{where}: {path} lists the record {info.filename!r} twice: a damaged zip")
            seen.add(info.filename)
            if info.header_offset != at:
                _fail(f"{where}: {path}: bytes {at}..{info.header_offset} belong to no record "
                      "its zip directory lists (a damaged directory, or not an .npz numpy "
                      "wrote): refused rather than read in part")
            f.seek(at)
            local = f.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                _fail(f"{where}: {path}: record {info.filename!r} has no local header at byte "
                      f"{at}: a damaged zip")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            at += 30 + name_length + extra_length + info.compress_size
            if info.flag_bits & 0x08:  # a data descriptor follows: [signature] crc, 2 sizes
                following = min([i.header_offset for i in zf.infolist()
                                 if i.header_offset > info.header_offset] or [zf.start_dir])
                if following - at not in (12, 16, 20, 24):
                    _fail(f"{where}: {path}: record {info.filename!r} is followed by "
                          f"{following - at} bytes where a data descriptor belongs: a damaged zip")
                at = following
    if at != zf.start_dir:
        _fail(f"{where}: {path}: bytes {at}..{zf.start_dir} belong to no record its zip directory "
              "lists (a damaged directory, or not an .npz numpy wrote): refused rather than "
              "read in part")


def max_bytes(disk, where="read_npz"):
    """What read_npz may unpack from a file of ``disk`` bytes: MINIFCN_MAX_NPZ_BYTES if set,
    else BUDGET_FACTOR x ``disk`` + BUDGET_SLACK."""
    value = os.environ.get(MAX_BYTES_VARIABLE)
    if value is None:
        return BUDGET_FACTOR * disk + BUDGET_SLACK
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        _fail(f"{where}: {MAX_BYTES_VARIABLE}={short.repr(value)}: expected a number of bytes "
              "(an integer >= 0)")
    return limit


def _read_records(zf, path, where, names, require):
    members = zf.namelist()
    if any(n.endswith("/data.pkl") for n in members):
        _fail(f"{where}: {path} is a PyTorch file, not an .npz; read it with "
              "minifcn.io.import_weights or read_torch_state_dict")
    others = [n for n in members if not n.endswith(".npy")]
    if others:
        _fail(f"{where}: {path} is a zip but not an .npz (members {others[:5]} are not .npy)")
    _check_layout(zf, path, where)
    disk = os.path.getsize(path)
    records = [(info, _check_record(zf, info, disk, f"{where}: {path}: {info.filename}"))
               for info in zf.infolist()]
    for name, hint in require.items():
        if name + ".npy" not in members:
            _fail(f"{where}: {path} has no {name!r} record; {hint}")
    wanted = [info for info, _ in records
              if names is None or info.filename[: -len(".npy")] in names]
    total, limit = sum(info.file_size for info in wanted), max_bytes(disk, f"{where}: {path}")
    if total > limit:
        how = (f"{MAX_BYTES_VARIABLE}={limit}" if MAX_BYTES_VARIABLE in os.environ else
               f"{BUDGET_FACTOR} x its size + {_human(BUDGET_SLACK)}; a deflate bomb?")
        _fail(f"{where}: {path}: its records unpack to {_human(total)}, more than the "
              f"{_human(limit)} this reader unpacks from a {_human(disk)} file ({how}); set "
              f"{MAX_BYTES_VARIABLE} to a number of bytes to allow more")
    arrays = {}
    for info in wanted:
        with zf.open(info) as f:
            arrays[info.filename[: -len(".npy")]] = np.lib.format.read_array(f, allow_pickle=False)
    return arrays


def read_npz(path, where="read_npz", names=None, require=None):
    """``{name: ndarray}`` from the .npz at ``path``, in file order, every record checked first.
    ``where`` starts each error message (the public function the caller called). ``names``: read
    only these records (the others are checked, not unpacked). ``require``: ``{name: hint}``,
    records that must be there, else an error ending in the hint."""
    path = require_file(path, where, NpzFileError)
    if not zipfile.is_zipfile(path):
        _fail(f"{where}: {path} is not an .npz file (a zip of .npy arrays)")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_records(zf, path, where, names, require or {})
    except (NpzFileError, MemoryError):  # ours name the file; a real shortage stays one
        raise
    except NotImplementedError as e:  # zipfile: a newer zip version, encryption...
        _fail(f"{where}: {path} uses a zip feature Python's zipfile cannot read "
              f"({_described(e)}); expected a zip of .npy arrays as numpy writes")
    except Exception as e:  # zipfile, zlib, numpy's reader: a damaged record
        _fail(f"{where}: {path} is a damaged .npz ({_described(e)}); expected an intact "
              "zip of .npy arrays")
