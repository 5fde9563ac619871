"""The restricted unpickler for the object pickle of a ``torch.save`` file: the ``data.pkl``
inside a zip, or the third pickle of a legacy stream (used by :mod:`minifcn.io.torchfile` and
:mod:`minifcn.io.torchlegacy`, which read the file, check the limits and build the arrays).

A pickle is a small program: it names Python globals (``module.name``) and calls them. Loading
one with plain ``pickle.load`` runs whatever the file's author put there (``os.system`` included),
so :class:`TensorUnpickler`'s ``find_class`` hands out only our own stand-ins for the few globals a
tensor state_dict needs and refuses anything else before it can run. The stand-ins build
nothing: each tensor becomes a :class:`Pending` (its storage and geometry), built into an array
by the reader once the pickle has run and the tensor's key is known.
"""
import collections
import io
import pickle
import pickletools
import reprlib

import numpy as np

from .errors import WeightFileError, one_line

# torch's storage classes (the type of a tensor's memory) -> NumPy dtype code.
# "bfloat16" is not a NumPy dtype: read as 16-bit words, widened to float32 at the end.
STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
    "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}
# newer dtypes are written as an untyped (byte) storage plus a torch dtype (_rebuild_tensor_v3)
TORCH_DTYPES = {
    "float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "bfloat16",
    "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1", "uint8": "u1", "bool": "b1",
    "uint16": "u2", "uint32": "u4", "uint64": "u8", "complex64": "c8", "complex128": "c16",
}
REFUSED_HINT = "only tensor state_dicts are supported (no custom classes, no code)"
_PUT_OPS = ("PUT", "BINPUT", "LONG_BINPUT")

short = reprlib.Repr()  # bounded reprs for messages: a hostile value can be huge or deep
short.maxstring = short.maxother = 60


class TorchFileError(WeightFileError, pickle.UnpicklingError):
    """A file that is not a readable tensor state_dict. The message (one line) names the file and
    what was expected. A WeightFileError (a ValueError), so ``train --init-from`` reports it
    plainly; also an UnpicklingError, as the refusals of this reader always were."""


class StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.; a fresh one per use, so that a file cannot
    tamper with one shared by later loads."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class DType:
    """Stand-in for ``torch.float32`` etc. (the dtype argument of ``_rebuild_tensor_v3``)."""
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class Storage:
    """One storage's raw bytes, and its element type code (None for an untyped byte storage)."""
    __slots__ = ("raw", "code", "key")

    def __init__(self, raw, code, key):
        self.raw, self.code, self.key = raw, code, key


class Pending:
    """A tensor noted by the unpickler, built into an array once its key is known."""
    __slots__ = ("storage", "code", "offset", "size", "stride", "metadata")
    __hash__ = None  # never a dict key or set member, where it could not be replaced

    def __init__(self, storage, code, offset, size, stride, metadata):
        self.storage, self.code, self.metadata = storage, code, metadata
        self.offset, self.size, self.stride = offset, size, stride


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def refusal(module, name, path):
    """The error for a global the file asks for that is not on the allow-list."""
    return TorchFileError(one_line(f"refusing to load {short.repr(module)[1:-1]}."
                                   f"{short.repr(name)[1:-1]} from {path}: {REFUSED_HINT}"))


def prescan(pkl, fail):
    """Walk data.pkl's opcodes without running them; see :func:`scan_pickle`."""
    scan_pickle(io.BytesIO(pkl), fail, "data.pkl")


def scan_pickle(f, fail, what):
    """Walk the pickle at ``f``'s position to its STOP without running it
    (``pickletools.genops``), leave ``f`` just after it and return its length. Calls
    ``fail(message)`` for what CPython's unpickler would allocate blindly: a counted length past
    the end (it allocates the length first), a memo index beyond the pickle's length (it sizes
    its memo table by the largest). ``f`` must be an io.BytesIO: its read(n) returns what
    remains, where a real file's may allocate n bytes first."""
    start, top = f.tell(), -1
    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name in _PUT_OPS:
                top = max(top, arg)
    except (ValueError, TypeError) as e:  # genops: a length past the end, a bad opcode
        fail(f"{what} is damaged ({one_line(e)}); expected a pickle as torch.save writes it")
    length = f.tell() - start
    if top > length:
        fail(f"{what} asks for memo slot {top}, beyond its own length ({length} bytes): not a "
             "pickle torch wrote")
    return length


