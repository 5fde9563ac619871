"""A net as an ONNX graph for inference, built by walking the model's own forward.

``to_onnx`` runs ``model.forward`` with every layer replaced by a stand-in that, instead of
computing, appends the ONNX node(s) for that layer and returns the name of its output (the same
trick as ``minifcn.models.geometry.trace``). So the graph is whatever the forward does, for
FCN-32s, 16s, 8s and 8s at-once and the encoder-decoders alike, and each layer becomes:

    Conv2d           Conv (kernel_shape, strides, pads), weight and bias as initializers
    ConvTranspose2d  ConvTranspose (the upscore layers: no bias, as in the reference nets)
    MaxPool2d        MaxPool with ceil_mode=1 (Caffe's pooling rounds up)
    ReLU             Relu
    Dropout          nothing (inference: the identity)
    Scale            Mul by a float32 scalar (FCN-8s at-once: 0.01 and 0.0001)
    Sum              Add
    Crop             Shape(like, start=2, end=4) -> (H, W); Add(offsets, H W) -> ends;
                     Slice(x, offsets, ends, axes=[2, 3]): the offsets are the model's derived
                     ones (``model.offsets``), the sizes the reference tensor's at run time
    BatchNorm2d      BatchNormalization (inference: the running statistics)
    MaxPool2d with return_indices   MaxPool with its second output, Indices
    MaxUnpool2d      MaxUnpool, then Slice to output_size, the size of the map the pool took
                     in (``_unpool``)
    Concat           Concat on axis 1 (U-Net's skips, ASPP's branches)
    AdaptiveAvgPool2d(1)  GlobalAveragePool (ASPP's image pooling)
    Resize           Resize, linear, "pytorch_half_pixel", to the size of a map read at run time
    SqueezeExcitation     GlobalAveragePool, Conv, Relu, Conv, Sigmoid, Mul
    NonLocal2d       Conv (theta, phi, g), Reshape, Transpose, MatMul, Softmax, MatMul,
                     Reshape, Conv (W), Add

Input "image" (N, 3, H, W) float32, RGB 0..255 minus ``MEAN_RGB``; output "scores"
(N, n_class, H, W); N, H and W are free. An FCN takes any H, W >= 1, as ``predict`` does: a
net trained at a small conv1_1 padding (pad1 'auto', 69 for FCN-8s on 96x96) is too tight for
a smaller image, and predict runs it at a larger padding (the weights do not depend on it). The
graph does the same: it reads the image's shorter side, looks the padding up in a table
(``models.padding.pad1_by_side``: ReduceMin, Min, Gather), pads with Pad before conv1_1 (whose
Conv then pads by 0), and moves the crops to the image by as much (Add to their starts). A net
at padding 100 takes any size as it is: its graph has none of these nodes. The nets after FCN
take H, W from their ``min_input_size`` up (metadata "min_input_size"), as predict. Weights are
written as float32 whatever the model's dtype. Opset 17, IR version 8 (onnxruntime 1.13 and later).
A single .onnx file holds at most 2 GB (protobuf's limit): widths above about 1.9 are refused.
"""
import copy
import json

import numpy as np

from .. import nn
from .atomic import atomic_path
from ..data.transforms import MEAN_RGB
from .. import backend
from ..models.layers import Concat, Crop, Resize, Scale, Sum

__all__ = ["to_onnx", "require_onnx", "OPSET", "IR_VERSION", "INPUT", "OUTPUT"]

OPSET, IR_VERSION = 17, 8
INPUT, OUTPUT = "image", "scores"
MAX_BYTES = 2**31 - 2**24  # protobuf's 2 GB, less room for the graph itself


def require_onnx(where="to_onnx"):
    """The onnx module, or ImportError in one line naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f'{where} needs the onnx package: pip install -e ".[export]" (or pip '
                          'install "onnx>=1.14")') from None
    return onnx


class _Graph:
    """The nodes and initializers being collected, with unique value names."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.names = [], [], {INPUT}
        self.pad1 = None  # conv1_1's padding at run time: (pads, shift, {crop: per-pad shift})

    def fresh(self, name):
        out, i = name, 1
        while out in self.names:
            out, i = f"{name}_{i}", i + 1
        self.names.add(out)
        return out

    def const(self, name, array):
        name = self.fresh(name)
        self.inits.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, name, outputs=1, **attrs):
        """Append an ``op`` node; its output's value name (a list of ``outputs`` names if
        more than one)."""
        outs = [self.fresh(name)] + [self.fresh(f"{name}.out{i}") for i in range(1, outputs)]
        self.nodes.append(self.helper.make_node(op, list(inputs), outs, name=outs[0], **attrs))
        return outs[0] if outputs == 1 else outs


