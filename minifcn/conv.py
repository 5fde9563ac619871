"""Convolution and transposed convolution: ``F.conv2d`` and ``F.conv_transpose2d``.

Convolution is Caffe's: unfold the input's windows into columns (im2col), then one matrix
product with the weights (a GEMM). Three array-level products carry all the arithmetic:

    _conv(x, w)                 y  = W @ im2col(x)                  conv2d forward
    _conv_input_grad(gy, w)     gx = col2im(W^T @ gy)               conv2d's input gradient
    _conv_weight_grad(x, gy)    gW = gy @ im2col(x)^T               conv2d's weight gradient

conv_transpose2d is the adjoint of conv2d, so it is made of the same three pieces with the
roles swapped: its forward is conv2d's input gradient, its input gradient is conv2d's forward,
and its weight gradient is conv2d's weight gradient with input and output exchanged.

The plain version to read first is ``minifcn.simple.conv2d_simple``. This file reads top down:
the two ops, then the three products, then (in a marked section) the speed paths that give
the same numbers with less work, then the argument checks.

Dilation d (PyTorch's meaning: kernel tap i sits at i*d) makes the rarefied filters of paper
section 3.2 (``minifcn.models.rarefy``); with d = 1 every path is the undilated one.
"""
import numpy as np

from . import primitives as P
from .autograd import Function
from .backend import get_array_module
from .primitives import check_4d, check_float, check_window, pair

NO_DILATION = (1, 1)


# ---------------------------------------------------------------- conv2d

class Conv2d(Function):
    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=NO_DILATION):
        inner, (rh, rw) = _zero_ring(w.shape[2:], stride, padding, dilation)
        self.saved = (x, w, stride, inner, (rh, rw), dilation, b is not None)
        y = _conv(x, w, stride, inner, dilation)
        if rh or rw:  # the ring whose windows see only padding: zero, before the bias
            n, k, oh, ow = y.shape
            full = get_array_module(y).zeros((n, k, oh + 2 * rh, ow + 2 * rw), y.dtype)
            full[:, :, rh:rh + oh, rw:rw + ow] = y
            y = full
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, g):
        x, w, stride, inner, (rh, rw), dilation, has_bias = self.saved
        gb = g.sum(axis=(0, 2, 3)) if has_bias else None
        if rh or rw:  # the ring depends on the bias alone: x and w see the inner part
            g = g[:, :, rh:g.shape[2] - rh, rw:g.shape[3] - rw].copy()
        hw, k = x.shape[2:], w.shape[2:]
        gx = _conv_input_grad(g, w, hw, stride, inner, dilation) if self.needs_grad[0] else None
        gw = _conv_weight_grad(x, g, k, stride, inner, dilation) if self.needs_grad[1] else None
        return (gx, gw, gb) if has_bias else (gx, gw)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation, as every framework).

    x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None ->
    (N, C_out, (H + 2p - d*(kH-1) - 1) // s + 1, (W + 2p - d*(kW-1) - 1) // s + 1). Zero
    padding. dilation d: tap i of the kernel reads the input i*d pixels from the window's start
    (PyTorch's meaning; the rarefied filters of paper section 3.2).
    The plain version to read first is ``minifcn.simple.conv2d_simple``.
    """
    op = "conv2d"
    stride, padding = _check_conv_args(op, x, weight, bias, stride, padding, 1,
                                       "(C_out, C_in, kH, kW)")
    dilation = pair(dilation, "dilation", op, 1)
    check_window(op, x, weight.shape[2:], padding, dilation)
    args = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*args, stride=stride, padding=padding, dilation=dilation)


# ---------------------------------------------------------------- conv_transpose2d


class ConvTranspose2d(Function):
    def forward(self, x, w, b=None, stride=(1, 1), padding=(0, 0)):
        # w is (C_in, C_out, kh, kw): read as a conv2d weight (K=C_in, C=C_out), this op's
        # forward is exactly that conv2d's input gradient
        kh, kw = w.shape[2:]
        out_hw = tuple((size - 1) * s - 2 * p + k
                       for size, s, p, k in zip(x.shape[2:], stride, padding, (kh, kw)))
        self.saved = (x, w, stride, padding, b is not None)
        y = _conv_input_grad(x, w, out_hw, stride, padding)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, g):
        x, w, stride, padding, has_bias = self.saved
        gx = _conv(g, w, stride, padding) if self.needs_grad[0] else None
        gw = _conv_weight_grad(g, x, w.shape[2:], stride, padding) if self.needs_grad[1] else None
        gb = g.sum(axis=(0, 2, 3)) if has_bias else None
        return (gx, gw, gb) if has_bias else (gx, gw)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0):
    """Transposed convolution ("deconvolution", FCN's learnable upsampling; paper section 3.3).

    x (N, C_in, H, W), weight (C_in, C_out, kH, kW), bias (C_out,) or None ->
    (N, C_out, (H - 1) * s - 2p + kH, (W - 1) * s - 2p + kW).
    """
    op = "conv_transpose2d"
    stride, padding = _check_conv_args(op, x, weight, bias, stride, padding, 0,
                                       "(C_in, C_out, kH, kW)")
    for size, s, p, k in zip(x.shape[2:], stride, padding, weight.shape[2:]):
        if (size - 1) * s + k - 2 * p < 1:
            raise ValueError(f"{op}: padding {padding} leaves an empty output for input "
                             f"{tuple(x.shape)} and kernel {tuple(weight.shape[2:])}")
    args = (x, weight) if bias is None else (x, weight, bias)
    return ConvTranspose2d.apply(*args, stride=stride, padding=padding)


# ---------------------------------------------------------------- the three products


def _conv(x, w, stride, padding, dilation=NO_DILATION):
    """conv2d on arrays: x (N, C, H, W), w (K, C, kh, kw) -> (N, K, oh, ow)."""
    n = x.shape[0]
    k, c, kh, kw = w.shape
    oh, ow = (P.conv_out_size(size, k, s, p, d=d) for size, k, s, p, d in
              zip(x.shape[2:], (kh, kw), stride, padding, dilation))
    wm = w.reshape(k, c * kh * kw)
    rows = _row_block(n, c * kh * kw, oh, ow, x.dtype.itemsize)
    if rows >= oh or get_array_module(x) is not np:
        col = _im2col_scratch(x, kh, kw, stride, padding, oh, ow, dilation)  # (N, C, kh, kw, oh, ow)
        y = wm @ col.reshape(n, c * kh * kw, oh * ow)  # one GEMM per image
        return y.reshape(n, k, oh, ow)
    # blocks of output rows: each reads its band of the padded input (the same sums per pixel)
    (sh, _), (ph, pw), (dh, _) = stride, padding, dilation
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.empty((n, k, oh, ow), x.dtype)
    for r0 in range(0, oh, rows):
        r1 = min(oh, r0 + rows)
        band = xpad[:, :, r0 * sh : (r1 - 1) * sh + P.extent(kh, dh)]
        col = _im2col_scratch(band, kh, kw, stride, (0, 0), r1 - r0, ow, dilation)
        y[:, :, r0:r1] = (wm @ col.reshape(n, c * kh * kw, -1)).reshape(n, k, r1 - r0, ow)
    return y


def _conv_input_grad(gy, w, hw, stride, padding, dilation=NO_DILATION):
    """The adjoint of _conv in x: gy (N, K, oh, ow), w (K, C, kh, kw) -> gx (N, C, *hw)."""
    n, k, oh, ow = gy.shape
    _, c, kh, kw = w.shape
    (dh, dw) = dilation
    # the spans d*(k-1) of the taps: k-1 without dilation
    span_h, span_w = dh * (kh - 1), dw * (kw - 1)
    flip = stride == (1, 1) and padding[0] <= span_h and padding[1] <= span_w
    pad_t = (span_h - padding[0], span_w - padding[1])
    # the general path's columns come in one piece: where they would pass COL_BYTES, the
    # flipped conv (in row blocks) is taken whatever the channel counts
    big = n * c * kh * kw * oh * ow * gy.dtype.itemsize > COL_BYTES and get_array_module(gy) is np
    if flip and (big or k * hw[0] * hw[1] <= c * oh * ow):
        # at stride 1 the adjoint is itself a convolution: gy, padded by k-1-p, with the kernel
        # flipped and its channel axes swapped. Its one GEMM has a short output (C rows), where
        # the general path writes a C*kh*kw-row column matrix and folds it back (col2im). But its
        # columns are K*kh*kw x H*W against the general path's C*kh*kw x oh*ow: when those are
        # bigger (more output than input channels, or fc6's 7x7 window over a 2x2 output, 128x)
        # the general path wins (measured in benchmarks/ops.py). Dilated, the flipped kernel
        # keeps its dilation and gy is padded by d*(k-1) - p: tap i' = k-1-i of the flipped
        # kernel meets the same gy pixel as tap i did (the condition p <= d*(k-1) above).
        flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).copy()
        return _conv(gy, flipped, (1, 1), pad_t, dilation)
    wt = w.reshape(k, c * kh * kw).T
    gy = gy.reshape(n, k, oh * ow)
    if get_array_module(gy) is np:  # write the big product into the reused scratch block
        gcol = np.matmul(wt, gy, out=P.workspace("col", (n, c * kh * kw, oh * ow), gy.dtype))
    else:
        gcol = wt @ gy
    return P.col2im(gcol.reshape(n, c, kh, kw, oh, ow), *hw, *stride, *padding, *dilation)


def _conv_weight_grad(x, gy, ksize, stride, padding, dilation=NO_DILATION):
    """The adjoint of _conv in w: x (N, C, H, W), gy (N, K, oh, ow) -> gW (K, C, kh, kw).

    On the CPU at stride 1 the columns are not built: _conv_weight_grad_shifted sums one GEMM
    per kernel tap over shifted views of the padded input (the same sums in another order)."""
    if _shifted(x, ksize, stride, padding, dilation):
        return _conv_weight_grad_shifted(x, gy, *ksize, *padding, *dilation)
    n, k, oh, ow = gy.shape
    col = _im2col_scratch(x, *ksize, stride, padding, oh, ow, dilation).reshape(n, -1, oh * ow)
    gy = gy.reshape(n, k, oh * ow)
    # One GEMM per image, the transposed operand read in place (BLAS's trans flag), and the
    # per-image products summed (far cheaper than the transposed copy tensordot makes of col).
    # Which way round matters: OpenBLAS is slow on gy @ col^T when K is small and the pixel
    # count huge (conv1_2: ~14x), so there the product is turned (col @ gy^T, then transposed).
    if oh * ow >= col.shape[1]:
        gw = (col @ gy.transpose(0, 2, 1)).sum(axis=0).T
    else:  # few pixels, big weight (fc6, fc7): as is
        gw = (gy @ col.transpose(0, 2, 1)).sum(axis=0)
    return gw.reshape(k, x.shape[1], *ksize)


# ---------------------------------------------------------------- speed paths
# The same numbers with less work: conv1_1's zero ring (FCN's padding of 100), row blocks
# that bound the column matrix, one reused scratch block, and the stride-1 weight
# gradient without columns. The tests hold every path to minifcn.simple's plain conv.


def _zero_ring(ksize, stride, padding, dilation=NO_DILATION):
    """(inner padding, ring) of a conv2d whose zero padding is wider than the kernel.

    FCN pads conv1_1 by 100 (69-124 on our small images): every output pixel more than k-1
    pixels into the padding has a window of zeros only, so it is the bias alone. Computing
    with padding k-1 gives exactly the other pixels, and the zero ring of width p-(k-1) around
    them is put back by hand: on a 96x96 image padded by 69 the GEMM, im2col and the weight
    gradient shrink to 98x98 of the 234x234 output (about a sixth). Stride 1 only (every
    conv2d of VGG16; with larger strides the ring would not line up with the stride). Dilated,
    a window spans d*(k-1) + 1 pixels, so the inner padding is d*(k-1): the windows dropped
    still see padding only (their whole span does), and the ones kept are computed as before."""
    if stride != (1, 1):
        return padding, (0, 0)
    inner = tuple(min(p, d * (k - 1)) for p, k, d in zip(padding, ksize, dilation))
    return inner, tuple(p - q for p, q in zip(padding, inner))


def _im2col_scratch(x, kh, kw, stride, padding, oh, ow, dilation=NO_DILATION):
    """im2col into the reused scratch block on the CPU (a fresh array on the GPU, where CuPy's
    memory pool already reuses blocks). The columns live only within the calling op."""
    out = None
    if get_array_module(x) is np:
        out = P.workspace("col", (x.shape[0], x.shape[1], kh, kw, oh, ow), x.dtype)
    return P.im2col(x, kh, kw, *stride, *padding, *dilation, out=out)


def _shifted(x, ksize, stride, padding, dilation):
    """Whether the CPU's weight gradient without columns applies (``_conv_weight_grad_shifted``):
    stride 1 only (other strides do not line the taps up), where ``P.shifted_pays``."""
    return (stride == (1, 1) and get_array_module(x) is np
            and _shifted_pays(x.shape, *ksize, *padding, *dilation))


# the most bytes of im2col columns built at once on the CPU: a bigger conv is computed in
# blocks of output rows (VGG16's conv1_2 at 224 x 224, padding 100, would need 410 MB at once)
COL_BYTES = 64 << 20


def _row_block(n, rows_of_col, oh, ow, itemsize):
    """Output rows per block so that the block's columns stay within COL_BYTES (>= 1)."""
    return max(1, min(oh, COL_BYTES // max(1, n * rows_of_col * ow * itemsize)))


# ---- the stride-1 weight gradient without a column matrix (CPU) -----------------------------
#
# im2col copies every input pixel kh*kw times. At stride 1 the weight gradient needs no columns:
# lay the padded input out channels first and flatten it, (C, N*Hp*Wp). Then tap (i, j) of
# every window is the same flat array shifted by i*dh*Wp + j*dw, and gW[:, :, i, j] is one GEMM,
# gy_wide @ x_flat[:, shift : shift + T]^T, read in place (BLAS takes the row stride). gy is laid
# out on the padded grid ("wide": Wp columns per row, zeros in the last dw*(kw-1) of them and in
# the last rows of each image). Each GEMM sums over pixels (long) into a small K x C result, and
# runs block by block of pixels so that a block of gy stays in cache over its kh*kw taps. The
# same sums as gy @ im2col(x)^T in another order (float32: last bits). The forward keeps im2col:
# there a per-tap GEMM sums over C channels only, too little work per call at small widths.

_BLOCK = 1 << 20  # floats of one block of gy and x (4 MB): few BLAS calls, each with enough work


def _channels_first_padded(x, ph, pw, name):
    """x (N, C, H, W) -> (C, N*Hp*Wp): zero-padded, channels first, in workspace ``name``."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    buf = P.workspace(name, (c, n, hp, wp), x.dtype)
    buf[:, :, :ph], buf[:, :, ph + h:] = 0, 0  # only the padding needs zeros
    buf[:, :, ph:ph + h, :pw], buf[:, :, ph:ph + h, pw + w:] = 0, 0
    buf[:, :, ph:ph + h, pw:pw + w] = x.transpose(1, 0, 2, 3)
    return buf.reshape(c, -1)


def _shifted_pays(shape, kh, kw, ph, pw, dh=1, dw=1):
    """Whether ``_conv_weight_grad_shifted`` suits a stride-1 conv of an input of ``shape``: a
    1x1 kernel needs no columns anyway, and the wide grid's junk columns must stay a minority
    (fc6's 7x7 window over a 14x14 map keeps 8 of 14 in each row: 49 taps of junk, 3x the work)."""
    hp, wp = shape[2] + 2 * ph, shape[3] + 2 * pw
    oh, ow = hp - dh * (kh - 1), wp - dw * (kw - 1)
    return kh * kw > 1 and 2 * oh * ow >= hp * wp


def _shifts(kh, kw, dh, dw, wp):
    return [(i, j, i * dh * wp + j * dw) for i in range(kh) for j in range(kw)]


def _conv_weight_grad_shifted(x, gy, kh, kw, ph, pw, dh=1, dw=1):
    """The weight gradient of a stride-1 conv2d: x (N, C, H, W), gy (N, K, oh, ow) ->
    (K, C, kh, kw), one GEMM per tap, gy_wide @ x_flat[:, shift : shift + T]^T, no columns."""
    n, c, h, wd = x.shape
    k, oh, ow = gy.shape[1:]
    hp, wp = h + 2 * ph, wd + 2 * pw
    flat = _channels_first_padded(x, ph, pw, "shift_in")
    # gy on the same wide grid, zeros in the junk positions so that they add nothing
    gwide = P.workspace("shift_out", (k, n, hp, wp), gy.dtype)
    gwide[:, :, oh:], gwide[:, :, :oh, ow:] = 0, 0
    gwide[:, :, :oh, :ow] = gy.transpose(1, 0, 2, 3)
    gflat = gwide.reshape(k, -1)
    shifts = _shifts(kh, kw, dh, dw, wp)
    t = flat.shape[1] - shifts[-1][2]
    gw = np.zeros((k, c, kh, kw), gy.dtype)  # summed in place: one tap's product at a time
    step = max(4096, _BLOCK // (k + c))
    for s in range(0, t, step):
        e = min(t, s + step)
        g = gflat[:, s:e]
        for i, j, off in shifts:
            gw[:, :, i, j] += g @ flat[:, s + off : e + off].T
    return gw


# ---------------------------------------------------------------- argument checks


def _check_conv_args(op, x, weight, bias, stride, padding, in_axis, layout):
    """Shared checks of conv2d and conv_transpose2d; returns (stride, padding) as pairs.
    in_axis: the weight axis that must match the input's channels (the other one is C_out)."""
    stride = pair(stride, "stride", op, 1)
    padding = pair(padding, "padding", op, 0)
    check_4d(op, "input", x)
    check_4d(op, "weight", weight)
    check_float(op, "input", x)
    if weight.shape[in_axis] != x.shape[1]:
        raise ValueError(f"{op}: weight {tuple(weight.shape)} {layout} expects "
                         f"{weight.shape[in_axis]} input channels, input {tuple(x.shape)} has "
                         f"{x.shape[1]}")
    c_out = weight.shape[1 - in_axis]
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"{op}: bias must have shape ({c_out},), got {tuple(bias.shape)}")
    return stride, padding
