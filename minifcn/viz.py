"""Pictures of labels, predictions and training curves.

Label maps are drawn in the VOC colours (``minifcn.data.voc_palette``); 255 (ignore) is the
palette's last entry, a light beige (224, 224, 192), as in the VOC ground truth itself.
Plots use ``matplotlib.figure.Figure`` directly, never pyplot: importing or calling this module
opens no window and leaves the user's matplotlib backend alone.

Writers require the folder they write into to exist (FileNotFoundError otherwise).
``graph`` (from ``viz_graph``, which needs no matplotlib) writes a Tensor's computation graph
as Graphviz DOT text.

The pictures of what a net does inside, each a function returning a Figure, live beside this
file and are re-exported here: ``viz_run`` (a run folder's confusion matrix, per-class IU and
worst images), ``viz_coords`` (the coordinate map: each layer's grid and receptive field on the
image, one pixel's view, the padding and the crops), ``viz_inside`` (every layer's feature
maps, the scores around the skips, the upsampling kernels) and ``viz_saliency`` (occlusion
sensitivity and Grad-CAM).
"""
import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .backend import as_numpy
from .data.voc import voc_palette
from .loss import IGNORE_INDEX
from .viz_graph import graph  # re-exported (viz_graph needs no matplotlib)


@functools.lru_cache(maxsize=1)
def _voc():
    pal = voc_palette(256)
    pal.flags.writeable = False
    return pal


def _out_path(path, where):
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{where}: folder {path.parent} does not exist (create it "
                                f"before writing {path.name})")
    return path


def _label_array(label, where, ndim=2):
    label = as_numpy(label)
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise TypeError(f"{where}: label must hold integer class indices, got dtype {label.dtype}")
    if label.ndim != ndim:
        raise ValueError(f"{where}: label must be {ndim}-D (H, W), got shape {label.shape}")
    return label


def _rgb_array(image, where):
    image = as_numpy(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: image must be (H, W, 3) uint8 RGB, got shape {image.shape} "
                         f"dtype {image.dtype} (use minifcn.data.from_input for a net input)")
    return image


def colorize(label, palette=None):
    """(H, W) class indices -> (H, W, 3) uint8 colours: ``palette[label]``.

    ``palette``: (N, 3) uint8, default the 256 VOC colours (255 = ignore -> (224, 224, 192)).
    A label value outside 0..N-1 raises ValueError.
    """
    label = _label_array(label, "colorize")
    palette = _voc() if palette is None else np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise ValueError(f"colorize: palette must be (N, 3) uint8, got shape {palette.shape} "
                         f"dtype {palette.dtype}")
    if label.size and (label.min() < 0 or label.max() >= len(palette)):
        raise ValueError(f"colorize: label values [{label.min()}, {label.max()}] outside the "
                         f"palette's 0..{len(palette) - 1}")
    return palette[label]


def save_label_png(path, label):
    """Write (H, W) class indices 0..255 as a palette ("P" mode) PNG with the VOC colours, the
    format of VOC's own SegmentationClass files: viewers show colours, and reading it back with
    Pillow (without converting) gives the indices exactly."""
    path = _out_path(path, "save_label_png")
    label = _label_array(label, "save_label_png")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"save_label_png: label values [{label.min()}, {label.max()}] do not "
                         "fit a palette PNG (0..255)")
    h, w = label.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(label, dtype=np.uint8).tobytes())
    im.putpalette(_voc().tobytes())
    im.save(path, format="PNG")


def overlay(image, label, alpha=0.5, palette=None):
    """(H, W, 3) uint8: ``image`` with the colours of ``label`` blended in at ``alpha``
    (0 = image only, 1 = colours only). Background (0) and ignore (255) pixels are left as the
    image, so only the objects are tinted."""
    image = _rgb_array(image, "overlay")
    label = _label_array(label, "overlay")
    if label.shape != image.shape[:2]:
        raise ValueError(f"overlay: label shape {label.shape} != image shape {image.shape[:2]}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha!r}")
    colors = colorize(label, palette).astype(np.float32)
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colors
    tint = ((label != 0) & (label != IGNORE_INDEX))[..., None]
    return np.where(tint, np.rint(blend), image).astype(np.uint8)


def save_prediction_grid(path, images, targets, preds, class_names=None):
    """Write a PNG grid, one row per example, columns image | ground truth | prediction.

    ``images``: sequence of (H, W, 3) uint8 RGB; ``targets``, ``preds``: sequences of (H, W)
    class indices (255 = ignore), VOC-coloured. With ``class_names`` a legend shows the classes
    that appear.
    """
    path = _out_path(path, "save_prediction_grid")
    save_figure(path, _prediction_figure("save_prediction_grid", images, targets, preds,
                                         class_names))


