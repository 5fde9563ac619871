"""python -m minifcn.train never loses a user's work and never trains on a silent wrong answer:
each test is named after what it guards (the cases of the 'nothing lost' issue)."""
import json
import signal
import sys
import time

import numpy as np
import pytest

from minifcn import io, training
from minifcn import train as train_cli

from test_train import TINY, _start, make_voc, read_records


pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


def test_voc_of_mixed_sizes_trains_at_batch_1_through_several_validations_and_resumes(tmp_path):
    make_voc(tmp_path, n=6, size=[(40, 52), (36, 44), (48, 40)])
    voc = ["--data", f"voc:{tmp_path / 'VOCdevkit'}", "--model", "fcn32s", "--width", "0.0625",
           "--batch-size", "1", "--lr", "0.001", "--device", "cpu"]
    run = tmp_path / "run"
    assert train_cli.main(voc + ["--epochs", "2", "--out", str(run)]) == 0
    assert [r["iteration"] for r in read_records(run)] == [4, 8]  # 4 training images an epoch
    assert train_cli.main(["--resume", str(run), "--epochs", "3"]) == 0
    assert [r["iteration"] for r in read_records(run)] == [4, 8, 12]
    assert io.load_checkpoint(run / training.LAST)[1]["iteration"] == 12


def test_an_existing_run_folder_is_refused_unless_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--iters", "2", "--out", str(run)]) == 0
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    assert train_cli.main(TINY + ["--iters", "3", "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files  # nothing touched
    assert train_cli.main(TINY + ["--iters", "3", "--out", str(run), "--overwrite"]) == 0
    assert [r["iteration"] for r in read_records(run)] == [2, 3]  # a fresh run: 2 steps an epoch


def test_two_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    from minifcn.training.runs import new_run_dir

    a, b = new_run_dir(tmp_path / "runs" / "x"), new_run_dir(tmp_path / "runs" / "x")
    assert a != b and a.is_dir() and b.is_dir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261201-120000")
    for _ in range(2):
        assert train_cli.main(TINY + ["--iters", "1"]) == 0
    made = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("fcn8s"))
    assert made == ["fcn8s-shapes-20261201-120000", "fcn8s-shapes-20261201-120000-2"]
    assert all(len(read_records(tmp_path / "runs" / m)) == 1 for m in made)


def test_a_run_that_cannot_start_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(TINY + ["--data", f"folder:{tmp_path / 'nowhere'}"]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert not any(p.is_dir() for p in (tmp_path / "runs").glob("*"))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_writes_a_checkpoint_and_exits_like_ctrl_c(tmp_path):
    run = tmp_path / "run"
    proc = _start(run)
    first = io.load_checkpoint(run / training.LAST)[1]["iteration"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130
    assert io.load_checkpoint(run / training.LAST)[1]["iteration"] >= first


def test_resume_extends_a_run_and_changes_its_lr_but_refuses_options_that_fix_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--iters", "2", "--out", str(run)]) == 0
    assert train_cli.main(["--resume", str(run), "--iters", "4", "--lr", "0.02"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["iters"], config["lr"]) == (4, 0.02)
    assert io.load_checkpoint(run / training.LAST)[1]["iteration"] == 4
    assert [r["iteration"] for r in read_records(run)] == [2, 4]
    with pytest.raises(SystemExit, match="--width, --seed cannot change"):
        train_cli.main(["--resume", str(run), "--width", "0.125", "--seed", "3"])
    assert train_cli.main(["--resume", str(run), "--iters", "3"]) == 1
    assert "has done 4 iterations" in capsys.readouterr().err


def test_a_stop_in_the_last_step_still_validates(tmp_path):
    config = train_cli.make_config(train_cli.parser().parse_args(TINY + ["--iters", "2"]))
    best = training.fit(config, tmp_path / "run", log=lambda *a: None,
                        on_iteration=lambda it: it == 2)  # Ctrl-C during the last step
    assert best["iteration"] == 2
    assert [r["iteration"] for r in read_records(tmp_path / "run")] == [2]
    assert io.load_checkpoint(tmp_path / "run" / training.BEST)[1]["iteration"] == 2


def test_a_resumed_run_validates_the_epoch_it_stopped_after(tmp_path):
    run = tmp_path / "run"
    config = train_cli.make_config(train_cli.parser().parse_args(TINY + ["--epochs", "2"]))
    with pytest.raises(KeyboardInterrupt):  # stops at the end of epoch 1, before validating it
        training.fit(dict(config), run, log=lambda *a: None, on_iteration=lambda it: it == 2)
    assert not (run / "metrics.jsonl").exists()
    training.fit(json.loads((run / "config.json").read_text()), run, resume=True,
                 log=lambda *a: None)
    assert [r["iteration"] for r in read_records(run)] == [2, 4]


@pytest.mark.parametrize("option, value", [("--n-train", "0"), ("--n-val", "0"), ("--size", "0"),
                                           ("--val-batch-size", "0"), ("--crop", "-1"),
                                           ("--checkpoint-every", "-1"), ("--batch-size", "0")])
def test_counts_below_one_are_refused_by_name(option, value):
    with pytest.raises(SystemExit, match=f"error: {option} must be >= "):
        train_cli.make_config(train_cli.parser().parse_args([option, value]))


def test_init_from_a_net_of_another_width_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--iters", "1", "--out", str(run)]) == 0
    wider = [a if a != "0.0625" else "0.125" for a in TINY]
    assert train_cli.main(wider + ["--iters", "1", "--init-from", str(run / training.LAST),
                                   "--out", str(tmp_path / "wide")]) == 1
    err = capsys.readouterr().err
    assert "--init-from" in err and "match the model" in err and "--width" in err


def test_a_nan_loss_before_any_checkpoint_says_none_was_written(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--epochs", "1", "--lr", "1e30", "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert "loss is" in err and "no checkpoint was written yet" in err
    assert not (run / training.LAST).exists()


def test_a_guessed_number_of_classes_is_said_in_the_log(tmp_path):
    from PIL import Image

    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):  # the default split keeps one of ten for validation
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png")
        Image.fromarray(np.full((40, 40), 17 if i == 0 else 1, np.uint8)).save(
            root / "masks" / f"{i}.png")
    config = train_cli.make_config(train_cli.parser().parse_args(
        ["--data", f"folder:{root}", "--width", "0.0625", "--batch-size", "2", "--iters", "1",
         "--device", "cpu"]))
    lines = []
    training.fit(config, tmp_path / "run", log=lines.append)
    assert any("18 classes" in line and "classes.txt" in line for line in lines)


def test_an_out_that_is_a_file_is_a_one_line_error_and_the_file_is_kept(tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert train_cli.main(TINY + ["--iters", "1", "--out", str(out)]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == "mine"
