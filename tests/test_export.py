"""minifcn.export: the PyTorch FCN port's state dict (torch.load(weights_only=True) reads it,
with or without torch writing it; the port's nets, defined here after its source, take it
strictly and compute minifcn's scores), ONNX (onnxruntime computes minifcn's scores on any
size), and python -m minifcn.export."""
import io as pyio
import json
import pickletools
import struct
import sys
import zipfile

import numpy as np
import pytest

from minifcn import Tensor, export, io, models, no_grad, training
from minifcn import train as train_cli
from minifcn.models.vgg import FC_CHANNELS, VGG16_BLOCKS, scaled
from minifcn.io.safetensors import load_safetensors

NETS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
WIDTH, N_CLASS = 0.0625, 5  # 4-8-16-32-32 channels, fc 256

TRUNK = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1",
         "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7", "score_fr"]
# the port's state dict keys beyond the trunk (torchfcn/models/fcn32s.py, fcn16s.py, fcn8s.py)
PORT_HEAD = {
    "fcn32s": ["upscore.weight"],
    "fcn16s": ["score_pool4.weight", "score_pool4.bias", "upscore2.weight", "upscore16.weight"],
    "fcn8s": ["score_pool3.weight", "score_pool3.bias", "score_pool4.weight", "score_pool4.bias",
              "upscore2.weight", "upscore8.weight", "upscore_pool4.weight"],
}
PORT_HEAD["fcn8s-atonce"] = PORT_HEAD["fcn8s"]


def port_keys(name):
    return {f"{n}.{p}" for n in TRUNK for p in ("weight", "bias")} | set(PORT_HEAD[name])


