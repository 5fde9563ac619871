"""Read a ``torch.save(state_dict, path)`` file without PyTorch, and without running its code.

What is inside such a file (the zip format, the default since torch 1.6)::

    archive/data.pkl      a pickle of the object: dicts, names, and for each tensor a call
                          torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
    archive/data/0, 1...  the raw bytes of each storage (a tensor is a view into one)
    archive/byteorder     b"little" or b"big"
    archive/version ...   bookkeeping we do not need

A pickle is a small program: it names Python globals (``module.name``) and calls them. Loading
one with plain ``pickle.load`` runs whatever the file's author put there (``os.system`` included),
so we unpickle with an ``Unpickler`` whose ``find_class`` hands out only our own stand-ins for the
few globals a tensor state_dict needs, each of which builds a NumPy array, and refuses anything
else before it can run.

Public: :func:`read_torch_state_dict` (path -> ``{name: ndarray}``) and :func:`read_torch_file`
(path -> the unpickled object, tensors as arrays).
"""
import collections
import os
import pickle
import sys
import tarfile
import zipfile

import numpy as np

__all__ = ["read_torch_state_dict", "read_torch_file"]

# torch's storage classes (the type of a tensor's memory) -> NumPy dtype code.
# "bfloat16" is not a NumPy dtype: read as 16-bit words, widened to float32 at the end.
_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
    "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}
# newer dtypes are written as an untyped (byte) storage plus a torch dtype (_rebuild_tensor_v3)
_TORCH_DTYPES = {
    "float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "bfloat16",
    "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1", "uint8": "u1", "bool": "b1",
    "uint16": "u2", "uint32": "u4", "uint64": "u8", "complex64": "c8", "complex128": "c16",
}
# keys under which training scripts commonly nest the weights inside a bigger checkpoint dict
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")

_REFUSED_HINT = "only tensor state_dicts are supported (no custom classes, no code)"


class _BadTorchFile(pickle.UnpicklingError):
    """Raised by our checks; its message already names the file."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.; a fresh one per use, so that a file cannot
    tamper with one shared by later loads."""

    def __init__(self, name):
        self.name = name


class _DType:
    """Stand-in for ``torch.float32`` etc. (the dtype argument of ``_rebuild_tensor_v3``)."""

    def __init__(self, name):
        self.name = name


class _Storage:
    """One storage's raw bytes, and its element type code (None for an untyped byte storage)."""

    def __init__(self, raw, code, key):
        self.raw, self.code, self.key = raw, code, key


class _TensorUnpickler(pickle.Unpickler):
    """Unpickle ``data.pkl`` of a torch zip, building NumPy arrays in place of tensors.

    ``find_class`` is the only way a pickle can reach a Python global; it returns methods of
    this object (a fresh bound method cannot be modified by the file) or refuses.
    """

    def __init__(self, file, zf, prefix, byteorder, path):
        super().__init__(file)
        self._zf, self._prefix, self._path = zf, prefix, path
        self._endian = "<" if byteorder == "little" else ">"
        self._storages = {}  # key -> _Storage; several tensors may view one storage

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
        storage_names = (*_STORAGE_DTYPES, "UntypedStorage")
        if module in ("torch", "torch.storage") and name in storage_names:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return _DType(name)
        raise _BadTorchFile(
            f"refusing to load {module}.{name} from {self._path}: {_REFUSED_HINT}")

    def persistent_load(self, pid):
        # a tensor's storage is pickled as ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise _BadTorchFile(
                f"{self._path}: unexpected persistent id {pid!r}: {_REFUSED_HINT}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key not in self._storages:
            record = f"{self._prefix}/data/{key}"
            try:
                raw = self._zf.read(record)
            except KeyError:
                raise _BadTorchFile(f"{self._path}: storage record {record!r} is missing") from None
            code = _STORAGE_DTYPES.get(storage_type.name)  # None for UntypedStorage (bytes)
            itemsize = 1 if code is None else _itemsize(code)
            if not isinstance(numel, int) or len(raw) != numel * itemsize:
                raise _BadTorchFile(
                    f"{self._path}: storage {key} holds {len(raw)} bytes, expected {numel!r} "
                    f"elements of {itemsize} bytes")
            self._storages[key] = _Storage(raw, code, key)
        return self._storages[key]

    # --- stand-ins for torch._utils: each returns a NumPy array -------------------------------

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        return self._view(storage, storage.code, storage_offset, size, stride)

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None):
        array = self._view(storage, storage.code, storage_offset, size, stride)
        return self._apply_metadata(array, metadata)

    def _rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad,
                           backward_hooks, dtype, metadata=None):
        if not isinstance(dtype, _DType):
            raise _BadTorchFile(f"{self._path}: tensor dtype {dtype!r} is not a torch dtype")
        array = self._view(storage, _TORCH_DTYPES[dtype.name], storage_offset, size, stride)
        return self._apply_metadata(array, metadata)

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
        # an nn.Parameter is a tensor with a flag; its values are all we keep
        return data

    def _view(self, storage, code, offset, size, stride):
        """A new array of shape ``size``: element (i_0, i_1, ...) is
        ``storage[offset + sum(i_k * stride[k])]``."""
        if not isinstance(storage, _Storage) or code is None:
            raise _BadTorchFile(f"{self._path}: a tensor without a typed storage: {_REFUSED_HINT}")
        size, stride = tuple(size), tuple(stride)
        if not (isinstance(offset, int) and all(isinstance(v, int) for v in size + stride)
                and len(size) == len(stride) and offset >= 0
                and min(size + stride, default=0) >= 0):
            raise _BadTorchFile(f"{self._path}: bad tensor geometry offset={offset!r} "
                                f"size={size!r} stride={stride!r}")
        word = "u2" if code == "bfloat16" else code
        dtype = np.dtype(self._endian + word if np.dtype(word).itemsize > 1 else word)
        if storage.raw and len(storage.raw) % dtype.itemsize:
            raise _BadTorchFile(f"{self._path}: storage {storage.key} is not a whole number "
                                f"of {code}")
        flat = np.frombuffer(storage.raw, dtype=dtype)
        if 0 in size:
            out = np.empty(size, dtype=dtype)
        else:
            # as_strided trusts us blindly, so prove the last element lies inside the storage
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= flat.size:
                raise _BadTorchFile(
                    f"{self._path}: tensor view (offset {offset}, size {size}, stride {stride}) "
                    f"runs past the end of storage {storage.key} ({flat.size} elements)")
            strides = [s * dtype.itemsize for s in stride]
            view = np.lib.stride_tricks.as_strided(flat[offset:], size, strides, writeable=False)
            out = np.array(view, order="C")  # a copy: C-contiguous, writeable, not the file's bytes
        out = out.astype(out.dtype.newbyteorder("="), copy=False)
        if code == "bfloat16":
            # bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out

    def _apply_metadata(self, array, metadata):
        # torch marks lazily conjugated / negated views with flags instead of touching the data
        metadata = dict(metadata or {})
        unknown = set(metadata) - {"conj", "neg"}
        if unknown:
            raise _BadTorchFile(f"{self._path}: unsupported tensor metadata {sorted(unknown)}")
        if metadata.get("conj"):
            array = np.conj(array)
        if metadata.get("neg"):
            array = -array
        return array


