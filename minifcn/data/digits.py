"""``Digits``: scenes of real handwritten digits, shipped inside the package (no download).

The raw material is the UCI "optical recognition of handwritten digits" test set (1797 digits,
8x8 grids of ink counts 0..16, 13 writers; CC BY 4.0, see DIGITS-CREDIT.md next to the data
file). Each scene places a few digits on a textured canvas, each resized bilinearly to
``digit_size`` pixels; a pixel is the digit's ink (class digit + 1) where the resized value is over
``INK_THRESHOLD``, else background (class 0).

Train and val scenes are built from disjoint rows of the file (a fixed, class-stratified 80/20
split that does not depend on ``seed``), so val measures generalisation to unseen handwriting.
"""
import functools
import gzip
from pathlib import Path

import numpy as np

from .base import SyntheticDataset
from .synth import bilinear_matrix, distinct_colors, finish, layer

DATA_FILE = Path(__file__).parent / "digits.csv.gz"
DIGIT_CLASSES = ("background",) + tuple(str(d) for d in range(10))
SPLIT_STREAMS = {"train": 0, "val": 1}
DEFAULT_N = {"train": 10000, "val": 200}
SPLIT_SEED = 1998  # fixes which rows are val; deliberately not the dataset's seed
VAL_FRACTION = 0.2

DIGITS_PER_IMAGE = (2, 5)  # inclusive range of digits tried per scene
DIGIT_SIZE = (16, 40)  # inclusive range of a digit's height in pixels at size 96 (scaled with size)
INK_THRESHOLD = 8.0  # resized ink count (0..16) above which a pixel is labelled as the digit
TEXTURE_AMPLITUDE = 28.0
NOISE_STD = 8.0
MIN_COLOR_DISTANCE = 110.0


@functools.lru_cache(maxsize=1)
def load_digits():
    """(grids, digits): (1797, 8, 8) float32 ink counts 0..16 and (1797,) int64 classes 0..9,
    read once from the gzipped CSV next to this module."""
    if not DATA_FILE.is_file():
        raise FileNotFoundError(f"Digits: data file {DATA_FILE} is missing from the package")
    with gzip.open(DATA_FILE, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(f"Digits: {DATA_FILE} should have 65 columns, got shape {table.shape}")
    grids = table[:, :64].reshape(-1, 8, 8).astype(np.float32)
    grids.flags.writeable = False
    return grids, table[:, 64]


@functools.lru_cache(maxsize=2)
def split_rows(split):
    """Sorted row numbers of the file used by ``split``: per class, a fixed permutation's first
    20% go to val and the rest to train, so the two never share a handwritten digit."""
    _, digits = load_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    val = []
    for d in range(10):
        rows = rng.permutation(np.flatnonzero(digits == d))
        val.append(rows[: int(round(VAL_FRACTION * len(rows)))])
    val = np.sort(np.concatenate(val))
    rows = val if split == "val" else np.setdiff1d(np.arange(len(digits)), val)
    rows.flags.writeable = False
    return rows


class Digits(SyntheticDataset):
    """Handwritten-digit scenes: ``ds[i]`` -> (image (size, size, 3) uint8, label (size, size)
    int64). Classes: 0 background, d + 1 for digit d ("0".."9"), so n_class = 11.

    ``n`` defaults to 10000 for "train", 200 for "val". Scene i is drawn from its own generator
    seeded by (seed, split, i): random access and deterministic, as for ``Shapes``.
    """

    streams, default_n = SPLIT_STREAMS, DEFAULT_N
    name = "digits"
    class_names = list(DIGIT_CLASSES)
    n_class = len(DIGIT_CLASSES)

    def __init__(self, split="train", n=None, size=96, seed=0, *,
                 digits_per_image=DIGITS_PER_IMAGE, digit_size=DIGIT_SIZE,
                 texture_amplitude=TEXTURE_AMPLITUDE, noise_std=NOISE_STD,
                 min_color_distance=MIN_COLOR_DISTANCE):
        super().__init__(split, n, size, seed)
        lo, hi = digits_per_image
        if not 1 <= lo <= hi:
            raise ValueError(f"Digits: digits_per_image must be (lo, hi) with 1 <= lo <= hi, "
                             f"got {digits_per_image!r}")
        self.digits_per_image = (int(lo), int(hi))
        # digit heights scale with the canvas, and never exceed it
        self.digit_size = tuple(min(size, max(4, int(round(s * size / 96)))) for s in digit_size)
        self.texture_amplitude, self.noise_std = float(texture_amplitude), float(noise_std)
        self.min_color_distance = float(min_color_distance)
        self.rows = split_rows(self.split)

    def _get(self, i):
        size = self.size
        grids, digits = load_digits()
        rng = self._rng(i)
        k = int(rng.integers(self.digits_per_image[0], self.digits_per_image[1] + 1))
        colors = distinct_colors(rng, k + 1, self.min_color_distance)
        canvas = layer(rng, size, colors[0], self.texture_amplitude)
        label = np.zeros((size, size), np.int64)
        boxes = []
        for j in range(1, k + 1):
            h = int(rng.integers(self.digit_size[0], self.digit_size[1] + 1))
            w = min(size, int(round(h * rng.uniform(0.75, 1.1))))  # a little narrower or wider
            box = _place(rng, size, h, w, boxes)
            if box is None:  # no free room left for this digit: the scene keeps fewer
                continue
            row = self.rows[rng.integers(len(self.rows))]
            rows, cols = slice(box[0], box[0] + h), slice(box[1], box[1] + w)
            ink = bilinear_matrix(h, 8) @ grids[row] @ bilinear_matrix(w, 8).T
            # soft edges for the picture (half-covered at the threshold), hard ones for the label
            alpha = np.clip((ink - np.float32(INK_THRESHOLD - 2)) / 4, 0, 1)
            paint = layer(rng, size, colors[j], self.texture_amplitude, rows, cols)
            under = canvas[:, rows, cols]
            under += alpha * (paint - under)
            np.copyto(label[rows, cols], digits[row] + 1, where=ink > INK_THRESHOLD)
        return finish(canvas, rng, self.noise_std), label


def _place(rng, size, h, w, boxes, tries=20):
    """Top-left (y, x) of an h x w box inside the canvas overlapping no box in ``boxes``
    (appended to it), or None after ``tries`` failures."""
    for _ in range(tries):
        y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        if all(y + h <= by or by + bh <= y or x + w <= bx or bx + bw <= x
               for by, bx, bh, bw in boxes):
            boxes.append((y, x, h, w))
            return y, x
    return None