class TensorUnpickler(pickle.Unpickler):
    """Unpickle ``data.pkl`` of a torch zip, noting a :class:`Pending` in place of each tensor.

    ``find_class`` is the only way a pickle can reach a Python global; it returns methods of
    this object (a fresh bound method cannot be modified by the file) or refuses. ``reader`` is
    minifcn.io.torchfile's: its ``path``, ``zf`` and ``prefix`` (the zip and its archive folder),
    ``fail(message)`` and ``read_member(info)`` (which counts the bytes against its budget).
    The legacy stream's unpickler (:mod:`minifcn.io.torchlegacy`) replaces ``persistent_load``.
    """

    def __init__(self, reader, pkl):
        # utf-8 as torch.load: Python 2 wrote str as bytes (legacy files of 2017 did)
        super().__init__(io.BytesIO(pkl), encoding="utf-8")
        self._reader = reader
        self._storages = {}  # key -> Storage; several tensors may view one storage

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils":
            allowed = {
                "_rebuild_tensor": self._rebuild_tensor,
                "_rebuild_tensor_v2": self._rebuild_tensor_v2,
                "_rebuild_tensor_v3": self._rebuild_tensor_v3,
                "_rebuild_parameter": self._rebuild_parameter,
                "_rebuild_parameter_with_state": self._rebuild_parameter,
            }
            if name in allowed:
                return allowed[name]
        storage_names = (*STORAGE_DTYPES, "UntypedStorage")
        # torch.cuda.FloatStorage...: a legacy file saved from a GPU (the bytes are the same)
        if module in ("torch", "torch.storage", "torch.cuda") and name in storage_names:
            return StorageType(name)
        if module == "torch" and name in TORCH_DTYPES:
            return DType(name)
        raise refusal(module, name, self._reader.path)

    def persistent_load(self, pid):
        # a tensor's storage is pickled as ('storage', storage_type, key, location, numel)
        r = self._reader
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str)):
            r.fail(f"unexpected persistent id {short.repr(pid)}: {REFUSED_HINT}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key in self._storages:
            return self._storages[key]
        if storage_type.name not in (*STORAGE_DTYPES, "UntypedStorage"):
            r.fail(f"storage {short.repr(key)} has an unknown type: {REFUSED_HINT}")
        code = STORAGE_DTYPES.get(storage_type.name)  # None for UntypedStorage (bytes)
        itemsize = 1 if code is None else (2 if code == "bfloat16" else np.dtype(code).itemsize)
        record = f"{r.prefix}/data/{key}"
        try:
            info = r.zf.getinfo(record)
        except KeyError:
            r.fail(f"storage record {short.repr(record)} is missing")
        if not (is_int(numel) and numel >= 0 and info.file_size == numel * itemsize):
            r.fail(f"storage {short.repr(key)} holds {info.file_size} bytes, expected "
                   f"{short.repr(numel)} elements of {itemsize} bytes")
        self._storages[key] = Storage(r.read_member(info), code, key)
        return self._storages[key]

    # --- stand-ins for torch._utils: each notes a tensor, built later by the reader ---------

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        return Pending(storage, getattr(storage, "code", None), storage_offset, size, stride,
                       None)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        return Pending(storage, getattr(storage, "code", None), storage_offset, size, stride,
                       metadata)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad,
                           backward_hooks, dtype, metadata=None):
        if not (isinstance(dtype, DType) and dtype.name in TORCH_DTYPES):
            self._reader.fail(f"tensor dtype {short.repr(dtype)} is not a torch dtype")
        return Pending(storage, TORCH_DTYPES[dtype.name], storage_offset, size, stride, metadata)

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
        # an nn.Parameter is a tensor with a flag; its values are all we keep
        return data


