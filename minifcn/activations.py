"""Sigmoid, softmax and log-softmax with PyTorch's semantics: the gates of squeeze-and-excitation
and the attention weights of the non-local block; and sqrt, for the Euclidean norms of the
instance losses (minifcn.instances: ||v|| = sqrt(sum(v * v) + eps)).

    sigmoid(x)            = 1 / (1 + exp(-x))
    sqrt(x)               = x ** 0.5
    softmax(x, dim)       = exp(x - m) / sum(exp(x - m))          m = max along dim
    log_softmax(x, dim)   = (x - m) - log(sum(exp(x - m)))        (log-sum-exp)

Backward, with y the output and g the upstream gradient, sums along ``dim``:

    sigmoid       g * y * (1 - y)
    sqrt          g / (2 y)                                       (inf at x = 0, as torch's)
    softmax       y * (g - sum(g * y))
    log_softmax   g - exp(y) * sum(g)                             (exp(y) is the softmax)

Subtracting the max makes every exponent <= 0, so nothing overflows whatever the logits.
Sigmoid is 1 / (1 + exp(-x)) as PyTorch computes it: for x far below 0, exp(-x) overflows to
inf and 1 / (1 + inf) = 0 is the right limit (NumPy's overflow warning is silenced), so no NaN
ever appears and every output that is a normal float keeps its relative precision (1 - 1 / (1 +
exp(x)) would round the small ones to 0).

Everything is written in ``xp``, so one source serves NumPy and CuPy; these are element-wise
lines and reductions, no kernel is needed. On NumPy, big arrays are cut into blocks along an
axis other than ``dim`` (each block holds whole slices along dim) that run on the cores at once,
as PyTorch's kernels do (``_by_blocks``); CuPy takes the whole array in one go.
"""
import numpy as np

from .autograd import Function
from .backend import get_array_module
from .primitives import _over_channels, check_float


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        y = xp.empty_like(x)

        def work(i):
            yi = y[i]
            xp.negative(x[i], out=yi)
            with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0: the output is 0
                xp.exp(yi, out=yi)
            yi += 1
            xp.reciprocal(yi, out=yi)
        _by_blocks(xp, x, None, work)
        self.saved = (y,)
        return y

    def backward(self, g):
        (y,) = self.saved
        xp = get_array_module(g)
        gx = xp.empty_like(y)

        def work(i):
            gxi, yi = gx[i], y[i]
            xp.subtract(1, yi, out=gxi)
            gxi *= yi
            gxi *= g[i]
        _by_blocks(xp, gx, None, work)
        return gx


class Sqrt(Function):
    def forward(self, x):
        y = get_array_module(x).sqrt(x)
        self.saved = (y,)
        return y

    def backward(self, g):
        (y,) = self.saved
        gx = y + y
        get_array_module(g).divide(g, gx, out=gx)
        return gx


class Softmax(Function):
    def forward(self, x, dim):
        xp = get_array_module(x)
        y = xp.empty_like(x)

        def work(i):
            xi, yi = x[i], y[i]
            xp.subtract(xi, xi.max(axis=dim, keepdims=True), out=yi)
            xp.exp(yi, out=yi)
            yi *= 1 / yi.sum(axis=dim, keepdims=True)  # one division per slice, then multiplies
        _by_blocks(xp, x, dim, work)
        self.saved = (y, dim)
        return y

    def backward(self, g):
        y, dim = self.saved
        xp = get_array_module(g)
        gx = xp.empty_like(y)

        def work(i):
            gi, yi, gxi = g[i], y[i], gx[i]
            xp.multiply(gi, yi, out=gxi)
            s = gxi.sum(axis=dim, keepdims=True)
            xp.subtract(gi, s, out=gxi)  # g * y is summed: its buffer takes g - s
            gxi *= yi
        _by_blocks(xp, gx, dim, work)
        return gx


class LogSoftmax(Function):
    def forward(self, x, dim):
        xp = get_array_module(x)
        z = xp.empty_like(x)

        def work(i):
            xi, zi = x[i], z[i]
            xp.subtract(xi, xi.max(axis=dim, keepdims=True), out=zi)
            lse = xp.exp(zi).sum(axis=dim, keepdims=True)
            zi -= xp.log(lse, out=lse)
        _by_blocks(xp, x, dim, work)
        self.saved = (z, dim)
        return z

    def backward(self, g):
        y, dim = self.saved
        xp = get_array_module(g)
        gx = xp.empty_like(y)

        def work(i):
            gi, gxi = g[i], gx[i]
            xp.exp(y[i], out=gxi)  # the softmax, recomputed rather than kept beside y
            gxi *= -gi.sum(axis=dim, keepdims=True)
            gxi += gi
        _by_blocks(xp, gx, dim, work)
        return gx


def _by_blocks(xp, a, dim, work):
    """Call work(index) so that the indexes cover an array shaped as ``a``, each block holding
    whole slices along ``dim`` (None: any blocks): on NumPy, blocks along the first other axis
    run on the cores at once once the array is big (a NumPy ufunc releases the GIL); on CuPy,
    or with no axis to cut, one call with the whole array."""
    full = (slice(None),) * a.ndim or (Ellipsis,)  # a[...] of a 0-d array: a view, not a scalar
    axis = next((k for k in range(a.ndim) if k != dim and a.shape[k] > 1), None)
    if xp is not np or axis is None:
        return work(full)

    def block(start, stop):
        work(full[:axis] + (slice(start, stop),) + full[axis + 1:])
    _over_channels(block, a.shape[axis], a.nbytes)


def _dim(op, x, dim):
    check_float(op, "input", x)
    if x.ndim == 0:
        raise ValueError(f"{op}: expected an input with at least one dimension, got a scalar")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{op}: dim must be an int in [{-x.ndim}, {x.ndim - 1}] for a "
                         f"{x.ndim}-D input, got {dim!r}")
    return dim % x.ndim


def sigmoid(x):
    """1 / (1 + exp(-x)), element-wise; no NaN or warning for any x (see the module's
    docstring)."""
    check_float("sigmoid", "input", x)
    return Sigmoid.apply(x)


def sqrt(x):
    """The element-wise square root, as torch.sqrt: NaN below 0; the gradient 1 / (2 sqrt(x)) is
    infinite at 0, so a norm that can vanish takes sqrt(sum(v * v) + eps)."""
    check_float("sqrt", "input", x)
    return Sqrt.apply(x)


def softmax(x, dim):
    """exp(x) / sum(exp(x)) along ``dim`` (negative counts from the end), as torch.softmax: the
    max along dim is subtracted first, so any logits are safe. dim is required (PyTorch's
    implicit choice of dim is deprecated)."""
    return Softmax.apply(x, dim=_dim("softmax", x, dim))


def log_softmax(x, dim):
    """log(softmax(x, dim)) computed as (x - max) - log(sum(exp(x - max))): finite for any
    logits, where log(softmax(x)) gives -inf once a probability underflows."""
    return LogSoftmax.apply(x, dim=_dim("log_softmax", x, dim))
