"""Layer 4: the ops, each a Function with its forward and its hand-written backward.

Import as ``import minifcn.functional as F``: it is the one module of ops a learner needs.
This file holds the element-wise and shape ops (arithmetic, reshape, transpose, relu, dropout,
crop, cat); the other families live one to a file and are imported at the end:

    conv.py         conv2d, conv_transpose2d
    pooling.py      max_pool2d, max_unpool2d, adaptive_avg_pool2d
    resize.py       interpolate (bilinear, nearest)
    norm.py         batch_norm
    activations.py  sigmoid, sqrt, softmax, log_softmax
    indexing.py     getitem (x[key] on a Tensor)
    loss.py         softmax_cross_entropy

Everything is written against ``xp`` (NumPy or CuPy, whichever the data lives in) and the loops
of ``minifcn.primitives``, so one source serves the CPU and the GPU. Arithmetic broadcasts like
NumPy; its backward sums a gradient back to each input's own shape (``_unbroadcast``). The 2-D
ops take NCHW inputs.
"""
import numpy as np

from . import backend
from .autograd import Function, Tensor, as_tensor
from .backend import get_array_module
from .primitives import check_4d, pair

# ----------------------------------------------------------------------------- arithmetic


def _unbroadcast(grad, shape):
    """Sum grad over the axes that broadcasting added or stretched, back to ``shape``."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _broadcast_check(op, a, b):
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None


class Add(Function):
    def forward(self, a, b):
        _broadcast_check("add", a, b)
        self.saved = (a.shape, b.shape)
        return a + b

    def backward(self, g):
        sa, sb = self.saved
        return _unbroadcast(g, sa), _unbroadcast(g, sb)


class Sub(Function):
    def forward(self, a, b):
        _broadcast_check("sub", a, b)
        self.saved = (a.shape, b.shape)
        return a - b

    def backward(self, g):
        sa, sb = self.saved
        return _unbroadcast(g, sa), _unbroadcast(-g, sb)


class Mul(Function):
    def forward(self, a, b):
        _broadcast_check("mul", a, b)
        self.saved = (a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved
        ga = _unbroadcast(g * b, a.shape) if self.needs_grad[0] else None
        gb = _unbroadcast(g * a, b.shape) if self.needs_grad[1] else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        _broadcast_check("div", a, b)
        self.saved = (a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved
        ga = _unbroadcast(g / b, a.shape) if self.needs_grad[0] else None
        gb = _unbroadcast(-g * a / (b * b), b.shape) if self.needs_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class MatMul(Function):
    def forward(self, a, b):  # (..., n, k) @ (..., k, m); matmul() checked the shapes
        self.saved = (a, b)
        return a @ b

    def backward(self, g):
        a, b = self.saved
        xp = get_array_module(g)
        ga = _unbroadcast(g @ xp.swapaxes(b, -1, -2), a.shape) if self.needs_grad[0] else None
        gb = _unbroadcast(xp.swapaxes(a, -1, -2) @ g, b.shape) if self.needs_grad[1] else None
        return ga, gb


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim for a in axes)


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.saved = (a.shape, _axes(axis, a.ndim), keepdims)
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        shape, axes, keepdims = self.saved
        xp = get_array_module(g)
        if not keepdims:
            g = xp.expand_dims(g, axes)
        return xp.broadcast_to(g, shape).copy()


class Reshape(Function):
    def forward(self, a, shape):
        self.saved = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape {a.shape} into {shape}") from None

    def backward(self, g):
        return g.reshape(self.saved)


class Transpose(Function):
    def forward(self, a, axes=None):
        self.saved = tuple(np.argsort(axes)) if axes is not None else None
        return a.transpose(axes)

    def backward(self, g):
        return g.transpose(self.saved)


def add(a, b):
    return Add.apply(as_tensor(a, like=b), as_tensor(b, like=a))


def sub(a, b):
    return Sub.apply(as_tensor(a, like=b), as_tensor(b, like=a))


def mul(a, b):
    return Mul.apply(as_tensor(a, like=b), as_tensor(b, like=a))


def div(a, b):
    return Div.apply(as_tensor(a, like=b), as_tensor(b, like=a))


def neg(a):
    return Neg.apply(a)


def matmul(a, b):
    """a @ b with torch.matmul's semantics: (..., n, k) @ (..., k, m) -> (..., n, m), the batch
    axes (all but the last two) broadcast as in NumPy (the non-local block's (N, HW, C') @
    (N, C', HW)); a 1-D a is a row (1, k) and a 1-D b a column (k, 1), that axis dropped from
    the result. Backward sums each gradient back over the batch axes its operand was
    broadcast along."""
    a, b = as_tensor(a, like=b), as_tensor(b, like=a)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, got {a.shape} @ "
                         f"{b.shape}")
    ka, kb = a.shape[-1], b.shape[0 if b.ndim == 1 else -2]
    if ka != kb:
        raise ValueError(f"matmul: expected (..., n, k) @ (..., k, m), got {a.shape} @ "
                         f"{b.shape} (k {ka} vs {kb})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch shapes {a.shape[:-2]} and {b.shape[:-2]} do not "
                         f"broadcast ({a.shape} @ {b.shape})") from None
    row, col = a.ndim == 1, b.ndim == 1
    y = MatMul.apply(reshape(a, (1, ka)) if row else a, reshape(b, (kb, 1)) if col else b)
    if row:
        y = reshape(y, y.shape[:-2] + y.shape[-1:])
    if col:
        y = reshape(y, y.shape[:-1])
    return y


def sum(x, axis=None, keepdims=False):  # noqa: A001 - the name users expect
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    x = as_tensor(x)
    count = int(np.prod([x.shape[a] for a in _axes(axis, x.ndim)]))
    return mul(sum(x, axis, keepdims), 1.0 / count)


def reshape(x, shape):
    return Reshape.apply(x, shape=tuple(shape) if not isinstance(shape, int) else (shape,))


def transpose(x, axes=None):
    return Transpose.apply(x, axes=tuple(axes) if axes is not None else None)


# Tensor's operators are these ops (DeZero's setup_variable does the same): autograd.py defines
# Tensor without them, so that it needs no op while the ops need Tensor.
Tensor.__add__ = lambda self, other: add(self, other)
Tensor.__radd__ = lambda self, other: add(other, self)
Tensor.__sub__ = lambda self, other: sub(self, other)
Tensor.__rsub__ = lambda self, other: sub(other, self)
Tensor.__mul__ = lambda self, other: mul(self, other)
Tensor.__rmul__ = lambda self, other: mul(other, self)
Tensor.__truediv__ = lambda self, other: div(self, other)
Tensor.__rtruediv__ = lambda self, other: div(other, self)
Tensor.__neg__ = lambda self: neg(self)
Tensor.__matmul__ = lambda self, other: matmul(self, other)
Tensor.__getitem__ = lambda self, key: getitem(self, key)  # getitem: indexing.py
Tensor.sum = lambda self, axis=None, keepdims=False: sum(self, axis, keepdims)
Tensor.mean = lambda self, axis=None, keepdims=False: mean(self, axis, keepdims)
Tensor.reshape = lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape)
Tensor.transpose = lambda self, *axes: transpose(self, (axes[0] if len(axes) == 1 else axes) or None)
Tensor.T = property(lambda self: transpose(self, None))


# ----------------------------------------------------------------------------- activations


class ReLU(Function):
    def forward(self, x, inplace=False):
        y = get_array_module(x).maximum(x, 0, out=x if inplace else None)
        self.saved = (y,)  # y > 0 exactly where x > 0; y is kept anyway by the next layer
        return y

    def backward(self, g):
        (y,) = self.saved
        return g * (y > 0)


class Dropout(Function):
    def forward(self, x, p):
        xp = get_array_module(x)
        u = backend.random_rows(x.shape, xp)  # one process's draws, when data parallel
        # inverted dropout: scale the kept units at training time so eval needs no scaling
        mask = (u >= p).astype(x.dtype) / x.dtype.type(1 - p)
        self.saved = (mask,)
        return x * mask

    def backward(self, g):
        return g * self.saved[0]


def relu(x, inplace=False):
    """max(x, 0). inplace=True writes the result over x's buffer, so a conv's output does not
    stay alive beside the ReLU's (VGG's activations, halved). Only for an x that no other op
    uses: an intermediate result (never a leaf), as in a conv -> relu chain."""
    if inplace and isinstance(x, Tensor) and x.is_leaf:
        inplace = False  # a leaf's data is the caller's: never overwrite it
    return ReLU.apply(x, inplace=inplace)


def dropout(x, p=0.5, training=True):
    """Inverted dropout: in training zero each element with probability p and scale the rest by
    1/(1-p); outside training return x unchanged (Caffe drops elements, as here)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return as_tensor(x)
    return Dropout.apply(x, p=p)


