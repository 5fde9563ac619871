"""Per-pixel softmax cross-entropy, FCN's loss (paper section 3: "the loss is a sum over the
spatial dimensions of the final layer")."""
import numpy as np

from . import primitives as P
from .autograd import Function, Tensor
from .backend import as_numpy, get_array_module

REDUCTIONS = ("mean", "sum", "none")
# the label of pixels that count for nothing (VOC marks object boundaries so): the loss's default,
# and the one the datasets, metrics and plots import
IGNORE_INDEX = 255


class SoftmaxCrossEntropy(Function):
    def forward(self, logits, target, ignore_index, reduction):
        xp = get_array_module(logits)
        # the softmax is kept for backward (one logits-sized array) rather than recomputed
        loss, softmax = P.softmax_cross_entropy_forward(logits, target, ignore_index,
                                                        return_softmax=True)  # (N, H, W)
        count = int((target != ignore_index).sum())
        self.saved = (logits, target, ignore_index, reduction, count, softmax)
        if reduction == "none":
            return loss
        total = loss.sum(dtype=xp.float64).astype(logits.dtype)
        # an all-ignored batch has no pixel to average: its mean loss is 0, with zero gradient
        return total / max(count, 1) if reduction == "mean" else total

    def backward(self, g):
        logits, target, ignore_index, reduction, count, softmax = self.saved
        xp = get_array_module(logits)
        if reduction == "none":
            gloss = g
        else:
            scale = g / max(count, 1) if reduction == "mean" else g
            gloss = xp.broadcast_to(scale, target.shape)
        return P.softmax_cross_entropy_backward(logits, target, ignore_index, gloss,
                                                softmax=softmax), None


def softmax_cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="mean"):
    """Softmax over the class axis, then the negative log-probability of each pixel's class.

    logits (N, C, H, W) Tensor; target (N, H, W) integer array or Tensor, values in [0, C) or
    ignore_index (those pixels count for nothing). reduction: 'mean' divides the sum by the
    number of counted pixels (0 when none is counted), 'sum' does not (the paper's training
    loss), 'none' returns the (N, H, W) map. Stable for any logits: log-sum-exp with the max
    subtracted.
    """
    op = "softmax_cross_entropy"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    t = target.data if isinstance(target, Tensor) else target
    if logits.ndim != 4:
        raise ValueError(f"{op}: logits must be 4-D (N, C, H, W), got shape {tuple(logits.shape)}")
    if logits.dtype.kind != "f":
        raise TypeError(f"{op}: logits must be floating, got dtype {logits.dtype}")
    if getattr(t, "dtype", np.dtype(float)).kind not in "iu":
        raise TypeError(f"{op}: target must be an integer array of class indices, got dtype "
                        f"{getattr(t, 'dtype', type(t).__name__)}")
    n, c, h, w = logits.shape
    if tuple(t.shape) != (n, h, w):
        raise ValueError(f"{op}: target shape {tuple(t.shape)} does not match logits "
                         f"{tuple(logits.shape)}; expected ({n}, {h}, {w})")
    bad = as_numpy((t != ignore_index) & ((t < 0) | (t >= c)))
    if bad.any():
        values = np.unique(as_numpy(t)[bad])[:5].tolist()
        raise ValueError(f"{op}: target holds class indices {values} outside [0, {c}) that are "
                         f"not ignore_index={ignore_index}")
    return SoftmaxCrossEntropy.apply(logits, t, ignore_index=ignore_index, reduction=reduction)
