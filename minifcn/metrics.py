"""Segmentation scores of the paper's section 5, from one confusion matrix.

``hist[i, j]`` counts the pixels of ground-truth class i predicted as class j (rows = truth,
columns = prediction), summed over the whole evaluation set BEFORE any division; that is how
the paper and its reference code score, and why per-image averages would differ. With
n_ij = hist[i, j], t_i = sum_j n_ij (ground-truth pixels of class i):

- pixel accuracy        sum_i n_ii / sum_i t_i
- mean accuracy         mean over classes of n_ii / t_i
- mean IU               mean over classes of n_ii / (t_i + sum_j n_ji - n_ii)
- frequency-weighted IU (sum_k t_k)^-1 sum_i t_i * IU_i

Absent classes, as in the reference implementations: a class with no ground-truth pixel has NaN
accuracy and is left out of the mean accuracy; a class absent from both ground truth and
prediction has NaN IU and is left out of the mean IU; a class predicted but absent from the
ground truth has IU 0 and DOES count (it pulls the mean down).
"""
import numpy as np

from .backend import as_numpy
from .loss import IGNORE_INDEX


def _check_n_class(n_class, where):
    if isinstance(n_class, bool) or not isinstance(n_class, (int, np.integer)) or n_class < 1:
        raise ValueError(f"{where}: n_class must be a positive integer, got {n_class!r}")
    return int(n_class)


def confusion_matrix(target, pred, n_class, ignore_index=IGNORE_INDEX):
    """(n_class, n_class) int64 counts, rows = ground truth, columns = prediction.

    ``target`` and ``pred``: integer arrays of the same shape (any shape, e.g. (H, W) or
    (B, H, W); NumPy or CuPy). Pixels whose target is ``ignore_index`` or outside
    [0, n_class) are skipped (VOC's 255 boundaries). A prediction outside [0, n_class) is a
    bug upstream and raises ValueError, as does a shape mismatch.
    """
    n_class = _check_n_class(n_class, "confusion_matrix")
    target, pred = as_numpy(target), as_numpy(pred)
    if target.shape != pred.shape:
        raise ValueError(f"confusion_matrix: target shape {target.shape} != pred shape "
                         f"{pred.shape}")
    for name, a in (("target", target), ("pred", pred)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise TypeError(f"confusion_matrix: {name} must hold integer class indices, got "
                            f"dtype {a.dtype} (take the argmax over classes first)")
    target = target.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() >= n_class):
        raise ValueError(f"confusion_matrix: pred holds values in [{pred.min()}, {pred.max()}], "
                         f"expected class indices in [0, {n_class})")
    keep = (target >= 0) & (target < n_class) & (target != ignore_index)
    counts = np.bincount(n_class * target[keep] + pred[keep], minlength=n_class**2)
    return counts.reshape(n_class, n_class).astype(np.int64)


def scores(hist):
    """Scores of a confusion matrix ``hist`` (n_class, n_class), rows = ground truth.

    Returns a dict: ``pixel_acc``, ``mean_acc``, ``mean_iu``, ``fw_iu`` (Python floats), and
    ``per_class_acc``, ``per_class_iu`` ((n_class,) float64 arrays, NaN for classes that the
    rules in the module docstring leave out).

    An empty matrix (no pixel counted at all, e.g. every target pixel ignored) raises ValueError:
    there is no score to report, and a NaN that slips into a log is worse than an error.
    """
    hist = as_numpy(hist)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"scores: hist must be a square (n_class, n_class) matrix, got shape "
                         f"{hist.shape}")
    if (hist < 0).any():
        raise ValueError("scores: hist holds negative counts")
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        raise ValueError("scores: the confusion matrix is empty (no pixel counted; were all "
                         "target pixels ignored?)")
    diag = np.diag(hist)
    gt = hist.sum(axis=1)  # t_i
    predicted = hist.sum(axis=0)  # sum_j n_ji
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> NaN is intended: absent class
        acc = diag / gt
        iu = diag / (gt + predicted - diag)
    present = gt > 0  # total > 0, so at least one class is present and nanmean sees a number
    return {
        "pixel_acc": float(diag.sum() / total),
        "mean_acc": float(np.nanmean(acc)),
        "mean_iu": float(np.nanmean(iu)),
        "fw_iu": float((gt[present] * iu[present]).sum() / total),
        "per_class_acc": acc,
        "per_class_iu": iu,
    }


class RunningScore:
    """Accumulates one confusion matrix over many batches, then scores it once.

        rs = RunningScore(n_class=21)
        for x, y in loader.epoch(0):
            rs.update(y, predict(x))   # predict: (B, 3, H, W) -> (B, H, W) class indices
        rs.scores()["mean_iu"]
    """

    def __init__(self, n_class, ignore_index=IGNORE_INDEX):
        self.n_class = _check_n_class(n_class, "RunningScore")
        self.ignore_index = ignore_index
        self.hist = np.zeros((self.n_class, self.n_class), np.int64)

    def update(self, target, pred):
        """Add the pixels of one batch (same rules as ``confusion_matrix``)."""
        self.hist += confusion_matrix(target, pred, self.n_class, self.ignore_index)

    def scores(self):
        """``scores(self.hist)``; ValueError if nothing was counted yet."""
        return scores(self.hist)

    def reset(self):
        self.hist[...] = 0


def boundary_mask(target, width=3):
    """The pixels within ``width`` pixels of a class edge of ``target`` (..., H, W): those whose
    (2 width + 1)-pixel square window holds more than one label (the window is clipped at the
    image's border). Scoring only these pixels ("trimap" evaluation, as DeepLab's) measures how
    well a net places the edges, which the whole-image mean IU, dominated by the insides of
    regions, hardly sees. An ignored label (255) counts as a label: VOC's void band is an edge.
    """
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
        raise ValueError(f"boundary_mask: width must be an int >= 0, got {width!r}")
    t = as_numpy(target)
    if t.ndim < 2:
        raise ValueError(f"boundary_mask: target must be (..., H, W), got shape {t.shape}")
    lo, hi = t.copy(), t.copy()
    for axis in (t.ndim - 2, t.ndim - 1):  # the square's min and max, one axis at a time
        n = t.shape[axis]
        for fold, out in ((np.minimum, lo), (np.maximum, hi)):
            base = out.copy()  # the result along the axes before this one
            for shift in range(1, min(width, n - 1) + 1):
                early = (slice(None),) * axis + (slice(0, n - shift),)
                late = (slice(None),) * axis + (slice(shift, n),)
                fold(out[early], base[late], out=out[early])  # the neighbour shift ahead
                fold(out[late], base[early], out=out[late])  # and shift behind
    return lo != hi
