"""The training step and the evaluation pass: what a learner reads first.

    images (N, 3, H, W) -> model -> scores (N, n_class, H, W) -> softmax cross-entropy against
    labels (N, H, W) -> backward -> SGD step

``fit`` (loop.py) calls ``train_step`` once per batch and ``validate`` once per epoch; the rest
of loop.py is bookkeeping (the learning-rate schedule, checkpoints, Ctrl-C, the progress bar).
"""
import math

import numpy as np

from .. import backend, metrics
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


def parallel_train_step(model, optimizer, images, labels, allreduce, loss_reduction="mean",
                        class_weights=None, stop=False):
    """``train_step`` for data parallelism (minifcn.distributed): this rank's images and labels
    are its slice of the global batch, ``allreduce`` a ``distributed.GradientAllReduce`` over
    the model's parameters. Returns (the global batch's loss, whether any rank asked to stop).

    Each rank backpropagates the loss SUMMED over its own pixels; one all-reduce sums the
    gradients, the sums and the pixel counts over the ranks (and the ranks' stop requests, so
    that all stop at the same step); dividing by the global count gives the gradient of the
    mean over the whole batch, the one-process gradient (up to the order of float sums)."""
    scores = model(Tensor(images))
    total, count = summed_loss(scores, labels, class_weights)
    optimizer.zero_grad()
    total.backward()
    total, count, stops = allreduce(total.item(), count, float(stop))
    mean = loss_reduction == "mean"
    value = total / max(count, 1e-12) if mean else total
    if not math.isfinite(value):  # every rank sees the same sum: every rank stops here
        raise FloatingPointError(f"loss is {value}")
    if mean and count > 0:
        allreduce.scale(1 / count)
    optimizer.step()
    return value, stops > 0


def summed_loss(scores, labels, class_weights=None):
    """The softmax cross-entropy summed over the counted pixels (each weighted by its class's
    weight, with ``class_weights``), and what a mean divides it by: the number of counted
    pixels, or the sum of their weights."""
    xp = backend.get_array_module(scores.data)
    counted = labels != IGNORE_INDEX
    if class_weights is None:
        return F.softmax_cross_entropy(scores, labels, reduction="sum"), float(counted.sum())
    weight = xp.asarray(class_weights, scores.dtype)[xp.where(counted, labels, 0)] * counted
    total = (F.softmax_cross_entropy(scores, labels, reduction="none") * Tensor(weight)).sum()
    return total, float(weight.sum())


def segmentation_loss(scores, labels, reduction="mean", class_weights=None):
    """FCN's loss: softmax cross-entropy summed or averaged over the counted pixels.

    class_weights: None, or an (n_class,) array weighting each pixel's term by its true class
    (class balancing, paper section 4.3); the mean then divides by the sum of the weights."""
    if class_weights is None:
        return F.softmax_cross_entropy(scores, labels, reduction=reduction)
    total, weight = summed_loss(scores, labels, class_weights)
    return total if reduction == "sum" else total / max(weight, 1e-12)


