"""Resizing: ``F.interpolate`` (modes "bilinear" and "nearest"), PyTorch's semantics.

Each output row reads input rows chosen by one rule per axis, and the two axes do not interact,
so both modes are *separable*: a table per axis says which input rows (and columns) each output
row (column) reads, and with what weight. For an axis of ``n_in`` inputs and ``n_out`` outputs,
``scale`` = n_in / n_out when ``size`` is given, 1 / scale_factor when ``scale_factor`` is
(PyTorch's default recompute_scale_factor=None keeps the factor the caller gave):

    bilinear, align_corners=False  src = max((dest + 0.5) * scale - 0.5, 0)   (pixel centres)
    bilinear, align_corners=True   src = dest * (n_in - 1) / (n_out - 1)    (0 when n_out = 1)
                                   i0 = floor(src), i1 = min(i0 + 1, n_in - 1), l1 = src - i0:
                                   out = (1 - l1) * in[i0] + l1 * in[i1]
    nearest (PyTorch's legacy)     src = min(floor(dest * scale), n_in - 1), in float32 as
                                   PyTorch computes it

On NumPy, bilinear is two small matrix products per plane: y = A_h @ x @ A_w.T with A (n_out x
n_in) holding each output row's two weights (faster than gathering the taps although most of A
is zeros: BLAS does the work in two calls, and neither makes a copy). Its backward (the adjoint,
a scatter-add of the four weighted taps) is then A_h.T @ g @ A_w, the same two products
transposed (``separable``, which ``F.adaptive_avg_pool2d`` shares: an average over windows is
separable too). Nearest is a gather (fancy indexing) and its backward a sum over each input's
run of outputs (``np.add.reduceat``: src never decreases, so the outputs that read one input
are consecutive).

On CuPy the same tables go to the kernels of ``kernels/resize.cu``: forward one thread per output
(a gather of its taps); backward one thread per input pixel gathering from the outputs that read
it (the ``first`` / ``end`` range tables), so no atomics, no zero fill and the same sum on every
run.
"""
import math
from collections import namedtuple

import numpy as np

from . import primitives as P
from .autograd import Function
from .backend import get_array_module
from .primitives import check_4d, check_float

# one axis's table: output d reads inputs i0[d] (weight 1 - l1[d]) and i1[d] (weight l1[d]);
# input i is read by outputs first[i] <= d < end[i] (the backward kernels' ranges)
Axis = namedtuple("Axis", "i0 i1 l1 first end")


def linear_axis(n_in, n_out, scale_factor, align_corners):
    """Bilinear's table for one axis (scale_factor: the caller's, or None when size was given)."""
    d = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = d * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        scale = 1.0 / scale_factor if scale_factor is not None else n_in / n_out
        src = np.maximum(scale * (d + 0.5) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)  # (src >= 0: truncation is floor)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = np.clip(src - i0, 0.0, 1.0)
    at = np.arange(n_in)  # i0 and i1 never decrease, so input i's readers are a run
    return Axis(i0, i1, l1, np.searchsorted(i1, at, "left"), np.searchsorted(i0, at, "right"))


def nearest_axis(n_in, n_out, scale_factor):
    """Nearest's table (i1 = i0, l1 = 0), PyTorch's nearest_idx: exact for 1x and 2x, else
    floor(dest * scale) in float32."""
    d = np.arange(n_out)
    if n_out == n_in:
        src = d
    elif n_out == 2 * n_in:
        src = d >> 1
    else:
        scale = (np.float32(1.0 / scale_factor) if scale_factor is not None
                 else np.float32(n_in) / np.float32(n_out))
        src = np.minimum(np.floor(d.astype(np.float32) * scale).astype(np.int64), n_in - 1)
    at = np.arange(n_in)
    return Axis(src, src, np.zeros(n_out), np.searchsorted(src, at, "left"),
                np.searchsorted(src, at, "right"))


def axis_matrix(axis, n_in, dtype):
    """The (n_out, n_in) matrix of a bilinear axis: row d holds d's two weights."""
    d = np.arange(len(axis.i0))
    a = np.zeros((len(d), n_in), dtype)
    a[d, axis.i0] = 1 - axis.l1
    a[d, axis.i1] += axis.l1  # (i0 == i1 at the last input: the weights add up to 1)
    return a


def separable(x, ah, aw):
    """ah @ x @ aw.T for every (N, C) plane of x: (N, C, H, W), ah (OH, H), aw (OW, W) ->
    (N, C, OH, OW). The column pass is one GEMM over all rows of the batch, the row pass a
    batched product over the planes; neither needs a transposing copy. The cheaper axis goes
    first (upsampling: the smaller input; downsampling: the one shrinking more)."""
    n, c, h, w = x.shape
    oh, ow = ah.shape[0], aw.shape[0]
    planes = x.reshape(n * c, h, w)
    if h * ow * (w + oh) <= oh * w * (h + ow):  # columns first
        y = ah @ (planes.reshape(n * c * h, w) @ aw.T).reshape(n * c, h, ow)
    else:
        y = (ah @ planes).reshape(n * c * oh, w) @ aw.T
    return y.reshape(n, c, oh, ow)


def _tables(xp, axis, dtype, names):
    """The table columns the kernels read, as arrays of xp (int32 indices, dtype weights)."""
    return [xp.asarray(getattr(axis, k), dtype=dtype if k == "l1" else np.int32) for k in names]


