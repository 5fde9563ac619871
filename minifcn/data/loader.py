"""``Loader``: batches of (x, y) for training, reproducible and resumable.

Everything random about an epoch (the order, each item's flip and crop position) is drawn up
front from a generator seeded by (seed, epoch), so an epoch is a pure function of those two
numbers. A run interrupted after batch k and resumed with ``epoch(e, start=k)`` gets exactly
the batches an uninterrupted run would have had.
"""
import operator

import numpy as np

from .transforms import crop_or_pad, hflip, to_input


def _nonneg_int(value, name):
    try:
        checked = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        checked = None
    if checked is None or checked < 0:
        raise ValueError(f"Loader: {name} must be a non-negative integer, got {value!r}")
    return checked


class Loader:
    """Batches of a dataset (see ``minifcn.data.base``).

    ``batch_size`` items per batch, the last batch of an epoch possibly smaller; ``shuffle``
    the order each epoch; ``flip`` mirror each item left-right with probability 1/2;
    ``crop=(h, w)`` (or an int for a square) take a random h x w window of each item, padding
    images smaller than that (input with 0, label with 255).

    Batches of more than one item need items of one size: give ``crop``, or use batch_size=1
    (the paper's way: one image at its own size).
    """

    def __init__(self, dataset, batch_size=1, shuffle=True, seed=0, flip=False, crop=None):
        self.dataset = dataset
        self.batch_size = _nonneg_int(batch_size, "batch_size")
        if self.batch_size < 1:
            raise ValueError(f"Loader: batch_size must be >= 1, got {batch_size!r}")
        self.seed = _nonneg_int(seed, "seed")
        self.shuffle, self.flip = bool(shuffle), bool(flip)
        if crop is not None:
            crop = (crop, crop) if isinstance(crop, (int, np.integer)) else tuple(crop)
            if len(crop) != 2 or not all(isinstance(c, (int, np.integer)) and c > 0 for c in crop):
                raise ValueError(f"Loader: crop must be None, an int or (h, w) of positive ints, "
                                 f"got {crop!r}")
            crop = (int(crop[0]), int(crop[1]))
        self.crop = crop
        if len(dataset) == 0:
            raise ValueError("Loader: the dataset is empty")

    def __len__(self):
        """Batches per epoch (the last, partial batch included)."""
        return -(-len(self.dataset) // self.batch_size)

    def plan(self, epoch):
        """(order, flips, offsets) of an epoch: item indices (n,), flip flags (n,) bool and
        crop positions (n, 2) in [0, 1), all drawn from (seed, epoch) alone."""
        n = len(self.dataset)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        flips = (rng.random(n) < 0.5) & self.flip
        offsets = rng.random((n, 2))
        return order, flips, offsets

    def epoch(self, e, start=0):
        """Iterator over the batches ``start``, ``start+1``, ... of epoch ``e``: each is
        (x (B, 3, H, W) float32, y (B, H, W) int64)."""
        e = _nonneg_int(e, "epoch")
        start = _nonneg_int(start, "start")
        if start > len(self):
            raise ValueError(f"Loader: start={start} but an epoch has only {len(self)} batches")
        return self._batches(e, start)

    def _batches(self, e, start):
        order, flips, offsets = self.plan(e)
        bs = self.batch_size
        for b in range(start, len(self)):
            items = [self._item(order[p], flips[p], offsets[p])
                     for p in range(b * bs, min(len(order), (b + 1) * bs))]
            sizes = sorted({x.shape[1:] for x, _ in items})
            if len(sizes) > 1:
                raise ValueError(
                    f"Loader: batch {b} of epoch {e} mixes image sizes "
                    f"{', '.join(f'{h}x{w}' for h, w in sizes)} (HxW); use batch_size=1 or "
                    "crop=(h, w) to batch images of different sizes"
                )
            yield (np.stack([x for x, _ in items]), np.stack([y for _, y in items]))

    def _item(self, index, flip, offset):
        image, label = self.dataset[int(index)]
        x = to_input(image)
        label = np.asarray(label)
        if label.shape != image.shape[:2]:
            raise ValueError(f"Loader: item {index} has a {label.shape} label for a "
                             f"{image.shape[:2]} image")
        label = label.astype(np.int64, copy=False)
        if flip:
            x, label = hflip(x, label)
        if self.crop is not None:
            x, label = crop_or_pad(x, label, self.crop, offset)
        return x, label
