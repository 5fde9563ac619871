"""``Shapes``: a procedural segmentation set that needs no download.

Each image shows 1..``max_shapes`` objects (disc, rectangle, triangle, thin cross) of varied size,
position and rotation, possibly overlapping (a later object covers an earlier one), on a
textured background. Every layer gets a random colour from one distribution and a random texture,
so the class is told by shape alone. The cross's arms are only ``size/12 .. size/8`` wide:
a net with output stride 32 (FCN-32s) cannot draw them, one with stride 8 (FCN-8s) can.

Image ``i`` is drawn from its own random generator seeded by (seed, split, i), so any item can be
made in any order (random access, for resuming a run) and nothing is cached. Making one 96x96
image takes under a millisecond on one core (about 1300 images/s measured), far less than a
training step.
The difficulty knobs are the module constants below, also keyword arguments of ``Shapes``.
"""
import numpy as np

from .base import SyntheticDataset
from .synth import distinct_colors, finish, layer, pixel_grid, window

SHAPE_CLASSES = ("background", "disc", "rectangle", "triangle", "cross")
SPLIT_STREAMS = {"train": 0, "val": 1}  # val draws from a different seed stream than train
DEFAULT_N = {"train": 10000, "val": 200}

MAX_SHAPES = 4  # objects per image: 1..MAX_SHAPES
SHAPE_SCALE = (0.14, 0.28)  # an object's half-extent, as a fraction of the image size
ARM_WIDTH = (1 / 12, 1 / 8)  # full width of the cross's arms, fraction of the image size
TEXTURE_AMPLITUDE = 28.0  # strength of each layer's texture, 0..255 units
NOISE_STD = 8.0  # standard deviation of the pixel noise over the whole image, 0..255 units
MIN_COLOR_DISTANCE = 90.0  # an object's colour vs the earlier layers', RGB distance


def _rotated(dy, dx, theta):
    """Coordinates (u, v) along and across direction ``theta``."""
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    return dx * c + dy * s, dy * c - dx * s


def disc_mask(rng, dy, dx, r, size, arm_width):
    return dx * dx + dy * dy <= np.float32(r * r)


def rectangle_mask(rng, dy, dx, r, size, arm_width):
    # the short side stays >= 1.2 r (>= 0.17 size at the default scale), wider than any cross
    # arm, so a rectangle never looks like one arm of a cross
    u, v = _rotated(dy, dx, rng.uniform(0, np.pi))
    return (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.6, 1.0))


def triangle_mask(rng, dy, dx, r, size, arm_width):
    # vertices on a circle of radius 1.25 r (a triangle covers less than its circle), at roughly
    # equal angles; inside = on the same side of all three edges
    ang = rng.uniform(0, 2 * np.pi) + np.arange(3) * (2 * np.pi / 3) + rng.uniform(-0.25, 0.25, 3)
    py, px = 1.25 * r * np.sin(ang), 1.25 * r * np.cos(ang)
    sides = []
    for a in range(3):
        b = (a + 1) % 3
        ey, ex = np.float32(py[b] - py[a]), np.float32(px[b] - px[a])
        sides.append(ex * (dy - np.float32(py[a])) - ey * (dx - np.float32(px[a])) >= 0)
    return (sides[0] & sides[1] & sides[2]) | ~(sides[0] | sides[1] | sides[2])  # either winding


def cross_mask(rng, dy, dx, r, size, arm_width):
    u, v = _rotated(dy, dx, rng.uniform(0, np.pi / 2))
    half_len = np.float32(1.15 * r)
    half_w = np.float32(rng.uniform(*arm_width) * size / 2)
    au, av = np.abs(u), np.abs(v)
    return ((au <= half_len) & (av <= half_w)) | ((av <= half_len) & (au <= half_w))


MASKS = (None, disc_mask, rectangle_mask, triangle_mask, cross_mask)  # indexed by class


