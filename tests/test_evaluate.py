"""``python -m minifcn.evaluate``: real data of mixed sizes, and the errors a user can cause."""
import json

import numpy as np
import pytest

from minifcn import evaluate, io, training

from test_data_readers import make_voc

SIZES = ((40, 50), (30, 30), (40, 50), (24, 36), (30, 30))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained, tiny FCN-32s for VOC's 21 classes, saved as a training checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.npz"
    config = training.resolve({**training.DEFAULTS, "model": "fcn32s", "width": 1 / 32,
                               "data": "voc:unused", "device": "cpu"})
    config["n_class"] = 21
    model = training.build_model(config)
    io.save_checkpoint(path, {f"model/{k}": v for k, v in model.state_dict().items()},
                       {"config": config})
    return str(path)


@pytest.fixture
def voc(tmp_path):
    """A VOC tree whose val split holds images of four sizes."""
    base, written = make_voc(tmp_path, sizes=SIZES)
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(written) + "\n")
    return base


def run(capsys, *argv):
    rc = evaluate.main([*map(str, argv), "--device", "cpu"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_evaluate_runs_on_images_of_mixed_sizes(checkpoint, voc, tmp_path, capsys):
    scores = {}
    for bs in (1, 3):
        rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--batch-size", bs,
                           "--json", tmp_path / f"s{bs}.json")
        assert rc == 0, err
        assert f"voc:{voc} val: {len(SIZES)} images" in out and "mean IU" in out
        scores[bs] = json.loads((tmp_path / f"s{bs}.json").read_text())
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):  # every pixel scored either way
        assert scores[3][key] == pytest.approx(scores[1][key], abs=1e-9)


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_evaluate_refuses_a_batch_size_below_one(checkpoint, voc, capsys, bad):
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--batch-size", bad)
    assert rc == 1 and err.count("\n") == 1
    assert f"--batch-size must be >= 1, got {bad}" in err


def test_evaluate_names_a_corrupt_image_in_one_line(checkpoint, voc, capsys):
    jpg = voc / "JPEGImages" / "2007_000001.jpg"
    good = jpg.read_bytes()
    jpg.write_bytes(b"not a jpeg at all")  # found when the sizes are read
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}")
    assert rc == 1 and err.count("\n") == 1 and "2007_000001.jpg" in err
    jpg.write_bytes(good[: good.index(b"\xff\xda") + 20])  # cut in the pixel data: its
    # header gives the size, the error comes when its batch is decoded
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}")
    assert rc == 1 and err.count("\n") == 1 and "2007_000001.jpg" in err and "truncated" in err


