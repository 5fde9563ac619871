"""``ShapesClassification`` ("shapes-cls"): the classification set the classifier is pretrained on.

It plays ImageNet's part to ``Shapes``'s VOC (paper section 4.1: every FCN starts from a
classifier trained on a broader task). Each image shows one dominant object of one of 16
categories, at a random size, position, rotation, colour and texture, on a textured background,
often with a smaller distractor of another category; the label is the dominant
object's category. The four ``Shapes`` classes are among the 16, as VOC's are among ImageNet's,
but most categories are not, and nothing here is a segmentation mask.

A classification label is stored as a (1, 1) label map: a classifier is a segmenter whose
output has one pixel, so the loss, the metrics (pixel accuracy is then top-1 accuracy), the
Loader and the whole run machinery of ``python -m minifcn.train`` apply unchanged.

Image ``i`` is drawn from its own generator seeded by (seed, split, i), as ``Shapes``.
"""
import numpy as np

from .base import SyntheticDataset
from .synth import distinct_colors, finish, layer, pixel_grid, window

SPLIT_STREAMS = {"train": 10, "val": 11}  # streams of their own: no image shared with Shapes
DEFAULT_N = {"train": 20000, "val": 500}
# the dominant object's half-extent, fraction of the image size. Large on purpose: with objects
# of 0.10-0.30 and two distractors, a linear read-out of the untrained net's fc7 scored 13 % on
# held-out images (chance 6 %), at 0.18-0.38 and one distractor 16 %, and the classifier's
# first hundreds of steps only learned to turn its features off
OBJECT_SCALE = (0.18, 0.38)
DISTRACTOR_SCALE = (0.3, 0.6)  # a distractor's half-extent, fraction of the dominant one's
MAX_DISTRACTORS = 1
TEXTURE_AMPLITUDE, NOISE_STD, MIN_COLOR_DISTANCE = 28.0, 8.0, 90.0  # as Shapes


def _polar(dy, dx, theta):
    """Radius and angle (relative to ``theta``) of every pixel around the centre."""
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dy, dx) - np.float32(theta)


def _rot(dy, dx, theta):
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    return dx * c + dy * s, dy * c - dx * s


def _polygon(dy, dx, r, sides, theta, aspect=1.0):
    """A regular polygon of circumradius r (stretched by ``aspect`` across), as the intersection
    of its edges' half-planes."""
    u, v = _rot(dy, dx, theta)
    v = v / np.float32(aspect)
    apothem = np.float32(r * np.cos(np.pi / sides))
    inside = np.ones(u.shape, bool)
    for k in range(sides):
        a = 2 * np.pi * (k + 0.5) / sides
        inside &= u * np.float32(np.cos(a)) + v * np.float32(np.sin(a)) <= apothem
    return inside


def _bar(u, v, half_len, half_w):
    return (np.abs(u) <= half_len) & (np.abs(v) <= half_w)


# each mask: (rng, dy, dx, r) -> bool array, r the object's half-extent in pixels
def disc(rng, dy, dx, r):
    return dx * dx + dy * dy <= np.float32(r * r)


def ring(rng, dy, dx, r):
    d2 = dx * dx + dy * dy
    return (d2 <= np.float32(r * r)) & (d2 >= np.float32((r * rng.uniform(0.45, 0.65)) ** 2))


def ellipse(rng, dy, dx, r):
    u, v = _rot(dy, dx, rng.uniform(0, np.pi))
    return (u / np.float32(r)) ** 2 + (v / np.float32(r * rng.uniform(0.35, 0.55))) ** 2 <= 1


def rectangle(rng, dy, dx, r):  # as Shapes's: the short side at least 0.6 of the long one
    u, v = _rot(dy, dx, rng.uniform(0, np.pi))
    return _bar(u, v, r, r * rng.uniform(0.6, 1.0))


def triangle(rng, dy, dx, r):
    return _polygon(dy, dx, 1.25 * r, 3, rng.uniform(0, 2 * np.pi))


def cross(rng, dy, dx, r):  # thin arms, as Shapes's
    u, v = _rot(dy, dx, rng.uniform(0, np.pi / 2))
    w = r * rng.uniform(0.2, 0.3)
    return _bar(u, v, 1.15 * r, w) | _bar(v, u, 1.15 * r, w)


def pentagon(rng, dy, dx, r):
    return _polygon(dy, dx, 1.1 * r, 5, rng.uniform(0, 2 * np.pi))


def hexagon(rng, dy, dx, r):
    return _polygon(dy, dx, 1.05 * r, 6, rng.uniform(0, 2 * np.pi))


def diamond(rng, dy, dx, r):
    return _polygon(dy, dx, 1.2 * r, 4, rng.uniform(0, np.pi), aspect=rng.uniform(0.45, 0.6))


def flower(rng, dy, dx, r):  # five petals: the radius swings with the angle
    rho, phi = _polar(dy, dx, rng.uniform(0, 2 * np.pi))
    return rho <= np.float32(r * 1.2) * (0.55 + 0.45 * np.cos(5 * phi))