# ----------------------------------------------------------------------------- crop


class Crop(Function):
    def forward(self, x, offset, size):
        (oy, ox), (h, w) = offset, size
        self.saved = (x.shape, offset, size)
        return x[:, :, oy : oy + h, ox : ox + w].copy()

    def backward(self, g):
        shape, (oy, ox), (h, w) = self.saved
        gx = get_array_module(g).zeros(shape, dtype=g.dtype)
        gx[:, :, oy : oy + h, ox : ox + w] = g
        return gx


def crop(x, offset, size):
    """Caffe's Crop layer on the spatial axes: x[:, :, oy:oy+h, ox:ox+w].

    offset: int or (oy, ox); size: (h, w), or a Tensor/array whose last two axes give it.
    """
    op = "crop"
    check_4d(op, "input", x)
    if hasattr(size, "shape"):
        size = tuple(size.shape[-2:])
    offset = pair(offset, "offset", op, 0)
    size = pair(size, "size", op, 1)
    if offset[0] + size[0] > x.shape[2] or offset[1] + size[1] > x.shape[3]:
        raise ValueError(f"{op}: offset {offset} + size {size} falls outside the input's "
                         f"spatial size {tuple(x.shape[2:])}")
    return Crop.apply(x, offset=offset, size=size)


# ----------------------------------------------------------------------------- cat


class Cat(Function):
    def forward(self, *arrays, dim):
        self.saved = (dim, [a.shape[dim] for a in arrays])
        return get_array_module(arrays[0]).concatenate(arrays, axis=dim)

    def backward(self, g):
        dim, sizes = self.saved
        edges = [0]
        for size in sizes:
            edges.append(edges[-1] + size)
        index = [slice(None)] * g.ndim
        grads = []
        for i, need in enumerate(self.needs_grad):  # each input's slab of g (a view, no copy)
            index[dim] = slice(edges[i], edges[i + 1])
            grads.append(g[tuple(index)] if need else None)
        return tuple(grads)


def cat(tensors, dim=0):
    """Join tensors along ``dim`` (negative counts from the end), as torch.cat: the same number
    of dimensions, the same sizes except along ``dim``, one dtype and one device. U-Net's skips
    join feature maps along the channels (dim=1). Backward gives each input its slab of the
    gradient."""
    op = "cat"
    if isinstance(tensors, (Tensor, np.ndarray)) or not hasattr(tensors, "__len__"):
        raise TypeError(f"{op}: expected a list or tuple of tensors, got {type(tensors).__name__}")
    if len(tensors) == 0:
        raise ValueError(f"{op}: expected a non-empty list of tensors")
    ts = [as_tensor(t) for t in tensors]
    first = ts[0]
    if first.ndim == 0:
        raise ValueError(f"{op}: zero-dimensional tensors cannot be concatenated")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) \
            or not -first.ndim <= dim < first.ndim:
        raise ValueError(f"{op}: dim must be an int in [{-first.ndim}, {first.ndim - 1}] for "
                         f"{first.ndim}-D tensors, got {dim!r}")
    d = int(dim) % first.ndim
    for i, t in enumerate(ts[1:], 1):
        if t.ndim != first.ndim:
            raise ValueError(f"{op}: tensor {i} is {t.ndim}-D, tensor 0 {first.ndim}-D; all "
                             f"must have the same number of dimensions")
        if t.shape[:d] + t.shape[d + 1:] != first.shape[:d] + first.shape[d + 1:]:
            raise ValueError(f"{op}: sizes must match except along dim {d}: tensor 0 has shape "
                             f"{first.shape}, tensor {i} {t.shape}")
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: tensor {i} is {t.dtype}, tensor 0 {first.dtype}; all "
                            f"must have one dtype")
        if t.device != first.device:
            raise ValueError(f"{op}: tensor {i} is on {t.device}, tensor 0 on {first.device}")
    return Cat.apply(*ts, dim=d)


# ----------------------------------------------------------------------------- the op families

from .activations import log_softmax, sigmoid, softmax, sqrt  # noqa: E402,F401
from .conv import conv2d, conv_transpose2d  # noqa: E402,F401
from .indexing import getitem  # noqa: E402,F401
from .loss import softmax_cross_entropy  # noqa: E402,F401
from .norm import batch_norm  # noqa: E402,F401
from .pooling import adaptive_avg_pool2d, max_pool2d, max_unpool2d  # noqa: E402,F401
from .resize import interpolate  # noqa: E402,F401

__all__ = [
    "add", "sub", "mul", "div", "neg", "matmul", "sum", "mean", "reshape", "transpose",
    "relu", "dropout", "conv2d", "conv_transpose2d", "max_pool2d", "max_unpool2d", "crop", "cat",
    "batch_norm", "adaptive_avg_pool2d", "interpolate", "getitem", "sigmoid", "sqrt", "softmax",
    "log_softmax", "softmax_cross_entropy", "Tensor",
]
