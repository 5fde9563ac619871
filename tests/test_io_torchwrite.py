"""minifcn.io.torchwrite: torch's zip format written without torch (save_torch_state_dict).
minifcn's own reader reads the file back; it is laid out as torch writes it; its pickle makes
only the calls torch.load(weights_only=True) allows; and torch.load reads it, as it reads
to_pytorch's file written either way."""
import io as pyio
import pickletools
import struct
import zipfile

import numpy as np
import pytest

from minifcn import export, io

from _helpers import random_model, write_for_port


ALLOWED_GLOBALS = {"torch._utils _rebuild_tensor_v2", "collections OrderedDict",
                   "torch FloatStorage", "torch DoubleStorage", "torch HalfStorage",
                   "torch LongStorage", "torch IntStorage", "torch ShortStorage",
                   "torch CharStorage", "torch ByteStorage", "torch BoolStorage"}


def odd_arrays(rng):
    return {"w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
            "d": rng.standard_normal((2, 5)), "h": np.arange(4, dtype=np.float16),
            "i": np.arange(-3, 3), "i32": np.arange(3, dtype=">i4"), "u": np.arange(300) % 256,
            "u8": np.arange(7, dtype=np.uint8), "b": np.array([True, False]),
            "scalar": np.array(1.5, np.float32), "empty": np.zeros((0, 3), np.float32),
            "transposed": np.arange(12.0).reshape(3, 4).T, "big": np.arange(70000, dtype=np.int8)}


def test_the_hand_written_torch_file_reads_back_with_minifcns_reader(tmp_path, rng):
    arrays = odd_arrays(rng)
    export.save_torch_state_dict(arrays, tmp_path / "w.pth")
    back = io.read_torch_state_dict(tmp_path / "w.pth")
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype.newbyteorder("=")
        np.testing.assert_array_equal(back[k], v)


def test_the_hand_written_torch_file_is_laid_out_as_torch_writes_it(tmp_path, rng):
    arrays = odd_arrays(rng)
    path = tmp_path / "w.pth"
    export.save_torch_state_dict(arrays, path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[0] == "archive/data.pkl"
        assert {"archive/version", "archive/byteorder", "archive/.format_version",
                "archive/.storage_alignment"} <= set(names)
        assert zf.read("archive/version") == b"3\n" and zf.read("archive/byteorder") == b"little"
        records = [i for i in zf.infolist() if i.filename.startswith("archive/data/")]
        assert [i.filename for i in records] == [f"archive/data/{k}" for k in range(len(arrays))]
        for info, array in zip(records, arrays.values()):
            assert info.compress_type == zipfile.ZIP_STORED
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                           info.header_offset + 30])
            start = info.header_offset + 30 + name_len + extra_len
            assert start % 64 == 0, info.filename  # torch aligns storages to 64 bytes
            want = np.asarray(array, dtype=array.dtype.newbyteorder("<"), order="C").tobytes()
            assert raw[start:start + info.file_size] == want
        pkl = zf.read("archive/data.pkl")
    found = {arg.replace("\n", " ").strip() for op, arg, _ in pickletools.genops(pkl)
             if op.name in ("GLOBAL", "STACK_GLOBAL")}
    assert found and found <= ALLOWED_GLOBALS


def test_the_hand_written_pickle_unpickles_to_the_right_calls(tmp_path, rng):
    """Without torch: run data.pkl with stand-ins for torch's functions."""
    arrays = odd_arrays(rng)
    export.save_torch_state_dict(arrays, tmp_path / "w.pth")
    with zipfile.ZipFile(tmp_path / "w.pth") as zf:
        pkl = zf.read("archive/data.pkl")

    import collections
    import pickle

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda *args: ("tensor",) + args
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            assert module == "torch" and name.endswith("Storage"), (module, name)
            return name

        def persistent_load(self, pid):
            return pid

    obj = Unpickler(pyio.BytesIO(pkl)).load()
    assert type(obj) is dict and list(obj) == list(arrays)
    for key, (name, array) in enumerate(arrays.items()):
        tag, storage, offset, size, stride, requires_grad, hooks = obj[name]
        assert storage[0] == "storage" and storage[2:] == (str(key), "cpu", array.size)
        assert offset == 0 and size == array.shape and requires_grad is False and hooks == {}
        assert stride == tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))


def test_the_hand_written_writer_refuses_what_torch_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="'x' has dtype complex128"):
        export.save_torch_state_dict({"x": np.zeros(2, complex)}, tmp_path / "w.pth")
    assert not (tmp_path / "w.pth").exists()


@pytest.mark.parametrize("use_torch", [False, True], ids=["by-hand", "by-torch"])
def test_torch_load_weights_only_reads_either_writer(tmp_path, rng, use_torch):
    torch = pytest.importorskip("torch")
    arrays = odd_arrays(rng)
    export.save_torch_state_dict(arrays, tmp_path / "a.pth")
    model = random_model("fcn8s")
    write_for_port(model, tmp_path / "m.pth", "by-torch" if use_torch else "by-hand")
    back = torch.load(tmp_path / "m.pth", weights_only=True)
    want = export.pytorch_state_dict(model)
    assert set(back) == set(want)
    for k in want:
        assert back[k].dtype == torch.float32
        np.testing.assert_array_equal(back[k].numpy(), want[k])
    if not use_torch:
        back = torch.load(tmp_path / "a.pth", weights_only=True)
        for k, v in arrays.items():
            assert tuple(back[k].shape) == v.shape
            np.testing.assert_array_equal(back[k].numpy(), v)