def bilinear_forward(x, rows, cols):
    gpu = P._gpu(get_array_module(x))
    h, w = x.shape[2:]
    if gpu is None:
        return separable(x, axis_matrix(rows, h, x.dtype), axis_matrix(cols, w, x.dtype))
    xp = get_array_module(x)
    return gpu.resize_bilinear_forward(x, *_tables(xp, rows, x.dtype, "i0 i1 l1".split()),
                                       *_tables(xp, cols, x.dtype, "i0 i1 l1".split()))


def bilinear_backward(g, h, w, rows, cols):
    gpu = P._gpu(get_array_module(g))
    if gpu is None:
        return separable(g, axis_matrix(rows, h, g.dtype).T, axis_matrix(cols, w, g.dtype).T)
    xp = get_array_module(g)
    names = "i0 i1 l1 first end".split()
    ry0, ry1, ly, fy, ey = _tables(xp, rows, g.dtype, names)
    rx0, rx1, lx, fx, ex = _tables(xp, cols, g.dtype, names)
    return gpu.resize_bilinear_backward(g, h, w, ry0, ry1, ly, rx0, rx1, lx, fy, ey, fx, ex)


def nearest_forward(x, rows, cols):
    xp = get_array_module(x)
    gpu = P._gpu(xp)
    if gpu is None:
        return x[:, :, rows.i0[:, None], cols.i0]
    return gpu.resize_nearest_forward(x, *_tables(xp, rows, x.dtype, ["i0"]),
                                      *_tables(xp, cols, x.dtype, ["i0"]))


def nearest_backward(g, h, w, rows, cols):
    xp = get_array_module(g)
    gpu = P._gpu(xp)
    if gpu is not None:
        fy, ey = _tables(xp, rows, g.dtype, ["first", "end"])
        fx, ex = _tables(xp, cols, g.dtype, ["first", "end"])
        return gpu.resize_nearest_backward(g, h, w, fy, ey, fx, ex)
    # columns first, then rows: the kernel's order of additions
    return _run_sums(_run_sums(g, cols, 3), rows, 2)


def _run_sums(g, axis, dim):
    """Along dim, input i's gradient: the sum of g over its run of outputs (0 for none)."""
    read = axis.first < axis.end
    sums = np.add.reduceat(g, axis.first[read], axis=dim)
    if read.all():
        return sums
    shape = list(g.shape)
    shape[dim] = len(read)
    out = np.zeros(shape, g.dtype)
    out[(slice(None),) * dim + (read,)] = sums
    return out


class Interpolate(Function):
    def forward(self, x, mode, rows, cols):
        self.saved = (x.shape[2:], mode, rows, cols)
        return (bilinear_forward if mode == "bilinear" else nearest_forward)(x, rows, cols)

    def backward(self, g):
        (h, w), mode, rows, cols = self.saved
        return (bilinear_backward if mode == "bilinear" else nearest_backward)(g, h, w, rows, cols)


def interpolate(x, size=None, scale_factor=None, mode="bilinear", align_corners=None):
    """Resize x (N, C, H, W) to ``size`` (int or (oh, ow)) or by ``scale_factor`` (a number or
    a pair; output floor(in * scale_factor)): exactly one of the two.

    mode "bilinear" (the default here; PyTorch's is "nearest") or "nearest" (PyTorch's legacy
    nearest, not "nearest-exact"). align_corners (bilinear only; None means False, and any
    value with nearest is an error, as in PyTorch): False maps pixel centres, True maps the
    corner pixels onto each other. The coordinate rules are the module docstring's; they are
    PyTorch's, scale_factor's 1 / scale_factor mapping included.
    """
    op = "interpolate"
    check_4d(op, "input", x)
    check_float(op, "input", x)
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"{op}: mode must be 'bilinear' or 'nearest', got {mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError(f"{op}: align_corners is only for mode='bilinear', got "
                         f"align_corners={align_corners!r} with mode='nearest'")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: give exactly one of size and scale_factor, got "
                         f"{'neither' if size is None else 'both'}")
    h, w = x.shape[2:]
    if h < 1 or w < 1:
        raise ValueError(f"{op}: input must have a non-empty H and W, got shape {tuple(x.shape)}")
    if size is not None:
        out = _pair_of(op, "size", size, True)
        if min(out) < 1:
            raise ValueError(f"{op}: size must be positive, got {size!r}")
        factors = (None, None)
    else:
        factors = _pair_of(op, "scale_factor", scale_factor, False)
        if not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"{op}: scale_factor must be positive and finite, got "
                             f"{scale_factor!r}")
        out = tuple(int(math.floor(s * float(f))) for s, f in zip((h, w), factors))
        if min(out) < 1:
            raise ValueError(f"{op}: scale_factor {scale_factor!r} makes an empty output "
                             f"{out} from input {(h, w)}")
    if mode == "bilinear":
        rows, cols = (linear_axis(s, o, f, bool(align_corners))
                      for s, o, f in zip((h, w), out, factors))
    else:
        rows, cols = (nearest_axis(s, o, f) for s, o, f in zip((h, w), out, factors))
    return Interpolate.apply(x, mode=mode, rows=rows, cols=cols)


def _pair_of(op, name, value, integer):
    """(a, b) from one value or a pair: ints (integer=True) or numbers, never a bool."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    two = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(two) != 2 or not all(isinstance(v, kinds) and not isinstance(v, bool) for v in two):
        what = "an int or a pair of ints" if integer else "a number or a pair of numbers"
        raise TypeError(f"{op}: {name} must be {what}, got {value!r}")
    return tuple(int(v) if integer else float(v) for v in two)
