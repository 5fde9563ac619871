"""Tests of the synthetic sets of minifcn.data: Shapes, Digits and their painting helpers."""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from minifcn.data import Digits, Shapes
from minifcn.data.digits import load_digits, split_rows
from minifcn.data.synth import bilinear_matrix

from _helpers import check_interface


def erode(mask, r):
    """True where the whole (2r+1) x (2r+1) box around a pixel lies inside ``mask``."""
    padded = np.pad(mask, r, constant_values=False)
    return sliding_window_view(padded, (2 * r + 1, 2 * r + 1)).all(axis=(-2, -1))


# ---------------------------------------------------------------- Shapes

def test_shapes_interface_and_defaults():
    check_interface(Shapes(n=5), 5)
    assert len(Shapes()) == 10000 and len(Shapes("val")) == 200
    assert Shapes(n=3, size=64)[0][0].shape == (64, 64, 3)
    for bad in (dict(split="test"), dict(n=0), dict(size=8), dict(seed=-1)):
        with pytest.raises(ValueError, match="Shapes"):
            Shapes(**bad)


def test_shapes_deterministic_random_access():
    a, b = Shapes(seed=3), Shapes(seed=3)
    later = b[17]
    first = a[5], a[17]
    np.testing.assert_array_equal(first[1][0], later[0])  # same item, any access order
    np.testing.assert_array_equal(first[1][1], later[1])
    np.testing.assert_array_equal(a[5][0], first[0][0])
    assert not np.array_equal(a[5][0], a[6][0])
    assert not np.array_equal(a[5][0], Shapes(seed=4)[5][0])
    assert not np.array_equal(Shapes("train")[0][0], Shapes("val")[0][0])


def test_shapes_labels_and_colours():
    ds = Shapes(n=120)
    labels = np.stack([ds[i][1] for i in range(len(ds))])
    images = np.stack([ds[i][0] for i in range(len(ds))]).astype(np.float64)
    assert labels.min() == 0 and labels.max() == 4
    assert set(np.unique(labels)) == set(range(5))  # every class shows up
    # class must not be told by colour: each class's mean colour is near the set's mean
    overall = images.reshape(-1, 3).mean(0)
    for c in range(5):
        assert np.abs(images[labels == c].mean(0) - overall).max() < 25, c
    # the background is textured/noisy, not flat
    assert np.median([images[i][labels[i] == 0].std(0).mean() for i in range(20)]) > 3


def test_shapes_cross_has_thin_arms():
    # a 15x15 box fits nowhere in an arm 8..12 px wide (size 96), but fits in most discs;
    # a 7x7 box does fit in an arm (the arms are not hairlines either)
    ds = Shapes(n=150)
    cross = disc = cross_wide = cross_any = disc_wide = 0
    for i in range(len(ds)):
        label = ds[i][1]
        c, d = label == 4, label == 1
        cross += c.sum()
        cross_wide += erode(c, 7).sum()
        cross_any += erode(c, 3).sum()
        disc += d.sum()
        disc_wide += erode(d, 7).sum()
    assert cross > 10000 and disc > 10000
    assert cross_wide <= 0.02 * cross
    assert cross_any >= 0.15 * cross
    assert disc_wide >= 0.15 * disc


# ---------------------------------------------------------------- Digits

def test_digits_interface_and_determinism():
    ds = Digits(n=4)
    check_interface(ds, 11)
    assert ds.class_names == ["background"] + [str(d) for d in range(10)]
    np.testing.assert_array_equal(ds[2][0], Digits(n=4)[2][0])
    assert not np.array_equal(ds[2][1], ds[3][1])
    labels = np.stack([Digits(n=60)[i][1] for i in range(60)])
    assert set(np.unique(labels)) == set(range(11))


def test_digits_split_rows_disjoint_and_fixed():
    grids, digits = load_digits()
    assert grids.shape == (1797, 8, 8) and grids.max() == 16 and grids.min() == 0
    train, val = split_rows("train"), split_rows("val")
    assert not set(train) & set(val)
    assert sorted(set(train) | set(val)) == list(range(1797))
    assert 0.18 < len(val) / 1797 < 0.22
    for d in range(10):  # stratified: each digit on both sides
        assert (digits[val] == d).sum() >= 30 and (digits[train] == d).sum() >= 130
    np.testing.assert_array_equal(Digits("val", seed=5).rows, val)


def test_digits_scene_labels_real_val_digit():
    """With one digit per scene, the labelled ink must be the thresholded bilinear resize (done
    here by Pillow) of some VAL row of the labelled class."""
    grids, digits = load_digits()
    val = split_rows("val")
    ds = Digits("val", n=3, digits_per_image=(1, 1), noise_std=0)
    for i in range(len(ds)):
        label = ds[i][1]
        classes = set(np.unique(label)) - {0}
        assert len(classes) == 1
        c = classes.pop()
        ys, xs = np.nonzero(label)
        target = label[ys.min():ys.max() + 1, xs.min():xs.max() + 1] > 0
        best = 1.0
        for row in val[digits[val] == c - 1]:
            src = Image.fromarray(grids[row].astype(np.float32), mode="F")
            for h in range(16, 41):
                for w in range(int(0.75 * h), int(1.1 * h) + 2):
                    ink = np.array(src.resize((w, h), Image.BILINEAR)) > 8
                    yy, xx = np.nonzero(ink)
                    if len(yy) == 0 or ink[yy.min():yy.max() + 1, xx.min():xx.max() + 1].shape != target.shape:
                        continue
                    cand = ink[yy.min():yy.max() + 1, xx.min():xx.max() + 1]
                    best = min(best, np.mean(cand != target))
        assert best <= 0.01, (i, c, best)


def test_bilinear_matrix_matches_pillow():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 16, (8, 8)).astype(np.float32)
    for h, w in ((16, 16), (23, 31), (40, 8)):
        ours = bilinear_matrix(h, 8) @ img @ bilinear_matrix(w, 8).T
        ref = np.array(Image.fromarray(img, mode="F").resize((w, h), Image.BILINEAR))
        np.testing.assert_allclose(ours, ref, atol=1e-4)
