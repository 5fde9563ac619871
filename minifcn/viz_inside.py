"""What a net computes inside, as pictures: the feature maps of every layer on one image, the
class scores of FCN-8s before and after each skip is added, and the upsampling kernels against
the bilinear ones they start from. Each function returns a ``matplotlib.figure.Figure`` (no
pyplot) of the size its docstring states; ``viz.save_figure`` writes one. The numbers behind
each picture come from a function beside it (``feature_maps``, ``skip_scores``,
``upsampling_kernels``) that the tests check. Re-exported by ``minifcn.viz``.
"""
import math

import numpy as np

from .autograd import Tensor
from .backend import as_numpy
from .models.init import bilinear_kernel
from .models.layer_outputs import record

# the layers whose outputs ``skip_scores`` shows, in forward order, and what each one is
SCORE_LAYERS = (
    ("score_fr", "coarse scores (stride 32)"),
    ("upscore", "FCN-32s: upsampled x32"),
    ("upscore2", "x2: before the pool4 skip"),
    ("score_pool4c", "the pool4 skip (cropped)"),
    ("fuse_pool4", "after: FCN-16s's scores"),
    ("upscore16", "FCN-16s: upsampled x16"),
    ("upscore_pool4", "x2: before the pool3 skip"),
    ("score_pool3c", "the pool3 skip (cropped)"),
    ("fuse_pool3", "after: FCN-8s's scores"),
    ("upscore8", "FCN-8s: upsampled x8"),
    ("score", "cropped to the image"),
)


def _input(x, where):
    x = np.asarray(as_numpy(x.data if isinstance(x, Tensor) else x))
    x = x if x.dtype.kind == "f" else x.astype(np.float32)  # a float64 net keeps float64
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{where}: x must be one image, (3, H, W) or (1, 3, H, W) as "
                         f"data.to_input gives, got shape {x.shape}")
    return x


# ---------------------------------------------------------------- feature maps


def feature_maps(model, x, kinds=("conv", "pool", "fc", "score", "fuse", "upscore")):
    """{layer name: (C, h, w) array} of every layer whose name starts with one of ``kinds``,
    in forward order, for one image x ((3, H, W) or (1, 3, H, W), as ``data.to_input``
    gives). The ReLU after a conv is left out: its output is the conv's, clipped at 0. A
    classifier's fully connected fc6 ... fc8 give (C, 1, 1)."""
    x = _input(x, "feature_maps")
    _, kept = record(model, x)
    out = {}
    for name, a in kept.items():
        if name.startswith(tuple(kinds)):
            out[name] = a[0] if a.ndim == 4 else a[0][:, None, None]
    return out


