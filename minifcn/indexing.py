"""``x[key]`` on a Tensor: basic indexing (ints, slices, ``...``, ``None``), as NumPy's.

Splitting a head's channels (``extra[:, :1]`` for a centre heatmap, ``extra[:, 1:]`` for its
offsets) is the use the nets have. The forward is NumPy's own view, copied; the backward puts
the gradient back where the view came from, zeros elsewhere. Basic indexing never repeats an
element, so a plain assignment is the whole adjoint (advanced indexing, with arrays of indices,
could repeat one and would need a scatter-add: it is refused).
"""
from .autograd import Function
from .backend import get_array_module


class GetItem(Function):
    def forward(self, x, key):
        self.saved = (x.shape, key)
        return x[key].copy()

    def backward(self, g):
        shape, key = self.saved
        gx = get_array_module(g).zeros(shape, dtype=g.dtype)
        gx[key] = g
        return gx


def _basic(part):
    return part is None or part is Ellipsis or isinstance(part, slice) or (
        isinstance(part, int) and not isinstance(part, bool))


def getitem(x, key):
    """x[key] for a Tensor x, with basic indexing only; a one-line error for anything else."""
    parts = key if isinstance(key, tuple) else (key,)
    bad = [p for p in parts if not _basic(p)]
    if bad:
        raise TypeError(f"getitem: only basic indexing (ints, slices, ..., None) is supported, "
                        f"got {type(bad[0]).__name__} {bad[0]!r}")
    try:
        get_array_module(x.data).empty(x.shape, dtype=bool)[key]  # NumPy's own bounds check
    except IndexError as e:
        raise IndexError(f"getitem: {e} (shape {tuple(x.shape)})") from None
    return GetItem.apply(x, key=key)
