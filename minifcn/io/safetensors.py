"""Read and write .safetensors files by hand, with NumPy alone (no ``safetensors`` package).

The format (https://github.com/huggingface/safetensors) is three parts, back to back:

    8 bytes      N, the header's length, an unsigned little-endian 64-bit integer
    N bytes      the header, UTF-8 JSON: {name: {"dtype": "F32", "shape": [2, 3],
                 "data_offsets": [begin, end]}, ...} and optionally "__metadata__": {str: str};
                 padded at the end with spaces so that the byte buffer starts 8-byte aligned
    the rest     the byte buffer: every tensor's raw little-endian C-order bytes, back to back;
                 [begin, end) counts from the start of the buffer (not of the file)

No code, no pickle: a reader allocates what the header says, so here the header is proven
consistent first, before any tensor is read: the length N fits the file, every offset lies in
the buffer, the tensors neither overlap nor leave gaps (they cover the buffer exactly), and each
one's shape times its item size is its span. A file that fails is a one-line ValueError
(:class:`SafetensorsError`) naming the file and what is wrong.

dtypes: F64 F32 F16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL both ways, BF16 read only (NumPy has no
bfloat16: it comes back as float32, exactly, since bfloat16 is float32's top half).

Written with the tensors in the caller's order, except that larger item sizes come first (as the
``safetensors`` package does), so every tensor starts aligned to its item size; within one
item size the order is the caller's. ``load_safetensors`` returns them in the file's order.
"""
import json
import math
import os
import struct
from collections.abc import Mapping

import numpy as np

from .atomic import atomic_path
from .errors import WeightFileError, require_file, short

__all__ = ["save_safetensors", "load_safetensors", "read_safetensors_metadata",
           "SafetensorsError", "DTYPES", "MAX_HEADER_SIZE"]

# safetensors dtype name -> NumPy dtype (little-endian, as stored)
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
          "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_READ_ONLY = {"BF16": 2}  # name -> item size of the dtypes read but never written
_NAME_OF = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items()}
_ITEMSIZE = {**{k: np.dtype(v).itemsize for k, v in DTYPES.items()}, **_READ_ONLY}

MAX_HEADER_SIZE = 100_000_000  # the safetensors package refuses longer headers too
METADATA_KEY = "__metadata__"
MAX_NDIM = 64  # NumPy's limit


class SafetensorsError(WeightFileError):
    """A .safetensors file that cannot be read, or arrays that cannot be written as one; the
    message (one line) names the file and what was expected."""


def _fail(message):
    raise SafetensorsError(" ".join(str(message).split()))


# ---- writing ---------------------------------------------------------------------------------

