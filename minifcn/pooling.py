"""Max pooling and max unpooling: ``F.max_pool2d`` and ``F.max_unpool2d``.

Each window's largest value goes forward, and its position (the argmax, the winning tap inside
the window) is saved, so that backward can send the window's gradient to that one input: max
pooling's backward is a scatter by index. The loops are ``minifcn.primitives.maxpool_forward``
and ``maxpool_backward`` (CUDA twins in ``kernels/pooling.cu``); the plain version to read
first is ``minifcn.simple.max_pool2d_simple``.

Unpooling (SegNet's and DeconvNet's decoders) is that same scatter applied to values: with
``return_indices=True`` the pool also hands out each winner's flat position in its input plane
(PyTorch's indices), and ``max_unpool2d`` puts each value back there, zeros elsewhere. Its
backward is a gather at the same positions (``primitives.maxunpool_forward`` / ``_backward``).

Adaptive average pooling (``F.adaptive_avg_pool2d``) fixes the output size instead of the window:
output row i averages input rows floor(i * H / oh) to ceil((i + 1) * H / oh) (PyTorch's windows,
which overlap when H / oh is not whole). An average over a rectangle is separable, so it is two
small matrix products, as bilinear resizing (``minifcn.resize.separable``); its backward, each
output's gradient spread evenly over its window, is the same products transposed. Output 1
(the image pooling of ASPP, squeeze-and-excitation) is a plain mean.
"""
import numpy as np

from . import primitives as P
from .autograd import Function, Tensor
from .backend import get_array_module
from .primitives import check_4d, check_float, check_window, pair
from .resize import separable


class MaxPool2d(Function):
    def forward(self, x, ksize, stride, padding, dilation, ceil_mode, indices=None):
        y, argmax = P.maxpool_forward(x, *ksize, *stride, *padding, ceil_mode, *dilation)
        self.saved = (argmax, x.shape[2:], ksize, stride, padding, dilation)
        if indices is not None:  # a list to put them in: apply returns one array, y
            indices.append(flat_indices(argmax, x.shape[2:], ksize, stride, padding, dilation))
        return y

    def backward(self, g):
        argmax, hw, ksize, stride, padding, dilation = self.saved
        return P.maxpool_backward(g, argmax, *hw, *ksize, *stride, *padding, *dilation)


