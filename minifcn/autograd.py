"""Layer 3: Tensor, Function and the reverse-mode walk.

A ``Tensor`` wraps an ndarray (NumPy or CuPy). Every op is a ``Function``: ``forward`` computes
on raw arrays and saves what ``backward`` needs; ``backward`` turns the output's gradient into
one gradient per input. ``Function.apply`` runs forward and, unless ``no_grad`` is active, links
the output to the function so that ``Tensor.backward`` can find its way back.

``Tensor.backward`` sorts the graph topologically with an explicit stack (no recursion, so a
10,000-op chain is fine), walks it from the output back, sums the gradients of tensors used more
than once, and drops each function's saved arrays as soon as its backward has run.
"""
import contextlib

import numpy as np

from . import backend
from .backend import get_array_module

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside this context no graph is recorded (evaluation, optimiser steps)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def _as_array(data, dtype=None):
    """An ndarray from data; Python numbers and lists become float32 unless dtype says."""
    xp = get_array_module(data)
    if dtype is None and isinstance(data, (int, float, list, tuple)) \
            and not isinstance(data, np.generic):  # np.float64 is a float subclass: keep it
        dtype = np.float32
    arr = xp.asarray(data, dtype=dtype)
    return arr


class Tensor:
    """An ndarray with a gradient and a link to the Function that made it.

    Attributes: ``data`` (the ndarray), ``grad`` (ndarray of the same shape, or None; summed over
    backward calls until you reset it), ``requires_grad``. Floating tensors are float32 unless
    made from a float64 array (gradient checks use float64); integer tensors (targets) are allowed
    but cannot require a gradient.
    """

    __array_priority__ = 1000  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating tensors can require grad, got {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._fn = None  # the Function that produced this tensor (None for a leaf)

    # ---- basic properties -------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._fn is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, device={self.device}{grad})"

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if it lives there)."""
        return backend.as_numpy(self.data)

    def item(self):
        return self.numpy().item()

    def detach(self):
        """The same data, cut off from the graph."""
        return Tensor(self.data)

    def to(self, device):
        """This tensor on 'cpu' or 'cuda' (a new leaf; the same object if already there)."""
        data = backend.to_device(self.data, device)
        if data is self.data:
            return self
        t = Tensor(data, requires_grad=self.requires_grad)
        return t

    def astype(self, dtype):
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    def zero_grad(self):
        self.grad = None

    # ---- reverse mode -----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Back-propagate from this tensor, summing into the ``.grad`` of every leaf that
        requires it.

        grad: the gradient of some scalar with respect to this tensor, an ndarray or Tensor of
        this tensor's shape; None is allowed only for a single-element tensor (it means 1).
        After the walk the graph's saved buffers are freed unless ``retain_graph`` is True.
        """
        grad = self._upstream(grad)
        grads = {id(self): grad}  # the gradient reaching each tensor so far, summed
        leaves = _LeafBuffers(grad)
        for t in reversed(_topological_order(self)):  # every tensor after all that use it
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t._fn is None:  # a leaf: accumulate
                if t.requires_grad:
                    t.grad = leaves.keep_or_copy(g) if t.grad is None else t.grad + g
                continue
            if getattr(t, "_retain", False):
                t.grad = g.copy() if t.grad is None else t.grad + g
            fn = t._fn
            in_grads = fn.backward(g)  # the chain rule, one op at a time
            for x, gx in zip(fn.inputs, in_grads if isinstance(in_grads, tuple) else (in_grads,)):
                if gx is None or not x.requires_grad:
                    continue
                _check_grad_shape(fn, gx, x)
                prev = grads.get(id(x))
                grads[id(x)] = gx = gx if prev is None else prev + gx  # used twice: sum
                leaves.handed_on(gx, fn)
            if not retain_graph:  # free what the op saved as soon as its backward has run
                fn.release()
                t._fn = None

    def _upstream(self, grad):
        """The gradient backward starts from, checked: ones for a one-element tensor."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input required "
                               "grad, or it was computed under no_grad())")
        xp = get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward: grad can be omitted only for a single-element "
                                 f"output, this one has shape {self.shape}")
            return xp.ones_like(self.data)
        grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad)
        if grad.shape != self.shape:
            raise ValueError(f"backward: grad has shape {grad.shape}, expected the output's "
                             f"shape {self.shape}")
        return grad.astype(self.dtype, copy=False)

    def retain_grad(self):
        """Keep the gradient of this non-leaf tensor in ``.grad`` during backward."""
        self._retain = True
        return self

    # Operators (a + b, a * b, a @ b, t.sum(), t.reshape(...)) are the ops of functional.py,
    # attached to Tensor there: this file needs no op, and functional.py needs Tensor.


def _check_grad_shape(fn, gx, x):
    # early tinygrad's habit: catch a wrong backward where it happens, not three ops later
    if gx.shape != x.shape:
        raise RuntimeError(f"{type(fn).__name__}.backward returned a gradient of shape "
                           f"{gx.shape} for an input of shape {x.shape}")


class _LeafBuffers:
    """Which gradients a leaf may keep as its ``.grad`` without a copy.

    Why: fc6's weight gradient at width 1 is 410 MB; copying it costs time and memory for
    nothing when no other array shares it. But backward functions hand the same array to several
    inputs (add) or views of one array (reshape, transpose), and the caller's ``grad`` is the
    caller's. So every array handed on is counted by the buffer it lives in, and a leaf keeps
    its gradient only if it is the whole of a buffer handed on once. Only minifcn's own ops are
    known to return fresh arrays or views of g; what another Function returns (it may be an
    array it saved) counts as shared.
    """

    def __init__(self, upstream):
        self.count = {id(_buffer(upstream)): 2}  # the caller's array: never kept

    def handed_on(self, g, fn):
        ours = type(fn).__module__.startswith("minifcn.")
        buf = id(_buffer(g))
        self.count[buf] = self.count.get(buf, 0) + (1 if ours else 2)

    def keep_or_copy(self, g):
        buf = _buffer(g)
        if (type(buf) is type(g) and self.count.get(id(buf)) == 1 and g.size == buf.size
                and g.flags.c_contiguous):
            return g
        return g.copy()


def _buffer(a):
    """What owns ``a``'s memory: ``a`` itself, the array a view is of, or a non-array (a
    memoryview, an mmap) under an array made from raw memory."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def _topological_order(root):
    """Tensors reachable from root, each after all of its inputs (iterative DFS)."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        # seen when expanded, not when pushed: a tensor pushed as an input of one op may be
        # reached first through another op's inputs (cat(a, f(a))); it must then wait for that
        # op, else its gradient is passed on before f's share has arrived
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._fn is not None:
            for x in t._fn.inputs:
                if x.requires_grad and id(x) not in seen:
                    stack.append((x, False))
    return order


def as_tensor(x, like=None):
    """Wrap numbers and arrays as constant Tensors (dtype of ``like`` for numbers), on the
    device of ``like`` (so ``1.0 + t`` and ``sum(tensors)`` work for a Tensor on the GPU too)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(like, Tensor):
        xp = get_array_module(like.data)
        if isinstance(x, (int, float, np.generic)):
            return Tensor(xp.asarray(x, dtype=like.dtype))
        if isinstance(x, np.ndarray) and xp is not np:
            return Tensor(xp.asarray(x))
    return Tensor(x)


class Function:
    """One differentiable op. Subclasses write ``forward(self, *arrays, **options)`` returning
    an ndarray and ``backward(self, grad)`` returning one gradient (or None) per input tensor.
    Store what backward needs in ``self.saved`` (dropped by ``release`` after use). A leaf's
    ``.grad`` is a copy of what backward returned, except from minifcn's own ops, whose fresh
    gradients the leaf keeps (Tensor.backward says when)."""

    def __init__(self):
        self.inputs = ()
        self.saved = ()

    @classmethod
    def apply(cls, *inputs, **options):
        fn = cls()
        tensors = [as_tensor(x) for x in inputs]
        # which inputs want a gradient: backward can skip the work for the others
        fn.needs_grad = tuple(_grad_enabled and t.requires_grad for t in tensors)
        out = Tensor(fn.forward(*(t.data for t in tensors), **options))
        if _grad_enabled and any(t.requires_grad for t in tensors):
            out.requires_grad = True
            out._fn = fn
            fn.inputs = tuple(tensors)
        else:
            fn.release()
        return out

    def release(self):
        self.saved = ()
        self.inputs = ()

    def forward(self, *arrays, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError
