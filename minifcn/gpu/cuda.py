"""The CUDA twins of ``minifcn.primitives``: same names, same arguments, same results.

``minifcn.primitives`` calls these when its arrays are CuPy arrays. Each function checks its
inputs, allocates the output with the arrays' own module (``xp``), and hands the arrays and the
geometry to ``minifcn.gpu.launch.launch``, which runs the kernel from ``kernels/*.cu``:

    CuPy arrays  -> on the GPU (cupy.RawModule)
    NumPy arrays -> on the CPU emulator (the same .cu files compiled by g++)

So ``minifcn.gpu.cuda.im2col(numpy_array, ...)`` runs the GPU code path on the CPU, output
allocation and argument passing included; only the final CuPy call is not exercised. That is
how tests/test_kernels.py checks the kernels without a GPU.

The matrix products of convolution stay in CuPy (``@``, i.e. cuBLAS); only the loops that
NumPy runs as strided slices here get a hand-written kernel.
"""
import numpy as np

from ..backend import get_array_module
from .launch import launch


def _floating(op, name, a):
    """a as a C-contiguous float32/float64 array of its own module, or a TypeError."""
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"minifcn.gpu.cuda.{op}: {name} must be float32 or float64, got {a.dtype}")
    return get_array_module(a).ascontiguousarray(a)


def _ndim(op, name, a, ndim, axes):
    if a.ndim != ndim:
        raise ValueError(f"minifcn.gpu.cuda.{op}: {name} must be {ndim}-D {axes}, got shape "
                         f"{tuple(a.shape)}")


def _geometry(h, w, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw):
    if dh < 1 or dw < 1:  # the kernels divide by the dilation: refuse before launching
        raise ValueError(f"minifcn.gpu.cuda: dilation must be >= 1, got ({dh}, {dw})")
    return dict(h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, oh=oh, ow=ow)


def im2col(x, kh, kw, sh, sw, ph, pw, oh, ow, dh=1, dw=1):
    """x (N, C, H, W) -> col (N, C, kh, kw, oh, ow); oh, ow computed by the caller; dh, dw the
    dilation. One thread per element of col."""
    _ndim("im2col", "x", x, 4, "(N, C, H, W)")
    xp = get_array_module(x)
    n, c, h, w = x.shape
    if kh == kw == sh == sw == 1 and ph == pw == 0:
        return x.reshape(n, c, 1, 1, h, w)  # as in NumPy: a 1x1 conv's columns are the image
    x = _floating("im2col", "x", x)
    col = xp.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    launch("im2col", col.size, x=x, col=col,
           **_geometry(h, w, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw))
    return col


def col2im(col, h, w, sh, sw, ph, pw, dh=1, dw=1):
    """col (N, C, kh, kw, oh, ow) -> image (N, C, h, w), overlaps summed, padding dropped.
    One thread per image pixel, gathering from the windows that cover it."""
    _ndim("col2im", "col", col, 6, "(N, C, kh, kw, oh, ow)")
    xp = get_array_module(col)
    col = _floating("col2im", "col", col)
    n, c, kh, kw, oh, ow = col.shape
    img = xp.empty((n, c, h, w), dtype=col.dtype)
    launch("col2im", img.size, col=col, img=img,
           **_geometry(h, w, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw))
    return img


