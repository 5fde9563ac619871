"""``ShapesTouching`` ("shapes-touching"): ``Shapes`` scenes whose objects of one class touch.

A net that labels classes turns two touching discs into one disc-shaped region, and connected
components of its output cannot split them again: that is what instance methods are for, and
this split is where they are tested. Each scene holds 1..``max_groups`` groups; a group is 2 or
3 objects of one class, each placed against the one drawn just before it so that their masks
overlap or share an edge (4-neighbours), while the earlier one stays at least half visible.

How a member is placed: its shape (rotation, proportions) is drawn once, then up to ``TRIES``
centres at a random direction and a distance of 0.4..1.1 times the two objects' summed
half-extents from the previous member's centre, inside the middle 84% of the image; the first
that touches and leaves half of the previous member showing is kept; failing that, the touching
try that hides least of it; failing that (rare), a centre on the previous member's edge, which
overlaps it by construction. The first member of a group is placed as ``Shapes`` places objects
(away from the earlier centres), so groups may cover each other's parts, as in ``Shapes``.
Same classes, colours, textures and noise as ``Shapes``; its own seed streams.
"""
import numpy as np

from .shapes import MASKS, SHAPE_CLASSES, Shapes, _paint, _place, renumber
from .synth import distinct_colors, finish, layer, pixel_grid, window

TOUCH_SCALE = (0.10, 0.18)  # smaller than Shapes' objects: up to six share an image
MAX_GROUPS = 2
GROUP_SIZE = (2, 3)  # objects per group: 2 or 3
TRIES = 20
MIN_VISIBLE = 0.5  # the share of the previous member a new one may leave showing, at least


def dilate4(mask):
    """``mask`` grown by one pixel to its 4-neighbours."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


class ShapesTouching(Shapes):
    """Shapes in groups of touching or overlapping objects of one class (module docstring):
    ``ds[i]`` -> (image, label), ``ds.item(i, instances=True)`` -> (image, label, instance).
    Classes as ``Shapes``; ``n`` defaults to 10000 for "train" and 200 for "val"."""

    streams = {"train": 2, "val": 3}  # not Shapes' streams: no scene shares its draws
    name = "shapes-touching"

    def __init__(self, split="train", n=None, size=96, seed=0, *, max_groups=MAX_GROUPS,
                 shape_scale=TOUCH_SCALE, **kw):
        if not isinstance(max_groups, (int, np.integer)) or max_groups < 1:
            raise ValueError(f"ShapesTouching: max_groups must be an integer >= 1, got "
                             f"{max_groups!r}")
        super().__init__(split, n, size, seed, max_shapes=max_groups * GROUP_SIZE[1],
                         shape_scale=shape_scale, **kw)
        self.max_groups = int(max_groups)

    def _scene(self, i, instances=False):
        size = self.size
        rng = self._rng(i)
        counts = rng.integers(GROUP_SIZE[0], GROUP_SIZE[1] + 1, int(rng.integers(1, self.max_groups + 1)))
        colors = distinct_colors(rng, int(counts.sum()) + 1, self.min_color_distance)
        canvas = layer(rng, size, colors[0], self.texture_amplitude)
        label = np.zeros((size, size), np.int64)
        inst = np.zeros((size, size), np.int64) if instances else None
        centres, j = [], 0
        for count in counts:
            cls = int(rng.integers(1, len(SHAPE_CLASSES)))
            prev = None  # (cy, cx, r, full mask) of the group's member drawn last
            for _ in range(count):
                j += 1
                r = rng.uniform(*self.shape_scale) * size
                shape_seed = int(rng.integers(2**62))  # the same shape at every tried centre
                if prev is None:
                    cy, cx = _place(rng, size, r, centres)
                    rows, cols, mask, full = self._mask(shape_seed, cls, cy, cx, r)
                else:
                    cy, cx, rows, cols, mask, full = self._against(rng, shape_seed, cls, r, prev)
                    centres.append((cy, cx, r))
                _paint(rng, self, canvas, label, inst, rows, cols, mask, cls, j, colors[j])
                prev = (cy, cx, r, full)
        image = finish(canvas, rng, self.noise_std)
        return (image, label) if inst is None else (image, label, renumber(inst, label))

    def _mask(self, shape_seed, cls, cy, cx, r):
        """(rows, cols, mask over that window, mask over the whole image) of a shape at (cy, cx)."""
        yy, xx = pixel_grid(self.size)
        rows, cols = window(self.size, cy, cx, 1.5 * r)
        mask = MASKS[cls](np.random.default_rng(shape_seed), yy[rows, cols] - np.float32(cy),
                          xx[rows, cols] - np.float32(cx), r, self.size, self.arm_width)
        full = np.zeros((self.size, self.size), bool)
        full[rows, cols] = mask
        return rows, cols, mask, full

    def _against(self, rng, shape_seed, cls, r, prev):
        """(cy, cx, rows, cols, mask, full) of a member touching ``prev`` (module docstring)."""
        py, px, pr, pmask = prev
        grown, area = dilate4(pmask), max(int(pmask.sum()), 1)
        lo, hi = 0.08 * self.size, 0.92 * self.size
        best, best_visible = None, -1.0
        for _ in range(TRIES):
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.1) * (pr + r)
            cy, cx = py + dist * np.sin(angle), px + dist * np.cos(angle)
            if not (lo <= cy <= hi and lo <= cx <= hi):
                continue
            placed = self._mask(shape_seed, cls, cy, cx, r)
            full = placed[3]
            if not (full & grown).any():
                continue
            visible = float((pmask & ~full).sum()) / area
            if visible >= MIN_VISIBLE:
                return (cy, cx) + placed
            if visible > best_visible:
                best, best_visible = (cy, cx) + placed, visible
        if best is not None:
            return best
        edge = np.argwhere(pmask & dilate4(~pmask))  # prev's pixels on its border
        cy, cx = edge[int(rng.integers(len(edge)))] + 0.5 if len(edge) else (py, px)
        return (cy, cx) + self._mask(shape_seed, cls, cy, cx, r)  # holds its centre: overlaps
