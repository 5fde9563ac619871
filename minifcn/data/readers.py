"""Reading one (image, label) pair from disk, with the checks every file-backed dataset needs.

Labels are index images: a palette ("P") PNG as VOC ships them, or greyscale ("L", or 16-bit
"I;16"/"I"). They are read WITHOUT conversion to RGB, because the palette indices are the class
numbers; converting would give colours. 255 marks pixels to ignore.
"""
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .base import IGNORE_INDEX

LABEL_MODES = ("P", "L", "I;16", "I")


def read_image(path, where):
    """(H, W, 3) uint8 RGB from an image file; ``where`` names the caller in error messages.

    Raises FileNotFoundError if the file is missing, ValueError if Pillow cannot decode it.
    """
    # greyscale or CMYK JPEGs exist in the wild: convert, and decode here, inside the checks
    return _open(path, where, lambda im: np.array(im.convert("RGB")))


def read_image_size(path, where):
    """(H, W) of an image file from its header alone (Pillow decodes no pixels until asked).

    Raises FileNotFoundError if the file is missing, ValueError if Pillow cannot identify it.
    """
    return _open(path, where, lambda im: im.size[::-1])


def _open(path, where, read):
    """``read(image)`` on the Pillow image at ``path``, with the file's errors in one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image file {path} not found")
    try:
        with Image.open(path) as im:
            return read(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{where}: cannot decode image {path}: {e}") from e


def read_label(path, n_class, where):
    """(H, W) int64 class indices from an index PNG; every value must be in 0..n_class-1 or be
    255 (ignore). Raises FileNotFoundError / ValueError naming ``path`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: label file {path} not found")
    try:
        with Image.open(path) as im:
            if im.mode not in LABEL_MODES:
                raise ValueError(
                    f"{where}: label {path} has mode {im.mode}; expected an index image "
                    f"(mode {', '.join(LABEL_MODES)}) whose pixel values are class numbers. "
                    "A colour-coded mask must first be mapped to class indices"
                )
            label = np.array(im).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{where}: cannot decode label {path}: {e}") from e
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
