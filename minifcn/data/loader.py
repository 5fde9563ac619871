"""``Loader``: batches of (x, y) for training, reproducible and resumable.

Everything random about an epoch (the order, each item's flip and crop position) is drawn up
front from a generator seeded by (seed, epoch), so an epoch is a pure function of those two
numbers. A run interrupted after batch k and resumed with ``epoch(e, start=k)`` gets exactly
the batches an uninterrupted run would have had.

Images of different sizes cannot share a batch. ``group_by_size=True`` batches each size apart
(learning the sizes from ``dataset.image_size(i)``, a file header, once), which is how a whole
VOC split is validated at full resolution with batches of more than one image.

``instances=True`` adds each item's instance map (``dataset.item(i, instances=True)``) to the
batch, flipped and cropped with its label, padded with 255 like it.

``shard=(k, n)`` gives one of n processes of data-parallel training (``minifcn.distributed``)
its part k of the data: every batch is planned as one process plans it (same order, flips and
crops, drawn from the shared seed) and this process keeps its k-th slice of each batch's images
(training: n processes together train on the one-process batch), or with
``shard_by="batches"`` every n-th whole batch from the k-th (validation: each batch is scored
whole, by one process). Across the n processes every image is seen once per epoch.
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

    Batches of more than one item need items of one size: give ``crop``, use batch_size=1
    (the paper's way: one image at its own size), or ``group_by_size=True``: then every batch
    holds images of one (H, W), in the epoch's order within each size, the batches ordered by
    their first image. With one size in the dataset (or a crop) that is the plain batching.

    ``instances=True``: batches are (x, y, inst), inst (B, H, W) int64 the items' instance maps
    (0 background, 1..K objects, 255 ignored), moved with y; the dataset must have them
    (``has_instances``).
    """

    def __init__(self, dataset, batch_size=1, shuffle=True, seed=0, flip=False, crop=None,
                 group_by_size=False, instances=False, shard=None, shard_by="images"):
        self.dataset = dataset
        self.instances = bool(instances)
        if self.instances and not getattr(dataset, "has_instances", False):
            raise ValueError(f"Loader: instances=True but the dataset "
                             f"{getattr(dataset, 'name', type(dataset).__name__)!r} has no "
                             "instance maps (has_instances is not True)")
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
        self.group_by_size = bool(group_by_size)
        # (H, W) of every item, when batches must keep sizes apart (a crop makes all one size)
        self.sizes = self._image_sizes() if self.group_by_size and crop is None else None
        self.shard, self.shard_by = self._check_shard(shard, shard_by)

    def _check_shard(self, shard, shard_by):
        if shard is None:
            return None, shard_by
        if shard_by not in ("images", "batches"):
            raise ValueError(f"Loader: shard_by must be 'images' or 'batches', got {shard_by!r}")
        k, n = (_nonneg_int(v, "shard") for v in shard)
        if not k < n:
            raise ValueError(f"Loader: shard=(k, n) needs 0 <= k < n, got {shard!r}")
        if shard_by == "images":
            if self.sizes is not None:  # the batches' sizes would depend on the epoch's order
                raise ValueError("Loader: shard_by='images' needs batches of one planned size: "
                                 "not with group_by_size (give a crop)")
            last = len(self.dataset) % self.batch_size
            if self.batch_size < n:
                raise ValueError(f"Loader: shard=(k, {n}) splits each batch over {n} processes, "
                                 f"one image each at least, but batch_size is {self.batch_size}")
            if 0 < last < n:
                raise ValueError(f"Loader: shard=(k, {n}) splits each batch over {n} processes, "
                                 f"one image each at least, but {len(self.dataset)} images in "
                                 f"batches of {self.batch_size} leave a last batch of {last}")
        return (k, n), shard_by

    def _image_sizes(self):
        ds = self.dataset
        if hasattr(ds, "image_size"):  # cheap: a file header, or a size the dataset knows
            return [tuple(int(s) for s in ds.image_size(i)) for i in range(len(ds))]
        return [ds[i][0].shape[:2] for i in range(len(ds))]  # else decode every item once

    def __len__(self):
        """Batches per epoch (the last, partial batch of each size included); with
        ``shard_by="batches"``, those of this process."""
        total = self._n_batches()
        if self.shard is not None and self.shard_by == "batches":
            return len(range(self.shard[0], total, self.shard[1]))
        return total

    def _n_batches(self):
        return len(self.batch_positions(range(len(self.dataset))))  # the same for any order

    def batch_part(self, b):
        """(start, stop, total): the rows of batch ``b`` (of any epoch) that this process holds
        with ``shard=(k, n)`` (images [start, stop) of the batch's ``total``; (0, total, total)
        without a shard). ``backend.set_batch_part`` takes it."""
        n_items, bs = len(self.dataset), self.batch_size
        total = min(bs, n_items - b * bs)
        if self.shard is None or self.shard_by == "batches":
            return 0, total, total
        k, n = self.shard
        return k * total // n, (k + 1) * total // n, total

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
        (x (B, 3, H, W) float32, y (B, H, W) int64), and inst (B, H, W) int64 after them with
        ``instances=True``."""
        e = _nonneg_int(e, "epoch")
        start = _nonneg_int(start, "start")
        if start > self._n_batches():
            raise ValueError(f"Loader: start={start} but an epoch has only {self._n_batches()} "
                             "batches")
        return self._batches(e, start)

    def batch_positions(self, order):
        """The positions in ``order`` that make up each batch: consecutive runs of
        ``batch_size``, or with group_by_size, runs of each size taken apart and then put in
        the order of their first position."""
        bs = self.batch_size
        if self.sizes is None:
            return [range(p, min(len(order), p + bs)) for p in range(0, len(order), bs)]
        by_size = {}
        for p, index in enumerate(order):
            by_size.setdefault(self.sizes[index], []).append(p)
        runs = [ps[k:k + bs] for ps in by_size.values() for k in range(0, len(ps), bs)]
        return sorted(runs, key=lambda run: run[0])

    def _batches(self, e, start):
        order, flips, offsets = self.plan(e)
        for b, positions in enumerate(self.batch_positions(order)[start:], start):
            if self.shard is not None:  # this process's part: a slice of the batch, or all of it
                k, n = self.shard
                if self.shard_by == "batches":
                    if b % n != k:
                        continue
                else:
                    positions = positions[k * len(positions) // n:(k + 1) * len(positions) // n]
            items = [self._item(order[p], flips[p], offsets[p]) for p in positions]
            self._check_one_size(e, b, [order[p] for p in positions],
                                 [item[0].shape[1:] for item in items])
            yield tuple(np.stack(parts) for parts in zip(*items))

    def _check_one_size(self, e, b, indices, sizes):
        odd = next((k for k, size in enumerate(sizes) if size != sizes[0]), None)
        if odd is None:
            return
        (h, w), (h2, w2) = sizes[0], sizes[odd]
        what = (f"Loader: batch {b} of epoch {e} mixes image sizes {h}x{w} (item {indices[0]}) "
                f"and {h2}x{w2} (item {indices[odd]}) (HxW)")
        if self.group_by_size:  # only a dataset whose image_size() is wrong gets here
            raise ValueError(f"{what}, though the dataset's image_size() gave them one size")
        raise ValueError(f"{what}; a batch of {self.batch_size} without a crop needs one size: "
                         "pass crop=(h, w) or batch_size=1 (python -m minifcn.train: --crop "
                         "or --batch-size 1), or group_by_size=True")

    def _item(self, index, flip, offset):
        """(x, label) of item ``index`` flipped and cropped, or (x, label, inst)."""
        if self.instances:
            image, label, inst = self.dataset.item(int(index), instances=True)
        else:
            image, label = self.dataset[int(index)]
        x = to_input(image)
        label = np.asarray(label)
        # a classification set's label is one (1, 1) class per image: flips and crops move
        # the pixels only (data/shapes_cls.py)
        whole = getattr(self.dataset, "classification", False)
        if label.shape != ((1, 1) if whole else image.shape[:2]):
            raise ValueError(f"Loader: item {index} has a {label.shape} label for a "
                             f"{image.shape[:2]} image")
        label = label.astype(np.int64, copy=False)
        if self.instances:
            inst = np.asarray(inst)
            if inst.shape != label.shape:
                raise ValueError(f"Loader: item {index} has a {inst.shape} instance map for a "
                                 f"{label.shape} label")
            label = np.stack([label, inst.astype(np.int64, copy=False)])  # moved as one
        if flip:
            x, flipped = hflip(x, label)
            label = label if whole else flipped
        if self.crop is not None:
            x, cropped = crop_or_pad(x, label, self.crop, offset)
            label = label if whole else cropped
        return (x, label[0], label[1]) if self.instances else (x, label)