def flat_indices(argmax, hw, ksize, stride, padding, dilation):
    """PyTorch's indices from the kernels' argmax (tap i*kw + j of window (oy, ox)): the winner's
    flat position row * W + col in its (N, C) plane of the unpadded input, int64.

    row = oy*sh - ph + i*dh: a per-window base plus a per-tap offset, so one table lookup and
    one add. A window whose real elements are all -inf keeps tap 0, which may lie in the
    padding; PyTorch names the window's first real row and column there, and so do we."""
    xp = get_array_module(argmax)
    w = hw[1]  # (the row stride of a plane)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = ksize, stride, padding, dilation
    n, c, oh, ow = argmax.shape
    top = xp.arange(oh, dtype=xp.int64) * sh - ph  # where each window's tap 0 sits
    left = xp.arange(ow, dtype=xp.int64) * sw - pw
    base = top[:, None] * w + left
    taps = ((xp.arange(kh, dtype=xp.int64) * dh * w)[:, None] + xp.arange(kw) * dw).ravel()
    first = xp.where(top < 0, top % dh, top)[:, None] * w + xp.where(left < 0, left % dw, left)
    if xp is not np:
        out = taps[argmax] + base
        return xp.where(argmax == 0, first, out) if ph or pw else out
    out = np.empty(argmax.shape, dtype=np.int64)

    # per image and channel block (threads, as the loops): each block is contiguous, so take
    # writes it in place, unbuffered with mode="clip" (a tap number never needs clipping)
    def work(c0, c1):
        for b in range(n):
            o, a = out[b, c0:c1], argmax[b, c0:c1]
            np.take(taps, a, out=o, mode="clip")
            o += base
            if ph or pw:  # (without padding, tap 0 is always a real element)
                np.copyto(o, first, where=a == 0)

    P._over_channels(work, c, out.nbytes)
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max pooling over kernel_size windows; x (N, C, H, W) -> (N, C, oh, ow).

    ceil_mode=True rounds the output size up as Caffe's pooling (FCN's nets): the last window
    may hang over the edge, and only the real elements in it compete. Padding never wins a max
    (it is -inf, not 0). Backward sends each gradient to its window's first maximum.
    dilation d: the window's taps sit d pixels apart (PyTorch's meaning and argument order, so
    ceil_mode comes after it). The plain version to read first is
    ``minifcn.simple.max_pool2d_simple``.

    return_indices=True returns ``(y, indices)`` as PyTorch: indices (N, C, oh, ow) is an int64
    Tensor (no gradient) of each winner's flat position h * W + w in its (N, C) plane of the
    unpadded input, what ``max_unpool2d`` takes. Ties go to the first maximum, as in PyTorch;
    NaN never wins here (PyTorch picks a NaN).
    """
    op = "max_pool2d"
    check_4d(op, "input", x)
    ksize = pair(kernel_size, "kernel_size", op, 1)
    stride = ksize if stride is None else pair(stride, "stride", op, 1)
    padding = pair(padding, "padding", op, 0)
    if isinstance(dilation, bool):  # ceil_mode given by position: PyTorch's order puts dilation first
        raise TypeError(f"{op}: dilation must be an int or a pair of ints, got {dilation!r} "
                        "(ceil_mode comes after dilation, as in PyTorch: pass ceil_mode=...)")
    dilation = pair(dilation, "dilation", op, 1)
    # half the kernel's taps, not of its dilated span: PyTorch's rule, dilated or not
    for k, p in zip(ksize, padding):
        if 2 * p > k:
            raise ValueError(f"{op}: padding {padding} must be at most half the kernel {ksize}")
    check_window(op, x, ksize, padding, dilation)
    found = [] if return_indices else None
    y = MaxPool2d.apply(x, ksize=ksize, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=ceil_mode, indices=found)
    return (y, Tensor(found[0])) if return_indices else y


class MaxUnpool2d(Function):
    def forward(self, x, indices, size):
        self.saved = indices
        return P.maxunpool_forward(x, indices, *size)

    def backward(self, g):
        return P.maxunpool_backward(g, self.saved)


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Max unpooling, the partial inverse of ``max_pool2d``: x (N, C, H, W) and the pool's
    indices (same shape) -> (N, C, oh, ow), each value at its index, zeros elsewhere
    (SegNet's decoder; DeconvNet's unpooling with the pools' switches).

    The output size is PyTorch's: (H - 1) * stride - 2 * padding + kernel_size, or output_size,
    given as (oh, ow) or a whole shape (N, C, oh, ow) (e.g. the pooled input's), which must lie
    strictly within stride of that default, as in PyTorch (it picks among the input sizes that
    pool to H). kernel_size, stride and padding only size the output; indices are positions in
    the output plane.

    Values sharing an index (overlapping windows, e.g. kernel 3 stride 2, whose winners
    coincide) are summed: unpooling is max pooling's backward applied to values, and its own
    backward is then exactly the gather at the indices (its adjoint). PyTorch keeps one of them
    there instead (the last on the CPU, any on CUDA): the two agree where indices are unique,
    as they are for windows that do not overlap (SegNet's 2x2 stride 2).
    """
    op = "max_unpool2d"
    check_4d(op, "input", x)
    check_float(op, "input", x)
    idx = indices.data if isinstance(indices, Tensor) else indices
    if getattr(getattr(idx, "dtype", None), "kind", None) not in ("i", "u"):
        raise TypeError(f"{op}: indices must be an integer array or Tensor (max_pool2d's with "
                        f"return_indices=True), got {getattr(idx, 'dtype', type(idx).__name__)}")
    if tuple(idx.shape) != tuple(x.shape):
        raise ValueError(f"{op}: indices shape {tuple(idx.shape)} must equal the input's "
                         f"{tuple(x.shape)}")
    ksize = pair(kernel_size, "kernel_size", op, 1)
    stride = ksize if stride is None else pair(stride, "stride", op, 1)
    padding = pair(padding, "padding", op, 0)
    size = _unpool_size(op, x.shape, ksize, stride, padding, output_size)
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= size[0] * size[1]:
            raise ValueError(f"{op}: indices must lie in [0, {size[0] * size[1]}) for an output "
                             f"of {size[0]}x{size[1]}, got values from {lo} to {hi}")
    xp = get_array_module(x.data if isinstance(x, Tensor) else x)
    return MaxUnpool2d.apply(x, indices=xp.asarray(idx), size=size)