def test_evaluate_refuses_an_unwritable_json_before_evaluating(checkpoint, voc, tmp_path,
                                                               capsys, monkeypatch):
    def no_evaluation(*args, **kw):
        raise AssertionError("evaluated before checking --json")

    monkeypatch.setattr(evaluate, "validate", no_evaluation)
    (tmp_path / "file.txt").write_text("a regular file")
    (tmp_path / "folder").mkdir()
    for bad in (tmp_path / "file.txt" / "scores.json",  # under a file: never writable
                tmp_path / "folder"):
        rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--json", bad)
        assert rc == 1 and err.count("\n") == 1
        assert err.startswith(f"error: --json {bad}: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOCdevkit", "file.txt", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []


# ---------------------------------------------------------------- --json never loses a file

@pytest.fixture
def own_checkpoint(checkpoint, tmp_path):
    """A copy of the checkpoint that a test may lose without spoiling the others."""
    path = tmp_path / "mine.npz"
    path.write_bytes(open(checkpoint, "rb").read())
    return path


def refuse_evaluating(monkeypatch):
    monkeypatch.setattr(evaluate, "validate",
                        lambda *a, **k: pytest.fail("evaluated before refusing --json"))


@pytest.mark.parametrize("how", ["same name", "symlink", "another spelling"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_json_never_replaces_the_checkpoint_it_scores(own_checkpoint, voc, tmp_path, capsys,
                                                      monkeypatch, how, overwrite):
    refuse_evaluating(monkeypatch)
    before = own_checkpoint.read_bytes()
    json_path = {"same name": own_checkpoint,
                 "another spelling": tmp_path / "VOCdevkit" / ".." / own_checkpoint.name,
                 "symlink": tmp_path / "scores.json"}[how]
    if how == "symlink":
        json_path.symlink_to(own_checkpoint)
    rc, out, err = run(capsys, own_checkpoint, "--data", f"voc:{voc}", "--json", json_path,
                       *(["--overwrite"] if overwrite else []))
    assert rc == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: --json {json_path} ") and str(own_checkpoint) in err, err
    assert own_checkpoint.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_json_never_replaces_the_split_file(checkpoint, voc, tmp_path, capsys, monkeypatch,
                                            overwrite):
    refuse_evaluating(monkeypatch)
    listed = tmp_path / "ids.txt"
    listed.write_text("2007_000001\n")
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--split-file", listed,
                       "--json", listed, *(["--overwrite"] if overwrite else []))
    assert rc == 1 and err.count("\n") == 1 and str(listed) in err, err
    assert listed.read_text() == "2007_000001\n"


def test_json_refuses_an_existing_file_without_overwrite(checkpoint, voc, tmp_path, capsys,
                                                        monkeypatch):
    refuse_evaluating(monkeypatch)
    scores = tmp_path / "scores.json"
    scores.write_bytes(b"last week's scores")
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--json", scores)
    assert rc == 1 and err == (f"error: --json {scores} already exists: choose another name, or "
                               "pass --overwrite to replace it\n")
    assert scores.read_bytes() == b"last week's scores"


def test_json_overwrite_replaces_another_file(checkpoint, voc, tmp_path, capsys):
    scores = tmp_path / "scores.json"
    scores.write_bytes(b"last week's scores")
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--json", scores,
                       "--overwrite")
    assert rc == 0, err
    assert set(json.loads(scores.read_text())) >= {"pixel_acc", "mean_iu", "per_class_iu"}


def test_json_that_appears_during_the_evaluation_is_kept(checkpoint, voc, tmp_path, capsys,
                                                         monkeypatch):
    scores, validate = tmp_path / "scores.json", evaluate.validate

    def meanwhile(*args, **kw):
        scores.write_bytes(b"another run's scores")
        return validate(*args, **kw)

    monkeypatch.setattr(evaluate, "validate", meanwhile)
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--json", scores)
    assert rc == 1 and "mean IU" in out and err.count("\n") == 1 and "already exists" in err
    assert scores.read_bytes() == b"another run's scores"


def test_json_makes_a_missing_folder_only_once_the_scores_are_in(checkpoint, voc, tmp_path,
                                                                  capsys, monkeypatch):
    scores = tmp_path / "no" / "such" / "scores.json"
    with monkeypatch.context() as m:  # an evaluation that fails leaves no folder behind
        m.setattr(evaluate, "validate", lambda *a, **k: (_ for _ in ()).throw(ValueError("x")))
        assert run(capsys, checkpoint, "--data", f"voc:{voc}", "--json", scores)[0] == 1
    assert not (tmp_path / "no").exists()
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--json", scores)
    assert rc == 0, err
    assert "mean_iu" in json.loads(scores.read_text())


# ---------------------------------------------------------------- weights files (--model)

W = 1 / 32


@pytest.fixture(scope="module")
def fcn8s_files(tmp_path_factory):
    """A tiny FCN-8s with every learned layer random (score layers too, so the predictions
    and the loss depend on each of them), as a run checkpoint and as a caffemodel in the
    authors' layout (conv1_1 reading BGR), encoded by tests/_caffe_encoder.py."""
    from _caffe_encoder import layer, net
    from _caffe_encoder import caffe_layers

    folder = tmp_path_factory.mktemp("fcn8s")
    config = training.resolve({**training.DEFAULTS, "model": "fcn8s", "width": W, "pad1": 100,
                               "data": "voc:unused", "device": "cpu"})
    config["n_class"] = 21
    model = training.build_model(config)
    rng = np.random.default_rng(5)
    state = model.state_dict()
    for k, p in model.named_parameters():
        if p.requires_grad:
            fan_in = np.prod(p.shape[1:]) if p.data.ndim > 1 else 10
            scale = np.sqrt(2 / fan_in) / (64 if k.startswith("conv1_1") else 1)
            state[k] = (rng.standard_normal(p.shape) * scale).astype(np.float32)
    model.load_state_dict(state)
    ckpt = folder / "checkpoint.npz"
    io.save_checkpoint(ckpt, {f"model/{k}": v for k, v in state.items()}, {"config": config})
    layers = caffe_layers(state)
    msgs = [layer("data", "Input", [])]
    for name, blobs in layers.items():
        msgs.append(layer(name, "Deconvolution" if name.startswith("upscore") else
                          "Convolution", blobs))
        if not name.startswith(("upscore", "score")):
            msgs.append(layer(name.replace("conv", "relu"), "ReLU", []))
    caffemodel = folder / "fcn8s-tiny.caffemodel"
    caffemodel.write_bytes(net(msgs))
    without = folder / "no-score-pool3.caffemodel"  # a learned layer missing
    without.write_bytes(net([layer(n, "Convolution", b) for n, b in layers.items()
                             if n != "score_pool3"]))
    rgb = folder / "rgb.caffemodel"  # conv1_1 left in minifcn's RGB: a wrong caffemodel
    rgb.write_bytes(net([layer(n, "Convolution", [state[f"{n}.weight"], *b[1:]])
                         for n, b in layers.items()]))
    return {"state": state, "checkpoint": ckpt, "caffemodel": caffemodel, "without": without,
            "rgb": rgb}


def scores_of(capsys, tmp_path, *argv):
    out = tmp_path / "scores.json"  # one file for every call: --overwrite
    rc, _, err = run(capsys, *argv, "--json", out, "--overwrite")
    assert rc == 0, err
    return json.loads(out.read_text())


def test_a_caffemodel_scores_as_the_model_it_was_made_from(fcn8s_files, voc, tmp_path, capsys):
    data = ("--data", f"voc:{voc}")
    original = scores_of(capsys, tmp_path, fcn8s_files["checkpoint"], *data)
    imported = scores_of(capsys, tmp_path, fcn8s_files["caffemodel"], "--model", "fcn8s",
                         "--width", W, *data)
    assert imported == original  # the same weights bit for bit: the same numbers exactly
    assert 0 < original["mean_iu"] < 1 and original["loss"] > 0
    # the comparison sees the channel order: a caffemodel whose conv1_1 reads RGB scores apart
    wrong = scores_of(capsys, tmp_path, fcn8s_files["rgb"], "--model", "fcn8s", "--width", W,
                      *data)
    assert wrong["loss"] != pytest.approx(original["loss"], rel=1e-4)


def test_init_from_a_caffemodel_loads_every_learned_layer(fcn8s_files, tmp_path, capsys):
    from minifcn import train as train_cli

    base, _ = make_voc(tmp_path, sizes=SIZES)
    config = training.resolve({**training.DEFAULTS, "model": "fcn8s", "width": W, "pad1": 100,
                               "data": f"voc:{base}", "device": "cpu"})
    config["n_class"] = 21
    model, logged = training.build_model(config), []
    training.load_weights_into(model, fcn8s_files["caffemodel"], log=logged.append)
    assert "kept at init: none" in logged[0] and "ignored from file: none" in logged[0]
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, fcn8s_files["state"][k], err_msg=k)
    rc = train_cli.main(["--data", f"voc:{base}", "--model", "fcn8s", "--width", str(W),
                         "--pad1", "100", "--iters", "1", "--batch-size", "1", "--device", "cpu",
                         "--init-from", str(fcn8s_files["caffemodel"]),
                         "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"init from {fcn8s_files['caffemodel']}: loaded 39 tensors; kept at init: none" in out


def test_split_file_scores_exactly_the_listed_images(fcn8s_files, voc, tmp_path, capsys):
    listed = tmp_path / "seg11valid.txt"
    listed.write_text("2007_000003\n2007_000001\n")
    (voc / "ImageSets/Segmentation/two.txt").write_text(listed.read_text())
    weights = (fcn8s_files["caffemodel"], "--model", "fcn8s", "--width", W, "--data", f"voc:{voc}")
    by_file = scores_of(capsys, tmp_path, *weights, "--split-file", listed)
    by_name = scores_of(capsys, tmp_path, *weights, "--split", "two")
    every = scores_of(capsys, tmp_path, *weights)
    assert by_file == by_name and by_file != every
    rc, out, err = run(capsys, *weights, "--split-file", listed)
    assert rc == 0 and f"voc:{voc} {listed}: 2 images" in out
    listed.write_text("2007_000001\n2011_003019\n")  # an id of another year
    rc, out, err = run(capsys, *weights, "--split-file", listed)
    assert rc == 1 and err.count("\n") == 1 and str(listed) in err and "'2011_003019'" in err
    rc, out, err = run(capsys, fcn8s_files["checkpoint"], "--data", f"voc:{voc}",
                       "--split-file", tmp_path / "none.txt")
    assert rc == 1 and err.count("\n") == 1 and "none.txt not found" in err


@pytest.mark.parametrize("argv, fault", [
    (("without", "--model", "fcn8s", "--width", W), "has no weights for score_pool3.weight, "
                                                     "score_pool3.bias"),
    (("caffemodel", "--model", "fcn16s", "--width", W), "has weights the model lacks: "
                                                         "score_pool3.weight, score_pool3.bias"),
    (("caffemodel", "--model", "fcn8s"), "conv1_1.weight has shape (2, 3, 3, 3), the fcn8s "
                                         "model at --width 1 with 21 classes (64, 3, 3, 3)"),
    (("caffemodel",), "is a weights file, not a run checkpoint: say which net it holds with "
                      "--model"),
    (("checkpoint", "--width", W), "--width goes with --model"),
    (("caffemodel", "--model", "fcn8s", "--split", "val", "--split-file", "x.txt"),
     "--split and --split-file: give one of them"),
    (("checkpoint", "--data", "shapes", "--split-file", "x.txt"), "--split-file works with"),
])
def test_weights_file_errors_are_one_line(fcn8s_files, voc, capsys, argv, fault):
    path, *rest = argv
    data = () if "--data" in rest else ("--data", f"voc:{voc}")
    rc, out, err = run(capsys, fcn8s_files[path], *rest, *data)
    assert rc == 1 and err.count("\n") == 1 and fault in err, err
    if "has" in fault:
        assert str(fcn8s_files[path]) in err


def test_model_needs_data(fcn8s_files, capsys):
    rc, out, err = run(capsys, fcn8s_files["caffemodel"], "--model", "fcn8s")
    assert rc == 1 and err.count("\n") == 1 and "--model needs --data" in err


def test_evaluate_refuses_images_too_big_for_memory_before_scoring(checkpoint, voc, capsys,
                                                                   monkeypatch):
    from minifcn.models.memory import forward_bytes

    monkeypatch.setattr(evaluate, "validate", lambda *a, **k: pytest.fail("scored"))
    model, _ = training.load_model(checkpoint)
    loss = 3 * 4 * 21  # the loss's maps, bytes a pixel
    one = forward_bytes(model, (1, 3, 40, 50), per_pixel=loss)  # 2 of SIZES are 40x50
    two = forward_bytes(model, (2, 3, 40, 50), per_pixel=loss)
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--batch-size", 2,
                       "--max-memory", repr((one + two) / 2 / 2**30))
    assert rc == 1 and err.count("\n") == 1, err
    assert f"voc:{voc}: its images of that size (50x40, 2 at a time) would need about" in err
    assert "one at a time fits: lower --batch-size" in err
    rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--max-memory",
                       repr(one / 2 / 2**30))
    assert rc == 1 and "(50x40) would need about" in err and "fits: shrink it" in err
