"""Where each blob's pixels sit in the input image, and the crop offsets that follow from it.

FCN adds score maps computed at different depths and crops the upsampled scores back to the
image. Which rows and columns to keep is fixed by the layers, not chosen: the authors derived it
(Caffe's coord_map.py) and advise never to set it by hand. We do the same.

Coordinate maps. A layer relates its output coordinate x to its input coordinate by an affine
map x_in = a * x + b (the same on both axes: FCN's layers are square):

    convolution / pooling, kernel k, stride s, padding p:  a = s,    b = (k - 1) / 2 - p
    (output pixel x sees inputs x*s - p ... x*s - p + k - 1; b places x at their centre)
    the same, dilated by d (tap i at i*d):                 a = s,    b = d (k - 1) / 2 - p
    (its taps span x*s - p ... x*s - p + d (k - 1); the receptive field grows by d (k - 1))
    transposed convolution (the adjoint of that conv):     a = 1/s,  b = (p - (k - 1) / 2) / s
    crop at offset o:                                      a = 1,    b = o
    ReLU, dropout, scale:                                  a = 1,    b = 0

Composing the maps from the image up to a blob gives that blob's map to image coordinates;
``a`` is its cumulative stride (the "jump"). A crop of blob F to the size of a reference blob R
must make F[o + x] and R[x] the same image point: a_F (x + o) + b_F = a_R x + b_R, so a_F must
equal a_R and o = (b_R - b_F) / a_F, a whole number >= 0.

Worked, for the reference nets (conv1_1 pads by 100), each blob's map x_img = a * x + b:

    conv1_1 (k3 p100)         x - 99            pool3   8x - 95.5     fc6 (k7 p0)  32x + 12.5
    pool1 (k2 s2: 2x + 1/2)  2x - 98.5          pool4  16x - 91.5     score_fr     32x + 12.5
    pool2                    4x - 97.5          pool5  32x - 83.5     (3x3 p1 convs: no change)

    FCN-32s  upscore (k64 s32): x - 19                 -> crop to the image at 19
    FCN-16s  upscore2 (k4 s2): 16x - 11.5; score_pool4 sits on pool4 (16x - 91.5)
                                                     -> crop at (-11.5 + 91.5) / 16 = 5
             upscore16 (k32 s16): x - 27               -> crop to the image at 27
    FCN-8s   upscore_pool4 (k4 s2): 8x - 23.5; score_pool3 on pool3 (8x - 95.5) -> crop at 9
             upscore8 (k16 s8): x - 31                 -> crop to the image at 31

These are the offsets of the authors' reference prototxts (tests/test_models_geometry.py checks
them for every variant and width). Changing conv1_1's padding to p adds p - 100 to every map's b:
the inner crops compare two maps that both moved, so they stay; the final offsets become
19, 27, 31 + (p - 100), and below p = 81, 73, 69 they would be negative (the upsampled scores
would start inside the image): the model refuses such a padding.

How the walk is done: ``trace`` runs the model's own ``forward`` with every layer attribute
replaced by a stand-in that works on a ``Blob`` (shape, coordinate map, receptive field) instead
of a Tensor. So the geometry, the offsets and ``summary`` follow the very code the forward runs,
and nothing is computed on real data (a 500x500 FCN-8s is traced in milliseconds).
"""
import copy
import math
from dataclasses import dataclass
from fractions import Fraction

from .. import nn
from ..primitives import conv_out_size
from .layers import Concat, Crop, Resize, Scale, Sum


class GeometryError(ValueError):
    """A layer's geometry does not work out (a crop outside its input, a kernel larger than its
    input, scales that do not match)."""


@dataclass(frozen=True)
class CoordMap:
    """x_outer = a * x + b between two coordinate systems (a, b exact Fractions)."""

    a: Fraction
    b: Fraction

    def compose(self, inner):
        """This map after ``inner``: x -> self(inner(x))."""
        return CoordMap(self.a * inner.a, self.a * inner.b + self.b)

    def __call__(self, x):
        return self.a * x + self.b


IDENTITY = CoordMap(Fraction(1), Fraction(0))


