"""Batch normalisation: ``F.batch_norm`` (Ioffe and Szegedy 2015) with PyTorch's semantics.

Each channel c of x (N, C, *) is normalised over its N * H * W values (M of them):

    training  y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c
              mean_c, var_c the batch's (var_c BIASED: divided by M); when running statistics
              are given they move in place: running = (1 - momentum) * running + momentum * batch,
              the running variance taking the UNBIASED batch variance (divided by M - 1)
    eval      the same with the running statistics in place of the batch's: an affine map

Backward in training goes through the batch statistics too (xhat = (x - mean) * invstd):

    gx = weight * invstd * (g - mean(g) - xhat * mean(g * xhat))      (means over the M values)
    gweight = sum(g * xhat),  gbias = sum(g)

``_train_forward_xp`` / ``_train_backward_xp`` are these lines over a (N, C, H*W) view, in
``xp``: the version to read, and the one CuPy and small CPU inputs run. The NumPy fast path
(``_train_forward_np`` / ``_train_backward_np``) does the same one channel at a time, so that the
centred values of a channel stay in the cache between the statistics and the output (the forward
reads x twice, where the whole-array lines make six passes over arrays of its size), and splits
the channels over the cores; tests/test_norm.py holds
it to the plain one.
"""
import numpy as np

from .autograd import Function, Tensor
from .backend import device_of, get_array_module
from .primitives import _over_channels, check_float

_LOOP_MIN = 4096  # values per channel from which the NumPy channel loop beats whole-array ops


class BatchNorm(Function):
    def forward(self, x, *affine, running_mean, running_var, training, momentum, eps, has_weight,
                has_bias):
        xp = get_array_module(x)
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        m = x3.shape[0] * x3.shape[2]
        weight = affine[0] if has_weight else xp.ones(c, x.dtype)
        bias = affine[-1] if has_bias else xp.zeros(c, x.dtype)
        fast = xp is np and m >= _LOOP_MIN
        if training:
            forward = _train_forward_np if fast else _train_forward_xp
            y3, mean, var = forward(x3, weight, bias, eps)
            if running_mean is not None:  # in place: the caller's (the module's) arrays move
                keep = 1 - momentum
                running_mean[...] = keep * running_mean + momentum * mean
                running_var[...] = keep * running_var + momentum * var * (m / (m - 1))
        else:
            mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
            y3 = _affine(x3, *_scale_shift(mean, var, weight, bias, eps))
        invstd = 1 / xp.sqrt(var.astype(x.dtype) + x.dtype.type(eps))
        self.saved = (x, mean.astype(x.dtype), invstd, weight, training, fast, has_weight,
                      has_bias)
        return y3.reshape(x.shape)

    def backward(self, g):
        x, mean, invstd, weight, training, fast, has_weight, has_bias = self.saved
        n, c = x.shape[:2]
        x3, g3 = x.reshape(n, c, -1), g.reshape(n, c, -1)
        if training:
            gx, gw, gb = (_train_backward_np if fast else _train_backward_xp)(
                x3, g3, mean, invstd, weight, self.needs_grad[0])
        else:  # an affine map: x's gradient is g times the scale
            xhat = (x3 - mean[:, None]) * invstd[:, None]
            gw, gb = (g3 * xhat).sum(axis=(0, 2)), g3.sum(axis=(0, 2))
            gx = _affine(g3, weight * invstd, get_array_module(g).zeros_like(invstd))
        gx = gx.reshape(x.shape) if self.needs_grad[0] else None
        return (gx,) + ((gw,) if has_weight else ()) + ((gb,) if has_bias else ())


# ---- the plain version: whole-array lines in xp (CuPy, and small inputs on the CPU) ----------

def _train_forward_xp(x3, weight, bias, eps):
    """y (N, C, L), the batch mean (C,) and biased variance (C,) of x3 (N, C, L)."""
    xp = get_array_module(x3)
    mean = x3.mean(axis=(0, 2))
    xc = x3 - mean[:, None]
    var = (xc * xc).mean(axis=(0, 2))
    scale = weight / xp.sqrt(var + x3.dtype.type(eps))
    return xc * scale[:, None] + bias[:, None], mean, var


def _train_backward_xp(x3, g3, mean, invstd, weight, need_gx):
    m = x3.shape[0] * x3.shape[2]
    xhat = (x3 - mean[:, None]) * invstd[:, None]
    gb = g3.sum(axis=(0, 2))
    gw = (g3 * xhat).sum(axis=(0, 2))
    if not need_gx:
        return None, gw, gb
    gx = (weight * invstd)[:, None] * (g3 - gb[:, None] / m - xhat * (gw / m)[:, None])
    return gx, gw, gb


def _scale_shift(mean, var, weight, bias, eps):
    scale = weight / get_array_module(var).sqrt(var + var.dtype.type(eps))
    return scale, bias - mean * scale