def _f32(a):
    """A float32 NumPy copy of a Tensor, array or CuPy array."""
    return backend.as_numpy(getattr(a, "data", a)).astype(np.float32)


def _square(pair):
    return list(pair) if isinstance(pair, (tuple, list)) else [pair, pair]


class _Stand:
    """Stands in for layer ``name`` in the walk: takes value names, emits nodes, returns the
    output's value name."""

    def __init__(self, name, module, graph):
        self.name, self.module, self.g = name, module, graph

    def __call__(self, *inputs, **options):
        out = self._emit(*inputs, **options)
        return tuple(map(_Value, out)) if isinstance(out, (list, tuple)) else _Value(out)

    def _emit(self, *inputs, output_size=None):
        m, g, name = self.module, self.g, self.name
        x = inputs[0]
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if name == "conv1_1" and g.pad1 is not None:  # padded by the image's size
                return _conv(g, name, m, g.node("Pad", [x, g.pad1[0]], f"{name}.pad"), pads=0)
            return _conv(g, name, m, x)
        if isinstance(m, nn.MaxPool2d):
            ph, pw = _square(m.padding)
            # with return_indices a second output: ONNX's indices count over the whole
            # (N, C, H, W) tensor, not per plane as PyTorch's, and MaxUnpool reads them so
            return g.node("MaxPool", [x], name, outputs=2 if m.return_indices else 1,
                          kernel_shape=_square(m.kernel_size),
                          strides=_square(m.kernel_size if m.stride is None else m.stride),
                          pads=[ph, pw, ph, pw], ceil_mode=int(bool(m.ceil_mode)))
        if isinstance(m, nn.MaxUnpool2d):
            size = inputs[2] if len(inputs) > 2 else output_size
            if not isinstance(size, _ShapeOf):
                raise ValueError(f"to_onnx: {name} must be given output_size=<map>.shape (the "
                                 "size its pool took in, read at run time)")
            return _unpool(g, name, m, x, inputs[1], size.value)
        if isinstance(m, nn.BatchNorm2d):  # inference: the running statistics
            if not m.track_running_stats:
                raise ValueError(f"to_onnx: {name} keeps no running statistics; ONNX's "
                                 "BatchNormalization needs them")
            c = m.num_features
            arrays = [m.weight, m.bias, m.running_mean, m.running_var] if m.affine else \
                [np.ones(c), np.zeros(c), m.running_mean, m.running_var]
            names = [g.const(f"{name}.{k}", _f32(a)) for k, a in
                     zip(("weight", "bias", "running_mean", "running_var"), arrays)]
            return g.node("BatchNormalization", [x] + names, name, epsilon=float(m.eps))
        if isinstance(m, Concat):
            return g.node("Concat", list(inputs), name, axis=1)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)):
                raise ValueError(f"to_onnx: {name}: ONNX has no adaptive pooling; only output "
                                 f"size 1 (GlobalAveragePool) is exported, got {m.output_size}")
            return g.node("GlobalAveragePool", [x], name)
        if isinstance(m, Resize):
            return _resize(g, name, x, inputs[1] if len(inputs) > 1 else output_size)
        if isinstance(m, nn.SqueezeExcitation):
            gate = g.node("GlobalAveragePool", [x], f"{name}.squeeze")
            for i, conv in enumerate((m.fc1, m.fc2)):
                gate = _conv(g, f"{name}.fc{i + 1}", conv, gate)
                gate = g.node("Relu" if i == 0 else "Sigmoid", [gate], f"{name}.act{i + 1}")
            return g.node("Mul", [x, gate], name)
        if isinstance(m, nn.NonLocal2d):
            return _non_local(g, name, m, x)
        if isinstance(m, nn.ReLU):
            return g.node("Relu", [x], name)
        if isinstance(m, nn.Dropout):
            return x  # inference: dropout is the identity
        if isinstance(m, Scale):
            return g.node("Mul", [x, g.const(f"{name}.factor", np.float32(m.factor))], name)
        if isinstance(m, Sum):
            return g.node("Add", [x, inputs[1]], name)
        if isinstance(m, Crop):
            if m.offset is None:
                raise ValueError(f"to_onnx: crop {name} has no offset (the model derives it)")
            size = g.node("Shape", [inputs[1]], f"{name}.size", start=2, end=4)  # like's H, W
            starts = g.const(f"{name}.starts", np.array([m.offset, m.offset], np.int64))
            if g.pad1 is not None and g.pad1[2].get(name):  # it moves with conv1_1's padding
                moved = g.node("Mul", [g.pad1[1], g.const(f"{name}.per_pad", np.array(
                    [g.pad1[2][name]], np.int64))], f"{name}.moved")
                starts = g.node("Add", [starts, moved], f"{name}.starts_now")
            ends = g.node("Add", [starts, size], f"{name}.ends")
            axes = g.const(f"{name}.axes", np.array([2, 3], np.int64))
            return g.node("Slice", [x, starts, ends, axes], name)
        raise ValueError(f"to_onnx: layer {name} of type {type(m).__name__} has no ONNX rule")


