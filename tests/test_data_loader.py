"""Tests of minifcn.data's way to the net: transforms (to_input, from_input) and Loader."""
import numpy as np
import pytest

from minifcn.data import MEAN_RGB, Loader, from_input, to_input


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
