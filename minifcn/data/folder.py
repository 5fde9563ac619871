"""``FolderSegmentation``: your own data in a plain folder layout.

    ROOT/images/NAME.jpg|.jpeg|.png     the pictures (any size; converted to RGB)
    ROOT/masks/NAME.png                 index images: pixel value = class, 255 = ignore
                                        (mode L or P, read as indices, never as colours)
    ROOT/splits/{train,val}.txt         optional: one NAME per line
    ROOT/classes.txt                    optional: one class name per line (class 0 first)

Which items a split holds:
- ``split=None``: every image in ROOT/images.
- ``split="train"`` / ``"val"`` (or any NAME): ROOT/splits/NAME.txt when it exists. Without
  split files, train and val are a deterministic 90/10 split by name: an image is val when the
  CRC-32 of its name is divisible by 10. It depends on the name only, so adding images never
  moves the old ones from one side to the other.

How many classes: ``n_class`` if given; else the length of classes.txt; else inferred as
(largest label value other than 255) + 1 over ALL masks in ROOT/masks, read once when the
dataset is built (slow for a big folder: pass n_class, or write classes.txt, to skip it). A
stray label 17 thus makes an 18-class problem: the dataset's ``notice`` says so when it guessed.
"""
import zlib
from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, SegmentationDataset
from .readers import check_pairs, read_image_size, read_label, read_names, read_pair

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VAL_EVERY = 10  # without split files, about 1 image in VAL_EVERY is val


def is_val_name(name):
    """True for the ~10% of names that the default split puts in val (stable CRC-32 of name)."""
    return zlib.crc32(name.encode("utf-8")) % VAL_EVERY == 0


class FolderSegmentation(SegmentationDataset):
    """A folder of images and index masks: ``ds[i]`` -> (image (H, W, 3) uint8, label (H, W)
    int64 in 0..n_class-1 or 255). See the module docstring for the layout and the rules for
    splits and ``n_class``. Each item is checked when loaded, as ``VOCSegmentation`` does."""

    name = "folder"

    def __init__(self, root, n_class=None, split=None):
        where = "FolderSegmentation"
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{where}: root folder {self.root} does not exist")
        self.image_dir, self.mask_dir = self.root / "images", self.root / "masks"
        for d in (self.image_dir, self.mask_dir):
            if not d.is_dir():
                raise FileNotFoundError(f"{where}: folder {d} not found (expected ROOT/images "
                                        "and ROOT/masks)")
        images = self._index_images()
        self.split = split
        self.names = self._split_names(split, images)
        self.image_paths = []
        for name in self.names:
            if name not in images:
                raise FileNotFoundError(f"{where}: no image {self.image_dir}/{name}"
                                        f"{{{','.join(IMAGE_SUFFIXES)}}} for split {split!r}")
            mask = self.mask_dir / f"{name}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"{where}: mask {mask} not found for image {images[name]}")
            self.image_paths.append(images[name])
        self.n_class, self.class_names = self._classes(n_class)

    def _index_images(self):
        """{name: path} of every image in ROOT/images."""
        images = {}
        for p in sorted(self.image_dir.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                if p.stem in images:
                    raise ValueError(f"FolderSegmentation: two images named {p.stem!r}: "
                                     f"{images[p.stem]} and {p}")
                images[p.stem] = p
        if not images:
            raise ValueError(f"FolderSegmentation: no {'/'.join(IMAGE_SUFFIXES)} images in "
                             f"{self.image_dir}")
        return images

    def _split_names(self, split, images):
        if split is None:
            return sorted(images)
        if not isinstance(split, str) or not split or "/" in split or "\\" in split:
            raise ValueError(f"FolderSegmentation: split must be None or a plain name like "
                             f"'train', got {split!r}")
        split_file = self.root / "splits" / f"{split}.txt"
        if split_file.is_file():
            return read_names(split_file, "FolderSegmentation")
        if split not in ("train", "val"):
            raise ValueError(f"FolderSegmentation: unknown split {split!r}: no {split_file}, "
                             "and only 'train' and 'val' have a default (90/10 by name)")
        names = [n for n in sorted(images) if is_val_name(n) == (split == "val")]
        if not names:
            raise ValueError(f"FolderSegmentation: the default 90/10 split leaves no image in "
                             f"{split!r} ({len(images)} images); write {split_file}")
        return names

    def _classes(self, n_class):
        """(n_class, class_names) from the argument, classes.txt, or a scan of the masks."""
        where = "FolderSegmentation"
        names_file = self.root / "classes.txt"
        names = read_names(names_file, where) if names_file.is_file() else None
        if n_class is not None:
            if isinstance(n_class, bool) or not isinstance(n_class, (int, np.integer)) \
                    or not 1 <= n_class <= 255:
                raise ValueError(f"{where}: n_class must be an integer in 1..255, got {n_class!r}")
            if names is not None and len(names) != n_class:
                raise ValueError(f"{where}: n_class={n_class} but {names_file} names "
                                 f"{len(names)} classes")
        elif names is not None:
            n_class = len(names)
        else:
            top = -1
            for path in sorted(self.mask_dir.glob("*.png")):
                # a huge n_class lets every value through: only mode and decoding are checked
                label = read_label(path, 2**31, where)
                values = label[label != IGNORE_INDEX]
                if values.size:
                    top = max(top, int(values.max()))
            if top < 0:
                raise ValueError(f"{where}: every mask in {self.mask_dir} is all 255 (ignore); "
                                 "cannot infer n_class, pass it")
            if top >= IGNORE_INDEX:
                raise ValueError(f"{where}: masks hold label {top}; labels must be below 255")
            n_class = top + 1
            self.notice = (f"folder:{self.root}: no classes.txt; {n_class} classes inferred "
                           f"from the largest label ({top}) in the masks")
        return int(n_class), names if names is not None else [f"class{i}" for i in range(n_class)]

    def __len__(self):
        return len(self.names)

    def _get(self, i):
        return read_pair(self.image_paths[i], self.mask_dir / f"{self.names[i]}.png",
                         self.n_class, "FolderSegmentation")

    def check_labels(self):
        check_pairs([(p, self.mask_dir / f"{n}.png") for p, n in zip(self.image_paths, self.names)],
                    self.n_class, "FolderSegmentation")

    def _image_size(self, i):
        return read_image_size(self.image_paths[i], "FolderSegmentation")
