"""python -m minifcn.pretrain end to end on a tiny budget, and train --init / --init-from with
what it writes."""
import json

import numpy as np
import pytest

from minifcn import io, training
from minifcn import pretrain as pretrain_cli
from minifcn import train as train_cli

TINY = ["--width", "0.03125", "--size", "193", "--n-train", "4", "--n-val", "4", "--batch-size",
        "2", "--val-batch-size", "4", "--device", "cpu", "--checkpoint-every", "0"]


pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


@pytest.mark.slow
def test_pretrain_reports_top1_saves_float16_weights_and_an_fcn_starts_from_them(tmp_path, capsys):
    run, weights = tmp_path / "cls", tmp_path / "cls.npz"
    assert pretrain_cli.main(TINY + ["--iters", "2", "--out", str(run),
                                     "--save-weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "top-1 accuracy" in out and f"wrote {weights}" in out
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["top1"] == record["pixel_acc"] and 0 <= record["top1"] <= 1
    config = json.loads((run / "config.json").read_text())
    assert (config["model"], config["data"], config["n_class"], config["init"]) == \
        ("vgg16", "shapes-cls", 16, "scratch")
    arrays, meta = io.load_checkpoint(weights)
    assert all(v.dtype == np.float16 for v in arrays.values())
    assert arrays["model/fc6.weight"].ndim == 2 and meta["config"]["model"] == "vgg16"
    best = io.load_checkpoint(run / training.BEST)[0]
    np.testing.assert_array_equal(arrays["model/conv3_1.weight"],
                                  best["model/conv3_1.weight"].astype(np.float16))

    # train --init-from the classifier: convolutionalised into FCN-8s, the scores start at zero
    seg = tmp_path / "seg"
    assert train_cli.main(["--width", "0.03125", "--size", "64", "--n-train", "4", "--n-val", "4",
                           "--batch-size", "4", "--device", "cpu", "--iters", "1",
                           "--init-from", str(weights), "--out", str(seg)]) == 0
    out = capsys.readouterr().out
    assert "init from" in out and "kept at init: ['score_fr.weight'" in out
    assert json.loads((seg / "config.json").read_text())["init"] == "file"

    # resume extends the run, as train's
    assert pretrain_cli.main(["--resume", str(run), "--iters", "3"]) == 0
    assert [json.loads(r)["iteration"] for r in (run / "metrics.jsonl").read_text().splitlines()] == [2, 3]


def test_pretrain_refuses_bad_options_in_one_line(tmp_path, capsys):
    for args, message in [(["--data", "shapes"], "--data shapes is a segmentation set"),
                          (["--size", "96"], "--size must be in 193..224"),
                          (["--data", "nope"], "--data: get_dataset: unknown dataset 'nope'")]:
        with pytest.raises(SystemExit, match=message):
            pretrain_cli.main(TINY + args + ["--out", str(tmp_path / "x")])
        assert not (tmp_path / "x").exists()
    (tmp_path / "taken.npz").write_bytes(b"mine")
    with pytest.raises(SystemExit, match="--save-weights .*taken.npz already exists"):
        pretrain_cli.main(TINY + ["--save-weights", str(tmp_path / "taken.npz")])
    assert (tmp_path / "taken.npz").read_bytes() == b"mine"


def test_init_option_picks_the_recipe_and_refuses_two_starts():
    def config(*args):
        return train_cli.make_config(train_cli.parser().parse_args(list(args)))

    assert config("--init", "scratch")["init"] == "scratch"
    assert config("--init-from", "w.npz")["init"] == "file"
    with pytest.raises(SystemExit, match="--init classifier and --init-from both"):
        config("--init", "classifier", "--init-from", "w.npz")
    assert config("--iters", "7")["epochs"] is None  # a recipe's epochs never override --iters
    with pytest.raises(ValueError, match=r"--init classifier: no shipped classifier at --width 3"):
        training.build.shipped_classifier(3.0)


@pytest.mark.parametrize("case", ["exists", "record exists", "a folder", "not npz",
                                  "a run file", "under a file"])
def test_pretrain_save_weights_is_refused_before_training(tmp_path, monkeypatch, case):
    monkeypatch.setattr(train_cli, "fit", lambda *a, **k: pytest.fail("trained"))
    run = tmp_path / "run"
    target = {"exists": tmp_path / "w.npz", "record exists": tmp_path / "w.npz",
              "a folder": tmp_path / "folder.npz", "not npz": tmp_path / "w.md",
              "a run file": run / training.BEST,
              "under a file": tmp_path / "notes.txt" / "w.npz"}[case]
    if case == "exists":
        target.write_bytes(b"mine")
    elif case == "record exists":
        target.with_suffix(".md").write_text("mine")
    elif case == "a folder":
        target.mkdir()
    elif case == "under a file":
        target.parent.write_text("mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as e:
        pretrain_cli.main(TINY + ["--iters", "1", "--out", str(run), "--save-weights",
                                  str(target)])
    message = str(e.value)
    assert message.startswith("error: --save-weights ") and "\n" not in message, message
    expect = {"exists": "already exists", "record exists": "w.md already exists",
              "a folder": "is a folder", "not npz": "give an .npz file name",
              "a run file": "is the same file as the input",
              "under a file": "notes.txt is a file, not a folder"}[case]
    assert expect in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, nothing lost


def test_pretrain_save_weights_makes_its_folder_and_writes_the_record_beside(tmp_path, capsys):
    config = {**pretrain_cli.PRETRAIN_DEFAULTS, "width": 1 / 32, "n_class": 16, "device": "cpu",
              "n_train": 4, "n_val": 4}
    model = training.build_model(config)
    ckpt = tmp_path / "run" / training.BEST
    ckpt.parent.mkdir()
    best = {"iteration": 2, "top1": 0.5, "mean_acc": 0.5, "elapsed_s": 6.0}
    io.save_checkpoint(ckpt, {f"model/{k}": v for k, v in model.state_dict().items()},
                       {"config": config, "best": best})
    target = tmp_path / "new" / "folder" / "cls.npz"
    pretrain_cli.save_weights(ckpt, target)
    assert io.load_checkpoint(target)[1]["best"] == best
    assert "top-1 accuracy 0.500" in target.with_suffix(".md").read_text()
    with pytest.raises(ValueError, match=r"--save-weights .*cls.npz already exists"):
        pretrain_cli.save_weights(ckpt, target)  # appeared while the run trained: kept
    pretrain_cli.save_weights(ckpt, target, overwrite=True)
    with pytest.raises(ValueError, match="same file as the input"):
        pretrain_cli.save_weights(ckpt, ckpt, overwrite=True)