def _conv(g, name, m, x, pads=None):
    """Conv or ConvTranspose of layer m on x (weights as float32 initializers); ``pads``
    replaces the layer's padding (0: x is padded already)."""
    args = [x, g.const(f"{name}.weight", _f32(m.weight))]
    if m.bias is not None:
        args.append(g.const(f"{name}.bias", _f32(m.bias)))
    ph, pw = _square(m.padding if pads is None else pads)
    attrs = dict(kernel_shape=_square(m.kernel_size), strides=_square(m.stride),
                 pads=[ph, pw, ph, pw])
    if isinstance(m, nn.Conv2d):
        attrs["dilations"] = _square(m.dilation)
        return g.node("Conv", args, name, **attrs)
    return g.node("ConvTranspose", args, name, **attrs)


def _resize(g, name, x, size):
    """Bilinear Resize of x to the spatial size of ``size`` (a value's ``.shape``), as
    F.interpolate(align_corners=False): ONNX's "pytorch_half_pixel" rule."""
    if not isinstance(size, _ShapeOf):
        raise ValueError(f"to_onnx: {name} must be given <map>.shape (its size at run time)")
    i64 = lambda tag, v: g.const(f"{name}.{tag}", np.array(v, np.int64))  # noqa: E731
    nc = g.node("Slice", [g.node("Shape", [x], f"{name}.x_shape"), i64("zero", [0]),
                          i64("two", [2])], f"{name}.nc")
    hw = g.node("Slice", [g.node("Shape", [size.value], f"{name}.to_shape"), i64("two2", [2]),
                          i64("four", [4])], f"{name}.hw")
    sizes = g.node("Concat", [nc, hw], f"{name}.sizes", axis=0)
    return g.node("Resize", [x, "", "", sizes], name, mode="linear",
                  coordinate_transformation_mode="pytorch_half_pixel")


def _non_local(g, name, m, x):
    """The embedded-Gaussian non-local block: softmax(theta^T phi) g, then W, plus x."""
    ci = m.theta.out_channels
    flat = g.const(f"{name}.flat", np.array([0, ci, -1], np.int64))  # (N, C', H*W)
    theta_map = _conv(g, f"{name}.theta", m.theta, x)
    theta, phi, gx = (g.node("Reshape", [t, flat], f"{name}.{tag}_flat") for t, tag in (
        (theta_map, "theta"), (_conv(g, f"{name}.phi", m.phi, x), "phi"),
        (_conv(g, f"{name}.g", m.g, x), "g")))
    scores = g.node("MatMul", [g.node("Transpose", [theta], f"{name}.theta_t", perm=[0, 2, 1]),
                               phi], f"{name}.scores")  # (N, HW, HW)
    attention = g.node("Softmax", [scores], f"{name}.attention", axis=-1)
    y = g.node("MatMul", [gx, g.node("Transpose", [attention], f"{name}.attention_t",
                                     perm=[0, 2, 1])], f"{name}.y")  # (N, C', HW)
    y = g.node("Reshape", [y, g.node("Shape", [theta_map], f"{name}.shape")], f"{name}.y_map")
    return g.node("Add", [_conv(g, f"{name}.W", m.W, y), x], name)


class _Value(str):
    """A value's name in the walk; ``.shape`` stands for its shape, read at run time (the
    encoder-decoders hand a pre-pool map's ``.shape`` to their unpooling)."""

    @property
    def shape(self):
        return _ShapeOf(self)


class _ShapeOf:
    def __init__(self, value):
        self.value = value


def _unpool(g, name, m, x, indices, like):
    """MaxUnpool back to the size of ``like`` (N, C, H, W), read at run time.

    onnxruntime refuses an output_shape smaller than MaxUnpool's own default
    (h - 1) * stride - 2 * pad + kernel, which a pool that rounds up makes of an odd H. So the
    indices (ONNX's count over the whole (N, C, H, W) input) are re-counted for a map of the
    larger of the two sizes, MaxUnpool writes that map, and a Slice keeps its first H x W."""
    k, s, p = (_square(v) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding))
    i64 = lambda tag, v: g.const(f"{name}.{tag}", np.array(v, np.int64))  # noqa: E731
    hw = g.node("Slice", [g.node("Shape", [like], f"{name}.like_shape"), i64("two", [2]),
                          i64("four", [4])], f"{name}.hw")  # (H, W) of the pool's input
    small = g.node("Slice", [g.node("Shape", [x], f"{name}.x_shape"), i64("two", [2]),
                             i64("four", [4])], f"{name}.ohw")
    default = g.node("Add", [g.node("Mul", [g.node("Sub", [small, i64("one", [1, 1])],
                                                    f"{name}.less"), i64("s", s)], f"{name}.by"),
                             i64("k_2p", [k[0] - 2 * p[0], k[1] - 2 * p[1]])], f"{name}.default")
    big = g.node("Max", [default, hw], f"{name}.big")  # (H', W') >= (H, W) and >= the default

    def part(t, i, tag):  # element i of a 2-vector, as a 1-vector
        return g.node("Slice", [t, i64(f"{tag}0", [i]), i64(f"{tag}1", [i + 1])], f"{name}.{tag}")

    w, bh, bw = part(hw, 1, "w"), part(big, 0, "bh"), part(big, 1, "bw")
    plane_hw = g.node("ReduceProd", [hw], f"{name}.plane", keepdims=1)
    plane = g.node("Div", [indices, plane_hw], f"{name}.nc")  # n * C + c
    at = g.node("Mod", [indices, plane_hw], f"{name}.at")  # h * W + w
    row, col = g.node("Div", [at, w], f"{name}.row"), g.node("Mod", [at, w], f"{name}.col")
    big_plane = g.node("Mul", [bh, bw], f"{name}.big_plane")
    moved = g.node("Add", [g.node("Add", [g.node("Mul", [plane, big_plane], f"{name}.p0"),
                                          g.node("Mul", [row, bw], f"{name}.p1")],
                                  f"{name}.p2"), col], f"{name}.indices")
    nc = g.node("Slice", [g.node("Shape", [x], f"{name}.x_shape2"), i64("zero", [0]),
                          i64("two2", [2])], f"{name}.nc_shape")
    shape = g.node("Concat", [nc, big], f"{name}.shape", axis=0)
    up = g.node("MaxUnpool", [x, moved, shape], f"{name}.big_map", kernel_shape=k, strides=s,
                pads=[p[0], p[1], p[0], p[1]])
    return g.node("Slice", [up, i64("starts", [0, 0]), hw, i64("axes", [2, 3])], name)


