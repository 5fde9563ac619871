"""Reading one (image, label) pair from disk, with the checks every file-backed dataset needs.

Labels are index images: a palette ("P") PNG as VOC ships them, or greyscale ("L", or 16-bit
"I;16"/"I"). They are read WITHOUT conversion to RGB, because the palette indices are the class
numbers; converting would give colours. 255 marks pixels to ignore. A 16-bit label is read as it
is (its values are class numbers, never scaled), so a value past the classes is refused by name.

Images are RGB 8 bits a channel. A 16-bit greyscale image is scaled to 8 bits (its high byte:
65535 -> 255), as Pillow already reads 16-bit colour; 32-bit integer ("I", other than a PNG's
16 bits) and floating-point ("F") images are refused by name. Every file is refused, from its header alone
(before any pixel is decoded), if it declares more than ``max_image_pixels()`` pixels: the
environment variable MINIFCN_MAX_IMAGE_PIXELS, default 4096 x 4096 = 16,777,216.
"""
import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import IGNORE_INDEX

LABEL_MODES = ("P", "L", "I;16", "I")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
MAX_PIXELS_VARIABLE = "MINIFCN_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 4096 * 4096


def max_image_pixels():
    """The most pixels an image or label file may declare: MINIFCN_MAX_IMAGE_PIXELS, else
    DEFAULT_MAX_PIXELS. Raises ValueError naming the variable if it is not an integer >= 1."""
    value = os.environ.get(MAX_PIXELS_VARIABLE)
    if value is None:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={value[:40]!r}: expected a number of pixels "
                         "(an integer >= 1)")
    return limit


def read_image(path, where):
    """(H, W, 3) uint8 RGB from an image file; ``where`` names the caller in error messages.
    16-bit greyscale is scaled to 8 bits.

    Raises FileNotFoundError if the file is missing, ValueError if Pillow cannot decode it, it
    declares more than ``max_image_pixels()`` pixels, or its pixels are not 8 or 16 bits.
    """
    # greyscale or CMYK JPEGs exist in the wild: convert, and decode here, inside the checks
    return _open(path, where, lambda im: _rgb8(im, path, where))


def _rgb8(im, path, where):
    if im.mode in SIXTEEN_BIT_MODES or (im.mode == "I" and im.format == "PNG"):
        # a PNG holds at most 16 bits: older Pillows open 16-bit greyscale as "I"
        grey = np.asarray(im)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise _Refused(f"{where}: image {path} holds values outside 0..65535 in a 16-bit "
                           "image")
        # the high byte, as Pillow reads 16-bit colour: grey and colour images agree
        return np.repeat((grey >> 8).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("I", "F"):
        kind = "32-bit integer" if im.mode == "I" else "floating-point"
        raise _Refused(f"{where}: image {path} is a {kind} image (Pillow mode {im.mode}); "
                       "expected 8 or 16 bits a channel: convert it to an 8-bit PNG or JPEG")
    return np.array(im.convert("RGB"))


def read_image_size(path, where):
    """(H, W) of an image file from its header alone (Pillow decodes no pixels until asked).

    Raises FileNotFoundError if the file is missing, ValueError if Pillow cannot identify it or
    it declares more than ``max_image_pixels()`` pixels.
    """
    return _open(path, where, lambda im: im.size[::-1])


class _Refused(ValueError):
    """A file this module refuses (its message names it): not wrapped as a decoding error."""


def _too_large(path, where, what, pixels, limit, size=None):
    found = f"{size[0]}x{size[1]} = {pixels:,} pixels" if size else f"{pixels:,} pixels"
    return _Refused(f"{where}: {what} {path} declares {found}, more than the {limit:,} minifcn "
                    f"reads; set {MAX_PIXELS_VARIABLE} to allow more, if memory allows")


def _open(path, where, read, what="image"):
    """``read(image)`` on the Pillow image at ``path``, once its header says it is at most
    ``max_image_pixels()`` pixels, with the file's errors in one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {what} file {path} not found")
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():  # Pillow's warning of a large image: ours is the check
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            pixels = im.size[0] * im.size[1]
            if pixels > limit:
                raise _too_large(path, where, what, pixels, limit, im.size)
            return read(im)
    except Image.DecompressionBombError as e:  # Pillow's own check, at 2 x 89 megapixels
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = int(found.group(1)) if found else None
        if pixels is not None and pixels > limit:
            raise _too_large(path, where, what, pixels, limit) from None
        raise _Refused(f"{where}: {what} {path}: {e} (Pillow's limit, PIL.Image.MAX_IMAGE_PIXELS, "
                       f"is below {MAX_PIXELS_VARIABLE}'s {limit:,}: raise it too)") from None
    except _Refused:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: cannot decode {what} {path}: {e}") from e


def read_label(path, n_class, where):
    """(H, W) int64 class indices from an index PNG; every value must be in 0..n_class-1 or be
    255 (ignore). A 16-bit label is read as it is. Raises FileNotFoundError / ValueError naming
    ``path`` otherwise, or if it declares more than ``max_image_pixels()`` pixels."""
    def indices(im):
        if im.mode not in LABEL_MODES:
            raise _Refused(
                f"{where}: label {path} has mode {im.mode}; expected an index image "
                f"(mode {', '.join(LABEL_MODES)}) whose pixel values are class numbers. "
                "A colour-coded mask must first be mapped to class indices"
            )
        return np.array(im).astype(np.int64)

    label = _open(path, where, indices, what="label")
    check_label_values(label, n_class, f"{where}: label {path}")
    return label


def check_label_values(label, n_class, what):
    """Raise ValueError naming ``what`` if ``label`` holds a value outside 0..n_class-1 that
    is not the ignore index 255."""
    bad = ((label < 0) | (label >= n_class)) & (label != IGNORE_INDEX)
    if bad.any():
        values = np.unique(label[bad])
        raise ValueError(
            f"{what} has values {values[:10].tolist()} outside 0..{n_class - 1} "
            f"(n_class={n_class}; 255 means ignore)"
        )


def read_pair(image_path, label_path, n_class, where):
    """(image (H, W, 3) uint8, label (H, W) int64), checked to be the same size."""
    image = read_image(image_path, where)
    label = read_label(label_path, n_class, where)
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"{where}: label {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its "
            f"image {image_path} is {image.shape[1]}x{image.shape[0]}; they must match"
        )
    return image, label


def check_pairs(pairs, n_class, where):
    """Check the label of every (image path, label path) pair, as ``read_pair`` would, without
    decoding the images (their size comes from the header): values in 0..n_class-1 or 255, the
    size of its image. ValueError / FileNotFoundError naming the first bad file."""
    for image_path, label_path in pairs:
        label = read_label(label_path, n_class, where)
        h, w = read_image_size(image_path, where)
        if label.shape != (h, w):
            raise ValueError(
                f"{where}: label {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its "
                f"image {image_path} is {w}x{h}; they must match"
            )


def read_names(path, where):
    """The non-empty, stripped lines of a split file (one item name per line); UTF-8, a byte
    order mark at its start (as some Windows editors write) left out."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: {path} is not UTF-8 text ({e.reason} at byte {e.start})") \
            from None
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{where}: split file {path} lists no names")
    return names