def maxpool_forward(x, kh, kw, sh, sw, ph, pw, oh, ow, dh=1, dw=1):
    """x (N, C, H, W) -> (y, argmax), both (N, C, oh, ow); argmax is int32, the winner's
    tap i*kw + j in its window. One thread per output element."""
    _ndim("maxpool_forward", "x", x, 4, "(N, C, H, W)")
    xp = get_array_module(x)
    x = _floating("maxpool_forward", "x", x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    argmax = xp.empty((n, c, oh, ow), dtype=np.int32)
    launch("maxpool_forward", y.size, x=x, y=y, argmax=argmax,
           **_geometry(h, w, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw))
    return y, argmax


def maxpool_backward(gy, argmax, h, w, kh, kw, sh, sw, ph, pw, dh=1, dw=1):
    """gy, argmax (N, C, oh, ow) -> gx (N, C, h, w). One thread per input pixel, gathering
    the gradients of the windows it won."""
    _ndim("maxpool_backward", "gy", gy, 4, "(N, C, oh, ow)")
    if tuple(argmax.shape) != tuple(gy.shape):
        raise ValueError(f"minifcn.gpu.cuda.maxpool_backward: argmax has shape {tuple(argmax.shape)},"
                         f" expected gy's {tuple(gy.shape)}")
    xp = get_array_module(gy)
    gy = _floating("maxpool_backward", "gy", gy)
    argmax = xp.ascontiguousarray(xp.asarray(argmax), dtype=np.int32)
    n, c, oh, ow = gy.shape
    gx = xp.empty((n, c, h, w), dtype=gy.dtype)
    launch("maxpool_backward", gx.size, gy=gy, argmax=argmax, gx=gx,
           **_geometry(h, w, kh, kw, sh, sw, ph, pw, oh, ow, dh, dw))
    return gx


def _unpool_indices(op, indices, like):
    """indices as a C-contiguous int64 array of ``like``'s module and shape (the kernels read
    long long), or a clear error."""
    if tuple(indices.shape) != tuple(like.shape) or indices.dtype.kind not in "iu":
        raise ValueError(f"minifcn.gpu.cuda.{op}: indices must be an integer array of shape "
                         f"{tuple(like.shape)}, got {indices.dtype} {tuple(indices.shape)}")
    xp = get_array_module(like)
    return xp.ascontiguousarray(xp.asarray(indices), dtype=np.int64)


def maxunpool_forward(x, indices, oh, ow):
    """x, indices (N, C, h, w) -> y (N, C, oh, ow), each value added at its plane's position
    indices[...] (shared positions summed). One thread per input element, atomicAdd."""
    _ndim("maxunpool_forward", "x", x, 4, "(N, C, h, w)")
    xp = get_array_module(x)
    x = _floating("maxunpool_forward", "x", x)
    indices = _unpool_indices("maxunpool_forward", indices, x)
    n, c, h, w = x.shape
    y = xp.zeros((n, c, oh, ow), dtype=x.dtype)
    launch("maxunpool_forward", x.size, x=x, indices=indices, y=y, in_plane=h * w,
           out_plane=oh * ow)
    return y


def maxunpool_backward(gy, indices):
    """gy (N, C, oh, ow), indices (N, C, h, w) -> gx (N, C, h, w), gathered from gy at the
    indices. One thread per element of gx."""
    _ndim("maxunpool_backward", "gy", gy, 4, "(N, C, oh, ow)")
    _ndim("maxunpool_backward", "indices", indices, 4, "(N, C, h, w)")
    xp = get_array_module(gy)
    gy = _floating("maxunpool_backward", "gy", gy)
    n, c, oh, ow = gy.shape
    if tuple(indices.shape[:2]) != (n, c):
        raise ValueError(f"minifcn.gpu.cuda.maxunpool_backward: indices {tuple(indices.shape)} "
                         f"and gy {tuple(gy.shape)} differ in (N, C)")
    gx = xp.empty(indices.shape, dtype=gy.dtype)
    indices = _unpool_indices("maxunpool_backward", indices, gx)
    launch("maxunpool_backward", gx.size, gy=gy, indices=indices, gx=gx,
           in_plane=indices.shape[2] * indices.shape[3], out_plane=oh * ow)
    return gx


def _tables(like, **tables):
    """The resize tables as C-contiguous arrays of like's module: int32 indices, like's dtype
    for the weights (named l*)."""
    xp = get_array_module(like)
    return {k: xp.ascontiguousarray(xp.asarray(v), dtype=like.dtype if k[0] == "l" else np.int32)
            for k, v in tables.items()}


def resize_bilinear_forward(x, ry0, ry1, ly, rx0, rx1, lx):
    """x (N, C, h, w) -> y (N, C, len(ry0), len(rx0)): output (oy, ox) mixes input rows ry0, ry1
    (weights 1 - ly, ly) and columns rx0, rx1 (1 - lx, lx). One thread per output element."""
    _ndim("resize_bilinear_forward", "x", x, 4, "(N, C, h, w)")
    xp = get_array_module(x)
    x = _floating("resize_bilinear_forward", "x", x)
    n, c, h, w = x.shape
    oh, ow = len(ry0), len(rx0)
    y = xp.empty((n, c, oh, ow), dtype=x.dtype)
    launch("resize_bilinear_forward", y.size, x=x, y=y, h=h, w=w, oh=oh, ow=ow,
           **_tables(x, ry0=ry0, ry1=ry1, ly=ly, rx0=rx0, rx1=rx1, lx=lx))
    return y


def resize_bilinear_backward(gy, h, w, ry0, ry1, ly, rx0, rx1, lx, first_y, end_y, first_x,
                             end_x):
    """gy (N, C, oh, ow) -> gx (N, C, h, w), the forward's adjoint; input row i is read by the
    output rows first_y[i] <= oy < end_y[i] (and so for the columns). One thread per input
    pixel, gathering from those outputs."""
    _ndim("resize_bilinear_backward", "gy", gy, 4, "(N, C, oh, ow)")
    xp = get_array_module(gy)
    gy = _floating("resize_bilinear_backward", "gy", gy)
    n, c, oh, ow = gy.shape
    gx = xp.empty((n, c, h, w), dtype=gy.dtype)
    launch("resize_bilinear_backward", gx.size, gy=gy, gx=gx, h=h, w=w, oh=oh, ow=ow,
           **_tables(gy, ry0=ry0, ry1=ry1, ly=ly, rx0=rx0, rx1=rx1, lx=lx, first_y=first_y,
                     end_y=end_y, first_x=first_x, end_x=end_x))
    return gx


def resize_nearest_forward(x, ry0, rx0):
    """x (N, C, h, w) -> y (N, C, len(ry0), len(rx0)), y[.., oy, ox] = x[.., ry0[oy], rx0[ox]].
    One thread per output element."""
    _ndim("resize_nearest_forward", "x", x, 4, "(N, C, h, w)")
    xp = get_array_module(x)
    x = _floating("resize_nearest_forward", "x", x)
    n, c, h, w = x.shape
    y = xp.empty((n, c, len(ry0), len(rx0)), dtype=x.dtype)
    launch("resize_nearest_forward", y.size, x=x, y=y, h=h, w=w, oh=len(ry0), ow=len(rx0),
           **_tables(x, ry0=ry0, rx0=rx0))
    return y


def resize_nearest_backward(gy, h, w, first_y, end_y, first_x, end_x):
    """gy (N, C, oh, ow) -> gx (N, C, h, w): each input's sum over the outputs that copied it
    (rows first_y[i] <= oy < end_y[i], likewise the columns). One thread per input pixel."""
    _ndim("resize_nearest_backward", "gy", gy, 4, "(N, C, oh, ow)")
    xp = get_array_module(gy)
    gy = _floating("resize_nearest_backward", "gy", gy)
    n, c, oh, ow = gy.shape
    gx = xp.empty((n, c, h, w), dtype=gy.dtype)
    launch("resize_nearest_backward", gx.size, gy=gy, gx=gx, h=h, w=w, oh=oh, ow=ow,
           **_tables(gy, first_y=first_y, end_y=end_y, first_x=first_x, end_x=end_x))
    return gx


def _loss_inputs(op, logits, target):
    """Checked logits (contiguous float) and target (contiguous int64) and the pixel count."""
    _ndim(op, "logits", logits, 4, "(N, C, H, W)")
    n, c, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise ValueError(f"minifcn.gpu.cuda.{op}: target has shape {tuple(target.shape)}, expected "
                         f"({n}, {h}, {w}) for logits {tuple(logits.shape)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"minifcn.gpu.cuda.{op}: target must be an integer array, got {target.dtype}")
    xp = get_array_module(logits)
    # xp.asarray first: a NumPy target (labels straight from a data loader) is copied over
    target = xp.ascontiguousarray(xp.asarray(target), dtype=np.int64)
    return _floating(op, "logits", logits), target


def softmax_cross_entropy_forward(logits, target, ignore_index):
    """logits (N, C, H, W), target (N, H, W) -> per-pixel loss (N, H, W), 0 where ignored.
    One thread per pixel."""
    op = "softmax_cross_entropy_forward"
    logits, target = _loss_inputs(op, logits, target)
    xp = get_array_module(logits)
    n, c, h, w = logits.shape
    loss = xp.empty((n, h, w), dtype=logits.dtype)
    launch(op, loss.size, logits=logits, target=target, loss=loss, c=c, hw=h * w,
           ignore_index=ignore_index)
    return loss


def softmax_cross_entropy_backward(logits, target, ignore_index, gloss):
    """(softmax(logits) - onehot(target)) * gloss per pixel -> (N, C, H, W), 0 where ignored.
    gloss broadcasts to (N, H, W) (a scalar for a mean or sum). One thread per pixel."""
    op = "softmax_cross_entropy_backward"
    logits, target = _loss_inputs(op, logits, target)
    xp = get_array_module(logits)
    n, c, h, w = logits.shape
    # a broadcast view has zero strides: the kernel needs one real value per pixel
    gloss = xp.ascontiguousarray(xp.broadcast_to(xp.asarray(gloss), (n, h, w)),
                                 dtype=logits.dtype)
    glogits = xp.empty_like(logits)
    launch(op, target.size, logits=logits, target=target, gloss=gloss, glogits=glogits, c=c,
           hw=h * w, ignore_index=ignore_index)
    return glogits
