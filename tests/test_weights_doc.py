"""docs/weights.md's Caffe import example runs as a user would run it: the ```python block that
starts `path = "fcn8s-heavy-pascal.caffemodel"`, taken from the page, its two paths pointed at
a tiny FCN-8s caffemodel (written by tests/_caffe_encoder.py, independent of the reader) and a
small JPEG, run by a fresh Python."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import minifcn
from minifcn import data, models

from _caffe_encoder import caffe_layers, layer, net

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "weights.md"
FIRST = 'path = "fcn8s-heavy-pascal.caffemodel"'
SECOND = 'image = "cat.jpg"'
CAT = data.VOC_CLASSES.index("cat")


def caffe_example():
    blocks = [b for b in re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"),
                                    flags=re.S) if b.startswith(FIRST)]
    assert len(blocks) == 1, f"{PAGE} has {len(blocks)} python blocks starting {FIRST!r}"
    return blocks[0]


def test_the_example_is_inference_from_a_picture():
    code = caffe_example()
    assert code.splitlines()[1].startswith(SECOND)
    for step in ("model.eval()", "data.to_input", "argmax"):
        assert step in code, step


def cat_everywhere_caffemodel(path, width=1 / 32):
    """An FCN-8s (21 classes) whose every pixel is a cat, whatever the picture: the trunk as
    minifcn initialises it, every score layer's weights zero, score_fr's bias 1 for 'cat' and 0
    for the rest, and each upsampling a box filter that maps class c to class c only (its kernel
    is twice its stride, so every output pixel gets at least one input). The 'cat' score is then
    >= 1 at every pixel and every other class's exactly 0."""
    state = models.fcn8s(n_class=21, width=width).state_dict()
    for name in ("score_fr", "score_pool4", "score_pool3"):
        state[f"{name}.weight"] = np.zeros_like(state[f"{name}.weight"])
        state[f"{name}.bias"] = np.zeros_like(state[f"{name}.bias"])
    state["score_fr.bias"][CAT] = 1
    for name in ("upscore2", "upscore_pool4", "upscore8"):
        w = np.zeros_like(state[f"{name}.weight"])
        w[np.arange(21), np.arange(21)] = 1
        state[f"{name}.weight"] = w
    msgs = [layer("data", "Input", [])]
    for name, blobs in caffe_layers(state).items():  # Caffe's layout: conv1_1 reads BGR
        msgs.append(layer(name, "Deconvolution" if name.startswith("upscore") else "Convolution",
                          blobs, diff=False))
        if name.startswith(("conv", "fc")):
            msgs.append(layer(name.replace("conv", "relu").replace("fc", "relu"), "ReLU", []))
    path.write_bytes(net(msgs, name="fcn8s-tiny"))


def test_the_caffe_import_example_runs(tmp_path):
    caffemodel, jpeg = tmp_path / "fcn8s-tiny.caffemodel", tmp_path / "picture.jpg"
    cat_everywhere_caffemodel(caffemodel)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)).save(jpeg)  # H 75, W 101
    lines = caffe_example().splitlines()
    lines[0] = lines[0].replace('"fcn8s-heavy-pascal.caffemodel"', repr(str(caffemodel)), 1)
    lines[1] = lines[1].replace('"cat.jpg"', repr(str(jpeg)), 1)
    assert str(caffemodel) in lines[0] and str(jpeg) in lines[1]
    # the minifcn this test imports, not whichever one is installed
    here = str(Path(minifcn.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get(
        "PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", "\n".join(lines)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "(75, 101) ['cat']", done.stdout