def _header_and_arrays(arrays, metadata, where):
    """The header bytes (padded to a multiple of 8) and the [(name, array)] in layout order."""
    if not isinstance(arrays, Mapping):
        raise TypeError(f"{where}: expected a dict {{name: array}}, got {type(arrays).__name__}")
    items = []
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or name == METADATA_KEY:
            _fail(f"{where}: tensor names must be non-empty strings other than "
                  f"{METADATA_KEY!r}, got {name!r}")
        array = np.asarray(value)
        dtype = array.dtype.newbyteorder("=") if array.dtype.byteorder in "<>" else array.dtype
        if dtype not in _NAME_OF:
            _fail(f"{where}: {name!r} has dtype {array.dtype}, which safetensors cannot hold "
                  f"here; expected one of {', '.join(str(np.dtype(d)) for d in DTYPES.values())}")
        items.append((name, _NAME_OF[dtype], array))
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            _fail(f"{where}: metadata must be a dict of str to str, got {short.repr(metadata)}")
    # larger items first (stable): each tensor then starts at a multiple of its item size
    items.sort(key=lambda item: -_ITEMSIZE[item[1]])
    header, offset = {}, 0
    if metadata:
        header[METADATA_KEY] = dict(metadata)
    for name, kind, array in items:
        size = array.size * _ITEMSIZE[kind]
        header[name] = {"dtype": kind, "shape": list(array.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return text, [(name, array) for name, _, array in items]


def save_safetensors(arrays, path, metadata=None, where="save_safetensors"):
    """Write ``arrays`` ({name: ndarray}, or anything ``np.asarray`` takes) to ``path`` as a
    .safetensors file, atomically (a temporary file renamed over ``path``).

    metadata: an optional {str: str}, stored as the header's "__metadata__". Shapes and dtypes
    are kept exactly (0-d and empty arrays too); the bytes are written little-endian.
    ``where`` starts each error message. Raises SafetensorsError (a ValueError) for a dtype the
    format does not have here (object, complex, float128...) or a bad name or metadata."""
    header, items = _header_and_arrays(arrays, metadata, where)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for _, array in items:
            data = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C")
            f.write(data.reshape(-1).view(np.uint8).data)


# ---- reading ---------------------------------------------------------------------------------

def _no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_header(path, where):
    """(entries [(name, dtype name, shape, begin, end)] in buffer order, metadata, buffer start),
    every entry checked against the file's size; nothing of the buffer read yet."""
    path = require_file(path, where, SafetensorsError)
    disk = os.path.getsize(path)
    at = f"{where}: {path}"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            _fail(f"{at} is {disk} bytes, too short for a .safetensors file (8-byte header "
                  "length, JSON header, data)")
        n = struct.unpack("<Q", head)[0]
        if n > disk - 8:
            _fail(f"{at}: the header length says {n} bytes but only {disk - 8} follow it: not a "
                  ".safetensors file, or a truncated one")
        if n > MAX_HEADER_SIZE:
            _fail(f"{at}: the header length {n} exceeds {MAX_HEADER_SIZE} bytes")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        _fail(f"{at}: the header is not UTF-8 JSON ({e})")
    except RecursionError:  # json's parser recurses once per level of nesting
        _fail(f"{at}: the header nests JSON about a thousand levels deep or more; expected "
              "{name: {dtype, shape, data_offsets}}, three levels")
    if not isinstance(header, dict):
        _fail(f"{at}: the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop(METADATA_KEY, None)
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(v, str) for v in metadata.values())):
        _fail(f"{at}: {METADATA_KEY!r} must be an object of strings, got {short.repr(metadata)}")
    buffer = disk - 8 - n
    entries = []
    for name, info in header.items():
        tensor = f"tensor {short.repr(name)}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            _fail(f"{at}: {tensor} must have exactly dtype, shape and data_offsets, got "
                  f"{short.repr(info)}")
        kind, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if kind not in _ITEMSIZE:
            _fail(f"{at}: {tensor} has dtype {short.repr(kind)}; this reader knows "
                  f"{', '.join(_ITEMSIZE)}")
        if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
                and all(_is_count(d) and d < 2**63 for d in shape)):
            _fail(f"{at}: {tensor} has shape {short.repr(shape)}; expected a list of at most "
                  f"{MAX_NDIM} non-negative integers below 2**63")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
            _fail(f"{at}: {tensor} has data_offsets {short.repr(offsets)}; expected [begin, "
                  "end], 0 <= begin <= end")
        begin, end = offsets
        if end > buffer:
            _fail(f"{at}: {tensor} ends at byte {end} of a {buffer}-byte data buffer")
        if math.prod(shape) * _ITEMSIZE[kind] != end - begin:
            _fail(f"{at}: {tensor} is {kind} of shape {short.repr(tuple(shape))}, "
                  f"{math.prod(shape) * _ITEMSIZE[kind]} bytes, but its offsets span "
                  f"{end - begin}")
        entries.append((name, kind, tuple(shape), begin, end))
    entries.sort(key=lambda e: (e[3], e[4]))
    covered = 0
    for name, _, _, begin, end in entries:
        tensor = f"tensor {short.repr(name)}"
        if begin != covered:
            what = "overlaps the one before it" if begin < covered else \
                f"leaves bytes {covered}..{begin} unused before it"
            _fail(f"{at}: {tensor} at bytes {begin}..{end} {what}; tensors must cover the "
                  "data buffer back to back")
        covered = end
    if covered != buffer:
        _fail(f"{at}: the tensors cover {covered} bytes of the {buffer}-byte data buffer; "
              "expected all of it")
    return entries, metadata or {}, 8 + n


def _decode(buf, kind, shape, name, at):
    if kind == "BF16":  # the top 16 bits of a float32
        raw = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
        return raw.view(np.float32).reshape(shape)
    dtype = np.dtype(DTYPES[kind])
    if kind == "BOOL":
        raw = np.frombuffer(buf, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            _fail(f"{at}: BOOL tensor {short.repr(name)} holds bytes other than 0 and 1")
    array = np.frombuffer(buf, dtype=dtype).reshape(shape)
    native = dtype.newbyteorder("=")
    return array if array.dtype == native else array.astype(native)


def load_safetensors(path, where="load_safetensors"):
    """``{name: ndarray}`` from the .safetensors file at ``path``, in the file's data order.

    The header is checked in full before a tensor is read (see the module's docstring); each
    array is its own writable, native-endian copy. BF16 comes back as float32. ``where`` starts
    each error message. Raises FileNotFoundError for a missing file, SafetensorsError (a
    ValueError, one line naming the file) for anything else wrong with it."""
    entries, _, start = _read_header(path, where)
    at = f"{where}: {os.fspath(path)}"
    arrays = {}
    with open(path, "rb") as f:
        for name, kind, shape, begin, end in entries:
            buf = bytearray(end - begin)
            f.seek(start + begin)
            if f.readinto(buf) != len(buf):
                _fail(f"{at}: the file ended inside tensor {name!r} (did it change while read?)")
            arrays[name] = _decode(buf, kind, shape, name, at)
    return arrays


def read_safetensors_metadata(path, where="read_safetensors_metadata"):
    """The header's "__metadata__" ({str: str}; {} when absent) of the file at ``path``; the
    header is checked as :func:`load_safetensors` checks it, the data are not read."""
    return dict(_read_header(path, where)[1])
