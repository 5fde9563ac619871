"""Read torch's legacy stream format (torch 0.1.10 to 1.5, and ``torch.save(...,
_use_new_zipfile_serialization=False)`` since) without PyTorch, and without running its code.

torchvision's ``vgg16-397923af.pth`` and the PyTorch FCN port's ``*_from_caffe.pth`` of 2017 are
in this format. The file is one stream, read front to back::

    pickle 1   the magic number 0x1950a86a20f9469cfc6c
    pickle 2   the protocol version, 1001
    pickle 3   sys_info: the writer's byte order and C type sizes (not needed: see below)
    pickle 4   the object: dicts, names, and per tensor a call _rebuild_tensor(_v2)(storage,
               offset, size, stride, ...), each storage a persistent id
               ('storage', storage type, root key, location, root numel, view metadata)
    pickle 5   the list of root storage keys, in the order their data follows
    then, per key, an 8-byte little-endian element count and the storage's raw bytes

View metadata is None, or ``(view key, offset, view size)`` (in elements) for a storage that is
a slice of its root (torch 0.4 to 1.5 wrote these for ``storage[a:b]``); a tensor's own offset
counts from the view's start. The storage bytes are little-endian whatever machine wrote them:
torch's writer converts (sys_info's ``little_endian`` is the writer's, not the data's).

The pickles run through :mod:`minifcn.io.torchpickle`'s restricted unpicklers after
:func:`~minifcn.io.torchpickle.scan_pickle` has walked their opcodes; bookkeeping pickles may hold
plain data only. Storages are slices of the one copy of the file in memory, counted against the
reader's budget (see :mod:`minifcn.io.torchfile`), and every count, offset and size is checked
against the bytes that are there before anything is sliced or built.
"""
import io
import pickle

from .torchpickle import (REFUSED_HINT, STORAGE_DTYPES, Storage, StorageType, TensorUnpickler,
                          is_int, one_line, refusal, scan_pickle, short)

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_COUNT_BYTES = 8  # each storage's element count, before its bytes


def itemsize(code):
    return {"f8": 8, "f4": 4, "f2": 2, "bfloat16": 2, "i8": 8, "i4": 4, "i2": 2, "i1": 1,
            "u1": 1, "b1": 1, "c8": 8, "c16": 16}[code]


class DataUnpickler(pickle.Unpickler):
    """For the stream's bookkeeping pickles (magic number, version, sys_info, storage keys):
    numbers, strings, lists and dicts; no global and no persistent id can be reached."""

    def __init__(self, reader, pkl, what):
        super().__init__(io.BytesIO(pkl), encoding="utf-8")
        self._reader, self._what = reader, what

    def find_class(self, module, name):
        raise refusal(module, name, self._reader.path)

    def persistent_load(self, pid):
        self._reader.fail(f"{self._what} holds a persistent id {short.repr(pid)}: {REFUSED_HINT}")


class LegacyUnpickler(TensorUnpickler):
    """The object pickle of a legacy stream: as the zip's, but a storage's bytes come after the
    pickle, so each persistent id gets an empty :class:`Storage` to be filled by
    :func:`load_stream` (before any tensor is built)."""

    def __init__(self, reader, pkl):
        super().__init__(reader, pkl)
        self.roots = {}  # root key -> (Storage, numel)
        self.views = {}  # view key -> (Storage, root key, offset in bytes, size in bytes)

    def persistent_load(self, pid):
        r = self._reader
        if isinstance(pid, tuple) and pid[:1] == ("module",):
            r.fail("holds a pickled nn.Module (torch.save(model)), not a state_dict: "
                   f"{REFUSED_HINT}; save model.state_dict() instead")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str)):
            r.fail(f"unexpected persistent id {short.repr(pid)}: {REFUSED_HINT}")
        _, storage_type, key, _location, numel, view = pid
        code = STORAGE_DTYPES.get(storage_type.name)
        if code is None:
            r.fail(f"storage {short.repr(key)} is a {storage_type.name}, expected a typed "
                   f"storage: {REFUSED_HINT}")
        if key in self.views:
            r.fail(f"storage key {short.repr(key)} names both a storage and a view")
        if key not in self.roots:
            if not (is_int(numel) and 0 <= numel * itemsize(code) <= r.disk):
                r.fail(f"storage {short.repr(key)} claims {short.repr(numel)} elements, more "
                       f"than the whole file holds")
            self.roots[key] = (Storage(None, code, key), numel)
        root, numel = self.roots[key]
        if view is None:
            return root
        return self.view(root, numel, view, code)

    def view(self, root, numel, view, code):
        """The storage ``root[offset : offset + size]`` (in elements of ``code``), torch's
        storage view; one Storage per view key, as torch keeps one."""
        r = self._reader
        ok = isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
        view_key, offset, size = view if ok else (None, None, None)
        if view_key in self.views:
            return self.views[view_key][0]
        if view_key in self.roots:
            r.fail(f"storage key {short.repr(view_key)} names both a storage and a view")
        n = itemsize(code)
        root_bytes = numel * itemsize(root.code)
        if not (ok and is_int(offset) and is_int(size) and offset >= 0 and size >= 0
                and (offset + size) * n <= root_bytes):
            r.fail(f"storage view {short.repr(view)} of storage {short.repr(root.key)} "
                   f"({root_bytes} bytes) is not (key, offset, size) inside it")
        self.views[view_key] = (Storage(None, code, view_key), root.key, offset * n, size * n)
        return self.views[view_key][0]


def is_legacy_stream(head):
    """A pickle of protocol 2 or above starts with PROTO (0x80); torch wrote protocol 2."""
    return head[:1] == b"\x80"


def _data_pickle(reader, f, data, what):
    length = scan_pickle(f, reader.fail, what)
    reader.spend(length, f"{what} of {length} bytes")  # the copy below
    pkl = data[f.tell() - length: f.tell()]
    return DataUnpickler(reader, pkl, what).load()


def load_stream(reader):
    """The object a legacy stream holds, each tensor a Pending whose storage's bytes are set.

    ``reader`` is minifcn.io.torchfile's: its ``path``, ``disk`` (the file's size), ``fail`` and
    ``spend``; its ``endian`` is set to little.
    """
    with open(reader.path, "rb") as fh:
        reader.spend(reader.disk, "the file itself")
        data = fh.read(reader.disk)
    reader.endian = "<"
    f = io.BytesIO(data)  # shares data's bytes until written to; its read(n) cannot overshoot
    magic = _data_pickle(reader, f, data, "the first pickle")
    if type(magic) is not int or magic != MAGIC_NUMBER:
        reader.fail(f"is a pickle, not a torch.save file (expected torch's magic number "
                    f"{MAGIC_NUMBER:#x} first, found {short.repr(magic)})")
    version = _data_pickle(reader, f, data, "the protocol version pickle")
    if type(version) is not int or version != PROTOCOL_VERSION:
        reader.fail(f"is in torch's legacy format version {short.repr(version)}, expected "
                    f"{PROTOCOL_VERSION}")
    _data_pickle(reader, f, data, "the sys_info pickle")
    length = scan_pickle(f, reader.fail, "the object pickle")
    reader.spend(length, f"the object pickle of {length} bytes")  # the copy below
    unpickler = LegacyUnpickler(reader, data[f.tell() - length: f.tell()])
    obj = unpickler.load()
    keys = _data_pickle(reader, f, data, "the storage key list")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        reader.fail(f"the storage key list is {short.repr(keys)}, expected a list of strings")
    _read_storages(reader, memoryview(data), f.tell(), keys, unpickler)
    return obj


def _read_storages(reader, data, at, keys, unpickler):
    """Point each storage (and view) at its bytes in ``data``, which follow from ``at``."""
    fail = reader.fail
    unused = sorted(set(keys) - set(unpickler.roots))
    if unused or len(set(keys)) != len(keys):
        fail(one_line(f"the storage key list {short.repr(keys)} names storages the pickle does "
                      f"not use or names one twice (unused: {short.repr(unused)})"))
    for key in keys:
        storage, numel = unpickler.roots[key]
        if at + _COUNT_BYTES > len(data):
            fail(f"is truncated: storage {short.repr(key)}'s element count is missing")
        count = int.from_bytes(data[at: at + _COUNT_BYTES], "little", signed=True)
        at += _COUNT_BYTES
        if count != numel:
            fail(f"storage {short.repr(key)} holds {count} elements, the pickle says {numel}")
        nbytes = numel * itemsize(storage.code)
        if at + nbytes > len(data):
            fail(f"is truncated: storage {short.repr(key)} needs {nbytes} bytes, "
                 f"{len(data) - at} remain")
        storage.raw = data[at: at + nbytes]  # a view of the file's copy, not another copy
        at += nbytes
    missing = sorted(set(unpickler.roots) - set(keys))
    if missing:
        fail(f"storage {short.repr(missing[0])} has no data (it is not in the storage key list)")
    for storage, root_key, offset, nbytes in unpickler.views.values():
        storage.raw = unpickler.roots[root_key][0].raw[offset: offset + nbytes]
    # bytes after the last storage are ignored, as torch.load ignores them
