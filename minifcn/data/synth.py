"""Painting helpers shared by the synthetic datasets (``Shapes``, ``Digits``).

A synthetic image is built from layers: a textured background, then one textured layer per
object, pasted where the object's mask is true, then pixel noise. Colours of every layer
(background included) come from the same distribution, so a net cannot tell a class by its
colour and has to look at shape. All of it is vectorised NumPy on (size, size) coordinate grids.
"""
import functools

import numpy as np

TEXTURES = ("flat", "smooth", "stripes", "checker")


@functools.lru_cache(maxsize=8)
def pixel_grid(size):
    """(yy, xx): two read-only (size, size) float32 arrays of pixel-centre coordinates."""
    c = np.arange(size, dtype=np.float32) + np.float32(0.5)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


@functools.lru_cache(maxsize=128)
def bilinear_matrix(n_out, n_in):
    """(n_out, n_in) float32 matrix M: ``M @ v`` resamples a length-n_in signal to n_out samples
    by linear interpolation (pixel centres aligned, edges clamped), so
    ``bilinear_matrix(H, h) @ img @ bilinear_matrix(W, w).T`` is a bilinear resize of an (h, w)
    image to (H, W): two small matrix products instead of a per-pixel loop."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1 - frac)  # add.at: lo == hi at the clamped edge
    np.add.at(m, (rows, hi), frac)
    m.flags.writeable = False
    return m


def window(size, cy, cx, radius):
    """(rows, cols) slices of a (size, size) image covering the square of half-side ``radius``
    around (cy, cx), clipped to the image. Objects are drawn only inside their window: most of
    the image is far from any object, so this saves most of the arithmetic."""
    y0, y1 = int(max(0, np.floor(cy - radius))), int(min(size, np.ceil(cy + radius) + 1))
    x0, x1 = int(max(0, np.floor(cx - radius))), int(min(size, np.ceil(cx + radius) + 1))
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def texture(rng, size, rows=slice(None), cols=slice(None)):
    """A float32 pattern with values in about [-1, 1] over the window (rows, cols) of a
    (size, size) image, or None for "flat".

    One of: flat, smooth blotches (a coarse random grid resized bilinearly), stripes or a
    checkerboard, each at a random scale and orientation (scales are fractions of ``size``).
    """
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    if kind == "flat":
        return None
    if kind == "smooth":
        cells = int(rng.integers(3, 9))
        m = bilinear_matrix(size, cells)
        return m[rows] @ rng.uniform(-1, 1, (cells, cells)).astype(np.float32) @ m[cols].T
    yy, xx = pixel_grid(size)
    yy, xx = yy[rows, cols], xx[rows, cols]
    theta = rng.uniform(0, np.pi)
    freq = np.float32(2 * np.pi / (rng.uniform(0.06, 0.2) * size))  # period 6%..20% of size
    c, s = np.float32(np.cos(theta) * freq), np.float32(np.sin(theta) * freq)
    phase = np.float32(rng.uniform(0, 2 * np.pi))
    if kind == "stripes":
        return np.sin(xx * c + yy * s + phase)
    u = np.floor((xx * c + yy * s + phase) / np.float32(np.pi))
    v = np.floor((yy * c - xx * s + phase) / np.float32(np.pi))
    return ((u + v) % 2) * 2 - 1


def layer(rng, size, color, amplitude, rows=slice(None), cols=slice(None)):
    """(3, h, w) float32 over the window (rows, cols) of a (size, size) image: ``color`` (3,)
    plus a random texture of strength ``amplitude`` (0..255 units) along a random RGB direction.

    Channels first while painting: NumPy's inner loops then run along whole rows of pixels, not
    along 3 channels, which is several times faster.
    """
    tex = texture(rng, size, rows, cols)
    color = np.asarray(color, np.float32)[:, None, None]
    if tex is None:
        h, w = len(range(size)[rows]), len(range(size)[cols])
        return np.broadcast_to(color, (3, h, w)).copy()
    direction = rng.normal(size=3)
    direction *= amplitude / max(np.linalg.norm(direction), 1e-6)
    out = tex[None] * direction.astype(np.float32)[:, None, None]
    out += color
    return out


def distinct_colors(rng, k, min_distance, tries=8):
    """(k, 3) float32 colours uniform in the RGB cube; each is at least ``min_distance`` (0..255
    units, Euclidean) from the ones before it when one of ``tries * k`` candidates allows.

    The first colour is the background's, and all are drawn the same way, so no class owns a
    colour; the distance only keeps an object visible against what it is painted on.
    """
    cand = rng.uniform(0, 255, size=(k * tries, 3)).astype(np.float32)
    far = (np.sum((cand[:, None] - cand[None]) ** 2, axis=2) >= min_distance**2).tolist()
    chosen = [0]
    for j in range(1, len(cand)):  # greedy, in plain Python over a small boolean table
        if len(chosen) == k:
            break
        if all(far[j][c] for c in chosen):
            chosen.append(j)
    rest = [j for j in range(len(cand)) if j not in chosen]
    chosen += rest[: k - len(chosen)]  # rare: no candidate far enough, take any
    return cand[chosen]


def finish(canvas, rng, noise_std):
    """Add grey pixel noise of standard deviation ``noise_std`` to a (3, H, W) float canvas,
    clip and round: (H, W, 3) uint8. The noise is uniform rather than Gaussian and the same in
    the three channels: several times cheaper to draw, and no easier for a net."""
    _, h, w = canvas.shape
    if noise_std > 0:
        noise = rng.random((h, w), dtype=np.float32)
        noise -= np.float32(0.5)
        noise *= np.float32(noise_std * np.sqrt(12.0))  # uniform on [-a/2, a/2] has std a/sqrt(12)
        canvas += noise
    canvas += np.float32(0.5)  # so that the cast below rounds
    np.clip(canvas, 0, 255, out=canvas)
    image = np.empty((h, w, 3), np.uint8)
    for c in range(3):  # channel by channel: much faster than a transposing copy
        image[:, :, c] = canvas[c]
    return image
