"""The classifier that ships in minifcn/weights/ (python -m minifcn.pretrain made it)."""
import numpy as np

import minifcn
from minifcn import Tensor, no_grad
from minifcn.data import Loader, ShapesClassification


def test_the_shipped_classifier_loads_and_classifies_held_out_images_far_above_chance():
    """minifcn/weights/classifier-shapes-cls-w0.0625.npz, made by python -m minifcn.pretrain (its
    .md records how): float16 on disk, and on 200 held-out images of shapes-cls (the "val"
    split, which it never trained on) far better than the 1/16 of guessing."""
    path = minifcn.models.shipped_classifier_path(0.0625)
    arrays, meta = minifcn.io.load_checkpoint(path)
    assert all(v.dtype == np.float16 for v in arrays.values())
    assert path.stat().st_size < 3e6 and meta["config"]["data"] == "shapes-cls"
    assert path.with_suffix(".md").is_file()
    model = minifcn.models.pretrained_classifier(0.0625)
    val = ShapesClassification("val", n=200)
    x, y = next(Loader(val, 200, shuffle=False).epoch(0))
    with no_grad():
        pred = model(Tensor(x)).numpy().argmax(1)[:, 0, 0]
    accuracy = (pred == y[:, 0, 0]).mean()
    assert accuracy > 4 / 16, accuracy


def test_the_shipped_classifiers_record_states_its_held_out_top1():
    """The top-1 its .md states is what the file gives on the 500 held-out images, recomputed
    here one batch at a time (the record can not drift from the weights it describes)."""
    import re

    path = minifcn.models.shipped_classifier_path(0.0625)
    stated = float(re.search(r"top-1 \*\*([0-9.]+)\*\*", path.with_suffix(".md").read_text())[1])
    model = minifcn.models.pretrained_classifier(0.0625)
    right = 0
    for x, y in Loader(ShapesClassification("val", n=500), 100, shuffle=False).epoch(0):
        with no_grad():
            right += int((model(Tensor(x)).numpy().argmax(1)[:, 0, 0] == y[:, 0, 0]).sum())
    assert round(right / 500, 3) == stated, (right, stated)
