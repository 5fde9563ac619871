"""torch files built by hand, for the tests of minifcn.io's torch readers (test_io_torchfile.py,
test_io_torchfile_limits.py, test_io_torchlegacy.py): the pickle written opcode by opcode, so
that its bytes are known exactly, in torch.save's zip layout; the committed fixtures compared
with what torch gave; and the readers' refusals."""
import os
import struct
import zipfile

from minifcn import io
from minifcn.io.torchfile import read_torch_file, read_torch_state_dict

import _helpers

READERS = (read_torch_state_dict, read_torch_file, io.import_weights)


def refused(path, match, readers=READERS):
    """_helpers.refused, by default with every reader of torch files."""
    return _helpers.refused(path, match, readers)


def reads_as_torch_gave(name, stem):
    """Fixture ``name``, read without torch, is what torch gave for ``stem`` (expected.npz): the
    same keys in order, each array bit-exact, C-contiguous and writeable."""
    got = read_torch_state_dict(_helpers.fixture(name))
    _helpers.assert_same_state(got, _helpers.expected(stem))
    assert all(a.flags.c_contiguous and a.flags.writeable for a in got.values())


# ---------------------------------------------------------------- pickle opcodes

def uni(s):
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def num(n):
    """A pickle int of any size: BININT for 32 bits, LONG1 (little-endian bytes) beyond."""
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def glob(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def tup(items):
    return b"(" + b"".join(items) + b"t"


def rebuild(pid, offset, size, stride):
    """_rebuild_tensor_v2(<pid>, offset, size, stride, False, {})."""
    args = tup([pid, num(offset), tup(map(num, size)), tup(map(num, stride)), b"\x89", b"}"])
    return glob("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def tensor(key, numel, offset, size, stride, storage_type="FloatStorage"):
    """A tensor over storage ``key`` of ``numel`` elements, as torch's zip format pickles it."""
    pid = tup([uni("storage"), glob("torch", storage_type), uni(key), uni("cpu"),
               num(numel)]) + b"Q"  # BINPERSID: the reader's persistent_load resolves it
    return rebuild(pid, offset, size, stride)


def state_pickle(entries):
    return b"\x80\x02}(" + b"".join(uni(k) + op for k, op in entries) + b"u."


# ---------------------------------------------------------------- files

def write_torch_zip(path, data_pkl, storages=(), byteorder=b"little", archive="archive"):
    """A file in torch.save's zip layout, assembled by hand."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{archive}/data.pkl", data_pkl)
        zf.writestr(f"{archive}/byteorder", byteorder)
        zf.writestr(f"{archive}/version", b"3\n")
        for key, raw in dict(storages).items():
            zf.writestr(f"{archive}/data/{key}", raw)
    return path


class Evil:
    """Unpickling this runs a shell command, as a booby-trapped model file would."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))
