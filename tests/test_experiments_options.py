"""minifcn.experiments.options: every experiment refuses a bad option, an --out or
--save-weights that is a file, and an output it would replace, in one line and before it trains
anything; what it writes at the end is written whole."""
import pytest

from minifcn import backend
from minifcn.experiments import (compare, context, encoder_decoders, from_classifier, instances,
                                 options, paper_ablations, skip_architectures)

EXPERIMENTS = {"skip_architectures": skip_architectures, "from_classifier": from_classifier,
               "paper_ablations": paper_ablations, "encoder_decoders": encoder_decoders,
               "context": context, "instances": instances}
WITH_SEED = ("skip_architectures", "from_classifier")


@pytest.fixture
def no_training(monkeypatch):
    """Any run started is a failure: the refusals come first."""
    def fail(*a, **k):
        pytest.fail("an experiment trained despite a bad option")

    for module in (skip_architectures, compare, from_classifier, paper_ablations):
        monkeypatch.setattr(module, "run_jobs", fail)


def refused(capsys, experiment, argv):
    """The experiment's one-line error (as train's: SystemExit("error: ..."), before any
    output)."""
    with pytest.raises(SystemExit) as e:
        EXPERIMENTS[experiment].main(argv)
    line = str(e.value.code)
    assert line.startswith("error: ") and "\n" not in line, line
    assert capsys.readouterr().err == ""
    return line


BAD = [("--width", "nan", "--width must be a number in (0, 4]"),
       ("--width", "inf", "--width must be a number in (0, 4]"),
       ("--size", "0", "--size must be >= 1, got 0"),
       ("--size", "5000", "--size must be <= 2048"),
       ("--n-train", str(10**12), "--n-train must be <= 1000000"),
       ("--jobs", "1000", "--jobs must be <= 64"),
       ("--seed", "-1", "--seed must be an integer in 0..4294967295")]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("option, value, message", BAD, ids=[f"{o}={v}" for o, v, _ in BAD])
def test_experiment_options_are_refused_in_one_line_before_training(
        tmp_path, capsys, no_training, experiment, option, value, message):
    if option == "--seed" and experiment not in WITH_SEED:
        pytest.skip(f"{experiment} has no --seed")
    line = refused(capsys, experiment, [option, value, "--out", str(tmp_path / "out"),
                                        "--device", "cpu"])
    assert line.endswith(message) or message in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_out_naming_a_file_is_refused_before_training(tmp_path, capsys, no_training,
                                                                 experiment):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    line = refused(capsys, experiment, ["--out", str(notes), "--device", "cpu"])
    assert f"--out {notes}: {notes} is a file, not a folder" in line, line
    assert notes.read_text() == "mine" and sorted(tmp_path.iterdir()) == [notes]


def test_experiment_save_weights_naming_a_file_is_refused_before_training(tmp_path, capsys,
                                                                          no_training):
    notes = tmp_path / "weights.npz"
    notes.write_text("mine")
    line = refused(capsys, "skip_architectures", ["--out", str(tmp_path / "out"), "--device",
                                                  "cpu", "--save-weights", str(notes)])
    assert f"--save-weights {notes}: {notes} is a file, not a folder" in line, line
    assert notes.read_text() == "mine" and sorted(tmp_path.iterdir()) == [notes]


def test_experiment_saved_weights_never_replace_a_file_without_overwrite(tmp_path, capsys,
                                                                         no_training):
    kept = tmp_path / "w" / "shapes-fcn16s.npz"
    kept.parent.mkdir()
    kept.write_text("mine")
    line = refused(capsys, "skip_architectures", ["--out", str(tmp_path / "out"), "--device",
                                                  "cpu", "--save-weights", str(kept.parent)])
    assert f"--save-weights {kept} already exists" in line and "--overwrite" in line, line
    assert kept.read_text() == "mine"


@pytest.mark.parametrize("experiment, table", [
    ("skip_architectures", "shapes-table.json"), ("from_classifier", "from-classifier.md"),
    ("paper_ablations", "sampling.png"), ("encoder_decoders", "table.json"),
    ("context", "table.json"), ("instances", "table.json")])
def test_experiment_table_never_replaces_a_file_without_overwrite(tmp_path, capsys, no_training,
                                                                  experiment, table):
    out = tmp_path / "out"
    out.mkdir()
    (out / table).write_text("mine")
    line = refused(capsys, experiment, ["--out", str(out), "--device", "cpu"])
    assert f"--out {out / table} already exists" in line, line
    assert (out / table).read_text() == "mine" and [p.name for p in out.iterdir()] == [table]


@pytest.mark.parametrize("experiment, option", [
    ("encoder_decoders", "--figure"), ("context", "--figure"), ("context", "--attention-figure"),
    ("instances", "--figure"), ("instances", "--embedding-figure")])
def test_experiment_figure_never_replaces_a_file_without_overwrite(tmp_path, capsys, no_training,
                                                                   experiment, option):
    picture = tmp_path / "docs" / "picture.png"
    picture.parent.mkdir()
    picture.write_bytes(b"mine")
    line = refused(capsys, experiment, ["--out", str(tmp_path / "out"), "--device", "cpu",
                                        option, str(picture)])
    assert f"{option} {picture} already exists" in line, line
    assert picture.read_bytes() == b"mine"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_device_cuda_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch,
                                                          no_training, experiment):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    monkeypatch.setattr(backend, "_cupy_reason", "CuPy sees no CUDA device")
    line = refused(capsys, experiment, ["--out", str(tmp_path / "out"), "--device", "cuda"])
    assert "--device cuda: no GPU here (CuPy sees no CUDA device)" in line, line


def test_paper_ablations_never_replaces_a_summary_json_that_is_not_its_own(tmp_path, no_training):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("my notes")
    with pytest.raises(SystemExit) as e:
        paper_ablations.main(["--out", str(out), "--device", "cpu", "--study", "fixed"])
    assert "summary.json is not the summary this experiment writes" in str(e.value.code)
    assert (out / "summary.json").read_text() == "my notes"


def test_write_text_makes_the_folder_and_writes_whole(tmp_path, monkeypatch):
    target = tmp_path / "a" / "b" / "table.json"
    options.write_text(target, "[1, 2]\n")
    assert target.read_text() == "[1, 2]\n"
    from minifcn.io import atomic

    def killed(*a):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(OSError):
        options.write_text(target, "half")
    assert target.read_text() == "[1, 2]\n"  # the earlier table, whole
    assert [p.name for p in target.parent.iterdir()] == ["table.json"]
