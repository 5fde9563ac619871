"""A run folder stays consistent: under a kill between two writes, against a second process,
against hand edits, on a full disk; and the training bar says the run's steps. Each test is
named after what it guards (issue 31, "Nothing lost, round two")."""
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import types

import numpy as np
import pytest

from minifcn import io, training
from minifcn import train as train_cli
from minifcn.io import atomic
from minifcn.training import loop, runs

from test_train import TINY, _start, read_records

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """The run folder's pictures are not what these tests look at: not drawn (a third of the
    time of a tiny run)."""
    nothing = lambda *a, **k: None  # noqa: E731
    monkeypatch.setattr(loop, "viz", types.SimpleNamespace(
        plot_history=nothing, save_prediction_grid=nothing, save_classification_grid=nothing,
        save_figure=nothing, confusion_figure=nothing, per_class_iu_figure=nothing,
        worst_images_figure=nothing))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run of 2 steps (one epoch, one validation), copied by each test that edits it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as m:
        m.setenv("MINIFCN_NO_PROGRESS", "1")
        assert train_cli.main(TINY + ["--iters", "2", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def model_arrays(path):
    return {k: v for k, v in io.load_checkpoint(path)[0].items() if k.startswith("model/")}


def announced_best(out):
    """The iteration of the best that a run's last lines announce."""
    return int(re.search(r"best: epoch \d+ \(iteration (\d+)\)", out).group(1))


# ------------------------------------------------------- finding 3: the best checkpoint


class Killed(BaseException):
    """A kill between two writes: nothing of the process runs after it."""


def test_best_checkpoint_never_behind_its_record(tmp_path, monkeypatch, capsys):
    # every validation is a new best (its key the iteration), so the one of iteration 4 writes
    # both checkpoint_best.npz and its record; the process dies between the two, whichever
    # of them comes first
    monkeypatch.setattr(loop, "best_key", lambda config: "iteration")
    save, append, first = loop.save_training_checkpoint, runs.Run.append_record, []

    def between(what):
        if first:
            raise Killed
        first.append(what)

    def saving(path, model, opt, meta):
        if path.name == training.BEST and meta["iteration"] == 4:
            between("checkpoint")
        return save(path, model, opt, meta)

    def appending(self, record, keep=None):
        if record["iteration"] == 4:
            between("record")
        return append(self, record, keep)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(loop, "save_training_checkpoint", saving)
        m.setattr(runs.Run, "append_record", appending)
        with pytest.raises(Killed):
            train_cli.main(TINY + ["--iters", "4", "--out", str(run)])
    capsys.readouterr()
    assert train_cli.main(["--resume", str(run)]) == 0
    best = io.load_checkpoint(run / training.BEST)[1]
    assert announced_best(capsys.readouterr().out) == best["iteration"] == 4
    assert max(r["iteration"] for r in read_records(run)) == best["iteration"]
    last = model_arrays(run / training.LAST)  # iteration 4: the weights that were validated
    for k, v in model_arrays(run / training.BEST).items():
        np.testing.assert_array_equal(v, last[k], err_msg=k)


def test_resume_rewrites_a_best_checkpoint_left_behind_its_record(tmp_path, monkeypatch, capsys):
    # the folder a minifcn that recorded first leaves when killed between the two: the record of
    # iteration 4 names the best, checkpoint_best.npz still holds iteration 2
    monkeypatch.setattr(loop, "best_key", lambda config: "iteration")
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--iters", "2", "--out", str(run)]) == 0
    behind = (run / training.BEST).read_bytes()
    assert train_cli.main(["--resume", str(run), "--iters", "4"]) == 0
    (run / training.BEST).write_bytes(behind)
    capsys.readouterr()
    assert train_cli.main(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "held iteration 2" in out and "written again" in out
    assert announced_best(out) == io.load_checkpoint(run / training.BEST)[1]["iteration"] == 4
    last = model_arrays(run / training.LAST)
    for k, v in model_arrays(run / training.BEST).items():
        np.testing.assert_array_equal(v, last[k], err_msg=k)


# ------------------------------------------------------- finding 4: one process a folder


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="flock and SIGKILL are POSIX")
def test_a_second_process_on_a_run_folder_is_refused_and_a_killed_ones_lock_taken_over(
        tmp_path, capsys):
    run = tmp_path / "run"
    proc = _start(run)  # a real second process, training in run/
    try:
        assert (run / training.LAST).exists(), proc.stderr.read().decode()
        holder = f"process {proc.pid} on {socket.gethostname()}"
        for argv in (TINY + ["--iters", "2", "--out", str(run), "--overwrite"],
                     ["--resume", str(run), "--iters", "1000"]):
            assert train_cli.main(argv) == 1
            err = capsys.readouterr().err
            assert "is in use by " + holder in err and err.count("\n") == 1, err
            assert (run / training.LAST).exists() and (run / "config.json").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert json.loads((run / "run.lock").read_text())["pid"] == proc.pid  # left behind
    iteration = io.load_checkpoint(run / training.LAST)[1]["iteration"]
    assert train_cli.main(["--resume", str(run), "--iters", str(iteration + 1)]) == 0
    out = capsys.readouterr().out
    assert f"took over the stale lock of {holder}" in out
    assert not (run / "run.lock").exists()  # a run that ends leaves none


def test_a_stale_lock_of_a_dead_process_is_taken_over_in_one_line(tmp_path, capsys):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                                              "since": "2026-01-01 00:00:00"}))
    assert train_cli.main(TINY + ["--iters", "1", "--out", str(run)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "stale lock" in line]
    assert lines == [f"run folder {run}: took over the stale lock of process {gone.pid} on "
                     f"{socket.gethostname()} (since 2026-01-01 00:00:00), which is no longer "
                     f"running"]
    assert read_records(run) and not (run / "run.lock").exists()


def test_a_run_holds_its_lock_while_it_runs_and_a_failed_one_leaves_none(tmp_path):
    run, seen = tmp_path / "run", []

    def look(iteration):  # while training: the lock names this process; a second lock fails
        seen.append(json.loads((run / "run.lock").read_text())["pid"])
        with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
            runs.open_run(run, resume=True)
        return False

    config = train_cli.make_config(train_cli.parser().parse_args(TINY + ["--iters", "1"]))
    training.fit(config, run, log=lambda *a: None, on_iteration=look)
    assert seen == [os.getpid()] and not (run / "run.lock").exists()
    with pytest.raises(FileExistsError):  # refused after the lock: it is given back
        runs.open_run(run)
    assert not (run / "run.lock").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):  # nothing to resume: nothing left behind
        runs.open_run(tmp_path / "empty", resume=True)
    assert list((tmp_path / "empty").iterdir()) == []


