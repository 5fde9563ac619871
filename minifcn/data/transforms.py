"""From a dataset's (image, label) to what the net eats, and back for plots.

Decision fixed for the project: inputs stay RGB (the reference Caffe nets take BGR; we keep RGB
and reorder the means instead), pixels stay in 0..255 (no division by 255), minus the reference's
per-channel means, channels first. ``from_input`` undoes it.
"""
import numpy as np

from ..backend import as_numpy
from .base import IGNORE_INDEX

# the reference's BGR means (104.00699, 116.66877, 122.67892), reversed into RGB order
MEAN_RGB = (122.67892, 116.66877, 104.00699)
_MEAN = np.array(MEAN_RGB, np.float32)[:, None, None]  # (3, 1, 1), broadcasts over (3, H, W)


def to_input(image):
    """(H, W, 3) uint8 RGB image -> (3, H, W) float32, pixels 0..255 minus MEAN_RGB."""
    image = as_numpy(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"to_input: expected an (H, W, 3) uint8 RGB image, got shape "
                         f"{image.shape} dtype {image.dtype}")
    return image.transpose(2, 0, 1).astype(np.float32) - _MEAN


def from_input(x):
    """(3, H, W) float input (as made by ``to_input``) -> (H, W, 3) uint8 RGB, rounded and
    clipped to 0..255. Accepts NumPy or CuPy arrays."""
    x = as_numpy(x)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"from_input: expected a (3, H, W) array, got shape {x.shape}")
    image = np.clip(np.rint(x.astype(np.float32) + _MEAN), 0, 255)
    return np.ascontiguousarray(image.astype(np.uint8).transpose(1, 2, 0))


def hflip(x, label):
    """Mirror a (C, H, W) input and its (H, W) label (or (K, H, W) maps: the Loader stacks
    label and instance map) left-right together (copies)."""
    return np.ascontiguousarray(x[:, :, ::-1]), np.ascontiguousarray(label[..., ::-1])


def crop_or_pad(x, label, size, offset_fraction):
    """A (C, h, w) window of the (C, H, W) input and the (h, w) window of its (H, W) label
    (or of each of (K, H, W) maps, as ``hflip``).

    ``size`` = (h, w). Where the image is smaller than the window it is first padded at the
    bottom and right, the input with 0 (the mean colour, after mean subtraction) and the label
    with 255 (ignored by the loss and the metrics). ``offset_fraction`` = (fy, fx) in [0, 1)
    picks the window's top-left corner among the possible positions, so that the caller
    decides the randomness (the Loader draws it from (seed, epoch)).
    """
    h, w = size
    _, H, W = x.shape
    if H < h or W < w:
        ph, pw = max(0, h - H), max(0, w - W)
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), constant_values=0)
        label = np.pad(label, ((0, 0),) * (label.ndim - 2) + ((0, ph), (0, pw)),
                       constant_values=IGNORE_INDEX)
        H, W = H + ph, W + pw
    top = int(offset_fraction[0] * (H - h + 1))
    left = int(offset_fraction[1] * (W - w + 1))
    return (np.ascontiguousarray(x[:, top:top + h, left:left + w]),
            np.ascontiguousarray(label[..., top:top + h, left:left + w]))
