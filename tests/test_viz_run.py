"""The run folder's per-validation figures: confusion matrix, per-class IU, worst images."""
import numpy as np
import pytest
from PIL import Image

from minifcn import train as train_cli
from minifcn import viz
from minifcn.autograd import Tensor
from minifcn.training import validate

pytestmark = pytest.mark.usefixtures("quiet")


class FixedScores:
    """A stand-in model: returns the next batch of given logits, whatever its input."""

    def __init__(self, batches):
        self.batches = iter(batches)

    def __call__(self, x):
        return Tensor(next(self.batches))

    def eval(self):
        pass

    def train(self):
        pass


class Batches:
    def __init__(self, batches):
        self.batches = batches

    def epoch(self, _):
        return iter(self.batches)


def image_loss(logits, target):
    """Mean softmax cross-entropy over one image's counted pixels, with plain loops."""
    c, h, w = logits.shape
    total, n = 0.0, 0
    for i in range(h):
        for j in range(w):
            if target[i, j] == 255:
                continue
            z = logits[:, i, j].astype(np.float64)
            total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[target[i, j]]
            n += 1
    return total / n if n else None


def test_validate_keeps_the_images_of_highest_loss():
    rng = np.random.default_rng(0)
    n_class, batches, logits = 3, [], []
    for b in range(3):  # 3 batches of 3 images, 5x6 pixels
        x = rng.normal(size=(3, 3, 5, 6)).astype(np.float32)
        y = rng.integers(0, n_class, (3, 5, 6))
        y[rng.random(y.shape) < 0.2] = 255
        if b == 1:
            y[2] = 255  # an image with no counted pixel has no loss
        batches.append((x, y))
        logits.append((rng.normal(size=(3, n_class, 5, 6)) * 3).astype(np.float32))
    s, loss, examples, worst = validate(FixedScores(logits), Batches(batches), n_class, worst=4)
    expected = [(image_loss(z, y), b, k) for b, ((_, ys), zs) in enumerate(zip(batches, logits))
                for k, (z, y) in enumerate(zip(zs, ys))]
    expected = sorted([e for e in expected if e[0] is not None], key=lambda e: -e[0])[:4]
    assert len(worst) == 4 and len(examples) == 4
    for (image, target, pred, got), (want, b, k) in zip(worst, expected):
        assert got == pytest.approx(want, rel=1e-5)
        np.testing.assert_array_equal(target, batches[b][1][k])
        np.testing.assert_array_equal(pred, logits[b][k].argmax(axis=0))
        assert image.shape == (5, 6, 3) and image.dtype == np.uint8
    hist = np.zeros((n_class, n_class), np.int64)
    for (_, ys), zs in zip(batches, logits):
        for t, p in zip(ys.ravel(), zs.argmax(axis=1).ravel()):
            if t != 255:
                hist[t, p] += 1
    np.testing.assert_array_equal(s["confusion"], hist)
    # without worst=, the three items of before
    assert len(validate(FixedScores(logits), Batches(batches), n_class)) == 3


def test_confusion_figure_shows_the_row_normalised_matrix():
    hist = np.array([[8, 2, 0], [1, 1, 2], [0, 0, 0]])
    fig = viz.confusion_figure(hist, ["bg", "cat", "dog"])
    ax = fig.axes[0]
    shown = ax.images[0].get_array()
    want = np.array([[hist[i, j] / hist[i].sum() if hist[i].sum() else np.nan
                      for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(shown.filled(np.nan), want)
    assert shown.mask[2].all() and not shown.mask[:2].any()
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}
    assert cells == {(0, 0): "80", (0, 1): "20", (1, 0): "25", (1, 1): "25", (1, 2): "50"}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bg", "cat", "dog"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["bg", "cat", "dog"]
    assert ax.get_ylabel() == "ground truth"


def test_per_class_iu_bars_have_the_iu_as_height():
    iu = np.array([0.9, 0.25, np.nan, 0.5])
    ax = viz.per_class_iu_figure(iu, ["a", "b", "c", "d"]).axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.9, 0.25, 0.0, 0.5])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    assert ax.lines[0].get_ydata()[0] == pytest.approx((0.9 + 0.25 + 0.5) / 3)
    with pytest.raises(ValueError, match="class names"):
        viz.per_class_iu_figure(iu, ["a"])


def test_worst_images_figure_labels_rows_with_their_loss():
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (4, 5, 3), dtype=np.uint8) for _ in range(2)]
    labels = [rng.integers(0, 3, (4, 5)) for _ in range(2)]
    fig = viz.worst_images_figure(images, labels, labels[::-1], [2.5, 1.25])
    assert [fig.axes[k].get_ylabel() for k in (0, 3)] == ["loss 2.500", "loss 1.250"]
    with pytest.raises(ValueError, match="losses"):
        viz.worst_images_figure(images, labels, labels, [1.0])


def test_a_tiny_run_writes_the_three_figures(tmp_path):
    run = tmp_path / "run"
    assert train_cli.main(["--model", "fcn32s", "--width", "0.0625", "--size", "64",
                           "--n-train", "4", "--n-val", "4", "--batch-size", "4", "--device",
                           "cpu", "--lr", "0.01", "--iters", "1", "--out", str(run)]) == 0
    for name in ("confusion.png", "per_class_iu.png", "worst.png"):
        with Image.open(run / name) as im:
            im.verify()
    assert not list(run.glob(".*.tmp"))  # written through a temporary file, none left over
