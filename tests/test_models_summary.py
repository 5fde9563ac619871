"""Tests of minifcn.summary and the models CLI: the paper's numbers at full width (strides, 134M
parameters, receptive field 404), FCN-FACTS's worked sizes, and agreement with a real forward."""
import copy
import subprocess
import sys

import numpy as np
import pytest

import minifcn
from minifcn import Tensor, no_grad
from minifcn.models import fcn8s, fcn16s, fcn32s, summary
from minifcn.models.__main__ import main
from minifcn.models.geometry import trace

VGG = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
       (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]


def fcn8s_param_count(n):
    """FCN-8s parameters counted from the layer list, independently of the model code."""
    trunk = sum(cin * cout * 9 + cout for cin, cout in VGG)
    fc = 512 * 4096 * 49 + 4096 + 4096 * 4096 + 4096
    scores = (4096 + 1) * n + (512 + 1) * n + (256 + 1) * n
    upsampling = n * n * (4 * 4 + 4 * 4 + 16 * 16)
    return trunk + fc + scores + upsampling


@pytest.fixture(scope="module")
def full():
    """FCN-8s at width 1.0, 21 classes (134M parameters; built once, never run on data)."""
    return fcn8s(n_class=21, width=1.0)


@pytest.fixture(scope="module")
def full_steps(full):
    return {s.name: s for s in trace(full, (1, 3, 500, 500))}


def test_full_width_fcn8s_has_the_papers_strides_and_receptive_field(full_steps):
    s = full_steps
    assert s["score_fr"].jump == 32 and s["fuse_pool4"].jump == 16 and s["fuse_pool3"].jump == 8
    assert s["score"].jump == 1 and s["data"].jump == 1
    assert s["fc7"].rf == 404 and s["fc6"].rf == 404  # paper Table 1
    assert s["pool5"].rf == 212 and s["conv1_2"].rf == 5


def test_full_width_fcn8s_shows_the_worked_sizes(full_steps):
    size = {name: step.shape[2] for name, step in full_steps.items()}
    assert size["conv1_1"] == 698
    assert [size[f"pool{i}"] for i in range(1, 6)] == [349, 175, 88, 44, 22]
    assert size["fc6"] == 16
    assert (size["upscore2"], size["score_pool4"], full_steps["score_pool4c"].offset) == (34, 44, 5)
    assert (size["upscore_pool4"], size["score_pool3"], full_steps["score_pool3c"].offset) == \
        (70, 88, 9)
    assert (size["upscore8"], full_steps["score"].offset, size["score"]) == (568, 31, 500)
    assert full_steps["score"].shape == (1, 21, 500, 500)


def test_full_width_fcn8s_parameters_and_macs(full, full_steps):
    total = sum(s.params for s in full_steps.values())
    assert total == fcn8s_param_count(21) == sum(p.size for p in full.parameters())
    assert 134_000_000 < total < 135_000_000  # "about 134M"
    fixed = 21 * 21 * (16 + 16 + 256)
    assert sum(s.trainable for s in full_steps.values()) == total - fixed
    assert full_steps["conv1_2"].macs == 64 * 698 * 698 * 64 * 9
    assert full_steps["fc6"].macs == 4096 * 16 * 16 * 512 * 49
    assert full_steps["upscore8"].macs == 21 * 70 * 70 * 21 * 16 * 16  # every input pixel paints
    assert full_steps["relu1_1"].macs == 0 and full_steps["pool1"].macs == 0


def test_summary_table_lists_every_layer_in_forward_order_with_totals(full):
    table = summary(full, (1, 3, 500, 500))
    assert isinstance(table, str) and repr(table) == str(table)
    lines = table.splitlines()
    assert lines[0] == "FCN8s on input 1x3x500x500"
    names = [s.name for s in trace(full, (1, 3, 500, 500))]
    body = [ln for ln in lines if ln.split() and ln.split()[0] in names]
    assert [ln.split()[0] for ln in body] == names
    assert names[:4] == ["data", "conv1_1", "relu1_1", "conv1_2"]
    assert names[-10:] == ["upscore2", "score_pool4", "score_pool4c", "fuse_pool4",
                           "upscore_pool4", "score_pool3", "score_pool3c", "fuse_pool3",
                           "upscore8", "score"]
    row = {ln.split()[0]: ln.split() for ln in body}
    assert row["fc7"][1:5] == ["conv", "1x4096x16x16", "32", "404"]
    assert row["fc6"][5] == "102,764,544"
    assert row["score"][-2:] == ["offset", "31"] and row["upscore8"][-1] == "fixed"
    assert row["drop6"][1] == "dropout" and row["pool3"][1:3] == ["pool", "1x256x88x88"]
    assert f"total params {fcn8s_param_count(21):,}" in table
    assert "total MACs" in lines[-1]