# ------------------------------------------------------- --resume and hand edits


def test_resume_takes_the_checkpoints_config_and_refuses_a_config_json_that_disagrees(run,
                                                                                     capsys):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lr": 0.5, "width": 0.125}))
    with pytest.raises(SystemExit) as e:
        train_cli.main(["--resume", str(run), "--iters", "3"])
    message = str(e.value)
    assert message.startswith(f"error: --resume {run}: config.json disagrees with "
                              f"checkpoint_last.npz") and "\n" not in message
    assert "lr (0.5 there, 0.01 in the checkpoint)" in message
    assert "width (0.125 there, 0.0625 in the checkpoint)" in message
    # an option given on the command line replaces both: no disagreement left
    (run / "config.json").write_text(json.dumps({**config, "lr": 0.02}))
    assert train_cli.main(["--resume", str(run), "--iters", "3", "--lr", "0.02"]) == 0
    assert io.load_checkpoint(run / training.LAST)[1]["config"]["lr"] == 0.02
    # a config.json removed is written again from the checkpoint
    (run / "config.json").unlink()
    assert train_cli.main(["--resume", str(run), "--iters", "4"]) == 0
    assert json.loads((run / "config.json").read_text()) == \
        io.load_checkpoint(run / training.LAST)[1]["config"]


def test_config_json_never_ahead_of_its_checkpoint(run, monkeypatch):
    # a resumed run with a new lr killed before its next checkpoint: config.json still says
    # what checkpoint_last.npz was made with, so a plain --resume is not refused
    def killed_at_the_checkpoint(path, *args):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(loop, "save_training_checkpoint", killed_at_the_checkpoint)
        with pytest.raises(Killed):
            train_cli.main(["--resume", str(run), "--iters", "3", "--lr", "0.02"])
    assert json.loads((run / "config.json").read_text())["lr"] == 0.01
    assert train_cli.main(["--resume", str(run), "--iters", "3"]) == 0


def set_metrics(run, **change):
    (record,) = read_records(run)
    record.update(change)
    (run / "metrics.jsonl").write_text(json.dumps({k: v for k, v in record.items()
                                                   if v is not None}) + "\n")