class Shapes(SyntheticDataset):
    """Procedural shapes: ``ds[i]`` -> (image (size, size, 3) uint8, label (size, size) int64).

    Classes: 0 background, 1 disc, 2 rectangle, 3 triangle, 4 cross (thin arms).
    ``n`` defaults to 10000 for "train" and 200 for "val"; the two splits use different seed
    streams, so they share no image. Deterministic: the same (seed, split, i) gives the same
    arrays on every machine and in any order of access.
    """

    streams, default_n = SPLIT_STREAMS, DEFAULT_N
    name = "shapes"
    class_names = list(SHAPE_CLASSES)
    n_class = len(SHAPE_CLASSES)
    has_instances = True

    def __init__(self, split="train", n=None, size=96, seed=0, *, max_shapes=MAX_SHAPES,
                 shape_scale=SHAPE_SCALE, arm_width=ARM_WIDTH,
                 texture_amplitude=TEXTURE_AMPLITUDE, noise_std=NOISE_STD,
                 min_color_distance=MIN_COLOR_DISTANCE):
        super().__init__(split, n, size, seed)
        if not isinstance(max_shapes, (int, np.integer)) or max_shapes < 1:
            raise ValueError(f"Shapes: max_shapes must be an integer >= 1, got {max_shapes!r}")
        self.max_shapes = int(max_shapes)
        self.shape_scale, self.arm_width = tuple(shape_scale), tuple(arm_width)
        self.texture_amplitude, self.noise_std = float(texture_amplitude), float(noise_std)
        self.min_color_distance = float(min_color_distance)

    def _get(self, i):
        return self._scene(i)[:2]

    def _get_instances(self, i):
        return self._scene(i, instances=True)

    def _scene(self, i, instances=False):
        """(image, label) of item ``i``, and its instance map when ``instances``: object j of
        the drawing order paints id j where it shows, then ids are renumbered 1..K."""
        size = self.size
        rng = self._rng(i)
        yy, xx = pixel_grid(size)
        k = int(rng.integers(1, self.max_shapes + 1))
        colors = distinct_colors(rng, k + 1, self.min_color_distance)
        canvas = layer(rng, size, colors[0], self.texture_amplitude)
        label = np.zeros((size, size), np.int64)
        inst = np.zeros((size, size), np.int64) if instances else None
        centres = []
        for j in range(1, k + 1):
            cls = int(rng.integers(1, len(SHAPE_CLASSES)))
            r = rng.uniform(*self.shape_scale) * size
            cy, cx = _place(rng, size, r, centres)
            rows, cols = window(size, cy, cx, 1.5 * r)  # every mask fits in 1.5 r
            mask = MASKS[cls](rng, yy[rows, cols] - np.float32(cy), xx[rows, cols] - np.float32(cx),
                              r, size, self.arm_width)
            _paint(rng, self, canvas, label, inst, rows, cols, mask, cls, j, colors[j])
        image = finish(canvas, rng, self.noise_std)
        return (image, label) if inst is None else (image, label, renumber(inst, label))


def _paint(rng, ds, canvas, label, inst, rows, cols, mask, cls, j, color):
    """Paste object ``j`` of class ``cls`` where ``mask`` (over the window rows, cols) is true:
    a textured layer on the canvas, its class on the label, ``j`` on the instance map (if any)."""
    paint = layer(rng, ds.size, color, ds.texture_amplitude, rows, cols)
    np.copyto(canvas[:, rows, cols], paint, where=mask)
    np.copyto(label[rows, cols], cls, where=mask)
    if inst is not None:
        np.copyto(inst[rows, cols], j, where=mask)


def renumber(inst, label, ignore_index=255):
    """The ids of ``inst`` (0 = background) mapped in order to 1..K, so that an object that a
    later one hid entirely leaves no gap; 255 where ``label`` is ``ignore_index``."""
    present = np.unique(inst)
    present = present[present > 0]
    lut = np.zeros(int(inst.max()) + 1, np.int64)
    lut[present] = np.arange(1, len(present) + 1)
    out = lut[inst]
    out[label == ignore_index] = ignore_index
    return out


def _place(rng, size, r, centres, tries=10):
    """A centre (cy, cx) inside the middle 76% of the image, tried so that objects overlap at
    most partly (centres at least half their summed radii apart); the last try is kept."""
    for _ in range(tries):
        cy, cx = rng.uniform(0.12 * size, 0.88 * size, 2)
        if all((cy - y) ** 2 + (cx - x) ** 2 >= (0.5 * (r + q)) ** 2 for y, x, q in centres):
            break
    centres.append((cy, cx, r))
    return cy, cx