def conv_map(k, s, p, d=1):
    """Map from a conv/pool output coordinate to its input coordinate: (s, d(k-1)/2 - p), the
    centre of the window's span (d: dilation)."""
    return CoordMap(Fraction(s), Fraction(d * (k - 1), 2) - p)


def deconv_map(k, s, p):
    """Map from a transposed-conv output coordinate to its input coordinate: the inverse of
    conv_map(k, s, p), i.e. (1/s, (p - (k-1)/2) / s)."""
    fwd = conv_map(k, s, p)
    return CoordMap(1 / fwd.a, -fwd.b / fwd.a)


class Shape(tuple):
    """A Blob's shape (N, C, H, W) that also carries its coordinate map: a net that resizes a
    map to another's size (``resize(x, h.shape)``) hands the trace both."""

    def __new__(cls, values, map):
        shape = super().__new__(cls, values)
        shape.map = map
        return shape


@dataclass
class Blob:
    """What the trace knows about a tensor: shape (N, C, H, W) (H, W None in a size-free trace),
    map to input-image coordinates, receptive field (in input pixels, per axis; inf after a
    layer that sees the whole map: a global pool, a non-local block)."""

    shape: tuple
    map: CoordMap
    rf: int

    def __post_init__(self):
        self.shape = Shape(self.shape, self.map)


@dataclass
class Step:
    """One layer call as seen by ``trace``: one row of ``summary``."""

    name: str
    kind: str  # input conv pool relu dropout upscore crop sum scale bn unpool concat resize se
    # nonlocal
    shape: tuple  # output shape (H, W None in a size-free trace)
    jump: Fraction  # cumulative stride relative to the input
    rf: int  # receptive field of one output pixel, in input pixels
    shift: Fraction  # input coordinate of output pixel 0 (the map's b)
    params: int = 0
    trainable: int = 0
    macs: int = 0
    offset: int = None  # crops only
    dilation: int = 1  # convs and pools


def _square(value, name, what):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if pair[0] != pair[1]:
        raise GeometryError(f"geometry: layer {name} has {what} {pair}; only square layers "
                            "are supported")
    return pair[0]


def _sizes(blob, fn):
    """Apply a 1-D size rule to H and W (None stays None in a size-free trace)."""
    n, c, h, w = blob.shape
    return tuple(None if v is None else fn(v) for v in (h, w))


class _Stand:
    """Stands in for layer ``name`` during a trace: takes Blobs, returns a Blob, logs a Step."""

    def __init__(self, name, module, steps):
        self.name, self.module, self.steps = name, module, steps

    def __call__(self, *blobs, output_size=None):
        m, name = self.module, self.name
        x = blobs[0]
        n, c = x.shape[:2]
        params = sum(p.size for p in m.parameters())
        trainable = sum(p.size for p in m.parameters() if p.requires_grad)
        offset, macs, d, placed = None, 0, 1, None  # placed: the output's map, set outright
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            pool = isinstance(m, nn.MaxPool2d)
            k = _square(m.kernel_size, name, "kernel")
            s = _square(m.kernel_size if m.stride is None else m.stride, name, "stride")
            p = _square(m.padding, name, "padding")
            d = _square(getattr(m, "dilation", 1), name, "dilation")
            ceil = pool and m.ceil_mode
            span = d * (k - 1) + 1  # the input pixels one window reaches

            def size(v):
                if v + 2 * p < span:
                    what = f"kernel {k}" if d == 1 else f"kernel {k} at dilation {d} (span {span})"
                    raise GeometryError(f"geometry: {name}: {what} is larger than its padded "
                                        f"input ({v} + 2*{p})")
                return conv_out_size(v, k, s, p, ceil, d)

            if not pool and m.in_channels != c:
                raise GeometryError(f"geometry: {name} expects {m.in_channels} channels, gets {c}")
            hw = _sizes(x, size)
            c_out = c if pool else m.out_channels
            fmap, kind = conv_map(k, s, p, d), "pool" if pool else "conv"
            rf = x.rf + d * (k - 1) * x.map.a  # the span's far tap, in input pixels
            if not pool and None not in hw:
                macs = n * c_out * hw[0] * hw[1] * c * k * k
        elif isinstance(m, nn.ConvTranspose2d):
            k = _square(m.kernel_size, name, "kernel")
            s = _square(m.stride, name, "stride")
            p = _square(m.padding, name, "padding")
            if m.in_channels != c:
                raise GeometryError(f"geometry: {name} expects {m.in_channels} channels, gets {c}")
            hw = _sizes(x, lambda v: (v - 1) * s - 2 * p + k)
            c_out, fmap, kind = m.out_channels, deconv_map(k, s, p), "upscore"
            rf = x.rf + (math.ceil(k / s) - 1) * x.map.a  # inputs that reach one output pixel
            if None not in x.shape:
                macs = n * c * x.shape[2] * x.shape[3] * c_out * k * k
        elif isinstance(m, Crop):
            ref = blobs[1]
            if x.map.a != ref.map.a:
                raise GeometryError(f"geometry: crop {name}: scale mismatch, stride {x.map.a} "
                                    f"vs the reference's {ref.map.a}")
            o = (ref.map.b - x.map.b) / x.map.a
            if o.denominator != 1 or o < 0:
                raise GeometryError(f"geometry: crop {name}: offset {o} is not a whole number "
                                    ">= 0 (the map to crop does not cover the reference)")
            offset = int(o)
            for have, want in zip(x.shape[2:], ref.shape[2:]):
                if have is not None and offset + want > have:
                    raise GeometryError(f"geometry: crop {name}: offset {offset} + size {want} "
                                        f"falls outside the map's size {have}")
            fmap = CoordMap(Fraction(1), Fraction(offset))  # x_in = x + offset
            hw, c_out, kind, rf = ref.shape[2:], c, "crop", x.rf
        elif isinstance(m, Sum):
            y = blobs[1]
            if x.map != y.map or x.shape != y.shape:
                raise GeometryError(f"geometry: sum {name}: inputs differ: {x.shape} at "
                                    f"{x.map} vs {y.shape} at {y.map}")
            hw, c_out, fmap, kind, rf = x.shape[2:], c, IDENTITY, "sum", max(x.rf, y.rf)
        elif isinstance(m, nn.MaxUnpool2d):
            # each value goes back to its window of the map the pool took in: the pool's map
            # undone, and each pixel sees what its pooled value saw
            k = _square(m.kernel_size, name, "kernel")
            s = _square(m.kernel_size if m.stride is None else m.stride, name, "stride")
            p = _square(m.padding, name, "padding")
            size = blobs[2] if len(blobs) > 2 else output_size
            hw = _sizes(x, lambda v: (v - 1) * s - 2 * p + k) if size is None else \
                tuple(size[-2:])
            c_out, fmap, kind, rf = c, deconv_map(k, s, p), "unpool", x.rf
        elif isinstance(m, Concat):
            for y in blobs[1:]:
                if y.map != x.map or y.shape[2:] != x.shape[2:]:
                    raise GeometryError(f"geometry: concat {name}: inputs differ: {x.shape} at "
                                        f"{x.map} vs {y.shape} at {y.map}")
            c_out = sum(y.shape[1] for y in blobs)
            hw, fmap, kind, rf = x.shape[2:], IDENTITY, "concat", max(y.rf for y in blobs)
        elif isinstance(m, nn.BatchNorm2d):
            if m.num_features != c:
                raise GeometryError(f"geometry: {name} expects {m.num_features} channels, "
                                    f"gets {c}")
            hw, c_out, fmap, kind, rf = x.shape[2:], c, IDENTITY, "bn", x.rf
            if None not in x.shape:  # at inference one multiply-add per value
                macs = n * c * x.shape[2] * x.shape[3]
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            want = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,) * 2
            hw = tuple(v if o is None else o for v, o in zip(x.shape[2:], want))
            c_out, kind = c, "pool"
            if want[0] == 1 or None in x.shape[2:]:  # the whole map: everything, at its centre
                fmap, rf = IDENTITY, math.inf
            else:
                a = Fraction(x.shape[2], hw[0])
                fmap, rf = CoordMap(a, (a - 1) / 2), x.rf + (math.ceil(a) - 1) * x.map.a
        elif isinstance(m, Resize):  # bilinear: each output reads 2 x 2 cells of its input
            size = blobs[1]
            hw, c_out, fmap, kind, rf = tuple(size[-2:]), c, IDENTITY, "resize", x.rf + x.map.a
            placed = getattr(size, "map", None)
            if None not in x.shape:
                macs = n * c * hw[0] * hw[1] * 4 if None not in hw else 0
        elif isinstance(m, (nn.SqueezeExcitation, nn.NonLocal2d)):
            hw, c_out, fmap = x.shape[2:], c, IDENTITY
            if isinstance(m, nn.SqueezeExcitation):  # a gate per channel from the map's mean
                kind, rf = "se", math.inf
                if None not in x.shape:
                    r = m.fc1.out_channels
                    macs = n * (2 * c * x.shape[2] * x.shape[3] + 2 * c * r)
            else:  # every position attends to every other: HW x HW
                kind, rf = "nonlocal", math.inf
                if None not in x.shape:
                    p, ci = x.shape[2] * x.shape[3], m.theta.out_channels
                    macs = n * (4 * p * c * ci + 2 * p * p * ci)
        elif isinstance(m, (nn.ReLU, nn.Dropout, Scale)):
            kind = {nn.ReLU: "relu", nn.Dropout: "dropout", Scale: "scale"}[type(m)]
            hw, c_out, fmap, rf = x.shape[2:], c, IDENTITY, x.rf
        else:
            raise GeometryError(f"geometry: layer {name} of type {type(m).__name__} has no "
                                "coordinate rule")
        out = Blob((n, c_out) + tuple(hw), placed or x.map.compose(fmap), rf)
        self.steps.append(Step(name, kind, out.shape, out.map.a, out.rf, out.map.b,
                               params, trainable, macs, offset, d))
        if getattr(m, "return_indices", False):
            return out, out  # (values, indices): the indices have the values' geometry
        return out


