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
    with pytest.raises(ValueError, match="4x6 .item 0. and 5x6 .item 1.*batch_size=1"):
        list(Loader(ds, batch_size=2, shuffle=False).epoch(0))
    assert [x.shape[2] for x, _ in Loader(ds, batch_size=1, shuffle=False).epoch(0)] == [4, 5, 4, 5]
    assert len(list(Loader(ds, batch_size=2, crop=(4, 4)).epoch(0))) == 2
    for bad in (dict(batch_size=0), dict(crop=(0, 3)), dict(seed=-1)):
        with pytest.raises(ValueError, match="Loader"):
            Loader(ds, **bad)


def test_mixed_sizes_error_names_the_two_sizes_and_suggests_only_options_not_given():
    ds = Coded(4, sizes=[(4, 6), (4, 6), (5, 6), (7, 6)])
    with pytest.raises(ValueError) as e:
        list(Loader(ds, batch_size=4, shuffle=False).epoch(0))
    message = str(e.value)
    assert "\n" not in message and "4x6 (item 0) and 5x6 (item 2) (HxW)" in message
    assert "7x6" not in message  # the two sizes that clash, not a list
    for fix in ("crop=(h, w)", "--crop", "batch_size=1", "--batch-size 1", "group_by_size=True"):
        assert fix in message

    class WrongSizes(Coded):  # says every image is 4x6
        def image_size(self, i):
            return 4, 6

    with pytest.raises(ValueError) as e:
        list(Loader(WrongSizes(4, sizes=[(4, 6), (5, 6)]), 2, shuffle=False,
                        group_by_size=True).epoch(0))
    message = str(e.value)
    assert "image_size()" in message
    for given_or_useless in ("group_by_size=True", "crop", "batch_size=1", "--batch-size"):
        assert given_or_useless not in message


# ---------------------------------------------------------------- Loader(group_by_size=True)

class Sized(Coded):
    """Coded with ``image_size``, counting how many items were loaded."""

    def __init__(self, n, sizes=None):
        super().__init__(n, sizes)
        self.loaded = 0

    def image_size(self, k):
        return self.sizes[k % len(self.sizes)] if self.sizes else (4, 6)

    def __getitem__(self, k):
        self.loaded += 1
        return super().__getitem__(k)


MIXED = [(4, 6), (5, 6), (4, 6), (6, 4), (5, 6), (4, 6), (4, 6)]


@pytest.mark.parametrize("shuffle", [False, True])
def test_group_by_size_batches_hold_one_size_and_cover_every_image_once(shuffle):
    ds = Coded(23, sizes=MIXED)
    loader = Loader(ds, batch_size=3, shuffle=shuffle, seed=4, group_by_size=True)
    for e in (0, 1):
        batches = list(loader.epoch(e))
        assert len(batches) == len(loader)
        seen = sum((ids(b) for b in batches), [])
        assert sorted(seen) == list(range(23))
        for x, y in batches:
            size = MIXED[ids((x, y))[0] % len(MIXED)]
            assert x.shape[2:] == size and y.shape[1:] == size  # one size per batch
            assert all(MIXED[k % len(MIXED)] == size for k in ids((x, y)))
        # within one size, the epoch's order (the dataset's, or the shuffled one)
        order = [int(k) for k in loader.plan(e)[0]]
        for size in set(MIXED):
            of_size = lambda ks: [k for k in ks if MIXED[k % len(MIXED)] == size]
            assert of_size(seen) == of_size(order)
    counts = {s: sum(MIXED[k % len(MIXED)] == s for k in range(23)) for s in set(MIXED)}
    assert len(loader) == sum(-(-c // 3) for c in counts.values())  # one partial batch a size
    if not shuffle:  # batches in the dataset order of their first image
        firsts = [ids(b)[0] for b in loader.epoch(0)]
        assert firsts == sorted(firsts) and firsts[:4] == [0, 1, 3, 6]


def test_group_by_size_with_one_size_gives_the_plain_batches():
    def same(a, b):
        a, b = list(a), list(b)
        assert len(a) == len(b)
        for (x1, y1), (x2, y2) in zip(a, b):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)

    for kw in (dict(shuffle=False), dict(shuffle=True, seed=3, flip=True),
               dict(shuffle=True, seed=3, crop=(3, 5))):
        plain = Loader(Coded(10, sizes=[(5, 7)]), 4, **kw)
        grouped = Loader(Coded(10, sizes=[(5, 7)]), 4, group_by_size=True, **kw)
        assert len(grouped) == len(plain) == 3
        same(grouped.epoch(2), plain.epoch(2))
    # a crop makes every item one size: sizes of the originals no longer matter
    kw = dict(shuffle=True, seed=3, flip=True, crop=(3, 5))
    same(Loader(Coded(10, sizes=MIXED), 4, group_by_size=True, **kw).epoch(1),
         Loader(Coded(10, sizes=MIXED), 4, **kw).epoch(1))


def test_group_by_size_is_deterministic_and_resumable():
    make = lambda: Loader(Coded(23, sizes=MIXED), 3, seed=9, flip=True,
                          group_by_size=True)
    full = list(make().epoch(5))
    for k in (0, 1, 4, len(full) - 1, len(full)):
        tail = list(make().epoch(5, start=k))
        assert len(tail) == len(full) - k
        for (x1, y1), (x2, y2) in zip(tail, full[k:]):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match=f"start={len(full) + 1}"):
        make().epoch(5, start=len(full) + 1)


def test_group_by_size_asks_image_size_instead_of_loading_every_item():
    ds = Sized(23, sizes=MIXED)
    loader = Loader(ds, 3, group_by_size=True)
    assert len(loader) > 0 and ds.loaded == 0  # sizes from image_size(), nothing decoded
    list(loader.epoch(0))
    assert ds.loaded == 23  # each item once, when its batch is made
    # a dataset without image_size: its items are loaded once to learn their sizes
    bare = Loader(Coded(23, sizes=MIXED), 3, shuffle=False, group_by_size=True)
    assert [ids(b) for b in bare.epoch(0)] == [ids(b) for b in
                                               Loader(ds, 3, shuffle=False,
                                                      group_by_size=True).epoch(0)]