def _affine(x3, scale, shift):
    """x3 * scale + shift per channel (scale, shift: (C,)), over channel blocks on the CPU."""
    xp = get_array_module(x3)
    if xp is not np:
        return x3 * scale[:, None] + shift[:, None]
    y3 = np.empty_like(x3)

    def work(c0, c1):
        np.multiply(x3[:, c0:c1], scale[c0:c1, None], out=y3[:, c0:c1])
        y3[:, c0:c1] += shift[c0:c1, None]

    _over_channels(work, x3.shape[1], x3.nbytes)
    return y3


# ---- the NumPy fast path: one channel at a time, its centred values kept in the cache --------

def _train_forward_np(x3, weight, bias, eps):
    n, c, length = x3.shape
    m, dt = n * length, x3.dtype.type
    y3 = np.empty_like(x3)
    mean, var = np.empty(c, x3.dtype), np.empty(c, x3.dtype)

    def work(c0, c1):
        xc = np.empty((n, length), x3.dtype)  # one channel's x - mean, reused
        flat = xc.reshape(-1)
        for k in range(c0, c1):
            mean[k] = x3[:, k].sum(dtype=np.float64) / m
            np.subtract(x3[:, k], mean[k], out=xc)
            var[k] = np.dot(flat, flat) / m
            scale = weight[k] / np.sqrt(var[k] + dt(eps))
            np.multiply(xc, scale, out=xc)
            np.add(xc, bias[k], out=y3[:, k])

    _over_channels(work, c, x3.nbytes)
    return y3, mean, var


def _train_backward_np(x3, g3, mean, invstd, weight, need_gx):
    n, c, length = x3.shape
    m = n * length
    gx3 = np.empty_like(x3) if need_gx else None
    gw, gb = np.empty(c, x3.dtype), np.empty(c, x3.dtype)

    def work(c0, c1):
        xc, gc = np.empty((n, length), x3.dtype), np.empty((n, length), x3.dtype)
        for k in range(c0, c1):
            np.subtract(x3[:, k], mean[k], out=xc)
            np.copyto(gc, g3[:, k])  # contiguous, for the dot product
            gb[k] = gc.sum(dtype=np.float64)
            gxc = np.dot(gc.reshape(-1), xc.reshape(-1))  # sum(g * (x - mean))
            gw[k] = gxc * invstd[k]
            if need_gx:
                # gx = a g + b (x - mean) + d: the formula above, multiplied out
                a = weight[k] * invstd[k]
                np.multiply(xc, -a * invstd[k] * invstd[k] * gxc / m, out=xc)
                xc += -a * gb[k] / m
                np.multiply(gc, a, out=gc)
                np.add(gc, xc, out=gx3[:, k])

    _over_channels(work, c, x3.nbytes)
    return gx3, gw, gb


# ---- the op ----------------------------------------------------------------------------------

def _array(value):
    return value.data if isinstance(value, Tensor) else value


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Batch normalisation of x (N, C, H, W), or (N, C) or (N, C, *): per channel over N and the
    spatial axes, with PyTorch's arguments and semantics (see this module's docstring).

    running_mean, running_var: (C,) arrays or Tensors (a module's Buffers), or None (training
    only: then nothing is tracked). In training they are updated IN PLACE with ``momentum``
    (the running variance from the unbiased batch variance); in eval they normalise.
    weight, bias: (C,) Tensors (gamma, beta), or None for 1 and 0. Backward: x, weight, bias.
    """
    op = "batch_norm"
    xt = x if isinstance(x, Tensor) else Tensor(x)
    check_float(op, "input", xt)
    if xt.ndim < 2:
        raise ValueError(f"{op}: input must be (N, C) or (N, C, H, W), got shape {xt.shape}")
    c = xt.shape[1]
    rm, rv = _array(running_mean), _array(running_var)
    if (rm is None) != (rv is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    if rm is None and not training:
        raise ValueError(f"{op}: running_mean and running_var are needed when not training")
    for name, value in (("running_mean", rm), ("running_var", rv), ("weight", _array(weight)),
                        ("bias", _array(bias))):
        if value is None:
            continue
        if tuple(value.shape) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},), one value per channel of "
                             f"the input {xt.shape}, got {tuple(value.shape)}")
        if device_of(value) != xt.device:
            raise ValueError(f"{op}: {name} is on {device_of(value)}, the input on {xt.device}")
        check_float(op, name, value)
    if training and xt.size // c <= 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                         f"input of shape {xt.shape}")
    if training and rm is not None and not isinstance(momentum, (int, float)):
        raise TypeError(f"{op}: momentum must be a number, got {momentum!r}")
    affine = [t for t in (weight, bias) if t is not None]
    return BatchNorm.apply(xt, *affine, running_mean=rm, running_var=rv, training=bool(training),
                           momentum=momentum, eps=float(eps), has_weight=weight is not None,
                           has_bias=bias is not None)
