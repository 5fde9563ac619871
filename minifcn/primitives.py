"""Layer 2: the few hot loops every op stands on.

im2col / col2im (convolution and transposed convolution), max-pool forward (with argmax) and
backward, max unpooling (a scatter-add, and its gather), and per-pixel softmax cross-entropy.
Each function here is the NumPy reference; the CUDA twins live in ``kernels/*.cu`` and are
reached through ``minifcn.gpu.cuda`` when the arrays are CuPy arrays. Nothing above this
module knows which one ran.

The NumPy versions follow Chainer: a Python loop over the kH x kW kernel offsets only, each step
one strided slice of the whole batch, so there is no loop over pixels, no ``np.add.at`` and the
result is deterministic. When the kernel is a whole number of strides (FCN's upsampling: k = 2s),
the loop runs over (k/s)^2 blocks of s x s offsets instead (``_stride_blocks``). Unpooling
is the one scatter by data-dependent positions: ``np.add.at``, which adds in a fixed order.

Shapes: x is (N, C, H, W); a column array is (N, C, kH, kW, outH, outW), which reshapes for free
into the (N, C*kH*kW, outH*outW) matrix of Caffe's im2col.

Dilation (PyTorch's meaning): kernel tap i sits i*d rows below the window's first row, so a
k-tap window spans d*(k-1) + 1 rows (its "extent"). Every function takes dh, dw (default 1);
with d = 1 each line below is the undilated loop it always was.

The plain versions to read first, without the threads, workspaces and stride blocks, are in
``minifcn.simple``. This file reads top down: the sizes, then each loop, then (in marked sections
at the end) the machinery that makes them fast and the argument checks the ops share.
"""
import numbers
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import get_array_module


def extent(k, d):
    """How many input rows a k-tap window with dilation d spans: d*(k-1) + 1."""
    return d * (k - 1) + 1


