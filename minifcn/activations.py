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
Sigmoid takes e = exp(-|x|), which lies in (0, 1], and returns 1 / (1 + e) for x >= 0 and
e / (1 + e) below: no overflow warning for any x, and small outputs keep their relative
precision (1 - 1 / (1 + e) would round them to 0). Everything is written in ``xp``, so one
source serves NumPy and CuPy; these are element-wise lines and reductions, no kernel is needed.
"""
from .autograd import Function
from .backend import get_array_module
from .primitives import check_float


class Sigmoid(Function):
    def forward(self, x):
        xp = get_array_module(x)
        e = xp.abs(x)
        xp.negative(e, out=e)
        xp.exp(e, out=e)  # exp(-|x|) in (0, 1]: never overflows
        y = xp.where(x >= 0, x.dtype.type(1), e)
        e += 1
        y /= e
        self.saved = (y,)
        return y

    def backward(self, g):
        (y,) = self.saved
        gx = 1 - y
        gx *= y
        gx *= g
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
        y = x - x.max(axis=dim, keepdims=True)
        xp.exp(y, out=y)
        s = y.sum(axis=dim, keepdims=True)
        y *= 1 / s  # one division per softmax, then a multiply per element
        self.saved = (y, dim)
        return y

    def backward(self, g):
        y, dim = self.saved
        gx = g * y
        s = gx.sum(axis=dim, keepdims=True)
        gx -= y * s  # y * (g - s), without a second full-size temporary
        return gx


class LogSoftmax(Function):
    def forward(self, x, dim):
        xp = get_array_module(x)
        z = x - x.max(axis=dim, keepdims=True)
        lse = xp.exp(z).sum(axis=dim, keepdims=True)
        z -= xp.log(lse, out=lse)
        self.saved = (z, dim)
        return z

    def backward(self, g):
        y, dim = self.saved
        xp = get_array_module(g)
        gx = xp.exp(y)  # the softmax, recomputed rather than kept beside y
        gx *= -g.sum(axis=dim, keepdims=True)
        gx += g
        return gx


def _dim(op, x, dim):
    check_float(op, "input", x)
    if x.ndim == 0:
        raise ValueError(f"{op}: expected an input with at least one dimension, got a scalar")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{op}: dim must be an int in [{-x.ndim}, {x.ndim - 1}] for a "
                         f"{x.ndim}-D input, got {dim!r}")
    return dim % x.ndim


def sigmoid(x):
    """1 / (1 + exp(-x)), element-wise; no overflow for any x (see the module's docstring)."""
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
