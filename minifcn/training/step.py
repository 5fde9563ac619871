"""The training step and the evaluation pass: what a learner reads first.

    images (N, 3, H, W) -> model -> scores (N, n_class, H, W) -> softmax cross-entropy against
    labels (N, H, W) -> backward -> SGD step

``fit`` (loop.py) calls ``train_step`` once per batch and ``validate`` once per epoch; the rest
of loop.py is bookkeeping (the learning-rate schedule, checkpoints, Ctrl-C, the progress bar).
"""
import math

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, no_grad
from ..data import from_input
from ..loss import IGNORE_INDEX
from ..metrics import RunningPanoptic, RunningScore


def train_step(model, optimizer, images, labels, loss_reduction="mean", class_weights=None,
               instances=None):
    """One SGD step on one batch; returns the loss as a float.

    images: (N, 3, H, W) float32 and labels: (N, H, W) int64 (255 = ignore), NumPy or CuPy
    arrays on the model's device; instances (N, H, W), for a net with an instance head
    (models/instances.py), whose own loss is added. A loss that is not finite raises
    FloatingPointError before any weight changes, so the last checkpoint stays good."""
    if instances is None:
        scores = model(Tensor(images))                               # (N, n_class, H, W)
        loss = segmentation_loss(scores, labels, loss_reduction, class_weights)
    else:  # the semantic scores' loss plus the instance head's
        scores, extra = model.heads(Tensor(images))
        loss = segmentation_loss(scores, labels, loss_reduction, class_weights) + \
            model.instance_loss(extra, instances)
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value}")
    optimizer.zero_grad()   # gradients accumulate in .grad; clear last step's
    loss.backward()         # d loss / d every parameter, by the reverse walk of autograd
    optimizer.step()        # momentum SGD with weight decay (minifcn.optim.SGD)
    return value


def segmentation_loss(scores, labels, reduction="mean", class_weights=None):
    """FCN's loss: softmax cross-entropy summed or averaged over the counted pixels.

    class_weights: None, or an (n_class,) array weighting each pixel's term by its true class
    (class balancing, paper section 4.3); the mean then divides by the sum of the weights."""
    if class_weights is None:
        return F.softmax_cross_entropy(scores, labels, reduction=reduction)
    xp = backend.get_array_module(scores.data)
    counted = labels != IGNORE_INDEX
    weight = xp.asarray(class_weights, scores.dtype)[xp.where(counted, labels, 0)] * counted
    total = (F.softmax_cross_entropy(scores, labels, reduction="none") * Tensor(weight)).sum()
    return total if reduction == "sum" else total / max(float(weight.sum()), 1e-12)


