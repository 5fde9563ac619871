"""Tests of minifcn.metrics against hand-worked examples and a slow per-pixel implementation."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minifcn.metrics import RunningScore, confusion_matrix, scores


def slow_hist(target, pred, n_class, ignore=255):
    hist = np.zeros((n_class, n_class), np.int64)
    for t, p in zip(np.ravel(target).tolist(), np.ravel(pred).tolist()):
        if t != ignore and 0 <= t < n_class:
            hist[t][p] += 1
    return hist


def slow_scores(hist):
    """The paper's formulas (section 5), one class at a time in plain Python."""
    n = len(hist)
    t = [sum(hist[i]) for i in range(n)]
    col = [sum(hist[j][i] for j in range(n)) for i in range(n)]
    acc = [hist[i][i] / t[i] if t[i] else None for i in range(n)]
    iu = [hist[i][i] / (t[i] + col[i] - hist[i][i]) if t[i] + col[i] else None for i in range(n)]
    present_acc = [a for a in acc if a is not None]
    present_iu = [u for u in iu if u is not None]
    total = sum(t)
    return {
        "pixel_acc": sum(hist[i][i] for i in range(n)) / total,
        "mean_acc": sum(present_acc) / len(present_acc),
        "mean_iu": sum(present_iu) / len(present_iu),
        "fw_iu": sum(t[i] * iu[i] for i in range(n) if t[i]) / total,
    }


def test_hand_worked_example():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    hist = confusion_matrix(target, pred, 3)
    # pairs (truth, pred): (0,0) (0,1) (1,1) (1,2) (2,2); the 255 pixel is dropped
    np.testing.assert_array_equal(hist, [[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert hist.dtype == np.int64
    s = scores(hist)
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    assert s["mean_acc"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    # IU: class 0: 1/(2+1-1), class 1: 1/(2+2-1), class 2: 1/(1+2-1)
    assert s["mean_iu"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert s["fw_iu"] == pytest.approx((2 * 1 / 2 + 2 * 1 / 3 + 1 * 1 / 2) / 5)
    np.testing.assert_allclose(s["per_class_iu"], [1 / 2, 1 / 3, 1 / 2])
    np.testing.assert_allclose(s["per_class_acc"], [1 / 2, 1 / 2, 1])
    assert all(isinstance(s[k], float) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"))


def test_absent_classes():
    # 4 classes: 3 never appears; 2 is predicted once but absent from the ground truth
    target = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([0, 0, 2, 1, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" / "mean of empty slice" warnings
        s = scores(confusion_matrix(target, pred, 4))
    iu, acc = s["per_class_iu"], s["per_class_acc"]
    assert np.isnan(iu[3]) and np.isnan(acc[3])  # absent everywhere: skipped
    assert iu[2] == 0 and np.isnan(acc[2])  # predicted, not in truth: IU 0 counts
    # class 0: 2/(3+3-2) = 1/2; class 1: 2/(3+2-2) = 2/3
    assert s["mean_iu"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    assert s["mean_acc"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_ignored_and_out_of_range_targets_are_skipped():
    target = np.array([0, 1, 255, 255, 7, -1])
    pred = np.array([0, 1, 1, 0, 1, 1])
    np.testing.assert_array_equal(confusion_matrix(target, pred, 2), [[1, 0], [0, 1]])
    # another ignore value
    np.testing.assert_array_equal(confusion_matrix(np.array([0, 1, 1]), np.array([1, 1, 0]), 2,
                                                   ignore_index=1), [[0, 1], [0, 0]])


def test_small_class_ignored_high_pixel_acc_low_mean_iu():
    target = np.zeros((40, 25), np.int64)
    target[:2, :5] = 1  # 10 of 1000 pixels
    pred = np.zeros_like(target)  # a model that never predicts the small class
    s = scores(confusion_matrix(target, pred, 2))
    assert s["pixel_acc"] == pytest.approx(0.99)
    assert s["mean_iu"] == pytest.approx((990 / 1000 + 0) / 2)
    assert s["mean_acc"] == pytest.approx(0.5)


def test_any_matching_shape_and_running_score():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (3, 7, 9))
    target[:, 0] = 255
    pred = rng.integers(0, 5, (3, 7, 9))
    np.testing.assert_array_equal(confusion_matrix(target, pred, 5), slow_hist(target, pred, 5))
    rs = RunningScore(5)
    for b in range(3):
        rs.update(target[b], pred[b])
    np.testing.assert_array_equal(rs.hist, slow_hist(target, pred, 5))
    assert rs.scores()["mean_iu"] == pytest.approx(slow_scores(rs.hist.tolist())["mean_iu"])
    rs.reset()
    assert rs.hist.sum() == 0 and rs.hist.shape == (5, 5)
    with pytest.raises(ValueError, match="empty"):
        rs.scores()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_against_slow_implementation(n_class, n_pix, seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, n_class + 2, n_pix)  # some out of range
    target[rng.random(n_pix) < 0.2] = 255
    pred = rng.integers(0, n_class, n_pix)
    hist = confusion_matrix(target, pred, n_class)
    np.testing.assert_array_equal(hist, slow_hist(target, pred, n_class))
    if hist.sum() == 0:
        with pytest.raises(ValueError):
            scores(hist)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = scores(hist)
    for k, v in slow_scores(hist.tolist()).items():
        assert s[k] == pytest.approx(v), k
        assert 0 <= s[k] <= 1


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match="pred holds values"):
        confusion_matrix(np.zeros(3, int), np.array([0, 2, 1]), 2)
    with pytest.raises(ValueError, match="pred holds values"):
        confusion_matrix(np.zeros(3, int), np.array([0, -1, 1]), 2)
    with pytest.raises(TypeError, match="argmax"):
        confusion_matrix(np.zeros(3, int), np.zeros(3), 2)
    with pytest.raises(ValueError, match="n_class"):
        confusion_matrix(np.zeros(3, int), np.zeros(3, int), 0)
    with pytest.raises(ValueError, match="empty"):
        scores(np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match="square"):
        scores(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="empty"):  # every pixel ignored
        scores(confusion_matrix(np.full(4, 255), np.zeros(4, int), 3))


def test_border_mask_against_a_pixel_loop():
    from minifcn.metrics import border_mask

    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        width = int(rng.integers(0, 8))
        target = rng.integers(0, 3, (2, h, w))
        want = np.array([[min(i, h - 1 - i, j, w - 1 - j) < width for j in range(w)]
                         for i in range(h)])
        got = border_mask(target, width)
        assert got.shape == target.shape and got.dtype == bool
        assert (got == want).all(), (h, w, width)
    with pytest.raises(ValueError, match="width must be an int >= 0"):
        border_mask(np.zeros((4, 4)), -1)
    with pytest.raises(ValueError, match="must be \\(..., H, W\\)"):
        border_mask(np.zeros(4), 1)
