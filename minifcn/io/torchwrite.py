"""torch's zip format written without torch: ``save_torch_state_dict({name: ndarray}, path)``.

``torch.load(path, weights_only=True)`` reads the file back as a dict of tensors. The pickle
inside is written opcode by opcode, since the ``pickle`` module would want to import torch to
name torch's functions; the reader that checks such files is :mod:`minifcn.io.torchfile`.
"""
import math
import struct
import zipfile

import numpy as np

from .atomic import atomic_path

# torch's storage class for each dtype it can rebuild from a weights_only pickle
_STORAGE = {np.dtype(k): v for k, v in {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
    "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}.items()}
_ALIGN = 64  # torch 2.x starts each storage record's bytes at a multiple of 64 in the zip


class _Pickle:
    """Just the pickle opcodes (protocol 2) a state dict of tensors needs, written by hand: the
    ``pickle`` module would want to import torch to name torch's functions."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def op(self, code):
        self.out += code

    def str(self, text):
        data = text.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE

    def int(self, value):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])  # BININT1
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)  # BININT2
        elif -2**31 <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)  # BININT
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(data)]) + data  # LONG1

    def glob(self, module, name):
        self.out += b"c" + f"{module}\n{name}\n".encode("ascii")  # GLOBAL

    def tuple(self, ints):
        self.out += b"("  # MARK
        for v in ints:
            self.int(v)
        self.out += b"t"  # TUPLE

    def tensor(self, key, storage, array):
        """torch._utils._rebuild_tensor_v2(<storage key>, 0, shape, stride, False, OrderedDict())
        with the storage as a persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)."""
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.op(b"((")  # MARK the call's arguments, MARK the persistent id
        self.str("storage")
        self.glob("torch", storage)
        self.str(key)
        self.str("cpu")
        self.int(array.size)
        self.op(b"tQ")  # TUPLE, BINPERSID
        self.int(0)  # storage offset
        self.tuple(array.shape)
        self.tuple(math.prod(array.shape[i + 1:]) for i in range(array.ndim))  # C order
        self.op(b"\x89")  # NEWFALSE: requires_grad
        self.glob("collections", "OrderedDict")
        self.op(b")R")  # EMPTY_TUPLE, REDUCE: OrderedDict(), the backward hooks
        self.op(b"tR")  # TUPLE of the arguments, REDUCE: call _rebuild_tensor_v2


def _torch_pickle(arrays):
    """data.pkl for ``{name: C-contiguous array}``: a dict name -> tensor, storage keys '0'..."""
    p = _Pickle()
    p.op(b"}(")  # EMPTY_DICT, MARK
    for key, (name, array) in enumerate(arrays.items()):
        p.str(name)
        p.tensor(str(key), _STORAGE[array.dtype], array)
    p.op(b"u.")  # SETITEMS, STOP
    return bytes(p.out)


def _aligned_record(zf, name, size):
    """A ZipInfo for a stored record ``name`` whose data will start at a multiple of _ALIGN, by
    padding the local header's extra field (as torch does)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.file_size = zipfile.ZIP_STORED, size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule for a record of this size
    header = 30 + len(name.encode("utf-8")) + (20 if zip64 else 0)
    pad = -(zf.fp.tell() + header + 4) % _ALIGN
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # id 'FB', torch's padding id
    return info, zip64


def save_torch_state_dict(arrays, path, archive="archive"):
    """Write ``arrays`` ({name: ndarray}) as ``torch.save`` would a dict of tensors, without
    torch: a stored zip of ``archive/data.pkl`` (a pickle calling only
    torch._utils._rebuild_tensor_v2, torch.<X>Storage and collections.OrderedDict, all that
    ``torch.load(weights_only=True)`` allows), ``archive/data/<key>`` (each tensor's bytes,
    little-endian, 64-byte aligned), ``archive/byteorder`` ("little"), ``archive/version`` ("3")
    and ``.format_version`` / ``.storage_alignment`` as torch 2.x writes them. Atomic."""
    where = "save_torch_state_dict"
    own = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        dtype = array.dtype.newbyteorder("=") if array.dtype.byteorder in "<>" else array.dtype
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: names must be non-empty strings, got {name!r}")
        if dtype not in _STORAGE:
            raise ValueError(f"{where}: {name!r} has dtype {array.dtype}; torch files here hold "
                             f"{', '.join(str(d) for d in _STORAGE)}")
        # asarray, not ascontiguousarray, which makes a 0-d array 1-d
        own[name] = np.asarray(array, dtype=dtype.newbyteorder("<"), order="C")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", _torch_pickle(own))
        zf.writestr(f"{archive}/.format_version", "1")
        zf.writestr(f"{archive}/.storage_alignment", str(_ALIGN))
        zf.writestr(f"{archive}/byteorder", "little")
        for key, array in enumerate(own.values()):
            info, zip64 = _aligned_record(zf, f"{archive}/data/{key}", array.nbytes)
            with zf.open(info, "w", force_zip64=zip64) as f:
                f.write(array.reshape(-1).view(np.uint8).data)
        zf.writestr(f"{archive}/version", "3\n")