def feature_maps_figure(maps, channels=16, columns=8):
    """A grid per layer: the first ``channels`` channels of each map of ``feature_maps``, each
    scaled to its own range (grey: 0 after ReLU, so dark means off). Size: 1.1 inch per column
    (``columns``, at most ``channels``) by 1.1 inch per row, plus 0.3 inch a layer for its
    title, at 100 dpi."""
    from matplotlib.figure import Figure

    if not maps:
        raise ValueError("feature_maps_figure: no maps (feature_maps of which layers?)")
    columns = min(columns, channels)
    rows = {name: min(channels, a.shape[0]) for name, a in maps.items()}
    n_rows = sum(math.ceil(c / columns) for c in rows.values())
    fig = Figure(figsize=(1.1 * columns, 1.1 * n_rows + 0.3 * len(maps)), dpi=100)
    grid = fig.add_gridspec(len(maps), 1, height_ratios=[
        math.ceil(c / columns) + 0.3 for c in rows.values()], hspace=0.35)
    for k, (name, a) in enumerate(maps.items()):
        n = rows[name]
        sub = grid[k].subgridspec(math.ceil(n / columns), columns, wspace=0.05, hspace=0.05)
        for c in range(n):
            ax = fig.add_subplot(sub[c // columns, c % columns])
            ax.imshow(a[c], cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_title(f"{name} {a.shape[0]}x{a.shape[1]}x{a.shape[2]}", fontsize=7,
                             loc="left")
    return fig


# ---------------------------------------------------------------- scores around the skips


def skip_scores(model, x):
    """[(layer, what it is, (n_class, h, w) scores, (a, b))] of the score layers of an FCN on
    one image, in forward order: the coarse scores, each upsampled map before a skip is added,
    the skip, the sum after, and the final scores. (a, b) places a map on the image: its pixel
    i has its centre at image coordinate a * i + b (``geometry.trace``; the same on both
    axes)."""
    from .models.geometry import trace

    x = _input(x, "skip_scores")
    names = [n for n, _ in SCORE_LAYERS if hasattr(model, n)]
    if "score_fr" not in names:
        raise ValueError(f"skip_scores: {type(model).__name__} has no score_fr: an FCN "
                         f"(FCN-32s, 16s, 8s) is needed")
    _, kept = record(model, x, names)
    steps = {s.name: s for s in trace(model, x.shape)}
    what = dict(SCORE_LAYERS)
    return [(n, what[n], kept[n][0], (steps[n].jump, steps[n].shift)) for n in names]


def skip_scores_figure(scores, image, cls, rows=None):
    """The score of class ``cls`` in each map of ``skip_scores``, drawn where it lies on the
    image (each map's pixels as a x a squares centred at a * i + b; the image's outline in
    white), one colour scale for all (red positive, blue negative). ``image``: (H, W, 3)
    uint8, drawn first. Layout: the image, then the maps in order, four to a row. Size: 2.6
    inches a panel, 4 panels wide, at 100 dpi."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    image = np.asarray(image)
    h, w = image.shape[:2]
    if not scores:
        raise ValueError("skip_scores_figure: no score maps")
    n_class = scores[0][2].shape[0]
    if not 0 <= cls < n_class:
        raise ValueError(f"skip_scores_figure: class {cls} outside 0..{n_class - 1}")
    panels = len(scores) + 1
    n_rows = math.ceil(panels / 4)
    fig = Figure(figsize=(4 * 2.6, n_rows * 2.6), dpi=100)
    axes = fig.subplots(n_rows, 4, squeeze=False).ravel()
    top = max(float(np.abs(s[2][cls]).max()) for s in scores) or 1.0
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=8)
    for ax, (name, what, s, (a, b)) in zip(axes[1:], scores):
        a, b = float(a), float(b)
        sh, sw = s.shape[1:]
        ax.imshow(s[cls], cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest",
                  extent=(b - a / 2, b + a * sw - a / 2, b + a * sh - a / 2, b - a / 2))
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="white", lw=1))
        ax.set_title(f"{name}: {what}\n{sh}x{sw}, stride {a:g}", fontsize=7)
        margin = max(a, 8)
        ax.set_xlim(-0.5 - margin, w - 0.5 + margin)
        ax.set_ylim(h - 0.5 + margin, -0.5 - margin)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"scores of class {cls} (red > 0 > blue), each map placed on the image",
                 fontsize=9)
    return fig


# ---------------------------------------------------------------- upsampling kernels


def upsampling_kernels(model):
    """{layer name: (bilinear, learned, off)} for every transposed convolution of ``model``
    (FCN-8s: upscore2, upscore_pool4, upscore8), in the order they were built: ``bilinear``
    the (k, k) kernel the layer starts from (``models.bilinear_kernel``), ``learned`` its
    (n_class, k, k) kernels now, class c upsampled into class c (weight[c, c]), and ``off``
    the largest |weight| between two different classes (0 at the start)."""
    from .nn import ConvTranspose2d

    out = {}
    for name, layer in model.children():
        if isinstance(layer, ConvTranspose2d):
            wt = as_numpy(layer.weight.data).astype(np.float64)
            c_in, c_out, k, _ = wt.shape
            n = min(c_in, c_out)
            diag = wt[np.arange(n), np.arange(n)]
            mask = ~np.eye(c_in, c_out, dtype=bool)
            off = float(np.abs(wt[mask]).max()) if mask.any() else 0.0
            out[name] = (bilinear_kernel(k).astype(np.float64), diag, off)
    if not out:
        raise ValueError(f"upsampling_kernels: {type(model).__name__} has no transposed "
                         f"convolution")
    return out


def upsampling_figure(model, classes=None):
    """For each upsampling layer a row: the bilinear kernel it starts from, the kernels it has
    now for ``classes`` (default the first 4; class c into class c), and their middle rows as
    curves against the bilinear one. A layer that did not learn (requires_grad False) says
    "fixed". Size: 2.2 inches a panel, (len(classes) + 2) panels wide, one row a layer, at
    100 dpi."""
    from matplotlib.figure import Figure

    kernels = upsampling_kernels(model)
    n_class = next(iter(kernels.values()))[1].shape[0]
    classes = list(range(min(4, n_class))) if classes is None else list(classes)
    if not classes or any(not 0 <= c < n_class for c in classes):
        raise ValueError(f"upsampling_figure: classes must be in 0..{n_class - 1}, got "
                         f"{classes}")
    cols = len(classes) + 2
    fig = Figure(figsize=(2.2 * cols, 2.2 * len(kernels)), dpi=100)
    axes = fig.subplots(len(kernels), cols, squeeze=False)
    for row, (name, (bil, learned, off)) in zip(axes, kernels.items()):
        k = bil.shape[0]
        top = max(float(bil.max()), float(learned[classes].max()))
        low = min(0.0, float(learned[classes].min()))
        learns = getattr(model, name).weight.requires_grad
        row[0].imshow(bil, vmin=low, vmax=top, cmap="viridis", interpolation="nearest")
        row[0].set_title(f"{name} k{k}\nbilinear (the start)", fontsize=7)
        for ax, c in zip(row[1:-1], classes):
            ax.imshow(learned[c], vmin=low, vmax=top, cmap="viridis", interpolation="nearest")
            change = np.abs(learned[c] - bil).max()
            ax.set_title(f"class {c} ({'learned' if learns else 'fixed'})\nmax |change| "
                         f"{change:.3f}", fontsize=7)
        for ax in row[:-1]:
            ax.set_xticks([])
            ax.set_yticks([])
        ax = row[-1]
        mid = k // 2
        ax.plot(bil[mid], "k--", lw=2, label="bilinear")
        for c in classes:
            ax.plot(learned[c][mid], lw=1, label=f"class {c}")
        ax.set_title(f"row {mid}; across classes max {off:.3f}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5)
    fig.tight_layout()
    return fig