def trace(model, input_shape=None, pad1=None):
    """Run ``model.forward`` on shapes and coordinate maps instead of numbers.

    input_shape: (N, C, H, W); None traces the geometry only (sizes None; offsets still come
    out, they do not depend on the input size). pad1: trace as if conv1_1's padding were this.
    Returns the list of Steps, the input first, then one per layer call in forward order.
    Raises GeometryError (a ValueError) when the layers do not fit together for this input.
    """
    shape = (1, model.conv1_1.in_channels, None, None) if input_shape is None else \
        tuple(input_shape)
    steps = [Step("data", "input", shape, Fraction(1), 1, Fraction(0))]
    ghost = copy.copy(model)  # shares the layers; only its attributes get swapped
    for name, layer in model.children():
        if name == "conv1_1" and pad1 is not None:
            layer = copy.copy(layer)
            layer.padding = (pad1, pad1)
        setattr(ghost, name, _Stand(name, layer, steps))
    ghost.forward(Blob(shape, IDENTITY, 1))
    return steps


def crop_offsets(model, pad1=None):
    """{crop layer name: offset} derived from the model's layers, e.g. FCN-8s
    {'score_pool4c': 5, 'score_pool3c': 9, 'score': 31} (conv1_1 padding 100)."""
    return {s.name: s.offset for s in trace(model, pad1=pad1) if s.kind == "crop"}


def _fits(model, size=None, pad1=None):
    try:
        shape = None if size is None else (1, model.conv1_1.in_channels, size, size)
        trace(model, shape, pad1=pad1)
        return True
    except GeometryError:
        return False


def min_input_size(model, limit=4096):
    """The smallest side (pixels) of an input this model accepts with its conv1_1 padding: with
    padding 100, 1; with a smaller one, fc6's 7x7 window needs a large enough pool5."""
    for size in range(1, limit + 1):
        if _fits(model, size):
            return size
    raise GeometryError(f"geometry: no input up to {limit}x{limit} fits {type(model).__name__}")


def min_pad1(model, size=None, limit=1024, start=0):
    """The smallest conv1_1 padding for which the upsampled scores cover the input (every crop
    offset >= 0) and, if ``size`` is given, a size x size input fits. ``model``: an FCN (for a
    model's name, ``minifcn.models.padding.min_pad1``). ``start``: look from this padding up
    (more padding never makes an input fit less)."""
    for p in range(start, limit + 1):
        if _fits(model, size, pad1=p):
            return p
    raise GeometryError(f"geometry: no conv1_1 padding up to {limit} fits {type(model).__name__}")