def crescent(rng, dy, dx, r):
    a = rng.uniform(0, 2 * np.pi)
    oy, ox = np.float32(0.45 * r * np.sin(a)), np.float32(0.45 * r * np.cos(a))
    return disc(rng, dy, dx, r) & ~disc(rng, dy - oy, dx - ox, 0.85 * r)


def semicircle(rng, dy, dx, r):
    u, _ = _rot(dy, dx, rng.uniform(0, 2 * np.pi))
    return disc(rng, dy, dx, 1.2 * r) & (u >= np.float32(-0.1 * r))


def l_shape(rng, dy, dx, r):
    u, v = _rot(dy, dx, rng.uniform(0, 2 * np.pi))
    w = r * 0.3
    return _bar(u, v + np.float32(r - w), r, w) | _bar(v, u + np.float32(r - w), r, w)


def t_shape(rng, dy, dx, r):
    u, v = _rot(dy, dx, rng.uniform(0, 2 * np.pi))
    w = r * 0.3
    return _bar(u, v + np.float32(r - w), r, w) | _bar(v, u, r, w)


def x_bars(rng, dy, dx, r):  # two thick crossed bars at a sharp angle (not a right one)
    a = rng.uniform(0, np.pi)
    u1, v1 = _rot(dy, dx, a)
    u2, v2 = _rot(dy, dx, a + rng.uniform(0.5, 0.9))
    return _bar(u1, v1, 1.2 * r, 0.22 * r) | _bar(u2, v2, 1.2 * r, 0.22 * r)


def arrow(rng, dy, dx, r):
    u, v = _rot(dy, dx, rng.uniform(0, 2 * np.pi))
    head = (u >= np.float32(0.1 * r)) & (np.abs(v) <= np.float32(1.1 * r) - (u - np.float32(0.1 * r)))
    return _bar(u + np.float32(0.45 * r), v, 0.6 * r, 0.25 * r) | (head & (u <= np.float32(r)))


CATEGORIES = {  # name -> mask; the first four are the object classes of Shapes
    "disc": disc, "rectangle": rectangle, "triangle": triangle, "cross": cross,
    "ring": ring, "ellipse": ellipse, "pentagon": pentagon, "hexagon": hexagon,
    "diamond": diamond, "flower": flower, "crescent": crescent, "semicircle": semicircle,
    "l-shape": l_shape, "t-shape": t_shape, "x-bars": x_bars, "arrow": arrow,
}
MASKS = tuple(CATEGORIES.values())


class ShapesClassification(SyntheticDataset):
    """16 shape categories, one dominant object per image: ``ds[i]`` -> (image (size, size, 3)
    uint8, label (1, 1) int64, the category). ``n`` defaults to 20000 for "train" and 500 for
    "val" (different seed streams). ``size`` defaults to 224: VGG's input, whose pool5 is the
    7x7 map that fc6 reads. Deterministic for (seed, split, i)."""

    streams, default_n = SPLIT_STREAMS, DEFAULT_N
    name = "shapes-cls"
    classification = True  # the Loader: labels are one per image, not per pixel
    class_names = list(CATEGORIES)
    n_class = len(CATEGORIES)

    def __init__(self, split="train", n=None, size=224, seed=0, *, object_scale=OBJECT_SCALE,
                 max_distractors=MAX_DISTRACTORS):
        super().__init__(split, n, size, seed)
        self.object_scale, self.max_distractors = tuple(object_scale), int(max_distractors)

    def _get(self, i):
        size = self.size
        rng = self._rng(i)
        yy, xx = pixel_grid(size)
        cls = int(rng.integers(self.n_class))
        r = rng.uniform(*self.object_scale) * size
        others = [c for c in range(self.n_class) if c != cls]
        # distractors first, so that the dominant object is painted over them
        objects = [(int(rng.choice(others)), r * rng.uniform(*DISTRACTOR_SCALE))
                   for _ in range(int(rng.integers(self.max_distractors + 1)))] + [(cls, r)]
        colors = distinct_colors(rng, len(objects) + 1, MIN_COLOR_DISTANCE)
        canvas = layer(rng, size, colors[0], TEXTURE_AMPLITUDE)
        for k, (c, radius) in enumerate(objects, 1):
            lo, hi = 1.3 * radius, size - 1.3 * radius  # the object stays (mostly) inside
            cy, cx = rng.uniform(lo, max(lo, hi), 2)
            rows, cols = window(size, cy, cx, 1.5 * radius)
            mask = MASKS[c](rng, yy[rows, cols] - np.float32(cy), xx[rows, cols] - np.float32(cx),
                            radius)
            paint = layer(rng, size, colors[k], TEXTURE_AMPLITUDE, rows, cols)
            np.copyto(canvas[:, rows, cols], paint, where=mask)
        return finish(canvas, rng, NOISE_STD), np.full((1, 1), cls, np.int64)
