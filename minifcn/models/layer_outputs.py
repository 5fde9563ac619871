"""What every layer of a net computes on one input: ``record(model, x)``.

The nets write their forward out layer by layer (``self.conv1_1(x)``, ``self.fuse_pool4(a, b)``
...), so, as ``geometry.trace`` does, we run the model's own ``forward`` on a shallow copy whose
layer attributes are wrapped: each wrapper calls the real layer and keeps what it returned. The
net and its outputs are unchanged, and no forward needs a "return the intermediates" option:
the score maps before and after each skip of FCN-8s (upscore2, then fuse_pool4; upscore_pool4,
then fuse_pool3) are simply the outputs of those layers. (Not named record.py, so that
the function ``minifcn.models.record`` cannot hide the module.)
"""
import copy

from ..autograd import Tensor, no_grad


class _Keep:
    """Stands in for layer ``name``: calls it and keeps its output in ``kept``."""

    def __init__(self, name, layer, kept, copy_data):
        self.name, self.layer, self.kept, self.copy_data = name, layer, kept, copy_data

    def __getattr__(self, attr):  # the net's own checks read its layers (conv1_1.in_channels)
        return getattr(self.__dict__["layer"], attr)

    def __call__(self, *args, **kwargs):
        out = self.layer(*args, **kwargs)
        first = out[0] if isinstance(out, tuple) else out  # (values, indices) of a pool
        key, n = self.name, 2
        while key in self.kept:  # a layer called again (none of FCN's is) gets name#2, ...
            key, n = f"{self.name}#{n}", n + 1
        # a copy: the in-place ReLU after a conv overwrites the conv's output
        self.kept[key] = first.data.copy() if self.copy_data else first
        return out


def record(model, x, names=None, grad=False):
    """Run ``model`` on ``x`` ((N, C, H, W) array or Tensor) and keep each layer's output.

    Returns (output Tensor, {layer name: output}) in the order the layers ran. ``names``: keep
    only these layers (others still run). Without ``grad`` the pass runs under ``no_grad`` and
    each output is a copy of its array (N, C, h, w). With ``grad`` the outputs are the graph's
    own Tensors, for a backward from the output to them (Grad-CAM); mind that an in-place ReLU
    after a conv overwrites the conv's Tensor, so ask for the ReLU's.
    """
    x = x if isinstance(x, Tensor) else Tensor(x)
    layers = dict(model.children())
    unknown = [n for n in names or () if n not in layers]
    if unknown:
        raise ValueError(f"record: {type(model).__name__} has no layer {unknown[0]!r} (its "
                         f"layers: {', '.join(layers)})")
    getattr(model, "min_input_size", None)  # an FCN traces itself once: before the swap
    kept = {}
    ghost = copy.copy(model)  # shares the layers; only its attributes get swapped
    for name, layer in layers.items():
        if names is None or name in names:
            setattr(ghost, name, _Keep(name, layer, kept, copy_data=not grad))
    if grad:
        out = ghost(x)
    else:
        with no_grad():
            out = ghost(x)
    return out, kept