@pytest.mark.parametrize("edit, said", [
    (lambda run: (run / "config.json").write_text("{not json"), "config.json is damaged"),
    (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json is not a JSON object"),
    (lambda run: (run / "config.json").write_text(json.dumps(
        {**json.loads((run / "config.json").read_text()), "lr": "fast"})),
     "config.json disagrees"),
    (lambda run: (run / "metrics.jsonl").write_text("{not json\n"),
     "metrics.jsonl line 1 is not JSON"),
    (lambda run: set_metrics(run, iteration="two"), "metrics.jsonl line 1 has iteration 'two'"),
    (lambda run: set_metrics(run, mean_iu="high"), "metrics.jsonl line 1 has mean_iu 'high'"),
    (lambda run: set_metrics(run, mean_iu=None), "metrics.jsonl line 1 lacks mean_iu;"),
    (lambda run: (run / "metrics.jsonl").write_text("[2]\n"),
     "metrics.jsonl line 1 is not a JSON object"),
], ids=["config-not-json", "config-list", "config-wrong-type", "metrics-not-json",
        "metrics-iteration-text", "metrics-score-text", "metrics-missing-score", "metrics-list"])
def test_resume_after_a_hand_edit_is_a_one_line_error(run, capsys, edit, said):
    edit(run)
    try:
        assert train_cli.main(["--resume", str(run), "--iters", "3"]) == 1
        message = capsys.readouterr().err
    except SystemExit as e:
        message = str(e)
    assert message.startswith("error: ") and message.strip().count("\n") == 0, message
    assert said in message and str(run) in message


# ------------------------------------------------------- a full disk


def full_disk(monkeypatch, name):
    """Every atomic write of a file called ``name`` fails as a full disk does: at the flush
    to disk, by an error that names no file."""
    fsync = os.fsync

    def failing(fd):
        if any(tmp.startswith(f".{name}.") for tmp in atomic._IN_FLIGHT):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", failing)


@pytest.mark.parametrize("name", ["metrics.jsonl", training.LAST, training.BEST])
def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch, capsys, name):
    run = tmp_path / "run"
    full_disk(monkeypatch, name)
    assert train_cli.main(TINY + ["--iters", "2", "--out", str(run)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: [Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: " \
                  f"'{run / name}'\n"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporaries left


# ------------------------------------------------------- item 9: progress that is true


class Bar:
    """Stands in for the tqdm bar: what it was told."""

    def __init__(self, total, initial, desc, disable=False):
        self.total, self.n, self.initial, self.desc, self.closed_at = total, initial, initial, \
            desc, []

    def update(self, k=1):
        assert not self.closed_at, "updated after it was closed"
        self.n += k

    def set_description(self, desc):
        self.desc = desc

    def set_postfix(self, **kw):
        pass

    def close(self):
        self.closed_at.append(self.n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_the_training_bar_counts_the_runs_steps(tmp_path, monkeypatch):
    bars = []
    monkeypatch.setattr(loop, "progress", lambda *a, **k: bars.append(Bar(*a, **k)) or bars[-1])
    monkeypatch.setattr(runs, "progress", lambda *a, **k: bars.append(Bar(*a, **k)) or bars[-1])
    run = tmp_path / "run"
    assert train_cli.main(TINY + ["--iters", "3", "--out", str(run)]) == 0  # 2 steps an epoch
    steps = [b for b in bars if b.desc.startswith("epoch")]
    assert [(b.total, b.initial, b.closed_at) for b in steps] == [(3, 0, [3])]
    assert steps[0].desc == "epoch 2/2"
    # each validation (epoch 1 and the end) has a bar over its 4 images
    assert [(b.desc, b.total, b.closed_at) for b in bars if b not in steps] == \
        [("validating", 4, [4])] * 2
    bars.clear()
    assert train_cli.main(["--resume", str(run), "--iters", "4"]) == 0
    assert [(b.total, b.initial, b.closed_at) for b in bars if b.desc.startswith("epoch")] == \
        [(4, 3, [4])]


def test_progress_bars_honour_minifcn_no_progress(monkeypatch):
    with runs.progress(3, 0, "x") as bar:
        assert bar.disable  # MINIFCN_NO_PROGRESS=1 (the quiet fixture)
    monkeypatch.delenv("MINIFCN_NO_PROGRESS")
    with runs.progress(3, 0, "x") as bar:
        assert not bar.disable


def test_evaluate_shows_progress_over_its_images(finished, monkeypatch, capsys):
    from minifcn import evaluate

    bars = []
    monkeypatch.setattr(runs, "progress", lambda *a, **k: bars.append(Bar(*a, **k)) or bars[-1])
    assert evaluate.main([str(finished / training.BEST), "--batch-size", "3",
                          "--device", "cpu"]) == 0
    # shapes has instance maps: a second pass scores them
    assert [(b.desc, b.total, b.closed_at) for b in bars] == [("evaluating", 4, [4]),
                                                              ("instances", 4, [4])]
    assert "4 images" in capsys.readouterr().out
