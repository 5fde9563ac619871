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
                tmp_path / "no" / "such" / "scores.json",
                tmp_path / "folder"):
        rc, out, err = run(capsys, checkpoint, "--data", f"voc:{voc}", "--json", bad)
        assert rc == 1 and err.count("\n") == 1
        assert err.startswith(f"error: --json {bad}: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VOCdevkit", "file.txt", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []
