"""The coordinate map of a net, as pictures: where each layer's pixels sit on the input image,
what one pixel sees, and how conv1_1's padding and the crops line the coarse grids up with the
image (``python -m minifcn.models fcn8s --size 500 --coords FILE.png``).

Every number comes from ``models.geometry.trace``: pixel i of a layer has its centre at image
coordinate a * i + b (a: the layer's stride in input pixels, its "jump"; b: where its pixel 0
sits, negative inside conv1_1's padding) and sees rf x rf input pixels around it (its receptive
field). The image's pixel j has its centre at j, so the image spans -0.5 ... size - 0.5. Layers
are square, so one axis tells all. Each ``*_figure`` returns a ``matplotlib.figure.Figure``
(no pyplot) of the size its docstring states. Re-exported by ``minifcn.viz``.
"""
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .models.geometry import trace

# the layers worth a row: the ones that move or resize the grid (ReLU, dropout, scale and
# batch norm leave it as it is)
_KINDS = ("input", "conv", "pool", "upscore", "unpool", "crop", "sum", "concat", "resize")


@dataclass(frozen=True)
class LayerGrid:
    """One layer's grid on the image: ``size`` pixels a side, pixel i centred at
    ``stride * i + start`` (image coordinates), each seeing ``rf`` x ``rf`` input pixels;
    ``crop``: a crop layer's offset (else None)."""

    name: str
    kind: str
    size: int
    stride: Fraction
    start: Fraction
    rf: float
    crop: int = None

    def centre(self, i):
        """Image coordinate of pixel i's centre."""
        return self.stride * i + self.start

    def box(self, i):
        """(first, last) image pixel that pixel i of this layer sees, on one axis (inclusive;
        may lie in the padding, outside 0 ... size - 1)."""
        half = (Fraction(self.rf) - 1) / 2
        return self.centre(i) - half, self.centre(i) + half


def layer_grids(model, size):
    """[LayerGrid] of ``model`` on a size x size input, in forward order: the input, then every
    layer that moves or resizes the grid (convolutions, pools, upsampling, crops, sums)."""
    steps = trace(model, (1, _channels(model), size, size))
    return [LayerGrid(s.name, s.kind, s.shape[2], Fraction(s.jump), Fraction(s.shift),
                      s.rf if math.isinf(s.rf) else Fraction(s.rf), s.offset)
            for s in steps if s.kind in _KINDS]


def _channels(model):
    first = getattr(model, "conv1_1", None)
    return first.in_channels if first is not None else 3


def receptive_field(model, size, layer, pixel):
    """The box of input pixels that pixel (row, col) of ``layer`` sees on a size x size image:
    (top, left, bottom, right), inclusive, in image pixels (negative or >= size: in the
    padding). From ``geometry.trace``; the tests check it by perturbing single pixels."""
    grids = {g.name: g for g in layer_grids(model, size)}
    if layer not in grids:
        raise ValueError(f"receptive_field: no layer {layer!r} that moves the grid (choose from "
                         f"{', '.join(grids)})")
    g = grids[layer]
    r, c = pixel
    if not (0 <= r < g.size and 0 <= c < g.size):
        raise ValueError(f"receptive_field: pixel {pixel} outside {layer}'s {g.size}x{g.size}")
    (top, bottom), (left, right) = g.box(r), g.box(c)
    return top, left, bottom, right


def nearest_pixel(grid, point):
    """The index of ``grid``'s pixel whose centre is nearest image coordinate ``point`` (one
    axis), clipped to the grid."""
    return int(min(grid.size - 1, max(0, math.floor((point - grid.start) / grid.stride + 0.5))))


def alignment(model, size):
    """[(crop layer, offset, stride, start of the map it crops, start of the map it is aligned
    to)] of every crop: it keeps pixels offset ... of a map whose pixel 0 sits at ``start``,
    so that its pixel 0 lands on the reference's pixel 0 at ``start + offset * stride``."""
    out = []
    for g in layer_grids(model, size):
        if g.kind == "crop":
            out.append((g.name, g.crop, g.stride, g.start - g.crop * g.stride, g.start))
    return out


def _label(g):
    rf = "all" if math.isinf(g.rf) else f"{float(g.rf):g}"
    crop = f", crop {g.crop}" if g.crop is not None else ""
    return (f"{g.name}  {g.size}x{g.size}, stride {float(g.stride):g}, pixel 0 at "
            f"{float(g.start):g}, rf {rf}{crop}")


def _draw_layers(fig, grids, size):
    ax = fig.subplots()
    n = len(grids)
    lo = min(float(g.centre(0)) - float(g.stride) / 2 for g in grids)
    hi = max(float(g.centre(g.size - 1)) + float(g.stride) / 2 for g in grids)
    ax.axvspan(-0.5, size - 0.5, color="0.9", zorder=0)
    for y, g in enumerate(grids):
        first, last = float(g.centre(0)), float(g.centre(g.size - 1))
        colour = "tab:red" if g.kind in ("upscore", "crop") else "tab:blue"
        ax.plot([first, last], [y, y], color=colour, lw=1.5)
        if g.size <= 80:  # a tick per pixel centre where they can be told apart
            ax.plot([float(g.centre(i)) for i in range(g.size)], [y] * g.size, "|",
                    color=colour, markersize=5)
        if not math.isinf(g.rf):
            top, bottom = (float(v) for v in g.box((g.size - 1) // 2))
            ax.add_patch(_rect(top - 0.5, y - 0.3, bottom - top + 1, 0.6, colour))
        ax.text(hi + 0.02 * (hi - lo), y, _label(g), va="center", fontsize=6.5,
                family="monospace")
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    ax.set_yticks(range(n), [g.name for g in grids], fontsize=6.5)
    ax.set_xlabel("image coordinate (pixels; the image is the grey band)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("each layer's pixels on the image: its span (line), the receptive field of its "
                 "middle pixel (box)", fontsize=8, loc="left")


def _rect(x, y, w, h, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=colour, alpha=0.18, edgecolor=colour, lw=0.6)


def layers_figure(model, size):
    """Per layer, a row against the input: the span of its pixel centres, a tick per pixel
    (layers of at most 80 pixels a side), the receptive field of its middle pixel as a box, and
    its size, stride, where pixel 0 sits and its receptive field as text (``layer_grids``).
    Size: 13 x (0.22 a row + 1) inches at 100 dpi."""
    from matplotlib.figure import Figure

    grids = layer_grids(model, size)
    fig = Figure(figsize=(13, 0.22 * len(grids) + 1), dpi=100)
    _draw_layers(fig, grids, size)
    fig.subplots_adjust(left=0.1, right=0.62, top=1 - 0.4 / fig.get_figheight(),
                        bottom=0.55 / fig.get_figheight())
    return fig


def _draw_pixel(fig, model, size, image, pixel, layers):
    grids = {g.name: g for g in layer_grids(model, size)}
    layers = [n for n in grids if grids[n].kind == "pool"] + [list(grids)[-1]] \
        if layers is None else list(layers)
    unknown = [n for n in layers if n not in grids]
    if unknown:
        raise ValueError(f"pixel_figure: no layer {unknown[0]!r} that moves the grid (choose "
                         f"from {', '.join(grids)})")
    ax = fig.subplots()
    if image is None:
        ax.imshow(np.full((size, size), 0.85), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.add_patch(_outline(-0.5, -0.5, size, size, "black"))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
               "tab:pink", "tab:olive", "tab:cyan"]
    extent = [-0.5, size - 0.5]
    for n, name in enumerate(layers):
        g, colour = grids[name], colours[n % len(colours)]
        if math.isinf(g.rf):
            continue
        i, j = nearest_pixel(g, pixel[0]), nearest_pixel(g, pixel[1])
        (top, bottom), (left, right) = ((float(v) for v in g.box(k)) for k in (i, j))
        ax.add_patch(_outline(left - 0.5, top - 0.5, right - left + 1, bottom - top + 1, colour,
                              label=f"{name} ({i}, {j}): rf {float(g.rf):g}"))
        ax.plot(float(g.centre(j)), float(g.centre(i)), "+", color=colour, markersize=8)
        extent = [min(extent[0], left - 0.5, top - 0.5), max(extent[1], right + 0.5,
                                                              bottom + 0.5)]
    pad = 0.03 * (extent[1] - extent[0])
    ax.set_xlim(extent[0] - pad, extent[1] + pad)
    ax.set_ylim(extent[1] + pad, extent[0] - pad)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    ax.set_title(f"what the pixel nearest ({pixel[0]}, {pixel[1]}) sees in each layer "
                 "(outside the black frame: padding)", fontsize=8, loc="left")
    ax.tick_params(labelsize=7)


def _outline(x, y, w, h, colour, label=None):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=colour, lw=1.4, label=label)


def pixel_figure(model, size, pixel, image=None, layers=None):
    """Where the receptive fields of the pixels nearest the image point ``pixel`` (row, col)
    lie, one box per layer of ``layers`` (default every pool and the last layer; for an FCN
    the last is the output, whose pixel (r, c) is the image's), with each pixel's centre as a
    cross; ``image`` (size, size, 3) uint8 underneath (default grey). Boxes reach into the
    padding; the axes show all of them. Size: 9 x 6 inches at 100 dpi."""
    from matplotlib.figure import Figure

    if image is not None and tuple(np.shape(image)[:2]) != (size, size):
        raise ValueError(f"pixel_figure: image is {np.shape(image)[:2]}, expected {size}x{size}")
    fig = Figure(figsize=(9, 6), dpi=100)
    _draw_pixel(fig, model, size, image, pixel, layers)
    fig.subplots_adjust(left=0.08, right=0.68, top=0.93, bottom=0.08)
    return fig


def _alignment_rows(grids):
    """The rows of ``alignment_figure``: (label, LayerGrid, (first, end) kept by a crop or
    None) for the image, the padded first conv, every pool, score and upsampling layer, and
    every crop (the map it crops marked with what it keeps)."""
    by_map, rows = {}, []
    for g in grids:
        if g.kind == "input":
            rows.append(("image", g, None))
        elif g.kind == "conv" and not rows[1:]:
            rows.append((f"{g.name} (padded)", g, None))
        elif g.kind in ("pool", "upscore") or (g.kind == "conv" and g.name.startswith("score")):
            rows.append((g.name, g, None))
        elif g.kind == "crop":
            source = by_map.get((g.stride, g.start - g.crop * g.stride))
            if source is not None:
                row = (f"{source.name}: {g.name} keeps {g.crop} ... {g.crop + g.size - 1}",
                       source, (g.crop, g.crop + g.size))
                drawn = [k for k, r in enumerate(rows) if r[1] is source]
                if drawn:  # the map already has its row: mark the crop on it
                    rows[drawn[-1]] = row
                else:
                    rows.append(row)
            rows.append((f"{g.name} (offset {g.crop})", g, None))
        by_map[(g.stride, g.start)] = g
    return rows


def _draw_alignment(fig, grids, size, zoom):
    rows = _alignment_rows(grids)
    axes = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 1.3]})
    lo = min(float(g.centre(0)) for _, g, _ in rows)
    hi = max(float(g.centre(g.size - 1)) for _, g, _ in rows)
    zoom = (lo - 4, min(hi, lo + 4 + max(160.0, 3 * max(float(g.stride) for g in grids)))) \
        if zoom is None else zoom
    for ax, (x0, x1) in zip(axes, ((lo - 8, hi + 8), zoom)):
        ax.axvspan(-0.5, size - 0.5, color="0.9", zorder=0)
        ax.axvline(-0.5, color="black", lw=0.8)
        for y, (text, g, kept) in enumerate(rows):
            i0 = max(0, math.floor((x0 - float(g.start)) / float(g.stride)))
            i1 = min(g.size - 1, math.ceil((x1 - float(g.start)) / float(g.stride)))
            idx = np.arange(i0, i1 + 1)
            xs = float(g.stride) * idx + float(g.start)
            keep = np.ones(len(idx), bool) if kept is None else \
                (idx >= kept[0]) & (idx < kept[1])
            colour = "tab:red" if g.kind in ("upscore", "crop") else "tab:blue"
            dense = len(idx) > 250
            for mask, c in ((keep, colour), (~keep, "0.6")):
                if mask.any():
                    ax.plot(xs[mask], [y] * int(mask.sum()), "." if dense else "|", color=c,
                            markersize=2 if dense else 7)
        ax.set_xlim(x0, x1)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("image coordinate (pixel centres; grey band: the image)", fontsize=7)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)
    axes[0].set_yticks(range(len(rows)), [t for t, _, _ in rows], fontsize=6.5)
    axes[0].set_title("every pixel centre of each grid (grey: cropped away)", fontsize=8,
                      loc="left")
    axes[1].set_title(f"near the image's first pixel ({zoom[0]:g} ... {zoom[1]:g})", fontsize=8,
                      loc="left")


