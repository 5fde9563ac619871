"""Which parts of the image one pixel's prediction depends on: occlusion sensitivity (Zeiler and
Fergus 2014) and Grad-CAM (Selvaraju et al. 2017), for a segmentation net's score of one class
at one pixel.

- ``occlusion``: grey out (set to 0, the mean colour of a mean-subtracted input) one square
  patch at a time and record how much the pixel's score drops. Model-agnostic and exact, one
  forward pass per patch position (batched).
- ``grad_cam``: one backward pass. Take a layer's activations A (K, h, w) and the gradient of
  the score with respect to them; weight each channel by its gradient's mean over the map,
  alpha_k, and keep the positive part of sum_k alpha_k A_k: the places whose features push the
  score up.

``saliency_figure`` draws both on the image. Re-exported by ``minifcn.viz``.
"""
import numpy as np

from .autograd import Tensor, no_grad
from .backend import as_numpy
from .models.layer_outputs import record
from .viz_inside import _input as _one_image  # one image as (1, 3, H, W) float, checked


def _target(model, x, pixel, cls, where):
    """(row, col, class): the pixel checked against the output, the class defaulting to the
    one the net predicts there."""
    r, c = pixel
    was = model.training
    model.eval()
    with no_grad():
        scores = as_numpy(model(Tensor(x)).data)[0]
    model.train(was)
    h, w = scores.shape[1:]
    if not (0 <= r < h and 0 <= c < w):
        raise ValueError(f"{where}: pixel {pixel} outside the {h}x{w} output")
    if cls is None:
        cls = int(scores[:, r, c].argmax())
    if not 0 <= cls < scores.shape[0]:
        raise ValueError(f"{where}: class {cls} outside 0..{scores.shape[0] - 1}")
    return r, c, cls, float(scores[cls, r, c])


def occlusion(model, x, pixel, cls=None, patch=16, stride=8, batch=16):
    """How much the score of class ``cls`` at ``pixel`` (row, col) drops when a patch x patch
    square of the input is set to 0, for every patch position (top-left corners 0, stride,
    2 stride ..., the last one flush with the image's edge).

    x: one image (3, H, W) or (1, 3, H, W) (``data.to_input``). cls: default the class the net
    predicts at the pixel. Returns (drops (n_rows, n_cols): score without occlusion minus the
    score with the patch there, tops: the patch rows' first pixels, lefts: the columns', cls).
    The model runs in eval mode on batches of ``batch`` occluded copies."""
    x = _one_image(x, "occlusion")
    h, w = x.shape[2:]
    if not (1 <= patch <= min(h, w)) or stride < 1:
        raise ValueError(f"occlusion: patch must be in 1..{min(h, w)} and stride >= 1, got "
                         f"patch {patch}, stride {stride}")
    r, c, cls, base = _target(model, x, pixel, cls, "occlusion")
    tops = sorted(set(range(0, h - patch + 1, stride)) | {h - patch})
    lefts = sorted(set(range(0, w - patch + 1, stride)) | {w - patch})
    corners = [(t, lf) for t in tops for lf in lefts]
    out = np.empty(len(corners), np.float64)
    was = model.training
    model.eval()
    with no_grad():
        for i in range(0, len(corners), batch):
            part = corners[i:i + batch]
            xs = np.repeat(x, len(part), axis=0)
            for k, (t, lf) in enumerate(part):
                xs[k, :, t:t + patch, lf:lf + patch] = 0
            out[i:i + len(part)] = as_numpy(model(Tensor(xs)).data)[:, cls, r, c]
    model.train(was)
    return base - out.reshape(len(tops), len(lefts)), np.array(tops), np.array(lefts), cls


def occlusion_image(drops, tops, lefts, patch, shape):
    """The drops of ``occlusion`` spread back onto the image: each pixel gets the mean drop of
    the patch positions that covered it. (H, W)."""
    total, count = np.zeros(shape), np.zeros(shape)
    for i, t in enumerate(tops):
        for j, lf in enumerate(lefts):
            total[t:t + patch, lf:lf + patch] += drops[i, j]
            count[t:t + patch, lf:lf + patch] += 1
    return total / np.maximum(count, 1)


