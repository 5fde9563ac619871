"""Write a dataset to disk in PASCAL VOC2012's layout, so that it can be read back as
``--data voc:ROOT``, the path a user's own data takes::

    ROOT/JPEGImages/ID.jpg                    (JPEG, quality 90, full-resolution colour)
    ROOT/SegmentationClass/ID.png             (palette PNG: the index is the label)
    ROOT/ImageSets/Segmentation/{train,val,trainval}.txt

The ids are ``train_00000``... and ``val_00000``..., so the two lists never share an image.
Labels are written with their own values (0..n_class-1, 255 ignore), which VOC's reader takes
as its class indices: a set of 5 classes fills VOC's classes 0..4, and the 16 others never occur.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from .voc import voc_palette

JPEG_QUALITY = 90
# 4:4:4, not JPEG's usual 4:2:0: halving the colour resolution wipes out a fine pattern drawn in
# colour alone (a speckle of two colours of the same brightness), and the label would then name a
# texture that the image no longer shows
JPEG_SUBSAMPLING = 0


def write_voc(root, splits):
    """Write ``splits`` ({"train": dataset, "val": dataset}) under ``root`` in VOC's layout and
    return the Path of ``root``. ``root`` must not exist or be an empty folder: nothing is ever
    written over (a ValueError naming it)."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"write_voc: {root} already exists and is not an empty folder; "
                         "choose a new one (nothing is written over)")
    folders = [root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation"]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    palette = voc_palette().reshape(-1).tolist()
    lists = {}
    for split, ds in splits.items():
        ids = []
        for i in range(len(ds)):
            image, label = ds[i]
            name = f"{split}_{i:05d}"
            Image.fromarray(image).save(folders[0] / f"{name}.jpg", quality=JPEG_QUALITY,
                                                     subsampling=JPEG_SUBSAMPLING)
            png = Image.fromarray(label.astype(np.uint8), mode="P")
            png.putpalette(palette)
            png.save(folders[1] / f"{name}.png")
            ids.append(name)
        lists[split] = ids
        (folders[2] / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids))
    trainval = [n for ids in lists.values() for n in ids]
    (folders[2] / "trainval.txt").write_text("".join(f"{n}\n" for n in trainval))
    return root
