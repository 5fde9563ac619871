"""Datasets, transforms and batching for minifcn.

Every dataset is a sequence: ``len(ds)`` and ``ds[i] -> (image, label)``, image (H, W, 3) uint8
RGB, label (H, W) int64 class indices with 255 = ignore; plus ``n_class``, ``class_names``,
``ignore_index`` (255) and ``name``. ``Loader`` turns one into (x, y) batches for the net.

- ``Shapes``: procedural shapes with thin parts (no download).
- ``ShapesTouching`` ("shapes-touching"): Shapes in groups of touching objects of one class,
  for instance maps (``ds.item(i, instances=True)``; ``Loader(..., instances=True)``).
- ``Digits``: scenes of real handwritten digits (UCI data shipped in the package).
- ``ShapesClassification`` ("shapes-cls"): 16 shape categories, one label per image: the
  classification set the classifier FCNs start from is pretrained on (``python -m
  minifcn.pretrain``).
- ``VOCSegmentation``: PASCAL VOC 2011/2012, the paper's benchmark.
- ``FolderSegmentation``: your own images/ + masks/ folder.
"""
from .base import IGNORE_INDEX, SegmentationDataset
from .digits import Digits
from .folder import FolderSegmentation
from .loader import Loader
from .shapes import Shapes
from .shapes_cls import ShapesClassification
from .shapes_touching import ShapesTouching
from .transforms import MEAN_RGB, crop_or_pad, from_input, hflip, to_input
from .voc import VOC_CLASSES, VOCSegmentation, find_voc_root, voc_palette

DATASET_SPECS = ("shapes", "shapes-touching", "digits", "shapes-cls", "voc:ROOT", "folder:ROOT")
SYNTHETIC = {"shapes": Shapes, "shapes-touching": ShapesTouching, "digits": Digits,
             "shapes-cls": ShapesClassification}


def get_dataset(spec, split, **kw):
    """The dataset named by a ``--data`` value: "shapes", "shapes-touching", "digits",
    "shapes-cls", "voc:ROOT" or "folder:ROOT" (ROOT a folder path), for ``split`` ("train" /
    "val"; for a folder, None means all its images). Keyword arguments go to the dataset's constructor (e.g. n=, size=, seed=
    for the synthetic sets, n_class= for a folder)."""
    if not isinstance(spec, str):
        raise TypeError(f"get_dataset: spec must be a string like 'shapes', got {type(spec).__name__}")
    kind, sep, root = spec.partition(":")
    if not sep and kind in SYNTHETIC:
        return SYNTHETIC[kind](split=split, **kw)
    if sep and kind in ("voc", "folder"):
        if not root:
            raise ValueError(f"get_dataset: {spec!r} needs a folder after the colon, e.g. "
                             f"'{kind}:/data/{'VOCdevkit' if kind == 'voc' else 'mydata'}'")
        if kind == "voc":
            return VOCSegmentation(root, split=split, **kw)
        return FolderSegmentation(root, split=split, **kw)
    raise ValueError(f"get_dataset: unknown dataset {spec!r}; expected one of "
                     f"{', '.join(DATASET_SPECS)}")


__all__ = [
    "IGNORE_INDEX", "SegmentationDataset", "Shapes", "ShapesTouching", "Digits", "ShapesClassification", "VOCSegmentation",
    "FolderSegmentation", "Loader", "get_dataset", "MEAN_RGB", "to_input", "from_input",
    "hflip", "crop_or_pad", "VOC_CLASSES", "voc_palette", "find_voc_root", "DATASET_SPECS",
]