def sample_loss_cells(labels, p, cell, rng):
    """The paper's loss sampling (sections 3.4, 4.3): each cell x cell block of the label map,
    one per cell of the net's final coarse grid counted from the top-left corner, keeps its
    pixels with probability p; the others become IGNORE_INDEX and so get no loss and no
    gradient. labels: NumPy (N, H, W); returns a new array."""
    n, h, w = labels.shape
    keep = rng.random((n, -(-h // cell), -(-w // cell))) < p     # (N, ceil(H/c), ceil(W/c))
    keep = keep.repeat(cell, axis=1).repeat(cell, axis=2)[:, :h, :w]
    return np.where(keep, labels, IGNORE_INDEX)


def predict_labels(model, x):
    """Arg-max class of every pixel of a (N, 3, H, W) input, as a NumPy int64 (N, H, W)."""
    with no_grad():
        scores = model(Tensor(x))
    xp = backend.get_array_module(scores.data)
    return backend.as_numpy(xp.argmax(scores.data, axis=1)).astype(np.int64)


def validate(model, loader, n_class, device="cpu", loss_reduction="mean", limit=None, worst=0,
             desc=None):
    """Mean loss and the paper's four metrics of ``model`` over every batch of ``loader`` (at
    most ``limit`` batches), without gradients and in eval mode (no dropout).

    The loss is the mean over every counted pixel of the set (the sum of the per-pixel losses
    over the number of pixels not labelled 255), so it does not depend on how the images are
    batched; the run's ``loss_reduction`` does not change it (a sum would grow with the set).
    NaN when no pixel is counted. ``desc``: show a progress bar over the images, so named
    (``runs.progress``).

    Returns (scores dict of ``metrics.RunningScore``, plus ``confusion``: its (n_class,
    n_class) matrix, rows = truth; mean loss; up to four (image, target, prediction) examples
    for plots). With ``worst=k`` a fourth item: the k images of highest mean loss over their
    counted pixels, as (image, target, prediction, loss), highest first (images with no counted
    pixel have no loss and are left out). Only those k are kept while the pass runs."""
    model.eval()
    running, examples, kept = RunningScore(n_class), [], []
    total, count = 0.0, 0  # the sum of the counted pixels' losses (float64), and their number
    with _bar(loader, limit, desc) as bar:
        for i, (x, y) in enumerate(loader.epoch(0)):
            if limit is not None and i >= limit:
                break
            y_dev = backend.to_device(y, device)
            with no_grad():
                scores = model(Tensor(backend.to_device(x, device)))
                per_pixel = F.softmax_cross_entropy(scores, y_dev, reduction="none").data
            xp = backend.get_array_module(scores.data)
            counted = y_dev != IGNORE_INDEX                                   # (N, H, W)
            total += float(per_pixel.sum(dtype=xp.float64))  # an ignored pixel's loss is 0
            count += int(counted.sum())
            pred = backend.as_numpy(xp.argmax(scores.data, axis=1))
            running.update(y, pred)
            for j in range(min(len(x), 4 - len(examples))):
                examples.append((from_input(x[j]), y[j], pred[j]))
            if worst:
                n = backend.as_numpy(counted.sum(axis=(1, 2)))
                image_loss = backend.as_numpy(per_pixel.sum(axis=(1, 2), dtype=xp.float64)) / \
                    np.maximum(n, 1)
                for j in np.flatnonzero(n > 0):  # a bounded list: k kept, the lowest replaced
                    if len(kept) < worst or image_loss[j] > kept[-1][0]:
                        # copies: a view would keep its whole batch alive
                        entry = (float(image_loss[j]), np.array(x[j]), np.array(y[j]),
                                 pred[j].copy())
                        kept = sorted(kept + [entry], key=lambda e: -e[0])[:worst]
            bar.update(len(x))
    model.train()
    result = {**running.scores(), "confusion": running.hist.copy()}
    loss = total / count if count else float("nan")
    if not worst:
        return result, loss, examples
    worst_examples = [(from_input(xj), yj, pj, lj) for lj, xj, yj, pj in kept]
    return result, loss, examples, worst_examples


def _bar(loader, limit, desc):
    """A progress bar over the images of ``loader``'s first ``limit`` batches (a bar that shows
    nothing without ``desc``, or for a loader that cannot say its batches)."""
    from .runs import progress

    images = None
    if desc and hasattr(loader, "batch_positions"):
        batches = loader.batch_positions(loader.plan(0)[0])  # the order epoch(0) takes
        images = sum(len(b) for b in batches[:limit])
    return progress(images or 0, 0, desc, disable=images is None)


def validate_instances(model, loader, n_class, device="cpu", stuff=(0,), desc=None):
    """Panoptic quality (``metrics.RunningPanoptic``) of ``model``'s instances over a loader
    that yields instance maps: a net's own instance head where it has one, else the connected
    components of each class of its argmax (the baseline). Eval mode, no gradients. ``desc``:
    a progress bar, as ``validate``'s."""
    from ..models.instances import instances_of

    model.eval()
    running = RunningPanoptic(n_class, stuff)
    with _bar(loader, None, desc) as bar:
        for x, y, inst in loader.epoch(0):
            classes, ids = instances_of(model, backend.to_device(x, device), stuff)
            running.update(y, inst, classes, ids)
            bar.update(len(x))
    model.train()
    return running.scores()
