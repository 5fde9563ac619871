"""Read a ``torch.save(state_dict, path)`` file without PyTorch, and without running its code.

What is inside such a file (the zip format, the default since torch 1.6)::

    archive/data.pkl      a pickle of the object: dicts, names, and for each tensor a call
                          torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)
    archive/data/0, 1...  the raw bytes of each storage (a tensor is a view into one)
    archive/byteorder     b"little" or b"big"
    archive/version ...   bookkeeping we do not need

Files written before torch 1.6 (and with ``_use_new_zipfile_serialization=False`` since) are one
stream of pickles then storages instead, read by :mod:`minifcn.io.torchlegacy` into the same
tensors; which format a file is in is told by its first bytes (``PK`` or a pickle), as torch does.

A pickle is a small program that can call any Python global (``os.system`` included): data.pkl
is run by :mod:`minifcn.io.torchpickle`'s restricted unpickler, which refuses every global but the
few a tensor state_dict needs, and only notes each tensor's storage and geometry; the arrays are
built here after the pickle has run, when each tensor's key is known, so every error can name it.

Limits: a damaged or hostile file cannot make the reader exhaust memory. Everything it allocates
is counted, before allocating, against a budget of ``BUDGET_FACTOR`` (4) x the file's size on
disk + ``BUDGET_SLACK`` (64 MiB), in all: data.pkl, each storage record (its declared size, which
must match the storage's numel) and each array built (of a legacy stream: the file, read once,
whose storages are slices of it, its object pickle and each array built). A file torch wrote
needs at most about 3x its size (the storages, then one C-contiguous copy of each tensor,
bfloat16 widened to float32), so it always fits. What does not fit is a tensor bigger than the bytes behind it: an
``expand()``ed view, which torch saves as its stride-0 geometry over the 1-element storage (a
1.5 kB file that asks for 37 GiB), or many tensors built from one storage. Small ones are built
(a bias expanded to 4096 channels is 16 kB, inside the slack); beyond the budget the file is
refused, naming the tensor (``t.clone()`` before saving writes the real bytes, and the budget
grows with the file). Before the pickle runs, its opcodes are walked without running them
(``pickletools.genops``): a length field that runs past the end, or a memo index beyond the
pickle's length, is refused (CPython's unpickler would allocate either up front). Every view
must lie inside its storage: offset, sizes and strides non-negative ints and
``offset + sum((size - 1) * stride) < numel``.

Every failure is a :class:`TorchFileError` (a ValueError) whose one-line message names the file
(and the tensor or record) and what was expected; a missing file is a FileNotFoundError.

Public: :func:`read_torch_state_dict` (path -> ``{name: ndarray}``) and :func:`read_torch_file`
(path -> the unpickled object, tensors as arrays).
"""
import math
import os
import sys
import tarfile
import zipfile

import numpy as np

from .errors import described, human_bytes as _human, require_file
from .torchlegacy import is_legacy_stream, load_stream
from .torchpickle import (REFUSED_HINT, Pending, Storage, TensorUnpickler, TorchFileError,
                          is_int, one_line, prescan, short)

__all__ = ["read_torch_state_dict", "read_torch_file", "TorchFileError"]

BUDGET_FACTOR = 4  # the reader allocates at most this many times the file's size on disk ...
BUDGET_SLACK = 64 * 2**20  # ... plus this, in all (see the module docstring)
MAX_DEPTH = 100  # containers nested deeper are refused (a checkpoint dict is a few levels deep)
MAX_NDIM = 64  # NumPy's limit

# keys under which training scripts commonly nest the weights inside a bigger checkpoint dict
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _join(name, key):
    """The key path of a nested tensor, for messages: 'state_dict/conv1_1.weight'."""
    key = key if isinstance(key, str) and len(key) <= 200 else short.repr(key)
    return f"{name}/{key}" if name else key