def conv_out_size(size, k, s, p, ceil_mode=False, d=1):
    """Output length of a window of k taps, stride s, padding p, dilation d over ``size`` input
    elements: floor((size + 2p - d*(k-1) - 1) / s) + 1 (PyTorch's formula).

    Floor rounding is convolution's (and PyTorch's default pooling). Ceil rounding is Caffe's
    pooling: the last window may hang over the padded edge. As in PyTorch, a last window that
    would start in the right padding (or past the input) is dropped, so every window sees at least
    one real input element. (Caffe drops it only when p > 0, which leaves an empty window when
    k < s; FCN's nets, k = s = 2, are the same either way.)
    """
    k = extent(k, d)  # only the span matters for the count, not the gaps between taps
    if ceil_mode:
        out = -(-(size + 2 * p - k) // s) + 1
        if (out - 1) * s >= size + p:
            out -= 1
        return out
    return (size + 2 * p - k) // s + 1


def im2col(x, kh, kw, sh, sw, ph, pw, dh=1, dw=1, out=None):
    """Unfold the sliding windows of x (N, C, H, W) into columns (N, C, kh, kw, oh, ow).

    col[n, c, i, j, y, x] = x_padded[n, c, y*sh + i*dh, x*sw + j*dw]  (zero padding).
    out: an array of that shape to write into (the conv ops pass a workspace); CPU only.
    The plain version to read first is ``minifcn.simple.im2col_simple``.
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh = conv_out_size(h, kh, sh, ph, d=dh)
    ow = conv_out_size(w, kw, sw, pw, d=dw)
    gpu = _gpu(xp)
    if gpu is not None:
        return gpu.im2col(x, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw)
    # (a 1x1 kernel has one tap: its dilation changes nothing)
    if kh == kw == sh == sw == 1 and ph == pw == 0:
        return x.reshape(n, c, 1, 1, h, w)  # a 1x1 conv needs no copy: the image is its columns
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if (ph or pw) else x
    col = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype) if out is None else out
    blocks = _stride_blocks(kh, kw, sh, sw, dh, dw)

    def work(c0, c1):
        if blocks:
            for r, q in blocks:
                tiles = xpad[:, c0:c1, r * sh : r * sh + oh * sh, q * sw : q * sw + ow * sw]
                tiles = tiles.reshape(n, c1 - c0, oh, sh, ow, sw).transpose(0, 1, 3, 5, 2, 4)
                col[:, c0:c1, r * sh : (r + 1) * sh, q * sw : (q + 1) * sw] = tiles
            return
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dh, j * dw  # where tap (i, j) of the first window sits
                col[:, c0:c1, i, j] = xpad[:, c0:c1, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw]

    _over_channels(work, c, col.nbytes)
    return col


def col2im(col, h, w, sh, sw, ph, pw, dh=1, dw=1):
    """Fold columns (N, C, kh, kw, oh, ow) back into an image (N, C, h, w), summing overlaps.

    The adjoint of im2col: <im2col(x), col> == <x, col2im(col)>. Values that land in the padding
    are dropped. The plain version to read first is ``minifcn.simple.col2im_simple``.
    """
    xp = get_array_module(col)
    n, c, kh, kw, oh, ow = col.shape
    gpu = _gpu(xp)
    if gpu is not None:
        return gpu.col2im(col, h, w, sh, sw, ph, pw, dh, dw)
    # the padded canvas must hold every window, even ones that end past h + 2p (stride leftovers)
    hp = max(h + 2 * ph, sh * (oh - 1) + extent(kh, dh))
    wp = max(w + 2 * pw, sw * (ow - 1) + extent(kw, dw))
    img = np.zeros((n, c, hp, wp), dtype=col.dtype)
    blocks = _stride_blocks(kh, kw, sh, sw, dh, dw)

    def work(c0, c1):
        if blocks:
            # the same sums in the same order as the loop below, so the result is bit-identical
            for r, q in blocks:
                tiles = col[:, c0:c1, r * sh : (r + 1) * sh, q * sw : (q + 1) * sw]
                tiles = tiles.transpose(0, 1, 4, 2, 5, 3).reshape(n, c1 - c0, oh * sh, ow * sw)
                img[:, c0:c1, r * sh : r * sh + oh * sh, q * sw : q * sw + ow * sw] += tiles
            return
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dh, j * dw
                img[:, c0:c1, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw] += col[:, c0:c1, i, j]

    _over_channels(work, c, col.nbytes)
    return img[:, :, ph : ph + h, pw : pw + w]


def maxpool_forward(x, kh, kw, sh, sw, ph, pw, ceil_mode, dh=1, dw=1):
    """Max pooling of x (N, C, H, W) -> (y, argmax), both (N, C, oh, ow).

    argmax is the winner's tap inside its window, i*kw + j (int32), first one on ties; tap
    (i, j) reads padded pixel (y*sh + i*dh, x*sw + j*dw).
    Padding and the part of a ceil-mode window past the edge hold -inf, so they never win.
    The plain version to read first is ``minifcn.simple.max_pool2d_simple`` (values only).
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh = conv_out_size(h, kh, sh, ph, ceil_mode, dh)
    ow = conv_out_size(w, kw, sw, pw, ceil_mode, dw)
    gpu = _gpu(xp)
    if gpu is not None:
        return gpu.maxpool_forward(x, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw)
    hp = sh * (oh - 1) + extent(kh, dh)
    wp = sw * (ow - 1) + extent(kw, dw)
    if (hp, wp, ph, pw) == (h, w, 0, 0):  # no padding, no window past the edge (FCN: even sizes)
        xpad = x
    else:
        xpad = np.full((n, c, hp, wp), -np.inf, dtype=x.dtype)
        hc, wc = min(h, hp - ph), min(w, wp - pw)  # real rows/cols any window can reach
        xpad[:, :, ph : ph + hc, pw : pw + wc] = x[:, :, :hc, :wc]
    y = np.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = np.zeros((n, c, oh, ow), dtype=np.int32)

    def work(c0, c1):
        ys = y[:, c0:c1]
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dh, j * dw
                cand = xpad[:, c0:c1, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw]
                # y starts at -inf and takes cand where cand > y (strict: an earlier tap keeps
                # a tie; NaN never wins). fmax is that update in one pass: it skips NaN.
                if i == j == 0:
                    np.fmax(cand, -np.inf, out=ys)  # tap 0 against -inf: argmax stays 0
                    continue
                better = cand > ys
                np.fmax(ys, cand, out=ys)
                np.copyto(argmax[:, c0:c1], i * kw + j, where=better)

    _over_channels(work, c, xpad.nbytes)
    return y, argmax


def maxpool_backward(gy, argmax, h, w, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """Route each output gradient gy (N, C, oh, ow) to its window's winner -> gx (N, C, h, w)."""
    xp = get_array_module(gy)
    n, c, oh, ow = gy.shape
    gpu = _gpu(xp)
    if gpu is not None:
        return gpu.maxpool_backward(gy, argmax, h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    hp = max(sh * (oh - 1) + extent(kh, dh), h + 2 * ph)
    wp = max(sw * (ow - 1) + extent(kw, dw), w + 2 * pw)
    # windows that tile the canvas (kernel == stride, FCN's 2x2 pools): every canvas pixel is
    # in exactly one window, so each tap's share is written once, no zeros and no += (as a
    # product with the winner mask: the loop's numbers for finite gradients)
    tiles = (kh, kw) == (sh, sw) and (dh, dw) == (1, 1) and (hp, wp) == (oh * sh, ow * sw)
    gpad = (np.empty if tiles else np.zeros)((n, c, hp, wp), dtype=gy.dtype)

    def work(c0, c1):
        if tiles:
            blocks = gpad[:, c0:c1].reshape(n, c1 - c0, oh, kh, ow, kw)
            for i in range(kh):
                for j in range(kw):
                    np.multiply(gy[:, c0:c1], argmax[:, c0:c1] == i * kw + j,
                                out=blocks[:, :, :, i, :, j])
            return
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dh, j * dw
                gpad[:, c0:c1, y0 : y0 + sh * oh : sh, x0 : x0 + sw * ow : sw] += np.where(
                    argmax[:, c0:c1] == i * kw + j, gy[:, c0:c1], 0
                )

    _over_channels(work, c, gpad.nbytes)
    return gpad[:, :, ph : ph + h, pw : pw + w]


def maxunpool_forward(x, indices, oh, ow):
    """Max unpooling: x (N, C, h, w) -> y (N, C, oh, ow), each value added at its flat position
    indices[n, c, i, j] = row * ow + col of its own plane y[n, c], zeros elsewhere.

    Values sharing a position are summed: this is maxpool_backward applied to values (a pixel
    that won several overlapping windows gets each window's share). indices: any integer array
    of x's shape, in [0, oh*ow) (F.max_unpool2d checks). np.add.at adds in x's order, the order
    the emulator runs the CUDA twin's threads in.
    """
    xp = get_array_module(x)
    gpu = _gpu(xp)
    if gpu is not None:
        return gpu.maxunpool_forward(x, indices, oh, ow)
    n, c = x.shape[:2]
    planes = (np.arange(n * c, dtype=np.int64) * (oh * ow))[:, None]
    y = np.zeros(n * c * oh * ow, dtype=x.dtype)
    np.add.at(y, (indices.reshape(n * c, -1) + planes).ravel(), x.ravel())
    return y.reshape(n, c, oh, ow)


def maxunpool_backward(gy, indices):
    """The adjoint of maxunpool_forward, a gather: gy (N, C, oh, ow) -> gx of indices' shape,
    gx[n, c, i, j] = gy[n, c].flat[indices[n, c, i, j]]."""
    xp = get_array_module(gy)
    gpu = _gpu(xp)
    if gpu is not None:
        return gpu.maxunpool_backward(gy, indices)
    n, c, oh, ow = gy.shape
    planes, at = gy.reshape(n * c, oh * ow), indices.reshape(n * c, -1)
    gx = np.empty(at.shape, dtype=gy.dtype)

    def work(p0, p1):  # (over blocks of (N, C) planes: a gather releases the GIL)
        gx[p0:p1] = np.take_along_axis(planes[p0:p1], at[p0:p1], axis=1)

    _over_channels(work, n * c, gx.nbytes)
    return gx.reshape(indices.shape)


def softmax_cross_entropy_forward(logits, target, ignore_index, return_softmax=False):
    """Per-pixel loss of logits (N, C, H, W) against integer target (N, H, W).

    Returns loss (N, H, W) in the logits' dtype: -log softmax(logits)[target], computed with
    log-sum-exp (the max is subtracted first), and 0 where target == ignore_index.
    return_softmax=True (CPU only): also the softmax (N, C, H, W), which
    ``softmax_cross_entropy_backward(..., softmax=)`` then takes instead of recomputing it.
    """
    xp = get_array_module(logits)
    gpu = _gpu(xp)
    if gpu is not None:
        loss = gpu.softmax_cross_entropy_forward(logits, target, ignore_index)
        return (loss, None) if return_softmax else loss
    valid = target != ignore_index
    t = np.where(valid, target, 0).astype(np.intp)
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    total = e.sum(axis=1)
    lse = np.log(total) + m[:, 0]
    picked = np.take_along_axis(logits, t[:, None], axis=1)[:, 0]
    loss = np.where(valid, lse - picked, 0).astype(logits.dtype)
    if not return_softmax:
        return loss
    e /= total[:, None]  # the same e / e.sum() as the backward below computes
    return loss, e


def softmax_cross_entropy_backward(logits, target, ignore_index, gloss, softmax=None):
    """Gradient of the per-pixel loss: (softmax(logits) - onehot(target)) * gloss per pixel.

    gloss is (N, H, W), the upstream gradient of each pixel's loss (1/count for a mean, 1 for a
    sum); ignored pixels get a zero gradient. Returns (N, C, H, W). softmax: the forward's
    (return_softmax=True), so that the exponentials are not computed twice; it is not changed.
    """
    xp = get_array_module(logits)
    gpu = _gpu(xp)
    if gpu is not None:
        return gpu.softmax_cross_entropy_backward(logits, target, ignore_index, gloss)
    valid = target != ignore_index
    t = np.where(valid, target, 0).astype(np.intp)
    if softmax is None:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        softmax = e / e.sum(axis=1, keepdims=True)
    scale = np.where(valid, gloss, 0).astype(logits.dtype)[:, None]
    grad = softmax * scale
    # the target's entry is (p - 1) * scale, rounded as such
    picked = (np.take_along_axis(softmax, t[:, None], axis=1) - 1) * scale
    np.put_along_axis(grad, t[:, None], picked, axis=1)
    return grad


# =============================================================================================
# Speed: the same numbers, less time. Threads over channel blocks, one reused scratch block,
# stride blocks for kernels that are whole strides, and the hand-off to the CUDA twins. tests/test_simple.py holds them to the plain loops.
# =============================================================================================

def _gpu(xp):
    """The CUDA twins module when ``xp`` is CuPy, else None (imported lazily)."""
    if xp is np:
        return None
    from .gpu import cuda

    return cuda


# The NumPy loops below are memory-bound copies, during which NumPy releases the GIL: split
# over channel blocks they run on every core at once, as BLAS does for the GEMMs.
_THREADS = max(1, min(int(os.environ.get("MINIFCN_NUM_THREADS", os.cpu_count() or 1)), 8))
_POOL = ThreadPoolExecutor(_THREADS) if _THREADS > 1 else None
_PARALLEL_MIN_BYTES = 1 << 20  # below ~1 MB a thread hand-off costs more than it saves


def _over_channels(work, c, nbytes):
    """Run work(c0, c1) for channel blocks [c0, c1) covering range(c), in parallel when big."""
    blocks = min(_THREADS, c) if _POOL is not None and nbytes >= _PARALLEL_MIN_BYTES else 1
    if blocks == 1:
        return work(0, c)
    edges = np.linspace(0, c, blocks + 1).astype(int)
    for f in [_POOL.submit(work, a, b) for a, b in zip(edges[:-1], edges[1:])]:
        f.result()  # re-raises a worker's exception here


_workspace = {}


def workspace(name, shape, dtype):
    """A scratch array reused across calls (one per name, grown when needed).

    Fresh 100 MB arrays cost a page fault per 4 KB page on first touch, every time; the conv
    ops' column buffers live only within one op, so they can share one block. Never hand a
    workspace array to a caller that keeps it.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    buf = _workspace.get((name, dtype.str))
    if buf is None or buf.size < size:
        _workspace.pop((name, dtype.str), None)  # free the old block before the new one
        buf = _workspace[(name, dtype.str)] = np.empty(size, dtype)
    return buf[:size].reshape(shape)


def _stride_blocks(kh, kw, sh, sw, dh=1, dw=1):
    """The (r, q) block offsets of a kernel that is a whole number of strides in each direction
    (and a stride above 1, no dilation), else an empty list.

    Offset i = r*s + i' of such a kernel reads input row (y + r)*s + i': for one block r, the
    s x s offsets i' of all the windows tile a band of the input without gaps or overlap, so the
    whole block moves in one reshape. FCN's upscore (k 16, s 8) needs 4 moves instead of 256.
    A dilated kernel's taps have gaps between them, so its s consecutive offsets do not tile a
    band: d > 1 takes the general loop over taps."""
    if dh != 1 or dw != 1 or (sh == 1 and sw == 1) or kh % sh or kw % sw:
        return []
    return [(r, q) for r in range(kh // sh) for q in range(kw // sw)]


# =============================================================================================
# Argument checks shared by the ops (conv.py, pooling.py, functional.crop): one-line errors
# that name the op and the argument at fault.
# =============================================================================================


def pair(value, name, op, minimum=0):
    """(a, b) from an int or a pair of ints (NumPy's integers too), each >= minimum; a clear
    error otherwise."""
    def whole(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))

    two = (value, value) if whole(value) else value
    if not (isinstance(two, (tuple, list)) and len(two) == 2 and all(map(whole, two))):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    two = tuple(int(v) for v in two)
    if min(two) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return two


def check_4d(op, name, x):
    if x.ndim != 4:
        raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")


def check_float(op, name, x):
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a floating array, got dtype {x.dtype}")


def check_window(op, x, ksize, padding, dilation):
    """Refuse a (dilated) window that spans more than the padded input, naming the argument."""
    spans = tuple(extent(k, d) for k, d in zip(ksize, dilation))
    padded = tuple(s + 2 * q for s, q in zip(x.shape[2:], padding))
    if any(a > b for a, b in zip(spans, padded)):
        if tuple(dilation) == (1, 1):
            raise ValueError(f"{op}: kernel {tuple(ksize)} is larger than the padded input "
                             f"{padded}")
        raise ValueError(f"{op}: kernel {tuple(ksize)} at dilation {dilation} spans {spans}, "
                         f"larger than the padded input {padded}")
