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


def border_mask(target, width=8):
    """The pixels of ``target`` (..., H, W) less than ``width`` pixels from the image's edge: the
    band where FCN's upsampled scores fade when conv1_1 pads too little
    (``models.padding.score_coverage``). Scoring only these pixels measures what the padding
    buys; scoring the rest (``~border_mask``) the inside. A bool array of target's shape."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 0:
        raise ValueError(f"border_mask: width must be an int >= 0, got {width!r}")
    t = as_numpy(target)
    if t.ndim < 2:
        raise ValueError(f"border_mask: target must be (..., H, W), got shape {t.shape}")
    h, w = t.shape[-2:]
    rows, cols = np.arange(h), np.arange(w)
    near = (np.minimum(rows, h - 1 - rows) < width)[:, None] | \
        (np.minimum(cols, w - 1 - cols) < width)[None, :]
    return np.broadcast_to(near, t.shape).copy()


# ---------------------------------------------------------------- panoptic quality
# Kirillov et al., "Panoptic Segmentation" (CVPR 2019), counted as cocodataset/panopticapi's
# evaluation.py counts: per class over the whole set, divided once at the end.

def _check_maps(maps, n_class, ignore_index, where):
    """The four maps as (N, H*W) int64 NumPy arrays (an (H, W) map is one image)."""
    names = ("true_class", "true_instance", "pred_class", "pred_instance")
    maps = [as_numpy(m) for m in maps]
    for name, m in zip(names, maps):
        if not np.issubdtype(m.dtype, np.integer):
            raise TypeError(f"{where}: {name} must be an integer array, got dtype {m.dtype}")
    shapes = [m.shape for m in maps]
    if len(set(shapes)) != 1 or maps[0].ndim not in (2, 3):
        raise ValueError(f"{where}: true_class, true_instance, pred_class, pred_instance must be "
                         f"(N, H, W) arrays of one shape, got {', '.join(map(str, shapes))}")
    tc, ti, pc, pi = (m.reshape(m.shape[0] if m.ndim == 3 else 1, -1).astype(np.int64)
                      for m in maps)
    bad = (tc < 0) | ((tc >= n_class) & (tc != ignore_index))
    if bad.any():
        raise ValueError(f"{where}: true_class holds {int(tc[bad][0])}; expected classes in "
                         f"[0, {n_class}) or {ignore_index} (void)")
    if pc.size and (pc.min() < 0 or pc.max() >= n_class):
        raise ValueError(f"{where}: pred_class holds values in [{pc.min()}, {pc.max()}], "
                         f"expected classes in [0, {n_class})")
    for name, m in (("true_instance", ti), ("pred_instance", pi)):
        if m.size and m.min() < 0:
            raise ValueError(f"{where}: {name} holds {m.min()}; instance ids are >= 0")
    return tc, ti, pc, pi


def _check_stuff(stuff, n_class, where):
    try:
        stuff = sorted({int(c) for c in stuff})
    except (TypeError, ValueError):
        raise TypeError(f"{where}: stuff must be a sequence of class indices, got {stuff!r}") from None
    if any(not 0 <= c < n_class for c in stuff):
        raise ValueError(f"{where}: stuff classes {stuff} must lie in [0, {n_class})")
    is_stuff = np.zeros(n_class, bool)
    is_stuff[stuff] = True
    return is_stuff


def _panoptic_counts(tc, ti, pc, pi, is_stuff, ignore_index):
    """Per class (tp, fp, fn, sum of the matched IoUs) of a batch of checked maps."""
    n_class = len(is_stuff)
    true_stuff = is_stuff[np.where(tc == ignore_index, 0, tc)]
    true_void = (tc == ignore_index) | ~true_stuff & ((ti == 0) | (ti == ignore_index))
    pred_stuff = is_stuff[pc]
    pred_void = ~pred_stuff & (pi == 0)
    ti, pi = np.where(true_stuff, 0, ti), np.where(pred_stuff, 0, pi)  # one stuff segment
    image = np.arange(tc.shape[0])[:, None]

    def segments(cls, inst, void):  # (class of each segment, its area, each pixel's segment)
        ids = int(inst.max(initial=0)) + 1
        if max(len(image), 1) * n_class * ids >= 2**62:  # the keys below would overflow
            inst = np.unique(inst, return_inverse=True)[1].reshape(inst.shape)
            ids = int(inst.max(initial=0)) + 1
        keys, seg, area = np.unique(((image * n_class + cls) * ids + inst)[~void],
                                    return_inverse=True, return_counts=True)
        where = np.full(cls.shape, -1, np.int64)
        where[~void] = seg.ravel()
        return keys // ids % n_class, area, where

    t_cls, t_area, t_seg = segments(tc, ti, true_void)
    p_cls, p_area, p_seg = segments(pc, pi, pred_void)
    n_pred = len(p_cls)
    p_void = np.bincount(p_seg[true_void & ~pred_void], minlength=n_pred)  # over true void
    both = ~true_void & ~pred_void
    pairs, inter = np.unique(t_seg[both] * n_pred + p_seg[both], return_counts=True)
    t, p = pairs // max(n_pred, 1), pairs % max(n_pred, 1)
    iou = inter / (t_area[t] + p_area[p] - inter - p_void[p])
    match = (t_cls[t] == p_cls[p]) & (iou > 0.5)  # IoU > 0.5: at most one partner each
    t_hit, p_hit = np.zeros(len(t_cls), bool), np.zeros(n_pred, bool)
    t_hit[t[match]], p_hit[p[match]] = True, True
    counted = ~p_hit & (p_void <= 0.5 * p_area)  # more than half void: not a false positive

    def count(cls, weights=None):
        return np.bincount(cls, weights, minlength=n_class)

    return (count(t_cls[t[match]]), count(p_cls[counted]), count(t_cls[~t_hit]),
            count(t_cls[t[match]], iou[match]).astype(np.float64))


def panoptic_scores(tp, fp, fn, iou):
    """PQ, SQ, RQ from per-class counts (see ``panoptic_quality``)."""
    tp, fp, fn = (np.asarray(a, np.int64) for a in (tp, fp, fn))
    iou = np.asarray(iou, np.float64)
    present = (tp + fp + fn) > 0
    if not present.any():
        raise ValueError("panoptic_quality: no segment was counted (is every pixel void?)")
    denom = np.where(present, tp + 0.5 * fp + 0.5 * fn, np.nan)
    pq, rq = iou / denom, tp / denom
    sq = np.where(present, iou / np.maximum(tp, 1), np.nan)  # 0 for a class with no match
    return {"pq": float(np.nanmean(pq)), "sq": float(np.nanmean(sq)), "rq": float(np.nanmean(rq)),
            "per_class": {"pq": pq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn,
                          "iou": iou}}


class RunningPanoptic:
    """Panoptic counts accumulated over many batches, scored once (like ``RunningScore``):

        rp = RunningPanoptic(n_class=5, stuff=(0,))
        for x, y, inst in loader.epoch(0):       # Loader(..., instances=True)
            rp.update(y, inst, pred_class, pred_instance)
        rp.scores()["pq"]
    """

    _where = "RunningPanoptic"  # the name its errors give

    def __init__(self, n_class, stuff=(0,), ignore_index=IGNORE_INDEX):
        self.n_class = _check_n_class(n_class, self._where)
        self.is_stuff = _check_stuff(stuff, self.n_class, self._where)
        self.ignore_index = ignore_index
        self.reset()

    def update(self, true_class, true_instance, pred_class, pred_instance):
        """Add the segments of one batch of (N, H, W) maps (``panoptic_quality``'s rules)."""
        maps = _check_maps((true_class, true_instance, pred_class, pred_instance), self.n_class,
                           self.ignore_index, self._where)
        for total, add in zip((self.tp, self.fp, self.fn, self.iou),
                              _panoptic_counts(*maps, self.is_stuff, self.ignore_index)):
            total += add
        return self

    def scores(self):
        """The dict of ``panoptic_quality``; ValueError if no segment was counted yet."""
        return panoptic_scores(self.tp, self.fp, self.fn, self.iou)

    def reset(self):
        self.tp, self.fp, self.fn = (np.zeros(self.n_class, np.int64) for _ in range(3))
        self.iou = np.zeros(self.n_class, np.float64)


def panoptic_quality(true_class, true_instance, pred_class, pred_instance, n_class, stuff=(0,),
                     ignore_index=IGNORE_INDEX):
    """Panoptic quality of instance predictions: a dict with ``pq``, ``sq``, ``rq`` (means over
    the classes with a TP, FP or FN) and ``per_class``: (n_class,) arrays ``pq``, ``sq``, ``rq``
    (NaN for a class with none), ``tp``, ``fp``, ``fn`` (int64) and ``iou`` (sum of matched IoUs).

    Inputs: (N, H, W) integer maps, NumPy or CuPy ((H, W) is one image). A segment is, within one
    image, the pixels of one class and one instance id; a ``stuff`` class (background by
    default) is one segment per image whatever its ids. Void, belonging to no segment: true
    pixels of class ``ignore_index``, and thing pixels of instance id 0 (none, as panopticapi's
    VOID), on the true side also of id ``ignore_index`` (the data's instance maps mark ignored
    pixels so). A true segment and a predicted one of the same class match when IoU > 0.5,
    where the predicted segment's pixels over true void count in neither its intersection nor
    the union: TP the matches (their IoUs summed), FN the true segments unmatched, FP the
    predicted ones unmatched, except those more than half over true void. Per class over the
    whole set, PQ = sum IoU / (TP + FP/2 + FN/2) = SQ x RQ, SQ = sum IoU / TP (0 without a TP),
    RQ = TP / (TP + FP/2 + FN/2).
    """
    return _OneShot(n_class, stuff, ignore_index).update(
        true_class, true_instance, pred_class, pred_instance).scores()


class _OneShot(RunningPanoptic):
    _where = "panoptic_quality"
