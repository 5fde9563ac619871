"""Denser outputs from a coarse net: filter rarefaction and shift-and-stitch (paper section 3.2).

FCN-32s scores the image on a grid of stride 32 (``score_fr``). Section 3.2 of the paper gives
two ways to score it on a finer grid with the same weights, and says they give the same result:

- **filter rarefaction** (``rarefy``): set a pool's stride to 1, so its output is s times denser,
  and spread every later filter out so it still reads the inputs it read before:
  f'_ij = f_{i/s, j/s} when s divides i and j, else 0. That is a dilated filter (tap i at i*s):
  every later conv and pool gets its dilation multiplied by s, and its padding too (a padding of
  p cells of the old grid is p*s cells of the new one). Rarefying pool5 gives score_fr at
  stride 16, then pool4 as well stride 8 (the strides of later pools stay: each already runs on
  the denser grid it was given).
- **shift-and-stitch** (``shift_and_stitch``): run the net on f x f copies of the input, shifted
  x steps right and y steps down by padding on the left and top, for every (x, y) in
  {0..f-1}^2, and interlace the f^2 coarse maps into one f times denser. A step is S/f pixels
  (S = the coarse stride, 32): the paper's recipe for an output downsampled by f, applied at the
  input of the layers that downsample by f; with f = S it is the paper's 1-pixel shifts.

Where the two maps sit. Both have stride a = S/f. The rarefied map starts where the coarse map
does (its cell f*u is the coarse cell u). The stitched one starts f - 1 cells earlier: a copy
shifted by y steps sees y steps more padding, so its first cell lies y steps before the image's
first one. So  rarefied[t] == stitched[t + f - 1]  wherever both exist, and at the original
positions  rarefied[f*u] == stitched[f*u + f - 1] == coarse[u].

When the equality is exact (tests/test_models_shift.py checks it in float64, to 1e-12):
1. The net in eval mode (dropout off: each copy would draw another mask).
2. Shift-and-stitch == rarefied (and both == coarse at the f-th cells), for any input size:
   every conv bias of the trunk (conv1_1 ... conv5_3) is <= 0. A shifted copy adds zero rows
   to the *input*; the rarefied net adds its zero padding *inside* (around the dense pool's
   output). The two agree only if the copy's extra rows stay exactly zero through every layer
   before that pool, i.e. relu(0 * w + b) = 0. minifcn's own initialisation (zero biases) has
   it; trained VGG16 weights do not, and then the two agree only far from the border. The
   pad1 that rarefy requires (>= 97 for f = 2, >= 105 for f = 4) puts every border cell where
   the two nets are built differently wholly in that zero padding; nothing else is needed.
3. Rarefied == coarse at every f-th cell with any biases: every rarefied pool whose later
   layers pad (pool4 when f = 4: conv5_x pad; not pool5, followed by fc6 without padding) must
   tile its input (even length), because where the coarse net has a half-empty last ceil-mode
   window the rarefied net reads its zero padding. Sufficient: H + 2*pad1 - 2 and the same for
   W multiples of 16 (pools 1-4 all tile).

Where the dense map meets the final upsampling. Both become full-size scores the way FCN-32s
does, with a fixed bilinear transposed convolution by their own stride a (kernel 2a, as the
reference nets' upscore layers; ``init.bilinear_kernel``) and a crop at the offset derived from
the coordinate maps (geometry.py), never typed in:
- ``rarefy`` replaces FCN-32s's ``upscore`` (k 64, s 32) by that layer, fixed (not learned), and
  re-derives the crop: offset 3 at stride 16 (pad1 = 100). At stride 8 the rarefied map's first
  cell centre (12.5 px into the image) is beyond the bilinear reach (7.5 px): the crop offset
  would be -5, and ``rarefy`` refuses, naming the smallest conv1_1 padding that covers (105).
- ``stitched_scores`` upsamples the stitched map; its f - 1 extra cells always reach as far as
  the coarse net's upscore did (offset 19 at pad1 = 100, any f).
"""
import copy

import numpy as np

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import get_array_module
from ..primitives import pair
from ..nn import Conv2d, ConvTranspose2d, Dropout, MaxPool2d
from . import geometry
from .fcn import FCN32s
from .init import bilinear_weight
from .vgg import FCNBase


def _check_model(op, model):
    if not isinstance(model, FCNBase):
        raise TypeError(f"{op}: model must be an FCN (minifcn.models), got {type(model).__name__}")


def coarse_map(model):
    """The CoordMap of ``model``'s coarse scores (score_fr) to input pixels: a = its stride
    (32 for FCN-VGG16, 16 or 8 rarefied), b = the input coordinate of cell 0."""
    step = next(s for s in geometry.trace(model) if s.name == "score_fr")
    return geometry.CoordMap(step.jump, step.shift)


def coarse_scores(model, x):
    """The net's coarse part, the image to score_fr: x (N, 3, H, W) -> (N, n_class, h, w)."""
    _check_model("coarse_scores", model)
    _, _, h = model.backbone(x)
    return model.score_fr(h)


# ---------------------------------------------------------------- filter rarefaction


def rarefy(model, layer):
    """A new FCN-32s in which pool ``layer`` has stride 1 and every later filter and pool is
    dilated by that stride (paper section 3.2's rarefied filters): its coarse scores are that
    many times denser (pool5: stride 16; then pool4 as well: stride 8). ``model`` is not changed.

    model: an FCN32s (also one already rarefied); layer: the name of one of its pools with a
    stride above 1 ('pool1' ... 'pool5'). Later convs and pools get dilation *= s and
    padding *= s, their strides unchanged; the upsampling becomes a fixed bilinear one by the new
    stride and the crop offset is re-derived (see the module docstring), so the result maps
    (N, 3, H, W) to full-size scores like any FCN. The new model's ``rarefied`` lists the pools
    rarefied so far. Raises ValueError when the dense scores would not cover the input.
    Rarefaction changes no weight of the trunk, only how it is applied: save and load the
    original model's weights (the rarefied one's upscore.weight has another shape) and rarefy
    after loading.
    """
    op = "rarefy"
    _check_model(op, model)
    if not isinstance(model, FCN32s):
        raise ValueError(f"{op}: rarefy takes an FCN32s (the paper's experiment, section 4.2); "
                         f"{type(model).__name__}'s skips fuse maps at fixed strides")
    pool = getattr(model, layer, None) if isinstance(layer, str) else None
    if not isinstance(pool, MaxPool2d):
        pools = [n for n, m in model.children() if isinstance(m, MaxPool2d)]
        raise ValueError(f"{op}: layer must name one of the model's pools {pools}, "
                         f"got {layer!r}")
    stride = pool.kernel_size if pool.stride is None else pool.stride
    sh, sw = pair(stride, "stride", "rarefy", 1)
    if sh != sw:
        raise ValueError(f"{op}: {layer} has stride {stride}; only square strides are supported")
    if sh == 1:
        raise ValueError(f"{op}: {layer} already has stride 1 (it was rarefied before)")
    order = [s.name for s in geometry.trace(model)]  # forward order: who comes after the pool
    a = coarse_map(model).a / sh  # the new coarse stride (traced before the head is replaced)
    net = copy.deepcopy(model)
    getattr(net, layer).stride = (1, 1)
    for name in order[order.index(layer) + 1: order.index("score_fr") + 1]:
        m = getattr(net, name)
        if isinstance(m, (Conv2d, MaxPool2d)):
            m.dilation = tuple(d * sh for d in pair(m.dilation, "dilation", "rarefy", 1))
            m.padding = tuple(p * sh for p in pair(m.padding, "padding", "rarefy"))
    a = int(a)  # a pool's stride divides the stride after it: 32 / 2 ... / 2
    old = net.upscore.weight
    n = old.shape[0]
    net.upscore = ConvTranspose2d(n, n, 2 * a, stride=a, bias=False)
    net.upscore.weight.data = bilinear_weight(n, 2 * a)
    net.upscore.to(device=old.device, dtype=old.dtype)
    net.upscore.weight.requires_grad = False  # a fixed interpolation, as the reference nets'
    net.rarefied = tuple(getattr(model, "rarefied", ())) + (layer,)
    try:
        net._derive_geometry()
    except ValueError:
        need = geometry.min_pad1(net)
        raise ValueError(f"{op}: at stride {a} (after rarefying {', '.join(net.rarefied)}) the "
                         f"bilinear upsampling of the dense scores does not reach the input's "
                         f"border at pad1={model.config['pad1']}; build the FCN32s with pad1 >= "
                         f"{need}, or use stitched_scores") from None
    return net


# ---------------------------------------------------------------- shift-and-stitch


def _check_f(op, model, f):
    stride = coarse_map(model).a
    if not isinstance(f, (int, np.integer)) or isinstance(f, bool) or f < 1:
        raise ValueError(f"{op}: f must be a positive int, got {f!r}")
    if stride.denominator != 1 or stride % f:
        raise ValueError(f"{op}: f must divide the coarse stride {stride}, got {f}")
    return int(stride) // int(f)


def shift_and_stitch(model, x, f):
    """Coarse scores f times denser, from f x f shifted copies of the input (paper 3.2).

    x (N, 3, H, W) Tensor or array; f divides the coarse stride S (1, 2, 4, ... 32). Copy (x, y)
    is the input padded by x*S/f zero columns on the left and y*S/f zero rows on top, run to
    score_fr; its cell u lands at dense row f*u + f-1-y (columns alike). Returns a Tensor
    (N, n_class, D_h, D_w) of stride S/f whose cell f*u + f-1 is the coarse net's cell u, with as
    many cells as every copy fills. Inference only (no gradient); the model must be in eval mode.
    """
    op = "shift_and_stitch"
    _check_model(op, model)
    step = _check_f(op, model, f)
    if model.training and any(isinstance(m, Dropout) and m.p > 0 for _, m in model.children()):
        raise ValueError(f"{op}: the model is in training mode: dropout would draw another mask "
                         "for every copy; call model.eval()")
    data = x.data if isinstance(x, Tensor) else x
    if data.ndim != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W), got shape {tuple(data.shape)}")
    xp = get_array_module(data)
    copies = {}
    with no_grad():
        for y in range(f):
            for c in range(f):
                shifted = xp.pad(data, ((0, 0), (0, 0), (y * step, 0), (c * step, 0)))
                copies[y, c] = coarse_scores(model, Tensor(shifted)).data
    # the dense map ends where the first copy runs out of cells for its rows (columns)
    rows = min(f * copies[y, 0].shape[2] + f - 1 - y for y in range(f))
    cols = min(f * copies[0, c].shape[3] + f - 1 - c for c in range(f))
    first = copies[0, 0]
    dense = xp.empty(first.shape[:2] + (rows, cols), dtype=first.dtype)
    for (y, c), out in copies.items():
        r0, c0 = f - 1 - y, f - 1 - c
        nr, nc = len(range(r0, rows, f)), len(range(c0, cols, f))
        dense[:, :, r0::f, c0::f] = out[:, :, :nr, :nc]
    return Tensor(dense)


def stitched_map(model, f):
    """The CoordMap of ``shift_and_stitch(model, x, f)`` to input pixels: stride S/f, cell 0
    f - 1 steps before the coarse net's cell 0."""
    coarse = coarse_map(model)
    a = coarse.a / f
    return geometry.CoordMap(a, coarse.b - (f - 1) * a)


def upsample_scores(dense, cmap, size):
    """Full-size scores from a dense score map: a fixed bilinear transposed convolution by its
    stride a (kernel 2a) and a crop at the offset derived from ``cmap`` (the map's CoordMap to
    input pixels). dense (N, n, h, w) Tensor, size (H, W) -> (N, n, H, W)."""
    a = cmap.a
    if a.denominator != 1 or a < 1:
        raise ValueError(f"upsample_scores: the map's stride must be a whole number, got {a}")
    a = int(a)
    up = cmap.compose(geometry.deconv_map(2 * a, a, 0))  # the upsampled map: x_in = x + b
    offset = -up.b
    n = dense.shape[1]
    weight = bilinear_weight(n, 2 * a).astype(dense.dtype)
    weight = Tensor(get_array_module(dense.data).asarray(weight))
    scores = F.conv_transpose2d(dense, weight, None, a)
    fits = all(offset + s <= have for s, have in zip(size, scores.shape[2:]))
    if offset.denominator != 1 or offset < 0 or not fits:
        raise ValueError(f"upsample_scores: the upsampled map (offset {offset}, size "
                         f"{tuple(scores.shape[2:])}) does not cover an input of {tuple(size)}")
    return F.crop(scores, int(offset), tuple(size))


def stitched_scores(model, x, f):
    """Full-size scores (N, n_class, H, W) from shift-and-stitch: ``shift_and_stitch(model, x,
    f)`` upsampled bilinearly by its stride S/f and cropped at the derived offset (the same
    final offset as the coarse net's, 19 for FCN-32s at pad1 = 100). Inference only."""
    dense = shift_and_stitch(model, x, f)
    with no_grad():
        return upsample_scores(dense, stitched_map(model, f), tuple(x.shape[2:]))


__all__ = ["rarefy", "shift_and_stitch", "stitched_scores", "coarse_scores", "coarse_map",
           "stitched_map", "upsample_scores"]