def _pad1_by_size(g, model):
    """For an FCN that ``predict`` runs at a larger conv1_1 padding on small images: nodes that
    compute that padding from the image's shorter side (``models.padding.pad1_by_side``, as a
    table), sets ``g.pad1`` (the Pad node's pads, the padding's excess over the model's own,
    and how far each crop moves per pixel of it) and returns the table; None for a net that
    takes any image as it is. Offsets move with the padding only on the crops to the image
    (geometry.py: a crop between two maps that both moved stays)."""
    from ..models import FCNBase, geometry, padding

    if not isinstance(model, FCNBase):
        return None
    table = padding.pad1_by_side(model)
    if len(table) == 1:
        return None
    own = model.conv1_1.padding[0]
    offsets = [geometry.crop_offsets(model, pad1=own + k) for k in range(3)]
    moves = {k: offsets[1][k] - offsets[0][k] for k in offsets[0]}
    if any(offsets[2][k] - offsets[0][k] != 2 * v for k, v in moves.items()):
        raise ValueError(f"to_onnx: {type(model).__name__}'s crop offsets do not move in step "
                         f"with conv1_1's padding: export it at --pad1 100, which takes any size")
    i64 = lambda tag, v: g.const(f"pad1.{tag}", np.array(v, np.int64))  # noqa: E731
    side = g.node("ReduceMin", [g.node("Shape", [INPUT], "pad1.hw", start=2, end=4)],
                  "pad1.side", keepdims=1)  # (1,): the shorter side
    at = g.node("Sub", [g.node("Min", [side, i64("sides", [len(table)])], "pad1.capped"),
                        i64("one", [1])], "pad1.at")
    pad = g.node("Gather", [i64("table", table), at], "pad1", axis=0)  # (1,)
    zeros = i64("zeros", [0, 0])
    pads = g.node("Concat", [zeros, pad, pad, zeros, pad, pad], "pad1.pads", axis=0)
    g.pad1 = (pads, g.node("Sub", [pad, i64("own", [own])], "pad1.excess"), moves)
    return table


def build_onnx(model, opset=OPSET):
    """The ``onnx.ModelProto`` of ``model`` (an FCN) for inference; see the module docstring."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    where = "to_onnx"
    if not hasattr(model, "conv1_1") or not callable(getattr(model, "forward", None)):
        raise TypeError(f"{where}: expected a minifcn FCN model, got {type(model).__name__}")
    size = sum(p.data.size * 4 for p in model.parameters())
    if size > MAX_BYTES:
        raise ValueError(f"{where}: the weights are {size / 2**30:.1f} GiB as float32; one .onnx "
                         "file holds at most 2 GB (protobuf's limit): export a smaller --width")
    g = _Graph(helper, numpy_helper)
    table = _pad1_by_size(g, model)
    ghost = copy.copy(model)  # shares the layers; only its attributes get swapped
    for name, layer in model.children():
        setattr(ghost, name, _Stand(name, layer, g))
    out = ghost.forward(_Value(INPUT))
    if out == INPUT:
        raise ValueError(f"{where}: the model's forward computes nothing")
    last = next(n for n in g.nodes if n.output[0] == out)
    last.output[0] = OUTPUT
    n_class = model.config["n_class"] if isinstance(getattr(model, "config", None), dict) \
        else None
    graph = helper.make_graph(
        g.nodes, f"minifcn.{type(model).__name__}",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT,
                                       ["N", model.conv1_1.in_channels, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", n_class, "H", "W"])],
        initializer=g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=IR_VERSION, producer_name="minifcn",
                              doc_string=f"{type(model).__name__}: scores (N, n_class, H, W) "
                                         f"from an RGB image minus the mean {MEAN_RGB}")
    meta = {"model": type(model).__name__, "input": f"RGB 0..255 minus mean {list(MEAN_RGB)}",
            "offsets": json.dumps(getattr(model, "offsets", {})),
            "min_input_size": str(1 if table else _min_input_size(model))}
    if table:
        meta["pad1_by_side"] = json.dumps(table)
    if isinstance(getattr(model, "config", None), dict):
        meta["config"] = json.dumps(model.config)
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def _min_input_size(model):
    size = getattr(model, "min_input_size", None)
    if size is None:
        from ..models import geometry

        size = geometry.min_input_size(model)
    return size


def to_onnx(model, path, opset=OPSET):
    """Write ``model`` (an FCN) at ``path`` as an ONNX model for inference, atomically.

    Ops: Conv, Relu, MaxPool (ceil_mode=1), ConvTranspose, Shape, Add, Slice (the crops, sized
    at run time), Add (the skips), Mul (8s at-once's scales); dropout is left out. Needs the
    onnx package: pip install -e ".[export]"."""
    data = build_onnx(model, opset).SerializeToString()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
