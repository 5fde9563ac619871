"""The plain path: read these first.

Convolution and max pooling in a few obviously-correct NumPy lines each, forward only. The fast
path (``minifcn.primitives``, ``minifcn.conv``, reached as ``F.conv2d`` and ``F.max_pool2d``)
computes exactly the same numbers; ``tests/test_simple.py`` holds it to these.

Shapes: x is (N, C, H, W); a column array is (N, C, kh, kw, oh, ow): col[n, c, i, j, y, x] is
the input pixel under kernel tap (i, j) of the window at output pixel (y, x).

Dilation d (PyTorch's meaning): tap i of a window sits i*d pixels from the window's first one,
so the only change from the plain loop is one multiplier in the slice's start (i*d, not i).
"""
import numpy as np

from .primitives import conv_out_size, extent, pair


def _windows(xpad, kh, kw, sh, sw, oh, ow, dh=1, dw=1):
    """Columns (N, C, kh, kw, oh, ow) of an already padded x.

    Chainer's loop: over the kh*kw kernel taps only, each one strided slice of the whole
    batch, so there are kh*kw Python steps however big the image."""
    n, c = xpad.shape[:2]
    col = np.empty((n, c, kh, kw, oh, ow), dtype=xpad.dtype)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw  # where tap (i, j) of the first window sits
            col[:, :, i, j] = xpad[:, :, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw]
    return col


def im2col_simple(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """x (N, C, H, W) -> col (N, C, kh, kw, oh, ow), zero padding, floor rounding, dilation
    (dh, dw). The same contract as ``minifcn.primitives.im2col`` (less its ``out=`` buffer)."""
    oh = conv_out_size(x.shape[2], kh, sh, ph, d=dh)
    ow = conv_out_size(x.shape[3], kw, sw, pw, d=dw)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return _windows(xpad, kh, kw, sh, sw, oh, ow, dh, dw)


def col2im_simple(col, h, w, sh, sw, ph, pw, dh=1, dw=1):
    """col (N, C, kh, kw, oh, ow) -> image (N, C, h, w): the adjoint of im2col_simple.

    The same loop, scattering with += where im2col gathers, so overlapping windows sum; values
    that land in the padding are dropped. Same contract as ``minifcn.primitives.col2im``."""
    n, c, kh, kw, oh, ow = col.shape
    # a caller's (h, w) may leave the last windows ending past h + 2p: the canvas must hold them
    hp = max(h + 2 * ph, sh * (oh - 1) + extent(kh, dh))
    wp = max(w + 2 * pw, sw * (ow - 1) + extent(kw, dw))
    img = np.zeros((n, c, hp, wp), dtype=col.dtype)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            img[:, :, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw] += col[:, :, i, j]
    return img[:, :, ph : ph + h, pw : pw + w]


def conv2d_simple(x, w, b=None, stride=1, padding=0, dilation=1):
    """2-D convolution: x (N, C, H, W), w (K, C, kh, kw), b (K,) or None -> (N, K, oh, ow),
    oh = (H + 2p - d*(kh-1) - 1) // s + 1. NumPy arrays in and out, no checks, forward only.

    Caffe's convolution: unfold the windows (im2col), then one matrix product with the weights,
    y[n, k, y, x] = sum over c, i, j of w[k, c, i, j] * col[n, c, i, j, y, x].

    ``F.conv2d`` computes exactly this. Its extra machinery is all for speed or for the GPU:
    - ``conv._zero_ring``: when the padding is wider than the kernel (FCN's conv1_1 pads 100),
      the outer ring of outputs sees only zeros and equals the bias, so it is not computed;
    - ``primitives._stride_blocks``: a kernel that is a whole number of strides (upscore,
      k = 2s) is moved in s x s blocks, (k/s)^2 reshapes instead of k^2 slices (not dilated
      kernels: their taps do not tile);
    - ``primitives._over_channels``: the copies are split over channel blocks on a thread pool;
    - ``primitives.workspace``: the column buffer is reused between calls (no page faults);
    - a 1x1 kernel needs no im2col copy, and the GEMM runs per image on a (K, C*kh*kw) matrix;
    - the backward (not here) flips the kernel at stride 1 (``conv._conv_input_grad``);
    - on CuPy arrays, im2col and col2im are the CUDA kernels in ``kernels/``.
    """
    (kh, kw), (sh, sw), (ph, pw) = w.shape[2:], pair(stride, "stride", "conv2d_simple", 1), pair(padding, "padding", "conv2d_simple")
    col = im2col_simple(x, kh, kw, sh, sw, ph, pw, *pair(dilation, "dilation", "conv2d_simple", 1))
    y = np.einsum("kcij,ncijyx->nkyx", w, col, optimize=True)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def max_pool2d_simple(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling: x (N, C, H, W) floating -> (N, C, oh, ow); stride defaults to the kernel,
    dilation (PyTorch's argument order: ceil_mode comes after it) spaces the window's taps.

    ceil_mode rounds the output size up as Caffe's pooling (FCN's nets), with the fast path's
    own rule (``primitives.conv_out_size``) for a last window that would start in the padding.
    Same values as ``F.max_pool2d`` (which also returns each window's argmax, for backward).
    """
    op = "max_pool2d_simple"
    (kh, kw), (ph, pw) = pair(kernel_size, "kernel_size", op, 1), pair(padding, "padding", op)
    dh, dw = pair(dilation, "dilation", op, 1)
    sh, sw = (kh, kw) if stride is None else pair(stride, "stride", op, 1)
    n, c, h, w = x.shape
    oh = conv_out_size(h, kh, sh, ph, ceil_mode, dh)
    ow = conv_out_size(w, kw, sw, pw, ceil_mode, dw)
    # pad with -inf, never 0: a zero would win over a window of negative inputs (DeZero's slip).
    # In ceil mode the last window may hang past the padded edge: the canvas covers it too.
    hp = max(h + 2 * ph, sh * (oh - 1) + extent(kh, dh))
    wp = max(w + 2 * pw, sw * (ow - 1) + extent(kw, dw))
    xpad = np.full((n, c, hp, wp), -np.inf, dtype=x.dtype)
    xpad[:, :, ph : ph + h, pw : pw + w] = x
    return _windows(xpad, kh, kw, sh, sw, oh, ow, dh, dw).max(axis=(2, 3))
