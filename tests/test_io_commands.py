"""What the commands print for a weights path they cannot use: one line naming it and what was
expected (issue 31: "--init-from a folder says 'no such file'")."""
import pytest

from minifcn import evaluate
from minifcn import train as train_cli

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)

TINY = ["--model", "fcn32s", "--width", "0.0625", "--size", "32", "--n-train", "2", "--n-val",
        "2", "--batch-size", "2", "--device", "cpu", "--iters", "1"]


@pytest.mark.parametrize("name", ["weights", "vgg16.pth", "fcn.caffemodel"])
def test_init_from_a_folder_says_it_is_a_folder_not_a_missing_file(tmp_path, capsys, name):
    folder = tmp_path / name
    folder.mkdir()
    assert train_cli.main(TINY + ["--init-from", str(folder), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"{folder} is a folder, expected a weights file" in err and "no such" not in err
    assert not (tmp_path / "run").exists()


def test_evaluate_model_from_a_folder_says_it_is_a_folder(tmp_path, capsys):
    folder = tmp_path / "fcn32s.npz"
    folder.mkdir()
    assert evaluate.main([str(folder), "--model", "fcn32s", "--data", "shapes",
                          "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: minifcn.io.load: {folder} is a folder, expected a weights file"
