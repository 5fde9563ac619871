"""One table of gradient-check cases for every op (minitorch's habit).

``python -m minifcn.gradcheck`` prints a line for each case and the test suite is parametrised
over the same table, so an op cannot be added to one without the other noticing.

Each case is (name, shapes, make) where make(rng) returns (fn, inputs): a function of float64
Tensors and the inputs to check it at. Inputs avoid the points where an op is not
differentiable (ties in max pooling, zeros in relu), since central differences straddle them.
"""
import numpy as np

from . import functional as F
from .autograd import Tensor
from .backend import get_array_module


def _t(rng, *shape):
    return Tensor(rng.standard_normal(shape), requires_grad=True)


def _distinct(rng, *shape):
    """Values with no ties and no zeros, at least 0.1 apart: safe for max and relu."""
    n = int(np.prod(shape))
    vals = (rng.permutation(n) - n / 2 + 0.5) * 0.1
    return Tensor(vals.reshape(shape), requires_grad=True)


def _conv(x, w, stride, pad, dilation=1):
    def make(rng):
        return (lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride, pad, dilation)), [
            _t(rng, *x), _t(rng, *w), _t(rng, w[0])]
    return make


def _deconv(x, w, stride, pad, bias=False):
    def make(rng):
        inputs = [_t(rng, *x), _t(rng, *w)] + ([_t(rng, w[1])] if bias else [])
        return (lambda *a: F.conv_transpose2d(*a[:2], a[2] if bias else None, stride, pad)), inputs
    return make


def _pool(x, k, s, p, ceil, negative=False, dilation=1):
    def make(rng):
        t = _distinct(rng, *x)
        if negative:  # all-negative input: a zero from the padding would win a wrong max
            t.data -= t.data.max() + 1.0
        return (lambda a: F.max_pool2d(a, k, s, p, dilation, ceil_mode=ceil)), [t]
    return make


def _pool_indices(x, k, s, p, ceil):
    """max_pool2d with return_indices, checked through y (the indices carry no gradient)."""
    def make(rng):
        return (lambda a: F.max_pool2d(a, k, s, p, ceil_mode=ceil, return_indices=True)[0]), [
            _distinct(rng, *x)]
    return make


def _unpool(pooled, k, s, ceil=False, size=False, shared_at=None):
    """max_unpool2d of random values at the indices of a pool of a ``pooled``-shaped input
    (output_size = that input's size when ``size``). shared_at: a row and column made the
    input's largest, so that every window holding it names it (indices shared)."""
    def make(rng):
        x = _distinct(rng, *pooled).data
        if shared_at is not None:
            x[:, :, shared_at[0], shared_at[1]] = x.max() + 1
        y, idx = F.max_pool2d(Tensor(x), k, s, ceil_mode=ceil, return_indices=True)
        out = pooled[2:] if size else None
        return (lambda a: F.max_unpool2d(a, idx, k, s, output_size=out)), [_t(rng, *y.shape)]
    return make