def _prediction_figure(where, images, targets, preds, class_names=None, row_labels=None):
    """The Figure of ``save_prediction_grid``; ``row_labels`` (one str a row) go left of each."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n = len(images)
    if n == 0 or len(targets) != n or len(preds) != n:
        raise ValueError(f"{where}: need as many images, targets and preds, at "
                         f"least one; got {n}, {len(targets)}, {len(preds)}")
    rows = []
    for i in range(n):
        image = _rgb_array(images[i], where)
        t, p = _label_array(targets[i], where), _label_array(preds[i], where)
        if t.shape != image.shape[:2] or p.shape != image.shape[:2]:
            raise ValueError(f"{where}: example {i}: image {image.shape[:2]}, "
                             f"target {t.shape}, pred {p.shape} must be the same size")
        rows.append((image, t, p))
    fig = Figure(figsize=(3 * 2.4, n * 2.4 + (0.6 if class_names else 0)), dpi=100)
    axes = fig.subplots(n, 3, squeeze=False)
    for i, (image, t, p) in enumerate(rows):
        for j, panel in enumerate((image, colorize(t), colorize(p))):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(("image", "ground truth", "prediction")[j])
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i])
    if class_names:
        seen = np.unique(np.concatenate([np.unique(a) for _, t, p in rows for a in (t, p)]))
        seen = [int(c) for c in seen if 0 <= c < len(class_names)]
        handles = [Patch(color=_voc()[c] / 255, label=class_names[c]) for c in seen]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6) or 1,
                   fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight() if class_names else 0, 1, 1))
    return fig


def save_figure(path, fig):
    """Write a matplotlib Figure as a PNG, atomically (``io.atomic_path``): a run folder's
    pictures, redrawn at each validation, are never seen half-written."""
    from . import io

    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def save_classification_grid(path, images, targets, preds, class_names=None):
    """Write a PNG row of images, each titled with its true class and the predicted one (red
    when wrong). ``targets``, ``preds``: class indices, as ints or (1, 1) label maps (a
    classifier's, see data/shapes_cls.py)."""
    from matplotlib.figure import Figure

    path = _out_path(path, "save_classification_grid")
    n = len(images)
    if n == 0 or len(targets) != n or len(preds) != n:
        raise ValueError(f"save_classification_grid: need as many images, targets and preds, at "
                         f"least one; got {n}, {len(targets)}, {len(preds)}")
    fig = Figure(figsize=(n * 2.4, 2.8), dpi=100)
    for i, ax in enumerate(fig.subplots(1, n, squeeze=False)[0]):
        ax.imshow(_rgb_array(images[i], "save_classification_grid"))
        t, p = (int(np.asarray(v).ravel()[0]) for v in (targets[i], preds[i]))
        name = (lambda c: class_names[c]) if class_names else str
        ax.set_title(f"{name(t)}\n-> {name(p)}", fontsize="small",
                     color="black" if t == p else "red")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(path, fig)


def _series(records, key, xkey):
    """(xs, ys) of the records that hold a finite number under ``key``."""
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r[xkey])
            ys.append(float(v))
    return xs, ys


def plot_history(path, records):
    """Write a PNG of training curves: losses (top) and scores (bottom) against iteration.

    ``records``: dicts like the trainer's metrics.jsonl rows, each with ``iteration`` (or, if
    no record has one, ``epoch``) and any of ``loss``, ``train_loss``, ... (every key ending in
    "loss" goes to the top panel) and ``mean_iu``, ``fw_iu``, ``pixel_acc``, ``mean_acc``, ...
    (keys ending in "_iu" or "_acc" go to the bottom one). Missing or non-finite values are
    skipped, so train rows and evaluation rows can be mixed.
    """
    from matplotlib.figure import Figure

    path = _out_path(path, "plot_history")
    records = list(records)
    if not records or not all(isinstance(r, dict) for r in records):
        raise ValueError("plot_history: records must be a non-empty sequence of dicts")
    xkey = "iteration" if any("iteration" in r for r in records) else "epoch"
    missing = [i for i, r in enumerate(records) if xkey not in r]
    if missing:
        raise ValueError(f"plot_history: records {missing[:5]} have no {xkey!r}")
    keys = sorted({k for r in records for k in r if k not in ("iteration", "epoch")})
    panels = (("loss", [k for k in keys if k.endswith("loss")]),
              ("score", [k for k in keys if k.endswith("_iu") or k.endswith("_acc")]))
    fig = Figure(figsize=(7, 6), dpi=100)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, (ylabel, panel_keys) in zip(axes, panels):
        drawn = False
        for k in panel_keys:
            xs, ys = _series(records, k, xkey)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=k)
                drawn = True
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, f"no {ylabel} recorded", ha="center", va="center",
                    transform=ax.transAxes)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].set_xlabel(xkey)
    fig.tight_layout()
    save_figure(path, fig)


# the run folder's figures of one validation (confusion matrix, per-class IU, worst images)
from .viz_run import confusion_figure, per_class_iu_figure, worst_images_figure  # noqa: E402,F401
# what a net computes inside: feature maps, the scores around the skips, the upsampling kernels
from .viz_inside import (feature_maps, feature_maps_figure, skip_scores,  # noqa: E402,F401
                         skip_scores_figure, upsampling_figure, upsampling_kernels)
# which input regions one pixel's prediction depends on
from .viz_saliency import (grad_cam, occlusion, occlusion_image,  # noqa: E402,F401
                           saliency_figure)
# the coordinate map: each layer's grid on the image, one pixel's view, the alignment
from .viz_coords import (alignment, alignment_figure, coords_figure,  # noqa: E402,F401
                         layer_grids, layers_figure, pixel_figure, receptive_field)

__all__ = ["colorize", "save_label_png", "overlay", "save_prediction_grid",
           "save_classification_grid", "plot_history", "save_figure", "confusion_figure",
           "per_class_iu_figure", "worst_images_figure", "graph", "feature_maps",
           "feature_maps_figure", "skip_scores", "skip_scores_figure", "upsampling_kernels",
           "upsampling_figure", "layer_grids", "layers_figure", "receptive_field",
           "pixel_figure", "alignment", "alignment_figure", "coords_figure", "occlusion",
           "occlusion_image", "grad_cam", "saliency_figure"]
