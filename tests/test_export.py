"""python -m minifcn.export: a training checkpoint to the PyTorch port's state dict, ONNX or
safetensors; an existing --out kept unless --overwrite; one-line errors naming the file; and
minifcn imports neither torch nor onnx. (What each target writes: tests/test_io_export.py,
test_io_torchwrite.py, test_io_onnx.py, test_io_safetensors.py.)"""
import json
import sys

import numpy as np
import pytest

from minifcn import export, io, training
from minifcn import train as train_cli
from minifcn.io.safetensors import load_safetensors

from _helpers import N_CLASS, WIDTH, port_keys, random_model


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


def test_minifcn_imports_neither_torch_nor_onnx():
    import subprocess

    code = ("import sys, minifcn.export, minifcn.io.onnx, minifcn.io.safetensors; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'safetensors') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
