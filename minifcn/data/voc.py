"""PASCAL VOC segmentation (the paper's benchmark, section 5): the standard folder layout.

    VOCdevkit/VOC2012/                 (or VOC2011)
        JPEGImages/NAME.jpg
        SegmentationClass/NAME.png     palette PNG; the indices are the labels, 255 on boundaries
        SegmentationObject/NAME.png    optional: palette PNG, index = instance id (1, 2, ... per
                                       object, 0 background, 255 void), for ``has_instances``;
                                       read as is, then 255 wherever the class label is 255
        ImageSets/Segmentation/{train,val,trainval}.txt
"""
from pathlib import Path

import numpy as np

from .base import SegmentationDataset
from .readers import check_pairs, read_image_size, read_label, read_names, read_pair

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval")
YEARS = ("VOC2012", "VOC2011")  # preferred first


def voc_palette(n=256):
    """(n, 3) uint8: the VOC colour of each label 0..n-1 (n <= 256).

    The bits of the label are dealt out in turn to red, green and blue, from each colour's most
    significant bit downwards: label 1 is (128, 0, 0), 2 is (0, 128, 0), 255 is (224, 224, 192).
    """
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= 256:
        raise ValueError(f"voc_palette: n must be an integer in 1..256, got {n!r}")
    ids = np.arange(n)
    pal = np.zeros((n, 3), np.int64)
    for bit in range(8):  # label bits 3*bit, 3*bit+1, 3*bit+2 -> bit (7 - bit) of r, g, b
        for ch in range(3):
            pal[:, ch] |= ((ids >> (3 * bit + ch)) & 1) << (7 - bit)
    return pal.astype(np.uint8)


def find_voc_root(root):
    """The folder holding JPEGImages/: ``root`` itself, or its VOC2012/ or VOC2011/ (VOC2012
    preferred) when given VOCdevkit, or VOCdevkit/VOC20xx when given the folder above it."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VOCSegmentation: root folder {root} does not exist")
    candidates = [root] + [root / y for y in YEARS] + [root / "VOCdevkit" / y for y in YEARS]
    for cand in candidates:
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FileNotFoundError(
        f"VOCSegmentation: no JPEGImages/ folder in {root} nor in {root}/VOC2012, "
        f"{root}/VOC2011 (pass VOCdevkit/VOC2012, VOCdevkit/VOC2011 or VOCdevkit itself)"
    )


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC 2011/2012 segmentation: ``ds[i]`` -> (image (H, W, 3) uint8, label (H, W)
    int64 in 0..20 or 255). Images have their own sizes (up to 500x500).

    ``split``: "train", "val", "trainval", or the name of any other list present as
    ImageSets/Segmentation/NAME.txt (e.g. the paper's "seg11valid" if you put it there).
    ``split_file``: instead, the path of a list of image ids anywhere (one per line), such as
    the authors' seg11valid.txt; ``split`` is then its name without the suffix.
    Every listed id must have its image and label (else FileNotFoundError naming the list and
    the first id missing). Instance maps (``item(i, instances=True)``): when
    SegmentationObject/ exists and holds every listed id's PNG, ``has_instances`` is True;
    when it exists but lacks some, False, and ``notice`` says how many are missing. Each item is checked when loaded: decodable image, label of the same
    size, label values in 0..20 or 255; errors name the file.
    """

    name = "voc"
    class_names = list(VOC_CLASSES)
    n_class = len(VOC_CLASSES)

    def __init__(self, root, split="train", split_file=None):
        self.root = find_voc_root(root)
        if split_file is not None:
            split_file = Path(split_file)
            if not split_file.is_file():
                raise FileNotFoundError(f"VOCSegmentation: split file {split_file} not found")
            self.split, self.names = split_file.stem, read_names(split_file, "VOCSegmentation")
            self._check_listed(split_file)
            self._find_instances()
            return
        if not isinstance(split, str) or not split or "/" in split or "\\" in split:
            raise ValueError(f"VOCSegmentation: split must be a plain name like 'train', got {split!r}")
        self.split = split
        sets = self.root / "ImageSets" / "Segmentation"
        split_file = sets / f"{split}.txt"
        if not split_file.is_file():
            if split in VOC_SPLITS:
                raise FileNotFoundError(f"VOCSegmentation: split file {split_file} not found")
            present = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
            raise ValueError(
                f"VOCSegmentation: unknown split {split!r}; expected one of "
                f"{', '.join(VOC_SPLITS)} or a list in {sets} (found: {', '.join(present) or 'none'})"
            )
        self.names = read_names(split_file, "VOCSegmentation")
        self._check_listed(split_file)
        self._find_instances()

    def _find_instances(self):
        """``has_instances``: SegmentationObject/ holds a PNG for every listed id."""
        objects = self.root / "SegmentationObject"
        if not objects.is_dir():
            return
        missing = [n for n in self.names if not (objects / f"{n}.png").is_file()]
        self.has_instances = not missing
        if missing:
            self.notice = (f"VOCSegmentation: {objects} lacks {len(missing)} of the "
                           f"{len(self.names)} listed ids (first {missing[0]!r}); no instance maps")

    def _check_listed(self, split_file):
        """Every listed id has JPEGImages/ID.jpg and SegmentationClass/ID.png (a list meant for
        another year or a typo is found now, not hours into a run)."""
        for name in self.names:
            for path in (self.root / "JPEGImages" / f"{name}.jpg",
                         self.root / "SegmentationClass" / f"{name}.png"):
                if not path.is_file():
                    missing = sum(not (self.root / "JPEGImages" / f"{n}.jpg").is_file()
                                  or not (self.root / "SegmentationClass" / f"{n}.png").is_file()
                                  for n in self.names)
                    raise FileNotFoundError(
                        f"VOCSegmentation: {split_file} lists {missing} of its {len(self.names)} "
                        f"ids that are not in {self.root}; the first is {name!r} (no {path})")

    def __len__(self):
        return len(self.names)

    def _get(self, i):
        name = self.names[i]
        return read_pair(self.root / "JPEGImages" / f"{name}.jpg",
                         self.root / "SegmentationClass" / f"{name}.png",
                         self.n_class, "VOCSegmentation")

    def check_labels(self):
        check_pairs([(self.root / "JPEGImages" / f"{n}.jpg",
                      self.root / "SegmentationClass" / f"{n}.png") for n in self.names],
                    self.n_class, "VOCSegmentation")

    def _get_instances(self, i):
        image, label = self._get(i)
        path = self.root / "SegmentationObject" / f"{self.names[i]}.png"
        inst = read_label(path, 2**31, "VOCSegmentation")  # any id; mode and decoding checked
        if inst.shape != label.shape:
            raise ValueError(f"VOCSegmentation: instance map {path} is {inst.shape[1]}x"
                             f"{inst.shape[0]} (WxH) but its label is {label.shape[1]}x"
                             f"{label.shape[0]}; they must match")
        inst[label == self.ignore_index] = self.ignore_index  # void wherever the label is
        return image, label, inst

    def _image_size(self, i):
        return read_image_size(self.root / "JPEGImages" / f"{self.names[i]}.jpg", "VOCSegmentation")