def random_model(name, seed=0, **options):
    """A small FCN with every parameter random (score layers and upscores too: minifcn starts
    them at zero and bilinear, which would hide a mix-up), scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    model = models.build(name, n_class=N_CLASS, width=WIDTH, dropout=0.5, **options).eval()
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith(".bias"):
            state[key] = rng.normal(0, 0.1, value.shape)
        else:
            std = np.sqrt(2.0 / np.prod(value.shape[1:]))
            if key.startswith("upscore"):  # (C, C, k, k) at stride k/2: ~4 taps per output
                std = np.sqrt(1.0 / (4 * value.shape[0]))
            state[key] = rng.normal(0, std / (50 if key == "conv1_1.weight" else 1), value.shape)
    model.load_state_dict(state)
    return model


def scores(model, x):
    with no_grad():
        return model(Tensor(x)).data


# ---------------------------------------------------------------- the port's state dict

@pytest.mark.parametrize("name", NETS)
def test_pytorch_state_dict_has_the_ports_names_shapes_and_bgr_conv1_1(name):
    model = random_model(name)
    state = export.pytorch_state_dict(model)
    assert set(state) == port_keys(name)
    c5, fc = scaled(VGG16_BLOCKS[4][0], WIDTH), scaled(FC_CHANNELS, WIDTH)
    assert state["fc6.weight"].shape == (fc, c5, 7, 7)
    assert state["fc7.weight"].shape == (fc, fc, 1, 1)
    assert not any(k.startswith("upscore") and k.endswith(".bias") for k in state)
    own = model.state_dict()
    np.testing.assert_array_equal(state["conv1_1.weight"], own["conv1_1.weight"][:, ::-1])
    # minifcn.io.from_fcn_port converts the other way: it gives back the model's own weights
    back = io.from_fcn_port(state)
    assert set(back) == set(own)
    for k in own:
        np.testing.assert_array_equal(back[k], own[k])


def test_pytorch_state_dict_at_width_1_has_fc6_4096_512_7_7():
    model = models.fcn32s(n_class=21)
    state = export.pytorch_state_dict(model)
    assert state["fc6.weight"].shape == (4096, 512, 7, 7)
    assert state["upscore.weight"].shape == (21, 21, 64, 64)


def test_to_pytorch_warns_when_the_model_pads_conv1_1_otherwise(tmp_path):
    with pytest.warns(UserWarning, match="pads conv1_1 by 90, the PyTorch port by 100"):
        export.to_pytorch(random_model("fcn32s", pad1=90), tmp_path / "w.pth")


# ---------------------------------------------------------------- torch's zip, written by hand

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


def write_for_port(model, path, writer):
    """The port's state dict at ``path``: by minifcn's own writer (``to_pytorch``), or, as a
    reference, by torch.save of the same arrays (the test may import torch; minifcn never does)."""
    if writer == "by-hand":
        export.to_pytorch(model, path)
        return
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in export.pytorch_state_dict(model).items()}, path)


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


def test_to_pytorch_without_torch_installed_writes_by_hand(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    model = random_model("fcn16s")
    export.to_pytorch(model, tmp_path / "m.pth")
    back = io.read_torch_state_dict(tmp_path / "m.pth")
    assert set(back) == port_keys("fcn16s")


# ---------------------------------------------------------------- the port's nets, in PyTorch

def port_nets():
    """FCN32s, FCN16s, FCN8s, FCN8sAtOnce as torchfcn/models/ writes them (layer for layer:
    conv1_1 padding 100, ceil_mode pools, ReLU, Dropout2d, score layers, bias-free
    ConvTranspose2d upscores, crops at the fixed offsets 19; 5, 27; 5, 9, 31), with the channel
    counts passed in so a small width can be checked."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Trunk(nn.Module):
        def __init__(self, n_class, blocks, fc):
            super().__init__()
            c_in = 3
            for b, convs in enumerate(blocks, 1):
                for i, c in enumerate(convs, 1):
                    setattr(self, f"conv{b}_{i}", nn.Conv2d(c_in, c, 3,
                                                            padding=100 if b == i == 1 else 1))
                    setattr(self, f"relu{b}_{i}", nn.ReLU(inplace=True))
                    c_in = c
                setattr(self, f"pool{b}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            self.fc6, self.relu6, self.drop6 = nn.Conv2d(c_in, fc, 7), nn.ReLU(True), nn.Dropout2d()
            self.fc7, self.relu7, self.drop7 = nn.Conv2d(fc, fc, 1), nn.ReLU(True), nn.Dropout2d()
            self.score_fr = nn.Conv2d(fc, n_class, 1)
            self.blocks = [len(c) for c in blocks]

        def trunk(self, x):
            h, pools = x, []
            for b, n in enumerate(self.blocks, 1):
                for i in range(1, n + 1):
                    h = getattr(self, f"relu{b}_{i}")(getattr(self, f"conv{b}_{i}")(h))
                h = getattr(self, f"pool{b}")(h)
                pools.append(h)
            h = self.drop6(self.relu6(self.fc6(h)))
            h = self.drop7(self.relu7(self.fc7(h)))
            return pools[2], pools[3], self.score_fr(h)

    def up(n, k, s):
        return nn.ConvTranspose2d(n, n, k, stride=s, bias=False)

    class FCN32s(Trunk):
        def __init__(self, n_class, blocks, fc):
            super().__init__(n_class, blocks, fc)
            self.upscore = up(n_class, 64, 32)

        def forward(self, x):
            h = self.upscore(self.trunk(x)[2])
            return h[:, :, 19:19 + x.size()[2], 19:19 + x.size()[3]].contiguous()

    class FCN16s(Trunk):
        def __init__(self, n_class, blocks, fc):
            super().__init__(n_class, blocks, fc)
            self.score_pool4 = nn.Conv2d(blocks[3][-1], n_class, 1)
            self.upscore2, self.upscore16 = up(n_class, 4, 2), up(n_class, 32, 16)

        def forward(self, x):
            _, pool4, h = self.trunk(x)
            upscore2 = self.upscore2(h)
            h = self.score_pool4(pool4)
            h = h[:, :, 5:5 + upscore2.size()[2], 5:5 + upscore2.size()[3]]
            h = self.upscore16(upscore2 + h)
            return h[:, :, 27:27 + x.size()[2], 27:27 + x.size()[3]].contiguous()

    class FCN8s(Trunk):
        scale4, scale3 = 1, 1

        def __init__(self, n_class, blocks, fc):
            super().__init__(n_class, blocks, fc)
            self.score_pool3 = nn.Conv2d(blocks[2][-1], n_class, 1)
            self.score_pool4 = nn.Conv2d(blocks[3][-1], n_class, 1)
            self.upscore2, self.upscore8 = up(n_class, 4, 2), up(n_class, 16, 8)
            self.upscore_pool4 = up(n_class, 4, 2)

        def forward(self, x):
            pool3, pool4, h = self.trunk(x)
            upscore2 = self.upscore2(h)
            h = self.score_pool4(pool4 if self.scale4 == 1 else pool4 * self.scale4)
            h = h[:, :, 5:5 + upscore2.size()[2], 5:5 + upscore2.size()[3]]
            upscore_pool4 = self.upscore_pool4(upscore2 + h)
            h = self.score_pool3(pool3 if self.scale3 == 1 else pool3 * self.scale3)
            h = h[:, :, 9:9 + upscore_pool4.size()[2], 9:9 + upscore_pool4.size()[3]]
            h = self.upscore8(upscore_pool4 + h)
            return h[:, :, 31:31 + x.size()[2], 31:31 + x.size()[3]].contiguous()

    class FCN8sAtOnce(FCN8s):  # pool4 * 0.01, pool3 * 0.0001 before their score layers
        scale4, scale3 = 0.01, 0.0001

    return torch, {"fcn32s": FCN32s, "fcn16s": FCN16s, "fcn8s": FCN8s,
                   "fcn8s-atonce": FCN8sAtOnce}


@pytest.mark.parametrize("use_torch", [False, True], ids=["by-hand", "by-torch"])
@pytest.mark.parametrize("name", NETS)
def test_the_ports_nets_load_it_strictly_and_give_minifcns_scores(tmp_path, name, use_torch):
    torch, nets = port_nets()
    model = random_model(name, seed=NETS.index(name)).double()
    path = tmp_path / "port.pth"
    write_for_port(model, path, "by-torch" if use_torch else "by-hand")
    blocks = [tuple(scaled(c, WIDTH) for c in block) for block in VGG16_BLOCKS]
    net = nets[name](N_CLASS, blocks, scaled(FC_CHANNELS, WIDTH)).double().eval()
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = np.random.default_rng(7).normal(0, 60, (2, 3, 45, 37))
    want = scores(model, x)
    with torch.no_grad():
        got = net(torch.from_numpy(x[:, ::-1].copy())).numpy()  # the port reads BGR
    assert got.shape == want.shape == (2, N_CLASS, 45, 37) and want.std() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())


