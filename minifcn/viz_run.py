"""The pictures a run folder redraws at each validation, beyond the curves and examples of
``viz``: where the errors go (the confusion matrix), how each class fares (its IU), and the
images the net gets most wrong. Each function returns a ``matplotlib.figure.Figure`` (no
pyplot); ``viz.save_figure`` writes one atomically. Re-exported by ``minifcn.viz``.
"""
import numpy as np

from .backend import as_numpy


def _names(class_names, n, where):
    if class_names is None:
        return [str(c) for c in range(n)]
    if len(class_names) != n:
        raise ValueError(f"{where}: {len(class_names)} class names for {n} classes")
    return list(class_names)


def row_shares(hist):
    """(n, n) confusion counts -> each row divided by its sum (the share of the true class's
    pixels given each prediction); a row with no pixel is NaN (that class never occurs)."""
    hist = as_numpy(hist).astype(np.float64)
    total = hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, hist / total, np.nan)


def confusion_figure(hist, class_names=None):
    """The confusion matrix ``hist`` (n_class, n_class) counts, rows = ground truth, columns =
    prediction, normalised per row, so the diagonal is each class's accuracy. Each cell with a
    pixel shows its share in percent (rounded); rows of absent classes stay blank."""
    from matplotlib.figure import Figure

    hist = as_numpy(hist)
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1] or (hist < 0).any():
        raise ValueError(f"confusion_figure: hist must be a square matrix of counts, got shape "
                         f"{hist.shape}")
    n = hist.shape[0]
    names = _names(class_names, n, "confusion_figure")
    share = row_shares(hist)
    side = max(4.0, 0.38 * n + 2.5)
    fig = Figure(figsize=(side + 1, side), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0, vmax=1,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    size = "small" if n <= 10 else 6
    for i, j in zip(*np.nonzero(hist)):
        ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=size,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=90, fontsize=size)
    ax.set_yticks(range(n), names, fontsize=size)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix (% of each true class)")
    fig.tight_layout()
    return fig


def per_class_iu_figure(per_class_iu, class_names=None):
    """One bar per class, its IU (0..1); a class absent from both truth and prediction (NaN)
    gets no bar and an "n/a" mark. A dashed line marks the mean IU over the others."""
    from matplotlib.figure import Figure

    iu = as_numpy(per_class_iu).astype(np.float64)
    if iu.ndim != 1 or iu.size == 0:
        raise ValueError(f"per_class_iu_figure: per_class_iu must be (n_class,), got shape "
                         f"{iu.shape}")
    names = _names(class_names, iu.size, "per_class_iu_figure")
    fig = Figure(figsize=(max(5.0, 0.35 * iu.size + 2), 3.6), dpi=100)
    ax = fig.subplots()
    ax.bar(range(iu.size), np.nan_to_num(iu, nan=0.0), color="tab:blue")
    for c in np.flatnonzero(np.isnan(iu)):
        ax.text(c, 0.01, "n/a", ha="center", va="bottom", rotation=90, fontsize="small")
    if not np.isnan(iu).all():
        mean = float(np.nanmean(iu))
        ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean IU {mean:.3f}")
        ax.legend(fontsize="small")
    ax.set_xticks(range(iu.size), names, rotation=90 if iu.size > 6 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IU")
    ax.set_title("IU per class")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def worst_images_figure(images, targets, preds, losses, class_names=None):
    """Rows image | ground truth | prediction, as ``viz.save_prediction_grid``, each labelled
    with its loss: pass the images of highest loss (``training.validate(..., worst=4)``)."""
    from .viz import _prediction_figure

    if len(losses) != len(images):
        raise ValueError(f"worst_images_figure: {len(losses)} losses for {len(images)} images")
    return _prediction_figure("worst_images_figure", images, targets, preds, class_names,
                              row_labels=[f"loss {float(v):.3f}" for v in losses])
