"""NaN or infinite weights are refused on load, naming the file and the first bad tensor (issue 31,
finding 5): by io.load (.npz, .safetensors), io.load_checkpoint and io.import_weights (torch,
Caffe), and so by every command that reads weights: train --init-from, evaluate, predict and
export. Before, evaluate printed metrics of a NaN net, predict wrote all-background maps, export
wrote the NaN weights out and --init-from trained into "loss is nan ... lower --lr".

The files are written by numpy (np.savez), by hand (the safetensors layout; torch's zip through
tests/_torchfiles.py; Caffe's protobuf through tests/_caffe_encoder.py), not by minifcn's writers.
"""
import json
import struct

import numpy as np
import pytest

from minifcn import evaluate, export, io, predict, training
from minifcn import train as train_cli
from minifcn.io.errors import NonFiniteWeightsError

from _caffe_encoder import layer, net
from _torchfiles import state_pickle, tensor, write_torch_zip

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


def arrays(bad=np.nan):
    """'a' finite, 'b' with ``bad`` at (1, 2) (the first bad tensor), 'c' all bad, an int."""
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    b[1, 2] = bad
    return {"a": np.ones((2, 3), np.float32), "b": b, "c": np.full(3, bad, np.float32),
            "steps": np.arange(3, dtype=np.int64)}


def safetensors_bytes(state):
    names = {"float32": "F32", "int64": "I64"}
    header, data = {}, b""
    for k, a in state.items():
        header[k] = {"dtype": names[a.dtype.name], "shape": list(a.shape),
                     "data_offsets": [len(data), len(data) + a.nbytes]}
        data += a.astype(a.dtype.newbyteorder("<")).tobytes()
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def torch_zip(path, state):
    floats = {k: v for k, v in state.items() if v.dtype == np.float32}
    entries = [(k, tensor(str(i), v.size, 0, v.shape, [v.shape[1], 1][:v.ndim] if v.ndim == 2
                          else [1])) for i, (k, v) in enumerate(floats.items())]
    write_torch_zip(path, state_pickle(entries),
                    {str(i): v.astype("<f4").tobytes() for i, v in enumerate(floats.values())})


def write(kind, folder, state):
    """A file of ``kind`` holding ``state``; returns (path, the reader to call)."""
    if kind == "npz":
        np.savez(folder / "w.npz", **state)
        return folder / "w.npz", io.load
    if kind == "checkpoint":
        np.savez(folder / "c.npz", **state, __meta__=np.array("{}"))
        return folder / "c.npz", io.load_checkpoint
    if kind == "safetensors":
        (folder / "w.safetensors").write_bytes(safetensors_bytes(state))
        return folder / "w.safetensors", io.load
    if kind == "torch":
        torch_zip(folder / "w.pth", state)
        return folder / "w.pth", io.import_weights
    assert kind == "caffemodel"
    floats = [(k, v) for k, v in state.items() if v.dtype == np.float32]
    (folder / "w.caffemodel").write_bytes(net([layer(k, "Convolution", [v]) for k, v in floats]))
    return folder / "w.caffemodel", io.import_weights


KINDS = ("npz", "checkpoint", "safetensors", "torch", "caffemodel")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_weights_refused_naming_the_file_and_the_first_bad_tensor(kind, bad, tmp_path):
    path, reader = write(kind, tmp_path, arrays(bad))
    with pytest.raises(NonFiniteWeightsError) as e:
        reader(path)
    message = str(e.value)
    name = "'b[0]'" if kind == "caffemodel" else "'b'"  # Caffe: a layer's blobs, numbered
    assert f"{path}: tensor {name} holds {bad} at (1, 2) (1 of 12 values" in message
    assert "'c" not in message and "\n" not in message
    assert isinstance(e.value, ValueError)  # what the commands print as one line


@pytest.mark.parametrize("kind", KINDS)
def test_finite_weights_at_the_extremes_load(kind, tmp_path):
    state = arrays()
    info = np.finfo(np.float32)
    state["b"][1, 2], state["c"][:] = info.max, [-info.max, info.tiny, -0.0]
    path, reader = write(kind, tmp_path, state)
    if reader is io.import_weights:  # read and checked; the names are no net's
        with pytest.raises(ValueError, match="missing") as e:
            reader(path)
        assert not isinstance(e.value, NonFiniteWeightsError)
    else:
        reader(path)


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    """A tiny FCN-32s checkpoint (as train writes one) whose score_fr.weight holds one NaN."""
    config = training.resolve({**training.DEFAULTS, "model": "fcn32s", "width": 1 / 32,
                               "data": "voc:unused", "device": "cpu", "n_class": 5})
    state = {f"model/{k}": v for k, v in training.build_model(config).state_dict().items()}
    state["model/score_fr.weight"].flat[7] = np.nan
    path = tmp_path_factory.mktemp("ckpt") / "nan.npz"
    np.savez(path, **state, __meta__=np.array(json.dumps({"config": config})))
    return path


def refused_in_one_line(capsys, path):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert f"{path}: tensor 'model/score_fr.weight' holds nan" in err, err


def test_evaluate_refuses_nan_weights_instead_of_printing_metrics(nan_checkpoint, capsys):
    assert evaluate.main([str(nan_checkpoint), "--device", "cpu"]) == 1
    refused_in_one_line(capsys, nan_checkpoint)


def test_predict_refuses_nan_weights_instead_of_writing_background_maps(nan_checkpoint,
                                                                        tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "a.png")
    assert predict.main([str(nan_checkpoint), str(tmp_path / "a.png"), "--out",
                         str(tmp_path / "out"), "--device", "cpu"]) == 1
    refused_in_one_line(capsys, nan_checkpoint)
    assert not list((tmp_path / "out").rglob("*.png"))


@pytest.mark.parametrize("target", ["safetensors", "pytorch"])
def test_export_refuses_nan_weights_instead_of_writing_them_out(nan_checkpoint, tmp_path, capsys,
                                                               target):
    out = tmp_path / f"out.{target}"
    assert export.main([str(nan_checkpoint), "--to", target, "--out", str(out)]) == 1
    refused_in_one_line(capsys, nan_checkpoint)
    assert not out.exists()


def test_init_from_nan_weights_is_refused_naming_the_tensor_not_blaming_the_lr(tmp_path, capsys):
    args = ["--model", "fcn32s", "--width", "0.0625", "--size", "32", "--n-train", "2",
            "--n-val", "2", "--batch-size", "2", "--device", "cpu"]
    config = train_cli.make_config(train_cli.parser().parse_args(args))
    config["n_class"] = training.dataset(config, "train").n_class
    model = training.build_model(config)
    state = model.state_dict()
    state["conv1_1.weight"].flat[0] = np.inf
    np.savez(tmp_path / "inf.npz", **state)
    assert train_cli.main(args + ["--iters", "1", "--init-from", str(tmp_path / "inf.npz"),
                                  "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'inf.npz'}: tensor 'conv1_1.weight' holds inf" in err
    assert "--lr" not in err