def sample_loss_cells(labels, p, cell, rng):
    """The paper's loss sampling (sections 3.4, 4.3): each cell x cell block of the label map,
    one per cell of the net's final coarse grid counted from the top-left corner, keeps its
    pixels with probability p; the others become IGNORE_INDEX and so get no loss and no
    gradient. labels: NumPy (N, H, W); returns a new array."""
    n, h, w = labels.shape
    # (N, ceil(H/c), ceil(W/c)): drawn as one process would draw them, when data parallel
    keep = backend.random_rows((n, -(-h // cell), -(-w // cell)), generator=rng) < p
    keep = keep.repeat(cell, axis=1).repeat(cell, axis=2)[:, :h, :w]
    return np.where(keep, labels, IGNORE_INDEX)


def predict_labels(model, x):
    """Arg-max class of every pixel of a (N, 3, H, W) input, as a NumPy int64 (N, H, W)."""
    with no_grad():
        scores = model(Tensor(x))
    xp = backend.get_array_module(scores.data)
    return backend.as_numpy(xp.argmax(scores.data, axis=1)).astype(np.int64)


def validate(model, loader, n_class, device="cpu", limit=None, worst=0, desc=None, comm=None):
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
    pixel have no loss and are left out). Only those k are kept while the pass runs.

    Data parallel (``comm``, a minifcn.distributed communicator): ``loader`` holds every
    comm.size-th batch from the comm.rank-th (``shard_by="batches"``); rank 0 sums the
    confusion matrices and takes the batches' losses and images in the one-process order, so
    its results are one process's (None on the other ranks)."""
    model.eval()
    rank, ranks = (0, 1) if comm is None else (comm.rank, comm.size)
    running, examples, kept = RunningScore(n_class), [], []
    sums = []  # (batch, float64 sum of its counted pixels' losses, their number) of each batch
    with _bar(loader, limit, desc if rank == 0 else None) as bar:
        for i, (x, y) in enumerate(loader.epoch(0)):
            b = rank + ranks * i  # the batch's place in the one-process order
            if limit is not None and b >= limit:
                break
            y_dev = backend.to_device(y, device)
            with no_grad():
                scores = model(Tensor(backend.to_device(x, device)))
                per_pixel = F.softmax_cross_entropy(scores, y_dev, reduction="none").data
            xp = backend.get_array_module(scores.data)
            counted = y_dev != IGNORE_INDEX                                   # (N, H, W)
            # an ignored pixel's loss is 0: the sum is over the counted ones
            sums.append((b, float(per_pixel.sum(dtype=xp.float64)), int(counted.sum())))
            pred = backend.as_numpy(xp.argmax(scores.data, axis=1))
            running.update(y, pred)
            for j in range(min(len(x), 4 - len(examples))):
                examples.append((b, j, (from_input(x[j]), y[j], pred[j])))
            if worst:
                n = backend.as_numpy(counted.sum(axis=(1, 2)))
                image_loss = backend.as_numpy(per_pixel.sum(axis=(1, 2), dtype=xp.float64)) / \
                    np.maximum(n, 1)
                for j in np.flatnonzero(n > 0):  # a bounded list: k kept, the lowest replaced
                    if len(kept) < worst or image_loss[j] > kept[-1][0]:
                        # copies: a view would keep its whole batch alive
                        entry = (float(image_loss[j]), b, j, np.array(x[j]), np.array(y[j]),
                                 pred[j].copy())
                        kept = sorted(kept + [entry], key=_worst_first)[:worst]
            bar.update(len(x))
    model.train()
    hist = running.hist
    if comm is not None:  # rank 0 gathers every rank's part
        parts = comm.gather_objects((hist, sums, examples, kept))
        if parts is None:
            return None
        hist = sum(part[0] for part in parts)
        sums = sorted(s for part in parts for s in part[1])
        examples = sorted((e for part in parts for e in part[2]), key=lambda e: e[:2])[:4]
        kept = sorted((e for part in parts for e in part[3]), key=_worst_first)[:worst]
    result = {**metrics.scores(hist), "confusion": hist.copy()}
    # the mean over every counted pixel of the split, added in the one-process order of the
    # batches: the same at any batch size, and on any number of ranks
    total, count = 0.0, 0
    for _, batch_total, batch_count in sums:
        total, count = total + batch_total, count + batch_count
    loss = total / count if count else float("nan")
    examples = [example for _, _, example in examples]
    if not worst:
        return result, loss, examples
    worst_examples = [(from_input(xj), yj, pj, lj) for lj, _, _, xj, yj, pj in kept]
    return result, loss, examples, worst_examples


def _worst_first(entry):
    """Highest loss first; among equal losses, the earlier image (batch, place in it)."""
    return -entry[0], entry[1], entry[2]


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
