"""``minifcn.gradcheck``: analytic gradients against central differences, Chainer's way.

``gradcheck(fn, inputs)`` checks one function; ``run_cases`` checks every case of the op table
(``minifcn.opcases``) and prints the table that ``python -m minifcn.gradcheck`` shows (the
command is ``__main__.py`` beside this file). ``import minifcn`` binds the name
``minifcn.gradcheck`` to the function, as ``torch.autograd.gradcheck`` is one too.

The function's output is contracted with a *random* upstream gradient ``g``, giving the scalar
L = sum(g * f(inputs)). Checking sum(f) instead (g = 1) would pass a wrong backward wherever the
outputs sum to a constant, as softmax's do.
"""
import sys

import numpy as np

from ..autograd import Tensor
from ..backend import as_numpy, get_array_module


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with central differences."""


def _targets(fn, inputs):
    named = [(f"input {i}", t) for i, t in enumerate(inputs)
             if isinstance(t, Tensor) and t.requires_grad]
    params = getattr(fn, "named_parameters", None)
    if callable(params):  # a Module: its parameters are inputs too
        named += [(f"parameter {name}", p) for name, p in params() if p.requires_grad]
    return named


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, max_elements=None, seed=0,
              return_error=False):
    """Check the backward of ``fn(*inputs)`` for every input (and, if fn is a Module, every
    parameter) that requires grad.

    fn: callable taking the inputs and returning a Tensor; it must be deterministic (eval mode,
    no dropout). inputs: a list of Tensors (others are passed through). All checked tensors must
    be float64. max_elements: check at most this many randomly chosen elements of each tensor
    (every tensor is still sampled), for big models. An element passes when
    |analytic - numeric| <= atol + rtol * |numeric|.

    Returns True, or raises GradcheckError naming the tensor, the worst element and both values.
    With return_error=True returns the worst relative error instead of True (the CLI's table).
    """
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    targets = _targets(fn, inputs)
    if not targets:
        raise ValueError("gradcheck: no input or parameter requires grad; nothing to check")
    for name, t in targets:
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck: {name} is {t.dtype}; central differences need float64 "
                            "(make inputs with dtype=np.float64, call model.double())")
    rng = np.random.default_rng(seed)

    out = fn(*inputs)
    g = get_array_module(out.data).asarray(rng.standard_normal(out.shape))
    for _, t in targets:
        t.grad = None
    out.backward(g)
    analytic = [as_numpy(t.grad) if t.grad is not None else np.zeros(t.shape) for _, t in targets]

    def loss():
        return float(as_numpy((fn(*inputs).data * g).sum()))

    worst_rel = 0.0
    for (name, t), a in zip(targets, analytic):
        flat = t.data.reshape(-1)  # a view: perturbing it perturbs t
        idx = np.arange(flat.size)
        if max_elements is not None and flat.size > max_elements:
            idx = np.sort(rng.choice(flat.size, size=max_elements, replace=False))
        numeric = np.empty(len(idx))
        for n, i in enumerate(idx):
            orig = float(flat[i])
            flat[i] = orig + eps
            up = loss()
            flat[i] = orig - eps
            down = loss()
            flat[i] = orig
            numeric[n] = (up - down) / (2 * eps)
        got = a.reshape(-1)[idx]
        err = np.abs(got - numeric)
        if len(idx):
            worst_rel = max(worst_rel, float(np.max(err / np.maximum(np.abs(numeric), atol))))
        excess = err - (atol + rtol * np.abs(numeric))
        if (excess > 0).any():
            k = int(np.argmax(excess))
            where = tuple(int(v) for v in np.unravel_index(int(idx[k]), t.shape))
            raise GradcheckError(
                f"gradcheck: {name} of shape {t.shape}, worst element {where}: analytic "
                f"{got[k]:.8g} vs numeric {numeric[k]:.8g} (|diff| {err[k]:.3g} > atol {atol} + "
                f"rtol {rtol} * |numeric|; {(excess > 0).sum()} of {len(idx)} elements fail)")
    return worst_rel if return_error else True


def run_cases(cases=None, seed=0, out=None):
    """Check each (name, shapes, make) case (default: every op of ``minifcn.opcases.CASES``),
    print one row per case (op, shapes, worst relative error, pass/fail) and the count of
    passes and failures; return the number of failures. A failure's message goes to stderr."""
    if cases is None:
        from ..opcases import CASES as cases
    out = out or sys.stdout  # looked up now, so that a redirected stdout is honoured
    rows, failures = [], 0
    for name, shapes, make in cases:
        fn, inputs = make(np.random.default_rng(seed))
        try:
            err = gradcheck(fn, inputs, return_error=True)
            rows.append((name, shapes, f"{err:.1e}", "pass"))
        except GradcheckError as e:
            failures += 1
            rows.append((name, shapes, "-", "FAIL"))
            print(e, file=sys.stderr)
    header = ("op", "shapes", "worst rel. error", "result")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    for r in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=out)
    print(f"\n{len(rows) - failures} passed, {failures} failed", file=out)
    return failures