# ---------------------------------------------------------------- ONNX

ONNX_OPS = {"Conv", "Relu", "MaxPool", "ConvTranspose", "Shape", "Add", "Slice", "Mul"}


@pytest.mark.parametrize("name, options", [(n, {}) for n in NETS] + [("fcn8s", {"pad1": 80})],
                         ids=list(NETS) + ["fcn8s-pad1-80"])
def test_onnxruntime_gives_minifcns_scores_at_any_size(tmp_path, name, options):
    ort = pytest.importorskip("onnxruntime")
    model = random_model(name, seed=3, **options)
    path = tmp_path / "net.onnx"
    export.to_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    for shape in [(1, 3, 67, 53), (2, 3, 80, 96)]:  # one file, several sizes and batches
        x = rng.normal(0, 60, shape).astype(np.float32)
        want = scores(model, x)
        (got,) = session.run(["scores"], {"image": x})
        assert got.shape == (shape[0], N_CLASS) + shape[2:] and want.std() > 0
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("name", NETS)
def test_the_onnx_graph_is_the_nets_layers_for_inference(tmp_path, name):
    onnx = pytest.importorskip("onnx")
    model = random_model(name)
    export.to_onnx(model, tmp_path / "net.onnx")
    proto = onnx.load(str(tmp_path / "net.onnx"))
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert set(ops) == ONNX_OPS - ({"Mul"} if name != "fcn8s-atonce" else set())
    assert ops.count("Slice") == len(model.offsets) and ops.count("MaxPool") == 5
    assert ops.count("Conv") == len([k for k in model.state_dict() if k.endswith(".bias")])
    for node in proto.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MaxPool":
            assert attrs["ceil_mode"] == 1 and attrs["kernel_shape"] == [2, 2]
        if node.op_type == "Conv" and node.name == "conv1_1":
            assert attrs["pads"] == [100] * 4
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims == ["N", 3, "H", "W"]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert out.name == "scores" and dims == ["N", N_CLASS, "H", "W"]
    inits = {i.name for i in proto.graph.initializer}
    assert set(model.state_dict()) <= inits  # the weights keep their names
    starts = {i.name: onnx.numpy_helper.to_array(i).tolist() for i in proto.graph.initializer
              if i.name.endswith(".starts")}
    assert starts == {f"{k}.starts": [v, v] for k, v in model.offsets.items()}


