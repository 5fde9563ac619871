"""``Textures``: regions told apart by their texture alone, a stand-in for a user's real data.

Each image shows 1..``max_regions`` irregular regions on a background. A region's class is its
pattern: fine stripes, a checkerboard, a grid of dots, or speckle; its two colours, scale,
orientation and outline are random, and the background is smooth blotches or flat colour. So
the class is not told by shape (the outlines are random blobs) nor by colour (every layer draws
its colours from one distribution), which makes it a set unlike ``Shapes``: the net has to
read texture, as it must in most real photographs.

It is meant to be written to disk in VOC2012's layout (``write_voc``, or ``python -m
minifcn.data textures ROOT``) and read back through ``--data voc:ROOT``: the real-data path,
JPEG compression included, on a set that anyone can make in seconds. Image ``i`` comes from its
own generator seeded by (seed, split, i), as in ``Shapes``.
"""
import numpy as np

from .base import SyntheticDataset
from .synth import bilinear_matrix, distinct_colors, finish, pixel_grid, window

TEXTURE_CLASSES = ("background", "stripes", "checks", "dots", "speckle")
SPLIT_STREAMS = {"train": 20, "val": 21}  # streams of their own: no image shared with Shapes
DEFAULT_N = {"train": 200, "val": 40}

MAX_REGIONS = 3
REGION_SCALE = (0.18, 0.32)  # a region's mean radius, fraction of the image size
PERIOD = (0.07, 0.12)  # a pattern's period, fraction of the image size
CONTRAST = (90.0, 150.0)  # RGB distance between a region's two colours
NOISE_STD, BACKGROUND_AMPLITUDE, MIN_COLOR_DISTANCE = 6.0, 40.0, 60.0


def pattern(rng, cls, yy, xx, size):
    """A 0..1 float32 pattern of texture class ``cls`` (1..4) on the pixel coordinates
    (yy, xx): where it is 1 the region shows its second colour."""
    period = rng.uniform(*PERIOD) * size
    theta = rng.uniform(0, np.pi)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = (xx * c + yy * s) * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 6.3))
    v = (yy * c - xx * s) * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 6.3))
    if cls == 1:  # stripes: a soft sine, one direction
        return np.float32(0.5) + np.float32(0.5) * np.sin(u)
    if cls == 2:  # checks: the signs of two crossed sines
        return ((np.sin(u) * np.sin(v)) > 0).astype(np.float32)
    if cls == 3:  # dots: round spots where both sines are high, on a grid
        return ((np.cos(u) + np.cos(v)) > 1.2).astype(np.float32)
    # speckle: isolated random pixels, no period (tells texture from pattern)
    return (rng.random(yy.shape, dtype=np.float32) < 0.4).astype(np.float32)


def blob(rng, dy, dx, r):
    """An irregular region of mean radius ``r``: a disc whose radius is modulated by a few
    random low harmonics of the angle, so outlines carry no class information."""
    angle = np.arctan2(dy, dx)
    radius = np.full(angle.shape, r, np.float32)
    for k in (2, 3, 5):
        radius += np.float32(r * rng.uniform(0, 0.5 / k)) * np.cos(k * angle +
                                                                        rng.uniform(0, 6.3))
    return dx * dx + dy * dy <= radius * radius


class Textures(SyntheticDataset):
    """Textured regions: ``ds[i]`` -> (image (size, size, 3) uint8, label (size, size) int64).

    Classes: 0 background, 1 stripes, 2 checks, 3 dots, 4 speckle. ``n`` defaults to 200 for
    "train" and 40 for "val" (the size of a user's small labelled set); size defaults to 128.
    """

    streams, default_n = SPLIT_STREAMS, DEFAULT_N
    name = "textures"
    class_names = list(TEXTURE_CLASSES)
    n_class = len(TEXTURE_CLASSES)

    def __init__(self, split="train", n=None, size=128, seed=0, *, max_regions=MAX_REGIONS):
        super().__init__(split, n, size, seed)
        self.max_regions = int(max_regions)

    def _get(self, i):
        size, rng = self.size, self._rng(i)
        yy, xx = pixel_grid(size)
        k = int(rng.integers(1, self.max_regions + 1))
        colors = distinct_colors(rng, k + 1, MIN_COLOR_DISTANCE)
        # the background: its colour plus smooth blotches, never one of the classes' patterns
        cells = int(rng.integers(2, 6))
        m = bilinear_matrix(size, cells)
        blotches = m @ rng.uniform(-1, 1, (cells, cells)).astype(np.float32) @ m.T
        canvas = colors[0][:, None, None] + blotches[None] * (
            _direction(rng) * np.float32(BACKGROUND_AMPLITUDE))[:, None, None]
        label = np.zeros((size, size), np.int64)
        for j in range(1, k + 1):
            cls = int(rng.integers(1, len(TEXTURE_CLASSES)))
            r = rng.uniform(*REGION_SCALE) * size
            cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
            rows, cols = window(size, cy, cx, 1.6 * r)  # a blob reaches 1.52 r at most
            mask = blob(rng, yy[rows, cols] - np.float32(cy), xx[rows, cols] - np.float32(cx), r)
            p = pattern(rng, cls, yy[rows, cols], xx[rows, cols], size)
            second = colors[j] + _direction(rng) * np.float32(rng.uniform(*CONTRAST))
            paint = colors[j][:, None, None] + (second - colors[j])[:, None, None] * p[None]
            np.copyto(canvas[:, rows, cols], paint, where=mask)
            np.copyto(label[rows, cols], cls, where=mask)
        return finish(canvas, rng, NOISE_STD), label


def _direction(rng):
    d = rng.normal(size=3).astype(np.float32)
    return d / max(float(np.linalg.norm(d)), 1e-6)