def _unpool_size(op, shape, ksize, stride, padding, output_size):
    """(oh, ow): PyTorch's default, or output_size checked against PyTorch's range."""
    default = tuple((s - 1) * st - 2 * p + k
                    for s, k, st, p in zip(shape[2:], ksize, stride, padding))
    if output_size is None:
        if min(default) < 1:
            raise ValueError(f"{op}: the output size {default} from input {tuple(shape[2:])}, "
                             f"kernel {ksize}, stride {stride}, padding {padding} is empty")
        return default
    given = tuple(output_size)
    if not (len(given) in (2, 4) and all(isinstance(v, (int, np.integer))
                                         and not isinstance(v, bool) for v in given)):
        raise TypeError(f"{op}: output_size must be (oh, ow) or (N, C, oh, ow) ints, got "
                        f"{output_size!r}")
    given = tuple(int(v) for v in given)
    if len(given) == 4 and given[:2] != tuple(shape[:2]):
        raise ValueError(f"{op}: output_size {given} must have the input's (N, C) "
                         f"{tuple(shape[:2])}")
    given = given[-2:]
    for d, (g, f, st) in enumerate(zip(given, default, stride)):
        if not f - st < g < f + st or g < 1:
            raise ValueError(f"{op}: output_size {given}: dim {d} must be between {f - st} and "
                             f"{f + st} (exclusive) and positive, got {g}")
    return given


class AdaptiveAvgPool2d(Function):
    def forward(self, x, size):
        xp = get_array_module(x)
        h, w = x.shape[2:]
        if size == (1, 1):  # a matrix-vector product: a few times faster than x.mean
            self.saved = (x.shape, None)
            n, c = x.shape[:2]
            return (x.reshape(n * c, h * w) @ xp.full(h * w, 1 / (h * w), x.dtype)).reshape(
                n, c, 1, 1)
        ah, aw = (xp.asarray(window_matrix(s, o, x.dtype)) for s, o in zip((h, w), size))
        self.saved = (x.shape, (ah, aw))
        return separable(x, ah, aw)

    def backward(self, g):
        shape, mats = self.saved
        if mats is None:
            xp = get_array_module(g)
            return xp.broadcast_to(g * g.dtype.type(1 / (shape[2] * shape[3])), shape).copy()
        return separable(g, mats[0].T, mats[1].T)


def window_matrix(n_in, n_out, dtype):
    """(n_out, n_in): row i is 1 / its window's length over PyTorch's window
    floor(i * n_in / n_out) <= j < ceil((i + 1) * n_in / n_out), 0 elsewhere."""
    i = np.arange(n_out)
    start, end = i * n_in // n_out, -(-(i + 1) * n_in // n_out)
    j = np.arange(n_in)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed output size: x (N, C, H, W) -> (N, C, oh, ow).

    output_size: an int, or a pair whose None entries keep that input size (as PyTorch). Output
    (i, j) averages PyTorch's window, rows floor(i * H / oh) to ceil((i + 1) * H / oh) - 1 and
    the same for the columns; an output larger than the input repeats inputs. output_size 1 is
    the mean over H and W (global average pooling).
    """
    op = "adaptive_avg_pool2d"
    check_4d(op, "input", x)
    check_float(op, "input", x)
    two = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    if len(two) != 2 or not all(v is None or (isinstance(v, (int, np.integer))
                                              and not isinstance(v, bool)) for v in two):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints (or None), got "
                        f"{output_size!r}")
    size = tuple(int(s if v is None else v) for s, v in zip(x.shape[2:], two))
    if min(size) < 1:
        raise ValueError(f"{op}: output_size must be positive, got {output_size!r}")
    if min(x.shape[2:]) < 1:
        raise ValueError(f"{op}: input must have a non-empty H and W, got shape "
                         f"{tuple(x.shape)}")
    return AdaptiveAvgPool2d.apply(x, size=size)