def test_summary_accepts_shape_forms_and_refuses_bad_ones():
    model = fcn32s(n_class=2, width=0.125)
    table = summary(model, (1, 3, 96, 96))
    assert summary(model, 96) == summary(model, (96, 96)) == summary(model, (3, 96, 96)) == table
    assert "upscore  " in table and "offset 19" in table
    for bad in ((0, 3, 96, 96), (96.0, 96), (1, 2, 3, 4, 5), "96"):
        with pytest.raises(ValueError, match="summary: input_shape"):
            summary(model, bad)
    with pytest.raises(ValueError, match="channels"):
        summary(model, (1, 4, 96, 96))
    small = fcn32s(n_class=2, width=0.125, pad1=81)
    with pytest.raises(ValueError, match="fc6: kernel 7 is larger"):
        summary(small, (1, 3, 20, 20))
    assert minifcn.summary is summary


def test_fcn32s_and_fcn16s_worked_sizes():
    steps = {s.name: s for s in trace(fcn32s(n_class=3, width=0.125), (1, 3, 500, 500))}
    assert steps["upscore"].shape[2] == 544 and steps["score"].offset == 19
    assert steps["upscore"].jump == 1
    steps = {s.name: s for s in trace(fcn16s(n_class=3, width=0.125), (1, 3, 500, 375))}
    assert steps["upscore2"].jump == 16 and steps["score"].offset == 27
    assert steps["score"].shape == (1, 3, 500, 375)


@pytest.mark.parametrize("build, pad1", [(fcn8s, 100), (fcn16s, 80), (fcn32s, 90)])
def test_traced_shapes_equal_the_shapes_of_a_real_forward(build, pad1):
    model = build(n_class=3, width=1 / 32, pad1=pad1).eval()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 37, 53)).astype(np.float32))
    real = []
    ghost = copy.copy(model)  # record every layer call of the real forward
    for name, layer in model.children():
        def record(*args, _layer=layer, _name=name):
            out = _layer(*args)
            real.append((_name, tuple(out.shape)))
            return out
        setattr(ghost, name, record)
    with no_grad():
        ghost.forward(x)
    traced = [(s.name, tuple(s.shape)) for s in trace(model, x.shape)[1:]]
    assert traced == real
    per_layer = {s.name: s.params for s in trace(model, x.shape)}
    for name, layer in model.children():
        assert per_layer[name] == sum(p.size for p in layer.parameters())


def test_cli_prints_the_summary(capsys):
    assert main(["fcn32s", "--width", "0.125", "--size", "96x80", "--n-class", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("FCN32s on input 1x3x96x80") and "1x5x96x80" in out
    assert "offset 19" in out
    with pytest.raises(SystemExit) as e:
        main(["fcn32s", "--width", "0.125", "--pad1", "10"])
    assert e.value.code == 2
    assert "smallest conv1_1 padding that does is 81" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fcn4s"])


def test_cli_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "minifcn.models", "fcn8s", "--width", "0.0625",
                             "--size", "500", "--pad1", "100"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "upscore8" in result.stdout and "1x21x568x568" in result.stdout


def test_summary_notes_the_dilation_of_rarefied_layers():
    from minifcn.models import rarefy

    plain = summary(fcn32s(n_class=2, width=1 / 32), (1, 3, 64, 64))
    assert "dilation" not in plain
    dense = summary(rarefy(fcn32s(n_class=2, width=1 / 32), "pool5"), (1, 3, 64, 64))
    rows = {line.split()[0]: line for line in dense.splitlines()[4:] if line.strip()}
    for name in ("fc6", "fc7", "score_fr"):
        assert rows[name].endswith("dilation 2"), rows[name]
    assert "dilation" not in rows["pool5"] + rows["conv5_3"]
    assert rows["fc6"].split()[3] == "16" and rows["fc6"].split()[4] == "404"  # jump, rf
