"""minifcn.io.onnx, through export.to_onnx: onnxruntime computes minifcn's scores at several sizes
and batches from one file; the graph is the net's layers for inference, with the weights under
their names; without the onnx package the error names the extra to install."""
import sys

import numpy as np
import pytest

from minifcn import export

from _helpers import N_CLASS, NETS, WIDTH, random_model, scores


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


@pytest.mark.parametrize("name", NETS)
def test_onnx_export_takes_any_image_size_as_predict_does(tmp_path, name):
    """A net trained at the small padding the synthetic sets get (pad1 'auto' on 96x96) takes a
    37x53 image in predict, which pads conv1_1 more for it; the exported graph does the same,
    to float32's rounding (1e-4 of the largest score)."""
    ort = pytest.importorskip("onnxruntime")
    from minifcn import predict
    from minifcn.models import padding

    pad1 = padding.min_pad1(name, 96)
    model = random_model(name, seed=5, pad1=pad1)
    config = {"model": name, "n_class": N_CLASS, "width": WIDTH, "pad1": pad1, "dropout": 0.5}
    export.to_onnx(model, tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"),
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(12)
    for h, w in [(96, 96), (37, 53), (5, 9)]:  # the run's size, and smaller than it takes as is
        x = rng.normal(0, 60, (1, 3, h, w)).astype(np.float32)
        net = predict.fit_padding(model, config, h, w, "cpu")
        assert (net is model) == (min(h, w) >= model.min_input_size)  # more for small ones
        want = scores(net, x)
        (got,) = session.run(["scores"], {"image": x})
        assert got.shape == (1, N_CLASS, h, w) and want.std() > 0
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), (h, w)


def test_pad1_by_side_is_predicts_padding_for_each_side():
    from minifcn.models import geometry, padding

    model = random_model("fcn16s", pad1=padding.min_pad1("fcn16s", 96))
    table = padding.pad1_by_side(model)
    own = model.conv1_1.padding[0]
    assert table[-1] == own and len(table) == geometry.min_input_size(model)
    for side in (1, 2, 9, 31, len(table) - 1, len(table), len(table) + 40):
        want = max(own, padding.min_pad1(model, side))  # as predict.fit_padding decides
        assert table[min(side, len(table)) - 1] == want, side
    assert padding.pad1_by_side(random_model("fcn8s")) == [100]  # takes any size as it is


def test_to_onnx_without_onnx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[export\]"') as e:
        export.to_onnx(random_model("fcn32s"), tmp_path / "net.onnx")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "net.onnx").exists()
