"""Tests of minifcn.viz: colours, palette PNGs and plot files."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minifcn import viz
from minifcn.data import voc_palette


def test_colorize_matches_palette():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, (6, 9))
    label[0, 0] = 255
    rgb = viz.colorize(label)
    assert rgb.shape == (6, 9, 3) and rgb.dtype == np.uint8
    pal = voc_palette()
    for i in range(6):
        for j in range(9):
            assert tuple(rgb[i, j]) == tuple(pal[label[i, j]])
    assert tuple(rgb[0, 0]) == (224, 224, 192)  # ignore
    one = viz.colorize(np.array([[1, 15]]))
    assert one[0].tolist() == [[128, 0, 0], [192, 128, 128]]
    custom = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    assert viz.colorize(np.array([[1, 0]]), custom).tolist() == [[[4, 5, 6], [1, 2, 3]]]
    with pytest.raises(ValueError, match="palette"):
        viz.colorize(np.array([[2]]), custom)
    with pytest.raises(TypeError, match="colorize"):
        viz.colorize(np.zeros((2, 2)))


def test_label_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 21, (13, 17))
    label[3] = 255
    path = tmp_path / "pred.png"
    viz.save_label_png(path, label)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "P" and im.size == (17, 13)
        np.testing.assert_array_equal(np.array(im), label)
        assert im.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        np.testing.assert_array_equal(np.array(im.convert("RGB")), viz.colorize(label))
    with pytest.raises(ValueError, match="0..255"):
        viz.save_label_png(path, np.array([[256]]))


def test_writers_need_existing_folder(tmp_path):
    missing = tmp_path / "no_such_dir"
    label = np.zeros((4, 4), int)
    image = np.zeros((4, 4, 3), np.uint8)
    calls = [lambda p: viz.save_label_png(p, label),
             lambda p: viz.save_prediction_grid(p, [image], [label], [label]),
             lambda p: viz.plot_history(p, [{"iteration": 0, "loss": 1.0}])]
    for call in calls:
        with pytest.raises(FileNotFoundError, match="no_such_dir"):
            call(missing / "x.png")
    assert not missing.exists()


def test_overlay():
    image = np.full((2, 3, 3), 100, np.uint8)
    label = np.array([[0, 1, 255], [15, 0, 1]])
    out = viz.overlay(image, label, alpha=0.25)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    assert out[0, 0].tolist() == [100] * 3 and out[0, 2].tolist() == [100] * 3  # bg, ignore
    assert out[0, 1].tolist() == [round(0.75 * 100 + 0.25 * 128), 75, 75]
    assert out[1, 0].tolist() == [round(0.75 * 100 + 0.25 * 192), 107, 107]
    np.testing.assert_array_equal(viz.overlay(image, label, alpha=0), image)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(image, label, alpha=2)
    with pytest.raises(ValueError, match="shape"):
        viz.overlay(image, label[:, :2])


def test_prediction_grid(tmp_path):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(3)]
    targets = [np.full((32, 40), 15) for _ in range(3)]
    preds = [np.zeros((32, 40), int) for _ in range(3)]
    targets[0][:4] = 255
    viz.save_prediction_grid(tmp_path / "g3.png", images, targets, preds,
                             class_names=[str(i) for i in range(21)])
    viz.save_prediction_grid(tmp_path / "g1.png", images[:1], targets[:1], preds[:1])
    with Image.open(tmp_path / "g3.png") as a, Image.open(tmp_path / "g1.png") as b:
        assert a.format == b.format == "PNG"
        assert a.size[1] > 2 * b.size[1]  # one row per example
        pixels = {tuple(p) for p in np.array(a.convert("RGB")).reshape(-1, 3)}
    assert (192, 128, 128) in pixels and (224, 224, 192) in pixels  # person, ignore drawn in VOC colours
    with pytest.raises(ValueError, match="as many"):
        viz.save_prediction_grid(tmp_path / "x.png", images, targets[:2], preds)
    with pytest.raises(ValueError, match="same size"):
        viz.save_prediction_grid(tmp_path / "x.png", images[:1], [np.zeros((3, 3), int)], preds[:1])


def test_plot_history(tmp_path):
    records = [{"epoch": 0, "iteration": i * 10, "train_loss": 1 / (i + 1)} for i in range(20)]
    records += [{"epoch": e, "iteration": 100 * e, "loss": 0.5, "mean_iu": 0.1 * e} for e in range(3)]
    records.append({"epoch": 3, "iteration": 300, "loss": float("nan"), "mean_iu": None})
    path = tmp_path / "history.png"
    viz.plot_history(path, records)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200
        arr = np.array(im.convert("L"))
    assert arr.std() > 5  # something is drawn
    viz.plot_history(tmp_path / "e.png", [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": 0.5}])
    with pytest.raises(ValueError, match="non-empty"):
        viz.plot_history(path, [])
    with pytest.raises(ValueError, match="iteration"):
        viz.plot_history(path, [{"iteration": 1, "loss": 1.0}, {"loss": 2.0}])


def test_import_and_plots_leave_matplotlib_backend_alone(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import minifcn.viz as viz\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        f"viz.plot_history(r'{tmp_path / 'h.png'}', [{{'iteration': 0, 'loss': 1.0}}])\n"
        f"viz.save_prediction_grid(r'{tmp_path / 'g.png'}', [np.zeros((4, 4, 3), np.uint8)],"
        " [np.zeros((4, 4), int)], [np.zeros((4, 4), int)])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