def _itemsize(code):
    return 2 if code == "bfloat16" else np.dtype(code).itemsize


def _open_torch_zip(path):
    """Check ``path`` is a torch zip file; return (ZipFile, archive prefix, byte order)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_torch_state_dict: no such file {path!r}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"PK":
            raise ValueError(f"read_torch_state_dict: {path} looks like a damaged or truncated "
                             "zip archive")
        # torch's legacy formats: a bare pickle stream (torch < 1.6), or a tar (torch < 0.4)
        if head[:1] == b"\x80" or tarfile.is_tarfile(path):
            raise ValueError(
                f"read_torch_state_dict: {path} is in torch's legacy (pre-1.6, non-zip) format, "
                "which is not supported; re-save it once with a recent torch: "
                f"torch.save(torch.load({path!r}, weights_only=True), 'resaved.pt') "
                "(a .tar-era file needs weights_only=False: do that only for a file you trust)")
        raise ValueError(f"read_torch_state_dict: {path} is not a file written by torch.save "
                         "(expected a zip archive holding data.pkl)")
    zf = zipfile.ZipFile(path)
    pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        zf.close()
        raise ValueError(f"read_torch_state_dict: {path} is a zip but not a torch.save archive "
                         f"(expected one <archive>/data.pkl record, found {len(pickles)})")
    prefix = pickles[0][: -len("/data.pkl")]
    try:
        byteorder = zf.read(f"{prefix}/byteorder").decode("ascii").strip()
    except KeyError:
        byteorder = sys.byteorder  # written before torch recorded it: torch also assumes native
    if byteorder not in ("little", "big"):
        zf.close()
        raise ValueError(f"read_torch_state_dict: {path} has an unknown byteorder record "
                         f"{byteorder!r}")
    return zf, prefix, byteorder


def read_torch_file(path):
    """Unpickle a ``torch.save`` zip file with tensors replaced by NumPy arrays.

    Returns whatever was saved (dicts, lists, numbers, strings, arrays). Raises
    ``pickle.UnpicklingError`` naming the global if the file asks for anything but tensors.
    """
    zf, prefix, byteorder = _open_torch_zip(path)
    with zf, zf.open(f"{prefix}/data.pkl") as f:
        try:
            return _TensorUnpickler(f, zf, prefix, byteorder, os.fspath(path)).load()
        except _BadTorchFile:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
                AttributeError) as e:
            # a damaged pickle, or one calling our stand-ins with the wrong arguments
            raise pickle.UnpicklingError(f"{path}: data.pkl is not a valid tensor state_dict "
                                         f"pickle: {type(e).__name__}: {e}") from e


def read_torch_state_dict(path):
    """Read a ``torch.save(state_dict, path)`` file: ``{name: ndarray}`` in the file's order.

    Tensors come back as C-contiguous NumPy arrays of the same shape and dtype (bfloat16 widened
    to float32; nn.Parameters as plain arrays). A checkpoint dict that nests the weights under
    ``'state_dict'``, ``'model_state_dict'`` or ``'model'`` is unwrapped (other entries such as
    the optimizer state are dropped), and a ``'module.'`` prefix on every key (left by
    ``nn.DataParallel``) is removed.
    """
    obj = read_torch_file(path)
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"read_torch_state_dict: {path} holds a {type(obj).__name__}, "
                         "expected a dict of tensors (a state_dict)")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
    if bad:
        raise ValueError(f"read_torch_state_dict: {path} is not a flat state_dict; entries that "
                         f"are not name -> tensor: {bad[:10]} (top-level keys: {list(obj)[:10]})")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)
