"""Module, Parameter and Buffer: how a net owns its weights.

A Module finds its parameters, buffers and sub-modules by looking at its own attributes (in the
order they were set), so ``self.conv1_1 = Conv2d(...)`` is all it takes to register one; the names
in ``state_dict`` are the attribute paths (``conv1_1.weight``), which is how FCN's reference layer
names become our keys. A ``Buffer`` is an array a module owns but does not learn (batch norm's
running statistics): saved, loaded and moved with the parameters, never seen by an optimiser.
"""
from collections.abc import Mapping

import numpy as np

from .. import backend
from ..autograd import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimiser updates (requires_grad=True)."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class Buffer(Tensor):
    """A Tensor that a Module owns but does not learn (requires_grad=False): batch norm's
    running_mean, running_var and num_batches_tracked. ``state_dict``, ``load_state_dict`` and
    ``to`` carry it; ``parameters()``, and so the optimiser, never see it.

    A class rather than PyTorch's ``register_buffer``: a Module here finds what it owns by the
    type of its attributes, so ``self.running_mean = Buffer(...)`` registers it as
    ``self.weight = Parameter(...)`` does (PyTorch 2.5 has ``torch.nn.Buffer`` for the same)."""

    def __init__(self, data):
        super().__init__(data, requires_grad=False)

    def __repr__(self):
        return f"Buffer(shape={self.shape}, dtype={self.dtype}, device={self.device})"


class Module:
    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self):
        """(name, module) for each direct sub-module, in the order they were set."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def _named(self, kind, prefix=""):
        # PyTorch's order: each module's own tensors, then its children's, depth first
        for path, m in self.named_modules(prefix):
            for name, value in vars(m).items():
                if isinstance(value, kind):
                    yield (f"{path}.{name}" if path else name), value

    def named_parameters(self, prefix=""):
        return self._named(Parameter, prefix)

    def named_buffers(self, prefix=""):
        return self._named(Buffer, prefix)

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def _named_state(self):
        """(name, tensor) of every parameter and buffer, in state_dict's order: per module its
        parameters, then its buffers (PyTorch's: weight, bias, running_mean, ...)."""
        for path, m in self.named_modules():
            for kind in (Parameter, Buffer):
                for name, value in vars(m).items():
                    if isinstance(value, kind):
                        yield (f"{path}.{name}" if path else name), value

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for _, m in self.named_modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """{name: NumPy array} for every parameter and buffer (copies, safe to keep); buffers
        keep their dtype (num_batches_tracked is int64)."""
        return {name: p.numpy().copy() for name, p in self._named_state()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters and buffers by name: ``state`` is ``{name: array}``
        (NumPy or CuPy arrays, or Tensors/Parameters, whose ``.data`` is taken). Each gets its
        own C-contiguous copy cast to its dtype, so the dict and other models loaded from it
        stay independent. Refuses missing or unexpected keys, shape mismatches and dtypes that
        do not cast within their kind (float64 into float32 is fine, complex or text is not;
        num_batches_tracked stays an integer), naming them, in one line, before touching any
        parameter: never half a model."""
        where = f"load_state_dict into {type(self).__name__}"
        if not isinstance(state, Mapping):
            raise TypeError(f"{where}: expected a dict {{name: array}}, got "
                            f"{type(state).__name__} (read a file with minifcn.io.load first)")
        own = dict(self._named_state())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        values, wrong = {}, []
        for k, p in own.items():
            if k not in state:
                continue
            v = state[k].data if isinstance(state[k], Tensor) else state[k]
            if not _is_array(v):
                wrong.append(f"{k}: expected an array or Tensor, got {type(v).__name__}")
            elif tuple(v.shape) != p.shape:
                wrong.append(f"shape mismatch: {k}: file {tuple(v.shape)} vs model {p.shape}")
            elif not np.can_cast(v.dtype, p.dtype, casting="same_kind"):
                wrong.append(f"dtype mismatch: {k}: file {v.dtype} vs model {p.dtype}")
            values[k] = v
        if missing or unexpected or wrong:
            raise ValueError(f"{where}: " + "; ".join(
                f"{what}{', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                for what, items in (("missing keys: ", missing), ("unexpected keys: ", unexpected),
                                    ("", wrong)) if items))
        for k, p in own.items():
            xp = backend.get_array_module(p.data)
            v = backend.as_numpy(values[k]) if xp is np else values[k]
            p.data = xp.array(v, dtype=p.dtype, order="C", copy=True)  # never the caller's array
        return self

    def to(self, device=None, dtype=None):
        """Move every parameter and buffer to 'cpu'/'cuda' and/or cast the floating ones to a
        floating dtype, in place; integer buffers (num_batches_tracked) keep their dtype, as in
        PyTorch."""
        if dtype is not None and np.dtype(dtype).kind != "f":
            raise TypeError(f"{type(self).__name__}.to: dtype must be a floating dtype, got "
                            f"{np.dtype(dtype)}")
        for _, p in self._named_state():
            data = p.data if device is None else backend.to_device(p.data, device)
            p.data = data if dtype is None or data.dtype.kind != "f" else data.astype(dtype)
            p.grad = None
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self.children():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    def extra_repr(self):
        return ""


def _is_array(value):
    """A NumPy array or scalar, or an array of the GPU's module (CuPy)."""
    return (isinstance(value, (np.ndarray, np.generic))
            or backend.get_array_module(value) is not np)
