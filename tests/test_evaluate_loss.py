"""The loss that validate and evaluate report is the mean over every counted pixel, at any
batch size; evaluate --json on a full disk names its file (issue 31)."""
import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

from minifcn import evaluate, io, training
from minifcn.autograd import Tensor
from minifcn.data import Loader, VOCSegmentation, to_input
from minifcn.io import atomic

from test_data_readers import write_label

pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)

N, H, W = 10, 20, 24  # ten images of one size: batches of 3 and 7 end with a partial one


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """A VOC val split whose images count very different numbers of pixels (from 5 % to all
    of them; the rest 255)."""
    base = tmp_path_factory.mktemp("voc") / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True)
    rng = np.random.default_rng(3)
    names = [f"2007_{k:06d}" for k in range(N)]
    for k, name in enumerate(names):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            base / "JPEGImages" / f"{name}.jpg", quality=95)
        label = rng.integers(0, 21, (H, W))
        label[rng.random((H, W)) > [0.05, 1.0, 0.3, 0.9, 0.1, 0.6, 0.2, 1.0, 0.4, 0.15][k]] = 255
        write_label(base / "SegmentationClass" / f"{name}.png", label)
    (base / "ImageSets/Segmentation/val.txt").write_text("\n".join(names) + "\n")
    return base


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny FCN-32s whose scores differ from pixel to pixel (random score layer)."""
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.npz"
    config = training.resolve({**training.DEFAULTS, "model": "fcn32s", "width": 1 / 32,
                               "data": "voc:unused", "device": "cpu"})
    config["n_class"] = 21
    model = training.build_model(config)
    rng = np.random.default_rng(0)
    state = model.state_dict()
    for k in ("score_fr.weight", "score_fr.bias"):
        state[k] = rng.normal(0, 2, state[k].shape).astype(state[k].dtype)
    io.save_checkpoint(path, {f"model/{k}": v for k, v in state.items()}, {"config": config})
    return path


def pixel_mean_loss(model, data):
    """The mean softmax cross-entropy over every counted pixel of ``data``, one image at a
    time, in float64."""
    total, count = 0.0, 0
    for i in range(len(data)):
        image, label = data[i]
        z = model(Tensor(to_input(image)[None])).data[0].astype(np.float64)  # (C, H, W)
        top = z.max(axis=0)
        logsumexp = np.log(np.exp(z - top).sum(axis=0)) + top
        counted = label != 255
        picked = np.take_along_axis(z, np.where(counted, label, 0)[None], axis=0)[0]
        total += (logsumexp - picked)[counted].sum()
        count += counted.sum()
    return total / count


def batch_mean_loss(model, data, batch_size):
    """What the loss was before: the mean of each batch's mean."""
    losses = []
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(len(data), start + batch_size))]
        x = np.stack([to_input(image) for image, _ in items])
        z = model(Tensor(x)).data.astype(np.float64)
        y = np.stack([label for _, label in items])
        logp = z - z.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        counted = y != 255
        picked = np.take_along_axis(logp, np.where(counted, y, 0)[:, None], axis=1)[:, 0]
        losses.append(-picked[counted].sum() / counted.sum())
    return float(np.mean(losses))


def test_reported_loss_is_the_mean_over_counted_pixels_at_any_batch_size(voc, checkpoint,
                                                                         tmp_path, capsys):
    model, _ = training.load_model(checkpoint)
    data = VOCSegmentation(voc, split="val")
    want = pixel_mean_loss(model, data)
    # the data can tell the two apart: a mean of batch means is off by far more than rounding
    assert abs(batch_mean_loss(model, data, 3) - want) > 1e-3 * want
    for batch in (1, 3, 7):
        scores = tmp_path / f"scores{batch}.json"
        assert evaluate.main([str(checkpoint), "--data", f"voc:{voc}", "--batch-size",
                              str(batch), "--json", str(scores), "--device", "cpu"]) == 0
        assert json.loads(scores.read_text())["loss"] == pytest.approx(want, rel=1e-5)
        assert f"mean loss {want:.4f}" in capsys.readouterr().out
    # the validation in training: the same pass, its batches of another size
    _, loss, _ = training.validate(model, Loader(data, 4, shuffle=False), 21)
    assert loss == pytest.approx(want, rel=1e-5)


def test_evaluate_json_on_a_full_disk_names_the_file(voc, checkpoint, tmp_path, capsys,
                                                     monkeypatch):
    scores, fsync = tmp_path / "scores.json", os.fsync

    def full(fd):  # the flush of scores.json fails as a full disk does: no file named
        if any(tmp.startswith(".scores.json.") for tmp in atomic._IN_FLIGHT):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    assert evaluate.main([str(checkpoint), "--data", f"voc:{voc}", "--json", str(scores),
                          "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: [Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: '{scores}'\n"
    assert list(tmp_path.iterdir()) == []  # no temporary left