def test_to_onnx_without_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[export\]"') as e:
        export.to_onnx(random_model("fcn32s"), tmp_path / "net.onnx")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "net.onnx").exists()


def test_minifcn_imports_neither_torch_nor_onnx():
    import subprocess

    code = ("import sys, minifcn.export, minifcn.io.onnx, minifcn.io.safetensors; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'safetensors') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- python -m minifcn.export

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny FCN-8s checkpoint (pad1 100, random weights), as python -m minifcn.train writes."""
    args = ["--model", "fcn8s", "--width", str(WIDTH), "--size", "32", "--device", "cpu"]
    config = {**train_cli.make_config(train_cli.parser().parse_args(args)),
              "n_class": N_CLASS, "pad1": 100}
    model = training.build_model(config)
    model.load_state_dict(random_model("fcn8s").state_dict())
    path = tmp_path_factory.mktemp("run") / training.BEST
    io.save_checkpoint(path, {f"model/{k}": v for k, v in model.state_dict().items()},
                       {"config": config})
    return str(path)


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_export_to_safetensors_keeps_minifcns_names(tmp_path, ckpt, capsys):
    out = tmp_path / "w.safetensors"
    assert export.main([ckpt, "--to", "safetensors", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    model, config = training.load_model(ckpt)
    back, own = load_safetensors(out), model.state_dict()
    assert list(back) == list(own)
    for k in own:
        np.testing.assert_array_equal(back[k], own[k])  # RGB conv1_1, unchanged
    from minifcn.io.safetensors import read_safetensors_metadata

    meta = read_safetensors_metadata(out)
    assert meta["model"] == "FCN8s" and json.loads(meta["config"])["pad1"] == 100


def test_export_to_pytorch_writes_the_ports_state_dict(tmp_path, ckpt, capsys):
    out = tmp_path / "w.pth"
    assert export.main([ckpt, "--to", "pytorch", "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err  # pad1 is the port's
    model, _ = training.load_model(ckpt)
    back, want = io.read_torch_state_dict(out), export.pytorch_state_dict(model)
    assert set(back) == port_keys("fcn8s")
    for k in want:
        np.testing.assert_array_equal(back[k], want[k])


def test_export_to_onnx(tmp_path, ckpt):
    pytest.importorskip("onnx")
    out = tmp_path / "w.onnx"
    assert export.main([ckpt, "--to", "onnx", "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_export_warns_in_one_line_when_the_port_pads_otherwise(tmp_path, capsys):
    model = random_model("fcn32s", pad1=90)
    config = {"model": "fcn32s", "n_class": N_CLASS, "width": WIDTH, "pad1": 90, "dropout": 0.5}
    ckpt = tmp_path / "ckpt.npz"
    io.save_checkpoint(ckpt, {f"model/{k}": v for k, v in model.state_dict().items()},
                       {"config": config})
    assert export.main([str(ckpt), "--to", "pytorch", "--out", str(tmp_path / "w.pth")]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: to_pytorch: the model pads conv1_1 by 90") and "\n" not in err


def test_an_existing_out_is_refused_and_kept_unless_overwrite(tmp_path, ckpt, capsys):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"precious")
    assert export.main([ckpt, "--to", "safetensors", "--out", str(out)]) == 1
    assert "already exists" in one_line_error(capsys) and out.read_bytes() == b"precious"
    assert export.main([ckpt, "--to", "safetensors", "--out", str(out), "--overwrite"]) == 0
    assert len(load_safetensors(out)) == len(port_keys("fcn8s"))


@pytest.mark.parametrize("case", ["folder", "under-a-file", "empty", "no-checkpoint",
                                  "not-a-checkpoint", "damaged-checkpoint", "odd-config",
                                  "weights-do-not-fit"])
def test_the_commands_errors_are_one_line_naming_the_file(tmp_path, ckpt, capsys, case):
    out, checkpoint = tmp_path / "w.pth", ckpt
    if case == "folder":
        out.mkdir()
    elif case == "under-a-file":
        (tmp_path / "file.txt").write_text("a regular file")
        out = tmp_path / "file.txt" / "w.pth"
    elif case == "empty":
        out = ""
    elif case == "no-checkpoint":
        checkpoint = str(tmp_path / "none.npz")
    elif case == "not-a-checkpoint":
        checkpoint = str(tmp_path / "weights.npz")
        io.save({"a": np.zeros(2)}, checkpoint)
    elif case == "weights-do-not-fit":
        checkpoint = str(tmp_path / "misfit.npz")
        config = {"model": "fcn8s", "n_class": 3, "width": WIDTH, "pad1": 100, "dropout": 0.5}
        io.save_checkpoint(checkpoint, {"model/a": np.zeros(2)}, {"config": config})
    elif case == "odd-config":
        checkpoint = str(tmp_path / "odd.npz")
        io.save_checkpoint(checkpoint, {"model/a": np.zeros(2)}, {"config": {"model": "fcn8s"}})
    else:
        checkpoint = str(tmp_path / "bad.npz")
        (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    args = [checkpoint, "--to", "pytorch", "--out", str(out)]
    assert export.main(args + (["--overwrite"] if case == "folder" else [])) == 1
    err = one_line_error(capsys)
    named = {"folder": "is a folder", "under-a-file": "file.txt is a file, not a folder", "empty": "--out is empty",
             "no-checkpoint": "none.npz", "not-a-checkpoint": "weights.npz",
             "damaged-checkpoint": "bad.npz", "odd-config": "odd.npz",
             "weights-do-not-fit": "misfit.npz"}[case]
    assert named in err
    if case.endswith(("checkpoint", "config", "fit")):
        assert not out.exists() and list(tmp_path.glob(".w.pth.*")) == []


@pytest.mark.parametrize("how", ["same name", "symlink", "another spelling", "hard link"])
@pytest.mark.parametrize("to", ["pytorch", "safetensors"])
def test_export_never_replaces_its_own_input_even_with_overwrite(tmp_path, ckpt, capsys,
                                                                  monkeypatch, how, to):
    mine = tmp_path / "mine.npz"  # a copy: a test that loses it spoils no other
    mine.write_bytes(open(ckpt, "rb").read())
    before = mine.read_bytes()
    out = {"same name": mine, "symlink": tmp_path / "w.pth", "hard link": tmp_path / "w.pth",
           "another spelling": tmp_path / "sub" / ".." / "mine.npz"}[how]
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        out.symlink_to(mine)
    elif how == "hard link":
        out.hardlink_to(mine)
    monkeypatch.setattr(training, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert export.main([str(mine), "--to", to, "--out", str(out), "--overwrite"]) == 1
    err = one_line_error(capsys)
    assert err.startswith(f"error: --out {out} ") and str(mine) in err, err
    assert mine.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"mine.npz", "sub", out.name})


def test_export_makes_a_missing_folder(tmp_path, ckpt, capsys):
    out = tmp_path / "no" / "such" / "w.safetensors"
    assert export.main([ckpt, "--to", "safetensors", "--out", str(out)]) == 0
    assert len(load_safetensors(out)) == len(port_keys("fcn8s"))
    bad = tmp_path / "none.npz"  # a failed export leaves no folder behind
    assert export.main([str(bad), "--to", "safetensors", "--out", str(tmp_path / "x" / "w")]) == 1
    assert "none.npz" in one_line_error(capsys) and not (tmp_path / "x").exists()


def test_export_to_onnx_without_onnx_refuses_before_loading(tmp_path, ckpt, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setattr(training, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert export.main([ckpt, "--to", "onnx", "--out", str(tmp_path / "w.onnx")]) == 1
    assert 'pip install -e ".[export]"' in one_line_error(capsys)
    assert not (tmp_path / "w.onnx").exists()


def test_an_unknown_target_is_refused_by_name(tmp_path, ckpt, capsys):
    with pytest.raises(SystemExit):
        export.main([ckpt, "--to", "tflite", "--out", str(tmp_path / "w")])
    assert "--to" in capsys.readouterr().err
