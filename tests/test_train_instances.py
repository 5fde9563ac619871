"""Instances through the commands, end to end on tiny data: fcn8s-embed and fcn8s-centres
train on shapes-touching and resume; predict writes the instance map the model's own grouping
gives; evaluate reports panoptic quality equal to metrics.panoptic_quality computed here, for
the instance nets (their heads) and for plain FCN-8s (connected components); a net that learns
instances refuses data without instance maps; the experiment prints its table."""
import contextlib
import io as textio
import json

import numpy as np
import pytest
from PIL import Image

from minifcn import Tensor, evaluate, instances, metrics, no_grad, predict, training
from minifcn import train as train_cli
from minifcn.data import to_input

NETS = ("fcn8s", "fcn8s-embed", "fcn8s-centres")
ARGS = ["--data", "shapes-touching", "--width", "0.0625", "--size", "48", "--n-train", "16",
        "--n-val", "6", "--iters", "3", "--val-every", "3", "--batch-size", "4", "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIFCN_NO_PROGRESS", "1")
        for name in NETS:
            run = tmp_path_factory.mktemp(name) / "run"
            with contextlib.redirect_stdout(textio.StringIO()):
                assert train_cli.main(["--model", name, *ARGS, "--out", str(run)]) == 0
            out[name] = run
    return out


def _val(config):
    data = training.dataset(config, "val")
    items = [data.item(i, instances=True) for i in range(len(data))]
    x = np.stack([to_input(im) for im, _, _ in items])
    return x, np.stack([y for _, y, _ in items]), np.stack([t for *_, t in items]), data


def _instances_here(model, x):
    """The model's classes and instances, grouped here from its raw outputs."""
    with no_grad():
        if hasattr(model, "heads"):
            scores, extra = model.heads(Tensor(x))
            e = extra.numpy()
            classes = scores.numpy().argmax(1)
            fg = classes != 0
            ids = (instances.cluster_embeddings(e, fg) if model.EXTRA == 2 else
                   instances.group_by_centres(e[:, :1], e[:, 1:], fg))
        else:
            classes = model(Tensor(x)).numpy().argmax(1)
            ids = instances.connected_components(classes)
    return instances.instance_classes(classes, ids), ids


@pytest.mark.parametrize("name", NETS[1:])
def test_an_instance_net_trains_and_resumes(runs, name):
    run = runs[name]
    with contextlib.redirect_stdout(textio.StringIO()):
        assert train_cli.main(["--resume", str(run), "--iters", "4"]) == 0
    model, config = training.load_model(run / training.LAST)
    assert config["model"] == name and hasattr(model, "heads")
    meta = json.loads((run / "config.json").read_text())
    assert meta["iters"] == 4


@pytest.mark.parametrize("name", NETS)
def test_evaluate_reports_the_panoptic_quality_computed_here(runs, name, tmp_path, capsys):
    run = runs[name]
    out = tmp_path / "scores.json"
    assert evaluate.main([str(run / training.BEST), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    how = "its instance head" if name != "fcn8s" else "connected components of each class"
    assert f"panoptic quality (instances from {how})" in printed
    model, config = training.load_model(run / training.BEST)
    x, y, true, data = _val(config)
    classes, ids = _instances_here(model, x)
    want = metrics.panoptic_quality(y, true, classes, ids, data.n_class)
    got = json.loads(out.read_text())["panoptic"]
    for k in ("pq", "sq", "rq"):
        assert got[k] == pytest.approx(want[k])


@pytest.mark.parametrize("name", NETS[1:])
def test_predict_writes_the_instance_map_of_the_models_grouping(runs, name, tmp_path):
    model, config = training.load_model(runs[name] / training.BEST)
    im, _, _ = training.dataset(config, "val").item(0, instances=True)
    path = tmp_path / "scene.png"
    Image.fromarray(im).save(path)
    with contextlib.redirect_stdout(textio.StringIO()):
        assert predict.main([str(runs[name] / training.BEST), str(path), "--out",
                             str(tmp_path / "out")]) == 0
    written = np.asarray(Image.open(tmp_path / "out" / "scene.png.instances.png"))
    _, ids = _instances_here(model, to_input(im)[None])
    np.testing.assert_array_equal(written, ids[0])
    assert (tmp_path / "out" / "scene.png.instances-overlay.png").is_file()
    assert (tmp_path / "out" / "scene.png.label.png").is_file()


def test_a_semantic_net_writes_no_instance_map(runs, tmp_path):
    im = training.dataset(training.load_model(runs["fcn8s"] / training.BEST)[1], "val")[0][0]
    Image.fromarray(im).save(tmp_path / "a.png")
    with contextlib.redirect_stdout(textio.StringIO()):
        assert predict.main([str(runs["fcn8s"] / training.BEST), str(tmp_path / "a.png"),
                             "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png.label.png",
                                                                  "a.png.overlay.png"]


def test_an_instance_net_refuses_data_without_instance_maps(tmp_path, capsys):
    assert train_cli.main(["--model", "fcn8s-embed", "--data", "digits", "--iters", "1",
                           "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learns instances: --data digits has no instance maps" in err[0]
    assert not (tmp_path / "r").exists()  # nothing written for a run that cannot start


def test_the_instances_experiment_prints_its_table(tmp_path, capsys):
    from minifcn.experiments import instances as experiment

    out = tmp_path / "runs"
    assert experiment.main(["--iters", "2", "--seeds", "1", "--size", "40", "--n-train", "8",
                            "--n-val", "4", "--steps", "1", "--batch-size", "4", "--device",
                            "cpu", "--nets", "fcn8s,fcn8s-embed", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| net | start | mean IU | PQ shapes | PQ touching |" in printed
    rows = json.loads((out / "table.json").read_text())
    assert [r["model"] for r in rows] == ["fcn8s", "fcn8s-embed"]
    for r in rows:  # each PQ is the best checkpoint's on that split, recomputed here
        model, config = training.load_model(f"{r['runs'][0]}/{training.BEST}")
        x, y, true, data = _val({**config, "data": "shapes-touching"})
        classes, ids = _instances_here(model, x)
        want = metrics.panoptic_quality(y, true, classes, ids, data.n_class)["pq"]
        assert r["shapes-touching"][0]["pq"] == pytest.approx(want)
    for name in ("instances.png", "embeddings.png"):
        assert (out / name).stat().st_size > 0