class _Reader:
    """One read of one file: its zip, its byte order, and what it may still allocate."""

    def __init__(self, path):
        self.path = path
        self.disk = os.path.getsize(path)
        self.budget = BUDGET_FACTOR * self.disk + BUDGET_SLACK
        self.spent = 0

    def fail(self, what):
        raise TorchFileError(one_line(f"{self.path}: {what}"))

    def spend(self, nbytes, what):
        if self.spent + nbytes > self.budget:
            self.fail(f"{what}, beyond what this reader builds from a {_human(self.disk)} file "
                      f"({_human(self.budget)} in all: {BUDGET_FACTOR} x its size + "
                      f"{_human(BUDGET_SLACK)}, see minifcn.io.torchfile)")
        self.spent += nbytes

    def read_member(self, info):
        # a lying header could make zipfile allocate its claimed size before finding out
        if info.compress_size > self.disk:
            self.fail(f"record {info.filename!r} claims {info.compress_size} bytes, more than "
                      "the whole file: a damaged zip")
        self.spend(info.file_size, f"record {info.filename!r} would take "
                                   f"{_human(info.file_size)}")
        return self.zf.read(info)

    def open_zip(self):
        """Check the file is a torch zip; set zf, prefix (the archive's folder), endian."""
        path = self.path
        if not zipfile.is_zipfile(path):
            self.fail("looks like a damaged or truncated zip archive (expected a torch.save file)")
        self.zf = zipfile.ZipFile(path)
        pickles = [n for n in self.zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError(f"read_torch_state_dict: {path} is a zip but not a torch.save "
                                 f"archive (expected one <archive>/data.pkl record, found "
                                 f"{len(pickles)})")
        self.prefix = pickles[0][: -len("/data.pkl")]
        try:
            info = self.zf.getinfo(f"{self.prefix}/byteorder")
        except KeyError:  # written before torch recorded it: torch also assumes native
            byteorder = sys.byteorder
        else:
            byteorder = self.read_member(info)[:16].decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            self.fail(f"unknown byteorder record {byteorder!r} (expected 'little' or 'big')")
        self.endian = "<" if byteorder == "little" else ">"

    def load(self):
        """The file's object, tensors as arrays. The format is told by the first bytes, as
        torch.load tells it, never by the file's name."""
        self.zf = None
        with open(self.path, "rb") as f:
            head = f.read(4)
        try:
            if head[:2] == b"PK":  # a zip's local header, PK\x03\x04 (torch >= 1.6)
                self.open_zip()
                pkl = self.read_member(self.zf.getinfo(f"{self.prefix}/data.pkl"))
                prescan(pkl, self.fail)
                obj = TensorUnpickler(self, pkl).load()
            elif is_legacy_stream(head):  # a bare pickle stream (torch 0.1.10 to 1.5)
                obj = load_stream(self)
            elif tarfile.is_tarfile(self.path):
                raise TorchFileError(
                    f"read_torch_state_dict: {self.path} is in torch's legacy tar format (torch "
                    "< 0.1.10), which is not supported; re-save it once with torch 1.x or 2.x: "
                    f"torch.save(torch.load({self.path!r}, weights_only=False), 'resaved.pt') "
                    "(weights_only=False runs the file's code: do that only for a file you trust)")
            else:
                raise TorchFileError(
                    f"read_torch_state_dict: {self.path} is not a file written by torch.save "
                    "(expected a zip archive holding data.pkl, or torch's legacy pickle stream)")
            return self.resolve(obj, "", 0, {})
        finally:
            if self.zf is not None:
                self.zf.close()

    # --- after the pickle has run: replace each Pending by its array, knowing its key ---------

    def resolve(self, obj, name, depth, done):
        if isinstance(obj, Pending):
            return self.build(obj, name or "<the whole file>")
        if not isinstance(obj, (dict, list, tuple)):
            return obj
        if id(obj) in done:  # shared or cyclic: each container once
            return done[id(obj)][1]
        if depth >= MAX_DEPTH:
            self.fail(f"containers nested more than {MAX_DEPTH} deep at {short.repr(name)}: "
                      "expected a state_dict")
        if isinstance(obj, tuple):
            new = tuple(self.resolve(v, _join(name, i), depth + 1, done)
                        for i, v in enumerate(obj))
            done[id(obj)] = (obj, new)
            return new
        done[id(obj)] = (obj, obj)
        for k, v in list(obj.items() if isinstance(obj, dict) else enumerate(obj)):
            obj[k] = self.resolve(v, _join(name, k), depth + 1, done)
        return obj

    def build(self, p, name):
        """The array of shape ``size`` whose element (i_0, i_1, ...) is
        ``storage[offset + sum(i_k * stride[k])]``; checked before anything is allocated."""
        where = f"tensor {name!r}"
        storage, code = p.storage, p.code
        if not isinstance(storage, Storage) or code is None:
            self.fail(f"{where} has no typed storage: {REFUSED_HINT}")
        offset, size, stride = p.offset, p.size, p.stride
        ok = isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
        size, stride = (tuple(size), tuple(stride)) if ok else ((), ())
        if not (ok and is_int(offset) and all(is_int(v) for v in size + stride)
                and len(size) == len(stride) <= MAX_NDIM and offset >= 0
                and min(size + stride, default=0) >= 0):
            self.fail(f"{where} has a bad geometry offset={short.repr(p.offset)} size="
                      f"{short.repr(p.size)} stride={short.repr(p.stride)} (expected "
                      f"non-negative ints, one stride per size, at most {MAX_NDIM} dims)")
        word = "u2" if code == "bfloat16" else code
        dtype = np.dtype(self.endian + word if np.dtype(word).itemsize > 1 else word)
        if len(storage.raw) % dtype.itemsize:
            self.fail(f"storage {storage.key} ({len(storage.raw)} bytes) is not a whole number "
                      f"of {code}, as {where} reads it")
        n_storage, numel = len(storage.raw) // dtype.itemsize, math.prod(size)
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= n_storage:
                self.fail(f"{where} (offset {offset}, size {size}, stride {stride}) runs past the "
                          f"end of storage {storage.key} ({n_storage} elements)")
        nbytes = numel * (4 if code == "bfloat16" else dtype.itemsize)
        expanded = (" (an expand()ed, stride-0 view? torch.save(t.clone()) writes its real "
                    "bytes)" if nbytes > len(storage.raw) else "")
        self.spend(nbytes, f"{where} of size {size} would take {_human(nbytes)} built from the "
                           f"{_human(len(storage.raw))} of storage {storage.key}{expanded}")
        if not numel:
            try:
                out = np.empty(size, dtype=dtype)
            except ValueError as e:  # (0, 2**62, 2**62): NumPy refuses the shape itself
                self.fail(f"{where} of size {size}: {e}")
        else:
            flat = np.frombuffer(storage.raw, dtype=dtype)
            strides = [s * dtype.itemsize for s in stride]
            view = np.lib.stride_tricks.as_strided(flat[offset:], size, strides, writeable=False)
            out = np.array(view, order="C")  # a copy: C-contiguous, writeable, not the file's bytes
        out = out.astype(out.dtype.newbyteorder("="), copy=False)
        if code == "bfloat16":
            # bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret
            out = out.astype(np.uint32)
            out <<= 16
            out = out.view(np.float32)
        return self.apply_metadata(out, p.metadata, where)

    def apply_metadata(self, array, metadata, where):
        # torch marks lazily conjugated / negated views with flags instead of touching the data
        if metadata is not None and not isinstance(metadata, dict):
            self.fail(f"{where} has metadata {short.repr(metadata)}, expected a dict")
        unknown = set(metadata or {}) - {"conj", "neg"}
        if unknown:
            self.fail(f"{where} has unsupported metadata {short.repr(sorted(map(str, unknown)))}")
        if (metadata or {}).get("conj"):
            array = np.conj(array)
        if (metadata or {}).get("neg"):
            array = -array
        return array


def read_torch_file(path):
    """Unpickle a ``torch.save`` file (zip, or the legacy stream) with tensors as NumPy arrays.

    Returns whatever was saved (dicts, lists, numbers, strings, arrays). Raises
    :class:`TorchFileError` (a ValueError) naming the file, and the global, record or tensor at
    fault, if the file asks for anything but tensors, is damaged or is beyond the limits in the
    module docstring; FileNotFoundError if there is no such file.
    """
    path = require_file(path, "read_torch_state_dict", TorchFileError)
    try:
        return _Reader(path).load()
    except (TorchFileError, MemoryError):  # ours name the file; a real shortage stays one
        raise
    except NotImplementedError as e:  # zipfile: a newer zip version, encryption...
        raise TorchFileError(one_line(
            f"{path}: uses a zip feature Python's zipfile cannot read ({described(e)}); "
            "expected a zip as torch.save writes")) from e
    except Exception as e:  # zipfile, zlib, struct, pickle...: no code of the file's has run
        raise TorchFileError(one_line(
            f"{path}: cannot be read as a torch.save file ({described(e)}); expected "
            "an intact zip of data.pkl and tensor storages, or torch's legacy stream")) from e


def read_torch_state_dict(path):
    """Read a ``torch.save(state_dict, path)`` file: ``{name: ndarray}`` in the file's order.

    Tensors come back as C-contiguous NumPy arrays of the same shape and dtype (bfloat16 widened
    to float32; nn.Parameters as plain arrays), each its own copy. A checkpoint dict that nests
    the weights under ``'state_dict'``, ``'model_state_dict'`` or ``'model'`` is unwrapped (other
    entries such as the optimizer state are dropped), and a ``'module.'`` prefix on every key
    (left by ``nn.DataParallel``) is removed. Errors: as :func:`read_torch_file`.
    """
    obj = read_torch_file(path)
    if isinstance(obj, dict) and not any(isinstance(v, np.ndarray) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise TorchFileError(f"read_torch_state_dict: {path} holds a {type(obj).__name__}, "
                             "expected a dict of tensors (a state_dict)")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, np.ndarray))]
    if bad:
        raise TorchFileError(one_line(
            f"read_torch_state_dict: {path} is not a flat state_dict; entries that are not "
            f"name -> tensor: {short.repr(bad[:10])} (top-level keys: "
            f"{short.repr(list(obj)[:10])})"))
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)