def alignment_figure(model, size, zoom=None):
    """How conv1_1's padding and each crop line the coarse grids up with the image: a row per
    grid (the image, the padded conv1_1, each pool, score and upsampling layer, and for every
    crop the map it crops with the pixels it drops in grey), each pixel centre a tick at its
    image coordinate; left all of it, right zoomed on the image's first pixel (``zoom``: the
    x range, default 160 pixels from the first centre). Size: 13 x (0.28 a row + 1.2) inches
    at 100 dpi."""
    from matplotlib.figure import Figure

    grids = layer_grids(model, size)
    fig = Figure(figsize=(13, 0.28 * len(_alignment_rows(grids)) + 1.2), dpi=100)
    _draw_alignment(fig, grids, size, zoom)
    fig.subplots_adjust(left=0.2, right=0.98, top=1 - 0.35 / fig.get_figheight(),
                        bottom=0.6 / fig.get_figheight(), wspace=0.04)
    return fig


def coords_figure(model, size, pixel=None, image=None):
    """The coordinate map in one picture, what ``python -m minifcn.models NET --size S --coords
    FILE.png`` writes: ``layers_figure`` (top), ``alignment_figure`` (middle) and
    ``pixel_figure`` for ``pixel`` (default the image's centre; bottom). Size: 13 inches wide,
    the three heights stacked, at 100 dpi."""
    from matplotlib.figure import Figure

    pixel = (size // 2, size // 2) if pixel is None else pixel
    grids = layer_grids(model, size)
    heights = [0.22 * len(grids) + 1, 0.28 * len(_alignment_rows(grids)) + 1.2, 6]
    fig = Figure(figsize=(13, sum(heights)), dpi=100)
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=heights)
    _draw_layers(top, grids, size)
    top.subplots_adjust(left=0.1, right=0.62, top=0.97, bottom=0.08)
    _draw_alignment(middle, grids, size, None)
    middle.subplots_adjust(left=0.2, right=0.98, top=0.95, bottom=0.1, wspace=0.04)
    _draw_pixel(bottom, model, size, image, pixel, None)
    bottom.subplots_adjust(left=0.1, right=0.55, top=0.93, bottom=0.08)
    return fig
