"""``minifcn.summary(model, input_shape)``: a table of an FCN's layers, computed from geometry.

One row per layer call in forward order (conv, relu, pool, dropout, score, upscore, crop, sum,
scale), with the output shape, the cumulative stride relative to the input (the "jump"), the
receptive field of one output pixel, the parameters and the multiply-accumulates; totals at
the bottom. Nothing runs on real data: the rows come from ``geometry.trace``, which follows the
model's own forward on shapes, so the table for FCN-8s at full width on 500x500 takes
milliseconds and no memory.

``summary`` returns the table as a string (a str whose repr is the table itself, so a notebook
or the REPL shows it laid out): ``print(minifcn.summary(model, (1, 3, 500, 500)))``.
"""
import math
from fractions import Fraction

from .geometry import trace


class Summary(str):
    """The summary table: a str that shows itself laid out in a REPL or notebook."""

    def __repr__(self):
        return str(self)


def _input_shape(model, input_shape):
    if isinstance(input_shape, int):
        input_shape = (input_shape, input_shape)
    shape = tuple(input_shape)
    if len(shape) == 2:
        shape = (1, model.conv1_1.in_channels) + shape
    elif len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or not all(isinstance(v, int) and v >= 1 for v in shape):
        raise ValueError(f"summary: input_shape must be (N, C, H, W), (C, H, W), (H, W) or a "
                         f"size, positive ints, got {input_shape!r}")
    return shape


def _frac(v):
    if v == math.inf:  # a global pool or a non-local block: every input pixel
        return "all"
    v = Fraction(v)
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def _macs(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def summary(model, input_shape=(1, 3, 500, 500)):
    """The layer table of ``model`` for an input of ``input_shape`` (N, C, H, W) (also accepted:
    (C, H, W), (H, W), or one int for a square image), returned as a string.

    Columns: layer (the reference name), kind, output shape, jump (cumulative stride, input
    pixels per output pixel), rf (receptive field, input pixels), params, MACs, and notes (crop
    offsets; dilation of a rarefied layer; fixed = parameters not learned). Raises ValueError
    when the input does not fit.
    """
    shape = _input_shape(model, input_shape)
    steps = trace(model, shape)
    header = ("layer", "kind", "output shape", "jump", "rf", "params", "MACs", "notes")
    rows = []
    for s in steps:
        notes = []
        if s.offset is not None:
            notes.append(f"offset {s.offset}")
        if s.dilation != 1:  # a rarefied filter (minifcn.models.rarefy)
            notes.append(f"dilation {s.dilation}")
        if s.params and s.trainable < s.params:
            notes.append("fixed" if s.trainable == 0 else f"{s.params - s.trainable:,} fixed")
        rows.append((s.name, s.kind, "x".join(str(v) for v in s.shape), _frac(s.jump),
                     _frac(s.rf), f"{s.params:,}" if s.params else "", _macs(s.macs) if s.macs
                     else "", ", ".join(notes)))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    right = {3, 4, 5, 6}  # numbers line up on the right

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(header))
    total = sum(s.params for s in steps)
    trainable = sum(s.trainable for s in steps)
    macs = sum(s.macs for s in steps)
    out = [f"{type(model).__name__} on input {'x'.join(map(str, shape))}", rule, line(header),
           rule, *map(line, rows), rule,
           f"total params {total:,} (trainable {trainable:,}, fixed {total - trainable:,})",
           f"total MACs {_macs(macs)} ({macs:,} multiply-accumulates)"]
    return Summary("\n".join(out))