def _loss(n, c, h, w, reduction):
    def make(rng):
        target = rng.integers(0, c, size=(n, h, w))
        target[0, 0, : w // 2] = 255  # some ignored pixels
        return (lambda a: F.softmax_cross_entropy(a, target, 255, reduction)), [_t(rng, n, c, h, w)]
    return make


def _binary(op, sa, sb):
    def make(rng):
        a, b = _t(rng, *sa), _t(rng, *sb)
        if op is F.div:
            b.data = np.sign(b.data) * (np.abs(b.data) + 0.5)  # keep away from 0
        return op, [a, b]
    return make


def _unary(fn, shape, distinct=False):
    def make(rng):
        return fn, [(_distinct if distinct else _t)(rng, *shape)]
    return make


def _positive(fn, shape):
    """Inputs well inside fn's domain: sqrt's derivative grows without bound near 0."""
    def make(rng):
        return fn, [Tensor(rng.random(shape) * 3 + 0.2, requires_grad=True)]
    return make


def _dropout_train(rng):
    """Training-mode dropout with the mask fixed by reseeding before every call."""
    from .backend import manual_seed

    def fn(a):
        manual_seed(7)
        return F.dropout(a, 0.3, training=True)
    return fn, [_t(rng, 2, 3, 5, 5)]


def _batch_norm(shape, training):
    """Train mode: the running statistics are fresh each call (batch_norm moves them in place,
    and central differences call fn again and again), so every call computes the same thing.
    Eval mode: fixed running statistics, a positive variance."""
    c = shape[1]

    def make(rng):
        rm, rv = rng.standard_normal(c), rng.random(c) + 0.5

        def fn(x, w, b):
            xp = get_array_module(x.data)  # the statistics live where x does (the GPU's run)
            stats = (xp.zeros(c), xp.ones(c)) if training else (xp.asarray(rm), xp.asarray(rv))
            return F.batch_norm(x, *stats, w, b, training=training, momentum=0.3)
        return fn, [_t(rng, *shape), _t(rng, c), _t(rng, c)]
    return make


def _cat(shapes, dim):
    def make(rng):
        return (lambda *a: F.cat(a, dim)), [_t(rng, *s) for s in shapes]
    return make


def _resize(shape, **options):
    def make(rng):
        return (lambda a: F.interpolate(a, **options)), [_t(rng, *shape)]
    return make


def _adaptive(shape, size):
    def make(rng):
        return (lambda a: F.adaptive_avg_pool2d(a, size)), [_t(rng, *shape)]
    return make


def _block(build, x_shape, scale=0.5):
    """A module checked through its parameters, which are the case's inputs after x: fn binds
    each back onto the module before calling it, so that the GPU run, which moves the inputs,
    moves them too. All random (none zero: the non-local block's W starts at zero, which
    would leave theta, phi and g without gradient), scaled so that no softmax saturates."""
    def make(rng):
        module = build()
        names = [name for name, _ in module.named_parameters()]
        params = [Tensor(scale * rng.standard_normal(p.shape), requires_grad=True)
                  for _, p in module.named_parameters()]

        def fn(x, *ps):
            for name, p in zip(names, ps):
                owner, attr = name.rsplit(".", 1)
                setattr(getattr(module, owner), attr, p)
            return module(x)
        return fn, [_t(rng, *x_shape)] + params
    return make


def _se():
    from .nn import SqueezeExcitation

    return SqueezeExcitation(8, reduction=4)


def _non_local():
    from .nn import NonLocal2d

    return NonLocal2d(4)


def _reused(rng):
    """b = a + a; c = b * b: a used twice, then b used twice (micrograd's classic trap)."""
    def fn(a):
        b = a + a
        return b * b
    return fn, [_t(rng, 3, 4)]


CASES = [
    ("add (broadcast)", "(3,4,5)+(4,1)", _binary(F.add, (3, 4, 5), (4, 1))),
    ("sub (broadcast)", "(4,1)-(3,4,5)", _binary(F.sub, (4, 1), (3, 4, 5))),
    ("mul (broadcast)", "(2,3,1,5)*(3,4,1)", _binary(F.mul, (2, 3, 1, 5), (3, 4, 1))),
    ("div (broadcast)", "(3,4)/(1,4)", _binary(F.div, (3, 4), (1, 4))),
    ("neg", "(3,5)", _unary(F.neg, (3, 5))),
    ("matmul", "(2,3,4)@(4,5)", _binary(F.matmul, (2, 3, 4), (4, 5))),
    ("matmul batched (the non-local block's)", "(2,6,3)@(2,3,6)",
     _binary(F.matmul, (2, 6, 3), (2, 3, 6))),
    ("matmul broadcast batch axes", "(2,1,4,3)@(3,3,5)", _binary(F.matmul, (2, 1, 4, 3), (3, 3, 5))),
    ("matmul 1-D operands", "(3,)@(2,3,4)", _binary(F.matmul, (3,), (2, 3, 4))),
    ("sum axis=1", "(3,4,5)", _unary(lambda a: F.sum(a, axis=1), (3, 4, 5))),
    ("sum all", "(3,4)", _unary(lambda a: F.sum(a), (3, 4))),
    ("mean axis=(0,2) keepdims", "(3,4,5)", _unary(lambda a: F.mean(a, (0, 2), True), (3, 4, 5))),
    ("reshape", "(2,3,4)->(6,4)", _unary(lambda a: F.reshape(a, (6, 4)), (2, 3, 4))),
    ("transpose", "(2,3,4)->(4,2,3)", _unary(lambda a: F.transpose(a, (2, 0, 1)), (2, 3, 4))),
    ("getitem x[:, 1:3] (a head's channels)", "(2,5,3,4)->(2,2,3,4)",
     _unary(lambda a: a[:, 1:3], (2, 5, 3, 4))),
    ("getitem x[1, ..., ::2, None]", "(3,4,5)->(4,3,1)", _unary(lambda a: a[1, ..., ::2, None], (3, 4, 5))),
    ("tensor used twice", "(3,4)", _reused),
    ("relu", "(2,3,7,9)", _unary(F.relu, (2, 3, 7, 9), distinct=True)),
    ("sigmoid", "(2,3,5,5)", _unary(lambda a: F.sigmoid(3 * a), (2, 3, 5, 5))),
    ("sqrt (inputs in [0.2, 3.2))", "(2,3,5,5)", _positive(F.sqrt, (2, 3, 5, 5))),
    ("softmax dim 1", "(2,4,3,5)", _unary(lambda a: F.softmax(a, 1), (2, 4, 3, 5))),
    ("softmax dim -1", "(2,3,7)", _unary(lambda a: F.softmax(a, -1), (2, 3, 7))),
    ("log_softmax dim 1", "(2,4,3,5)", _unary(lambda a: F.log_softmax(a, 1), (2, 4, 3, 5))),
    ("log_softmax dim 0", "(5,3)", _unary(lambda a: F.log_softmax(a, 0), (5, 3))),
    ("dropout (train, fixed mask)", "(2,3,5,5)", _dropout_train),
    ("dropout (eval)", "(2,3,5,5)", _unary(lambda a: F.dropout(a, 0.5, training=False), (2, 3, 5, 5))),
    ("conv2d k3 s1 p1", "x(2,3,7,9) w(4,3,3,3)", _conv((2, 3, 7, 9), (4, 3, 3, 3), 1, 1)),
    ("conv2d k3x2 s(2,1) p(2,0)", "x(1,2,13,11) w(3,2,3,2)",
     _conv((1, 2, 13, 11), (3, 2, 3, 2), (2, 1), (2, 0))),
    ("conv2d k1 s1 p0", "x(2,4,5,7) w(3,4,1,1)", _conv((2, 4, 5, 7), (3, 4, 1, 1), 1, 0)),
    ("conv2d k3 s1 p4 (output ring of bias only)", "x(2,2,4,5) w(3,2,3,3)",
     _conv((2, 2, 4, 5), (3, 2, 3, 3), 1, 4)),
    ("conv2d k3x2 s1 p(1,3)", "x(1,2,5,4) w(2,2,3,2)", _conv((1, 2, 5, 4), (2, 2, 3, 2), 1, (1, 3))),
    ("conv2d k4 s2 p1", "x(1,2,9,8) w(2,2,4,4)", _conv((1, 2, 9, 8), (2, 2, 4, 4), 2, 1)),
    ("conv2d k5 s1 p0 (fc6's shape: a wide window, a 2x2 output)", "x(1,2,6,6) w(3,2,5,5)",
     _conv((1, 2, 6, 6), (3, 2, 5, 5), 1, 0)),
    # dilated (the rarefied filters of paper section 3.2): each row names the path it takes
    ("conv2d k3 s1 p2 d2 (flipped-kernel input gradient)", "x(1,3,9,8) w(2,3,3,3)",
     _conv((1, 3, 9, 8), (2, 3, 3, 3), 1, 2, 2)),
    ("conv2d k3 s1 p2 d2 (col2im input gradient)", "x(1,2,9,8) w(4,2,3,3)",
     _conv((1, 2, 9, 8), (4, 2, 3, 3), 1, 2, 2)),
    ("conv2d k3 s1 p6 d2 (output ring of bias only)", "x(1,3,4,5) w(2,3,3,3)",
     _conv((1, 3, 4, 5), (2, 3, 3, 3), 1, 6, 2)),
    ("conv2d k3x2 s(2,1) p(1,2) d(2,3)", "x(1,2,11,9) w(3,2,3,2)",
     _conv((1, 2, 11, 9), (3, 2, 3, 2), (2, 1), (1, 2), (2, 3))),
    ("conv2d k4 s2 p1 d2 (a whole number of strides, no stride blocks)", "x(1,2,12,11) w(2,2,4,4)",
     _conv((1, 2, 12, 11), (2, 2, 4, 4), 2, 1, 2)),
    ("conv2d k5 s1 p0 d2 (fc6 after a rarefied pool5)", "x(1,2,11,10) w(3,2,5,5)",
     _conv((1, 2, 11, 10), (3, 2, 5, 5), 1, 0, 2)),
    ("conv_transpose2d k4 s2 p0", "x(1,3,4,5) w(3,2,4,4)", _deconv((1, 3, 4, 5), (3, 2, 4, 4), 2, 0)),
    ("conv_transpose2d k3x4 s(1,2) p1 +bias", "x(2,2,5,3) w(2,3,3,4)",
     _deconv((2, 2, 5, 3), (2, 3, 3, 4), (1, 2), 1, bias=True)),
    ("conv_transpose2d k1 s1", "x(1,3,4,4) w(3,2,1,1)", _deconv((1, 3, 4, 4), (3, 2, 1, 1), 1, 0)),
    ("max_pool2d k2 s2 ceil", "(2,3,7,9)", _pool((2, 3, 7, 9), 2, 2, 0, True)),
    ("max_pool2d k3 s2 p1 ceil (negative)", "(1,2,13,11)", _pool((1, 2, 13, 11), 3, 2, 1, True, True)),
    ("max_pool2d k(3,2) s(1,2) floor", "(1,2,7,9)", _pool((1, 2, 7, 9), (3, 2), (1, 2), 0, False)),
    ("max_pool2d k2 s1 d2 ceil (a pool after a rarefied one)", "(1,2,9,8)",
     _pool((1, 2, 9, 8), 2, 1, 0, True, dilation=2)),
    ("max_pool2d k3 s2 p1 d2 ceil (negative)", "(1,2,11,10)",
     _pool((1, 2, 11, 10), 3, 2, 1, True, True, dilation=2)),
    ("max_pool2d k(2,3) s(2,1) d(3,2) floor", "(1,2,9,8)",
     _pool((1, 2, 9, 8), (2, 3), (2, 1), 0, False, dilation=(3, 2))),
    ("batch_norm train (through the batch statistics)", "x(3,4,5,6) w(4) b(4)",
     _batch_norm((3, 4, 5, 6), True)),
    ("batch_norm train (N, C)", "x(5,3) w(3) b(3)", _batch_norm((5, 3), True)),
    ("batch_norm eval (running statistics)", "x(2,4,5,6) w(4) b(4)",
     _batch_norm((2, 4, 5, 6), False)),
    ("cat dim 1 (three inputs)", "(2,3,4,5)+(2,1,4,5)+(2,2,4,5)",
     _cat([(2, 3, 4, 5), (2, 1, 4, 5), (2, 2, 4, 5)], 1)),
    ("cat dim 0", "(2,3,4)+(1,3,4)", _cat([(2, 3, 4), (1, 3, 4)], 0)),
    ("max_pool2d k3 s2 p1 ceil return_indices (gradient through y)", "(1,2,13,11)",
     _pool_indices((1, 2, 13, 11), 3, 2, 1, True)),
    ("max_unpool2d k2 s2", "(2,3,4,5)->(8,10)", _unpool((2, 3, 8, 10), 2, 2)),
    ("max_unpool2d k2 s2 odd size (ceil-mode indices, output_size)", "(1,2,4,5)->(7,9)",
     _unpool((1, 2, 7, 9), 2, 2, ceil=True, size=True)),
    ("max_unpool2d k3 s2 (overlapping windows: shared indices summed)", "(1,2,4,4)->(9,9)",
     _unpool((1, 2, 9, 9), 3, 2, shared_at=(4, 4))),
    ("interpolate bilinear x2", "(2,3,4,5)->(8,10)", _resize((2, 3, 4, 5), scale_factor=2)),
    ("interpolate bilinear to an odd size (down H, up W)", "(1,2,9,5)->(5,7)",
     _resize((1, 2, 9, 5), size=(5, 7))),
    ("interpolate bilinear align_corners", "(1,2,4,5)->(7,9)",
     _resize((1, 2, 4, 5), size=(7, 9), align_corners=True)),
    ("interpolate bilinear scale_factor 1.5 (1 / scale_factor mapping)", "(1,2,5,7)->(7,10)",
     _resize((1, 2, 5, 7), scale_factor=1.5)),
    ("interpolate nearest up", "(1,2,3,4)->(7,9)",
     _resize((1, 2, 3, 4), size=(7, 9), mode="nearest")),
    ("interpolate nearest down (inputs nobody reads)", "(1,2,9,8)->(4,3)",
     _resize((1, 2, 9, 8), size=(4, 3), mode="nearest")),
    ("adaptive_avg_pool2d 1", "(2,3,5,6)->(1,1)", _adaptive((2, 3, 5, 6), 1)),
    ("adaptive_avg_pool2d (3,2) (overlapping windows)", "(1,2,7,5)->(3,2)",
     _adaptive((1, 2, 7, 5), (3, 2))),
    ("crop", "(2,3,7,9)->(4,5)", _unary(lambda a: F.crop(a, (2, 3), (4, 5)), (2, 3, 7, 9))),
    ("softmax_cross_entropy mean", "(2,4,7,9)", _loss(2, 4, 7, 9, "mean")),
    ("softmax_cross_entropy sum", "(1,3,5,6)", _loss(1, 3, 5, 6, "sum")),
    ("softmax_cross_entropy none", "(1,3,5,6)", _loss(1, 3, 5, 6, "none")),
    ("nn.SqueezeExcitation(8, reduction=4): x and fc1, fc2", "x(2,8,3,4)",
     _block(_se, (2, 8, 3, 4))),
    ("nn.NonLocal2d(4): x and g, W, theta, phi (W random)", "x(2,4,3,3)",
     _block(_non_local, (2, 4, 3, 3))),
]
