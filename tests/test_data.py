"""Tests of minifcn.data: the synthetic sets, the VOC and folder readers, transforms, Loader."""
import zlib

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from minifcn.data import (MEAN_RGB, VOC_CLASSES, Digits, FolderSegmentation, Loader, Shapes,
                          VOCSegmentation, from_input, get_dataset, to_input, voc_palette)
from minifcn.data.digits import load_digits, split_rows
from minifcn.data.synth import bilinear_matrix


def check_interface(ds, n_class):
    assert ds.n_class == n_class and len(ds.class_names) == n_class
    assert all(isinstance(c, str) for c in ds.class_names)
    assert ds.ignore_index == 255 and isinstance(ds.name, str) and ds.name
    image, label = ds[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert label.dtype == np.int64 and label.shape == image.shape[:2]
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds[-len(ds) - 1]
    np.testing.assert_array_equal(ds[-1][1], ds[len(ds) - 1][1])


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


# ---------------------------------------------------------------- VOC

def write_label(path, label):
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.astype(np.uint8).tobytes())
    im.putpalette(voc_palette().tobytes())
    im.save(path)


def make_voc(root, year="VOC2012", sizes=((40, 50), (30, 30), (24, 36)), seed=0):
    """A tiny VOC tree under root/VOCdevkit/year; returns {name: (image, label)} written."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / year
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    written = {}
    for k, (h, w) in enumerate(sizes):
        name = f"2007_{k:06d}"
        yy, xx = np.mgrid[:h, :w]
        image = np.stack([yy * 3 + 20 * k, xx * 3, np.full_like(yy, 128)], -1).astype(np.uint8)
        label = rng.integers(0, 21, (h, w))
        label[0, :] = 255  # a boundary
        Image.fromarray(image).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
        write_label(base / "SegmentationClass" / f"{name}.png", label)
        written[name] = (image, label)
    names = list(written)
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[:2]) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text(names[2] + "\n")
    return base, written


def test_voc_palette():
    def slow(i):  # the VOC devkit's construction, bit by bit
        r = g = b = 0
        for j in range(8):
            r += ((i >> (3 * j)) & 1) * 2 ** (7 - j)
            g += ((i >> (3 * j + 1)) & 1) * 2 ** (7 - j)
            b += ((i >> (3 * j + 2)) & 1) * 2 ** (7 - j)
        return r, g, b

    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert [tuple(pal[i]) for i in range(256)] == [slow(i) for i in range(256)]
    # published values: background, aeroplane, person, ignore
    assert tuple(pal[0]) == (0, 0, 0) and tuple(pal[1]) == (128, 0, 0)
    assert tuple(pal[15]) == (192, 128, 128) and tuple(pal[255]) == (224, 224, 192)
    np.testing.assert_array_equal(voc_palette(21), pal[:21])
    with pytest.raises(ValueError):
        voc_palette(300)


def test_voc_loads_what_was_written(tmp_path):
    base, written = make_voc(tmp_path)
    ds = VOCSegmentation(base, "train")
    check_interface(ds, 21)
    assert ds.class_names == list(VOC_CLASSES) and ds.class_names[15] == "person"
    assert len(ds) == 2 and len(VOCSegmentation(base, "val")) == 1
    for i, name in enumerate(list(written)[:2]):
        image, label = ds[i]
        np.testing.assert_array_equal(label, written[name][1])
        assert image.shape == written[name][0].shape
        assert np.abs(image.astype(int) - written[name][0]).mean() < 3  # JPEG is lossy


def test_voc_root_discovery(tmp_path):
    base, _ = make_voc(tmp_path)
    devkit = tmp_path / "VOCdevkit"
    for root in (base, devkit, tmp_path):
        assert VOCSegmentation(root, "train").root == base
    make_voc(tmp_path / "old", year="VOC2011")
    assert VOCSegmentation(tmp_path / "old" / "VOCdevkit").root.name == "VOC2011"
    both = tmp_path / "both"
    make_voc(both, year="VOC2011")
    make_voc(both, year="VOC2012")
    assert VOCSegmentation(both / "VOCdevkit").root.name == "VOC2012"  # 2012 preferred


def test_voc_errors(tmp_path):
    base, written = make_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCSegmentation(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        VOCSegmentation(base, "trainval")
    with pytest.raises(ValueError, match="unknown split 'bogus'"):
        VOCSegmentation(base, "bogus")
    (base / "ImageSets/Segmentation/seg11valid.txt").write_text(list(written)[0] + "\n")
    assert len(VOCSegmentation(base, "seg11valid")) == 1  # any list present is a split

    names = list(written)
    # undecodable image
    (base / "JPEGImages" / f"{names[0]}.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match=f"{names[0]}.jpg"):
        VOCSegmentation(base, "train")[0]
    # label of another size
    write_label(base / "SegmentationClass" / f"{names[1]}.png", np.zeros((10, 10), int))
    with pytest.raises(ValueError, match=f"{names[1]}.png.*must match"):
        VOCSegmentation(base, "train")[1]
    # label value >= n_class and not 255
    bad = written[names[2]][1].copy()
    bad[5, 5] = 21
    write_label(base / "SegmentationClass" / f"{names[2]}.png", bad)
    with pytest.raises(ValueError, match=f"{names[2]}.png has values \\[21\\]"):
        VOCSegmentation(base, "val")[0]
    # colour (RGB) label instead of indices
    Image.fromarray(np.zeros((24, 36, 3), np.uint8)).save(
        base / "SegmentationClass" / f"{names[2]}.png")
    with pytest.raises(ValueError, match="mode RGB"):
        VOCSegmentation(base, "val")[0]
    # missing image
    (base / "JPEGImages" / f"{names[2]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"{names[2]}.jpg"):
        VOCSegmentation(base, "val")[0]


# ---------------------------------------------------------------- folder format

def make_folder(root, n=30, n_class=4, seed=0, splits=False):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    written = {}
    for k in range(n):
        name = f"img{k:03d}"
        image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        label = rng.integers(0, n_class, (12, 16)).astype(np.uint8)
        label[:, 0] = 255
        Image.fromarray(image).save(root / "images" / f"{name}.png")  # lossless
        Image.fromarray(label).save(root / "masks" / f"{name}.png")  # mode L
        written[name] = (image, label)
    if splits:
        (root / "splits").mkdir()
        names = sorted(written)
        (root / "splits/train.txt").write_text("\n".join(names[:5]))
        (root / "splits/val.txt").write_text("\n".join(names[5:7]))
    return written


def test_folder_loads_and_infers_n_class(tmp_path):
    written = make_folder(tmp_path, n_class=4)
    ds = FolderSegmentation(tmp_path)
    check_interface(ds, 4)
    assert len(ds) == 30 and ds.names == sorted(written)
    for i in (0, 7):
        image, label = ds[i]
        np.testing.assert_array_equal(image, written[ds.names[i]][0])
        np.testing.assert_array_equal(label, written[ds.names[i]][1])
    assert FolderSegmentation(tmp_path, n_class=9).n_class == 9
    (tmp_path / "classes.txt").write_text("sky\nroad\ncar\nperson\n")
    assert FolderSegmentation(tmp_path).class_names == ["sky", "road", "car", "person"]
    with pytest.raises(ValueError, match="classes.txt"):
        FolderSegmentation(tmp_path, n_class=5)


def test_folder_splits(tmp_path):
    written = make_folder(tmp_path / "a", n=40)
    train = FolderSegmentation(tmp_path / "a", split="train")
    val = FolderSegmentation(tmp_path / "a", split="val")
    assert sorted(train.names + val.names) == sorted(written) and not set(train.names) & set(val.names)
    assert val.names == [n for n in sorted(written) if zlib.crc32(n.encode()) % 10 == 0]
    assert 0 < len(val) < len(train)
    make_folder(tmp_path / "b", splits=True)
    assert FolderSegmentation(tmp_path / "b", split="train").names == [f"img{k:03d}" for k in range(5)]
    assert len(FolderSegmentation(tmp_path / "b", split="val")) == 2
    with pytest.raises(ValueError, match="unknown split 'test'"):
        FolderSegmentation(tmp_path / "a", split="test")


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FolderSegmentation(tmp_path / "nowhere")
    written = make_folder(tmp_path, n=4)
    names = sorted(written)
    with pytest.raises(ValueError, match=f"{names[0]}.png has values \\[2, 3\\]"):
        FolderSegmentation(tmp_path, n_class=2)[0]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "masks" / f"{names[1]}.png")
    with pytest.raises(ValueError, match="must match"):
        FolderSegmentation(tmp_path)[1]
    (tmp_path / "images" / f"{names[2]}.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"cannot decode image .*{names[2]}.png"):
        FolderSegmentation(tmp_path)[2]
    (tmp_path / "masks" / f"{names[3]}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"masks.{names[3]}.png"):
        FolderSegmentation(tmp_path)


def test_get_dataset(tmp_path):
    assert isinstance(get_dataset("shapes", "val"), Shapes)
    assert isinstance(get_dataset("digits", "train", n=3), Digits)
    base, _ = make_voc(tmp_path / "v")
    assert len(get_dataset(f"voc:{tmp_path / 'v' / 'VOCdevkit'}", "val")) == 1
    make_folder(tmp_path / "f", splits=True)
    assert len(get_dataset(f"folder:{tmp_path / 'f'}", "train")) == 5
    with pytest.raises(ValueError, match="shapes, digits, voc:ROOT, folder:ROOT"):
        get_dataset("cityscapes", "train")
    with pytest.raises(ValueError, match="needs a folder"):
        get_dataset("voc:", "train")


# ---------------------------------------------------------------- transforms

def test_to_input_and_back():
    assert MEAN_RGB == tuple(reversed((104.00699, 116.66877, 122.67892)))
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = to_input(image)
    assert x.shape == (3, 5, 7) and x.dtype == np.float32
    for c in range(3):
        for i in range(5):
            for j in range(7):
                assert abs(x[c, i, j] - (float(image[i, j, c]) - MEAN_RGB[c])) < 1e-4
    np.testing.assert_array_equal(from_input(x), image)
    with pytest.raises(ValueError, match="to_input"):
        to_input(image.astype(np.float32))
    with pytest.raises(ValueError, match="from_input"):
        from_input(x[:2])


# ---------------------------------------------------------------- Loader

class Coded:
    """Tiny dataset: item k's image is (k, column, 0) per pixel and its label the column, so a
    batch tells which item it came from and whether it was flipped."""

    n_class, class_names, ignore_index, name = 2, ["a", "b"], 255, "coded"

    def __init__(self, n, sizes=None):
        self.n, self.sizes = n, sizes

    def __len__(self):
        return self.n

    def __getitem__(self, k):
        if not 0 <= k < self.n:
            raise IndexError(k)
        h, w = self.sizes[k % len(self.sizes)] if self.sizes else (4, 6)
        image = np.zeros((h, w, 3), np.uint8)
        image[..., 0] = k
        image[..., 1] = np.arange(w)
        return image, np.tile(np.arange(w), (h, 1)).astype(np.int64)


def ids(batch):
    return [int(round(v)) for v in batch[0][:, 0, 0, 0] + MEAN_RGB[0]]


def test_loader_epoch_order_and_partial_batch():
    loader = Loader(Coded(10), batch_size=4, seed=1)
    assert len(loader) == 3
    batches = list(loader.epoch(0))
    assert [b[0].shape for b in batches] == [(4, 3, 4, 6)] * 2 + [(2, 3, 4, 6)]
    assert all(b[0].dtype == np.float32 and b[1].dtype == np.int64 for b in batches)
    order = sum((ids(b) for b in batches), [])
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert order != sum((ids(b) for b in loader.epoch(1)), [])
    assert sum((ids(b) for b in Loader(Coded(10), 4, shuffle=False).epoch(3)), []) == list(range(10))


def test_loader_deterministic_and_resumable():
    ds = Coded(11, sizes=[(6, 9), (8, 7)])
    make = lambda: Loader(ds, batch_size=3, seed=7, flip=True, crop=(5, 6))
    full = list(make().epoch(2))
    for k in (0, 1, 3, len(full)):
        tail = list(make().epoch(2, start=k))
        assert len(tail) == len(full) - k
        for (x1, y1), (x2, y2) in zip(tail, full[k:]):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="start=5"):
        make().epoch(2, start=5)


def test_loader_flip_moves_image_and_label_together():
    batches = list(Loader(Coded(30), batch_size=5, seed=0, flip=True).epoch(0))
    flipped = 0
    for x, y in batches:
        column = np.rint(x[:, 1] + MEAN_RGB[1]).astype(int)  # the image's green = its column
        np.testing.assert_array_equal(column, y)
        flipped += int((y[:, 0, 0] == 5).sum())
    assert 5 < flipped < 25  # some items flipped, some not
    for x, y in Loader(Coded(30), batch_size=5).epoch(0):
        assert (y[:, :, 0] == 0).all()  # flip=False never flips


def test_loader_crop_pads_with_ignore():
    loader = Loader(Coded(3, sizes=[(4, 6)]), batch_size=3, crop=(7, 8), shuffle=False)
    x, y = next(loader.epoch(0))
    assert x.shape == (3, 3, 7, 8) and y.shape == (3, 7, 8)
    valid = y != 255
    assert valid.sum() == 3 * 4 * 6  # every original pixel kept once
    assert (x[:, :, ~valid[0]] == 0).all()  # padding is the mean, i.e. 0 after subtraction
    np.testing.assert_array_equal(np.rint(x[:, 1] + MEAN_RGB[1])[valid], y[valid])
    # a crop smaller than the image is a window of it
    x, y = next(Loader(Coded(4, sizes=[(9, 12)]), batch_size=4, crop=3, seed=2).epoch(0))
    assert y.shape == (4, 3, 3) and (y != 255).all()
    assert (np.diff(y, axis=2) == 1).all()  # consecutive columns


def test_loader_unequal_sizes():
    ds = Coded(4, sizes=[(4, 6), (5, 6)])
    with pytest.raises(ValueError, match="4x6, 5x6.*batch_size=1"):
        list(Loader(ds, batch_size=2, shuffle=False).epoch(0))
    assert [x.shape[2] for x, _ in Loader(ds, batch_size=1, shuffle=False).epoch(0)] == [4, 5, 4, 5]
    assert len(list(Loader(ds, batch_size=2, crop=(4, 4)).epoch(0))) == 2
    for bad in (dict(batch_size=0), dict(crop=(0, 3)), dict(seed=-1)):
        with pytest.raises(ValueError, match="Loader"):
            Loader(ds, **bad)