def grad_cam(model, x, pixel, cls=None, layer="pool4"):
    """Grad-CAM of the score of class ``cls`` at ``pixel`` (row, col) at ``layer`` (the name of
    one of the model's layers; an in-place ReLU's, not the conv before it, whose output the
    ReLU overwrites). The default, FCN's pool4, feeds both the pool4 skip and the deeper
    layers; at stride 16 it is finer than fc7's grid.

    Returns (cam (h, w): max(0, sum_k alpha_k A_k) on the layer's own grid, alpha (K,): the
    mean over the map of d score / d A_k, placement (a, b): pixel i of the grid has its centre
    at image coordinate a i + b (``geometry.trace``), cls). The model runs in eval mode; the
    gradient flows to a copy of the input, so no parameter's ``.grad`` is touched."""
    from .models.geometry import trace

    x = _one_image(x, "grad_cam")
    r, c, cls, _ = _target(model, x, pixel, cls, "grad_cam")
    params = model.parameters()
    flags = [p.requires_grad for p in params]
    was = model.training
    model.eval()
    try:
        for p in params:
            p.requires_grad = False
        out, kept = record(model, Tensor(x, requires_grad=True), [layer], grad=True)
        acts = kept[layer]
        acts.retain_grad()
        upstream = np.zeros(out.shape, out.data.dtype)
        upstream[0, cls, r, c] = 1
        out.backward(upstream)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag
        model.train(was)
    a = as_numpy(acts.data)[0].astype(np.float64)
    g = np.zeros_like(a) if acts.grad is None else as_numpy(acts.grad)[0].astype(np.float64)
    alpha = g.mean(axis=(1, 2))
    cam = np.maximum(np.tensordot(alpha, a, axes=1), 0)
    step = next(s for s in trace(model, x.shape) if s.name == layer)
    return cam, alpha, (step.jump, step.shift), cls


def saliency_figure(image, pixel, cls, occlusion_map=None, cam=None, class_names=None):
    """The image with ``pixel`` marked, then ``occlusion_image``'s map and/or ``grad_cam``'s
    (cam, placement) drawn over it (each scaled to its own largest value; the cam's cells placed
    where they lie on the image). Size: 3.2 inches a panel, one row, by 3.6 inches, at 100
    dpi."""
    from matplotlib.figure import Figure

    image = np.asarray(image)
    h, w = image.shape[:2]
    panels = [("image", None)]
    if occlusion_map is not None:
        panels.append(("occlusion: score drop", occlusion_map))
    if cam is not None:
        panels.append(("Grad-CAM", cam))
    if len(panels) == 1:
        raise ValueError("saliency_figure: give occlusion_map, cam or both")
    fig = Figure(figsize=(3.2 * len(panels), 3.6), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    name = class_names[cls] if class_names else f"class {cls}"
    for ax, (title, m) in zip(axes, panels):
        ax.imshow(image, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        if isinstance(m, tuple):  # Grad-CAM on its grid, placed by (a, b)
            grid, (a, b) = m
            a, b = float(a), float(b)
            gh, gw = grid.shape
            ax.imshow(grid / (grid.max() or 1), cmap="jet", alpha=0.5, vmin=0, vmax=1,
                      interpolation="nearest",
                      extent=(b - a / 2, b + a * gw - a / 2, b + a * gh - a / 2, b - a / 2))
        elif m is not None:
            top = np.abs(m).max() or 1
            ax.imshow(m, cmap="RdBu_r", alpha=0.6, vmin=-top, vmax=top)
        ax.plot(pixel[1], pixel[0], "w+", markersize=12, markeredgewidth=2)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\n{name} at {tuple(pixel)}", fontsize=8)
    fig.tight_layout()
    return fig
