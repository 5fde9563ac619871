"""What every minifcn dataset is: a sequence of (image, label) pairs.

``ds[i]`` returns ``image`` (H, W, 3) uint8 RGB and ``label`` (H, W) int64 class indices, with
255 meaning "ignore this pixel" (VOC marks object boundaries that way). Every dataset also has
``n_class`` (background included), ``class_names`` (``n_class`` strings), ``ignore_index`` (255)
and a short ``name``. The trainer, the evaluator and the Loader rely on exactly this, nothing more.
"""
import operator

import numpy as np

from ..loss import IGNORE_INDEX


class SegmentationDataset:
    """Base class: subclasses set ``n_class``, ``class_names``, ``name``, and define
    ``__len__`` and ``_get(i)`` (i already checked to lie in 0..len-1)."""

    ignore_index = IGNORE_INDEX
    name = "dataset"
    n_class = 0
    class_names = ()

    def __len__(self):
        raise NotImplementedError

    def _get(self, i):
        raise NotImplementedError

    def __getitem__(self, i):
        """(image (H, W, 3) uint8, label (H, W) int64) of item ``i``; negative i counts from
        the end, as for a list."""
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
        return self._get(i)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, n_class={self.n_class})"


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
