"""What every minifcn dataset is: a sequence of (image, label) pairs.

``ds[i]`` returns ``image`` (H, W, 3) uint8 RGB and ``label`` (H, W) int64 class indices, with
255 meaning "ignore this pixel" (VOC marks object boundaries that way). Every dataset also has
``n_class`` (background included), ``class_names`` (``n_class`` strings), ``ignore_index`` (255)
and a short ``name``. The trainer, the evaluator and the Loader rely on exactly this, nothing more.

Two optional parts, which the base class provides: ``image_size(i) -> (H, W)``, the size of item
``i`` without decoding it where the dataset can tell cheaply (a file header, a fixed size), so
that ``Loader(group_by_size=True)`` can batch images by size; and ``notice``, None or a one-line
message about a guess the dataset made that the user should know of (e.g. an inferred number of
classes), which the training command prints.

Instances, for the datasets that have them (``has_instances`` True): ``ds.item(i,
instances=True)`` returns (image, label, instance), instance (H, W) int64 with 0 on background,
one id 1..K per object (each object of one class) and 255 where the label is 255; ``ds[i]``
keeps returning the pair.
"""
import operator

import numpy as np

from ..loss import IGNORE_INDEX


class SegmentationDataset:
    """Base class: subclasses set ``n_class``, ``class_names``, ``name``, and define
    ``__len__`` and ``_get(i)`` (i already checked to lie in 0..len-1); those that know an
    item's size without loading it also define ``_image_size(i)``."""

    ignore_index = IGNORE_INDEX
    name = "dataset"
    n_class = 0
    class_names = ()
    notice = None  # or a one-line message for the user: a guess made while reading the data
    has_instances = False  # True where item(i, instances=True) gives an instance map

    def __len__(self):
        raise NotImplementedError

    def _get(self, i):
        raise NotImplementedError

    def _get_instances(self, i):  # (image, label, instance); only where has_instances
        raise NotImplementedError

    def _image_size(self, i):
        return tuple(self._get(i)[0].shape[:2])  # the slow way: load the item

    def check_labels(self):
        """Read every label once and check it (values in 0..n_class-1 or 255, the size of its
        image): a ValueError naming the file, before a run relies on it. Sets made in memory
        are right by construction: nothing to do; the file-backed ones override this."""

    def __getitem__(self, i):
        """(image (H, W, 3) uint8, label (H, W) int64) of item ``i``; negative i counts from
        the end, as for a list."""
        return self._get(self._index(i))

    def item(self, i, instances=False):
        """``ds[i]``; with ``instances=True``, (image, label, instance) (see the module
        docstring), a ValueError for a dataset without instance maps."""
        i = self._index(i)
        if not instances:
            return self._get(i)
        if not self.has_instances:
            raise ValueError(f"{type(self).__name__} ({self.name}): this dataset has no instance "
                             "maps (has_instances is False)")
        return self._get_instances(i)

    def instance(self, i):
        """The (H, W) int64 instance map of item ``i`` (``item(i, instances=True)[2]``)."""
        return self.item(i, instances=True)[2]

    def image_size(self, i):
        """(H, W) of item ``i``'s image, read cheaply where the dataset can (see the module
        docstring); ``ds.image_size(i) == ds[i][0].shape[:2]``."""
        return self._image_size(self._index(i))

    def _index(self, i):
        """``i`` as an index in 0..len-1 (negative counts from the end); TypeError/IndexError
        otherwise."""
        try:
            i = operator.index(i)
        except TypeError:
            raise TypeError(
                f"{type(self).__name__} index must be an integer, got {type(i).__name__}"
            ) from None
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{type(self).__name__} index {i} out of range for {n} items")
        return i

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, n_class={self.n_class})"


class SyntheticDataset(SegmentationDataset):
    """What the generated sets (Shapes, Digits, ShapesClassification) share: ``n`` square
    images of side ``size`` per split, item ``i`` drawn from its own generator seeded by (seed,
    the split's stream, i), so that any item can be made in any order and nothing is cached.
    Subclasses set ``streams`` ({split: stream}) and ``default_n`` ({split: count})."""

    streams, default_n = {}, {}

    def __init__(self, split, n, size, seed):
        where = type(self).__name__
        self.split = check_split(split, tuple(self.streams), where)
        self.n = default_count(n, split, self.default_n, where)
        self.size, self.seed = check_size_seed(size, seed, where)

    def __len__(self):
        return self.n

    def _image_size(self, i):
        return self.size, self.size

    def _rng(self, i):
        return np.random.default_rng([self.seed, self.streams[self.split], i])


def check_split(split, allowed, where):
    """Raise ValueError unless ``split`` is one of ``allowed`` (a tuple of names)."""
    if split not in allowed:
        raise ValueError(f"{where}: unknown split {split!r}; expected one of {', '.join(allowed)}")
    return split


def check_size_seed(size, seed, where):
    """The synthetic sets' shared checks: an image side >= 16 and a seed >= 0."""
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"{where}: size must be an integer >= 16, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    return int(size), int(seed)


def default_count(n, split, defaults, where):
    """``n`` checked to be a positive int, or the split's default when ``n`` is None."""
    if n is None:
        return defaults[split]
    try:
        value = None if isinstance(n, bool) else operator.index(n)  # NumPy ints are fine
    except TypeError:
        value = None
    if value is None or value < 1:
        raise ValueError(f"{where}: n must be a positive integer or None, got {n!r}")
    return value
