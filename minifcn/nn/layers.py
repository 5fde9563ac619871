"""The layers the nets are built from: convolutions, pooling and unpooling, adaptive average
pooling, resizing (Upsample), batch normalisation, ReLU, sigmoid, softmax, dropout, Sequential.
Each holds its options and weights and calls its op in ``minifcn.functional``; PyTorch's names,
argument order and state dict keys.
"""
import math

import numpy as np

from .. import backend
from .. import functional as F
from ..primitives import pair
from .module import Buffer, Module, Parameter


class _ConvBase(Module):
    """What Conv2d and ConvTranspose2d share: geometry, PyTorch's default init, repr."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, bias, shape,
                 fan_in_channels):
        kh, kw = pair(kernel_size, "kernel_size", type(self).__name__, 1)
        self.in_channels, self.out_channels = in_channels, out_channels
        name = type(self).__name__
        self.kernel_size = (kh, kw)
        self.stride, self.padding = pair(stride, "stride", name, 1), pair(padding, "padding", name)
        bound = 1 / math.sqrt(fan_in_channels * kh * kw)
        self.weight = Parameter(_uniform(shape + (kh, kw), bound))
        self.bias = Parameter(_uniform((out_channels,), bound)) if bias else None

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class Conv2d(_ConvBase):
    """Convolution layer, weight (C_out, C_in, kH, kW). Weights start as PyTorch's default
    (Kaiming-uniform with a=sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the same bound
    for the bias). dilation: kernel tap i reads the input i*d pixels from the window's start
    (PyTorch's meaning and argument order: bias comes after it); it changes no parameter."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias,
                         (out_channels, in_channels), in_channels)
        self.dilation = _dilation(dilation, "Conv2d", "bias")

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        text = super().extra_repr()
        if self.dilation != (1, 1):  # shown only when set, as PyTorch does
            text = text.replace(", bias=", f", dilation={self.dilation}, bias=")
        return text


class ConvTranspose2d(_ConvBase):
    """Transposed convolution layer, weight (C_in, C_out, kH, kW); PyTorch's default init
    (its fan_in is computed from weight.shape[1] * kH * kW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias,
                         (in_channels, out_channels), out_channels)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding)


class MaxPool2d(Module):
    """Max pooling layer (see F.max_pool2d). Arguments in PyTorch's order: dilation (the
    window's taps d pixels apart) comes before ceil_mode, and return_indices (forward returns
    ``(y, indices)`` for a MaxUnpool2d) between them, as in torch.nn.MaxPool2d."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        self.kernel_size, self.stride = kernel_size, stride
        self.padding, self.ceil_mode = padding, ceil_mode
        self.dilation = _dilation(dilation, "MaxPool2d", "ceil_mode")
        self.return_indices = return_indices

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)

    def extra_repr(self):
        dilation = "" if self.dilation == (1, 1) else f"dilation={self.dilation}, "
        indices = ", return_indices=True" if self.return_indices else ""
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, {dilation}ceil_mode={self.ceil_mode}{indices}")


class MaxUnpool2d(Module):
    """Max unpooling layer (see F.max_unpool2d): forward(x, indices, output_size=None) puts
    each value of x back at the position its pool's indices name, zeros elsewhere."""

    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = pair(kernel_size, "kernel_size", "MaxUnpool2d", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride",
                                                                   "MaxUnpool2d", 1)
        self.padding = pair(padding, "padding", "MaxUnpool2d", 0)

    def forward(self, x, indices, output_size=None):
        return F.max_unpool2d(x, indices, self.kernel_size, self.stride, self.padding,
                              output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size (see F.adaptive_avg_pool2d): an int, or a pair
    whose None entries keep that input size. AdaptiveAvgPool2d(1) is global average pooling."""

    def __init__(self, output_size):
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Upsample(Module):
    """Resizing layer (see F.interpolate): exactly one of size and scale_factor; mode
    "nearest" (the default, as PyTorch's nn.Upsample) or "bilinear"; align_corners for
    bilinear only (None means False)."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x):
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self):
        what = (f"size={self.size}" if self.size is not None
                else f"scale_factor={self.scale_factor}")
        corners = "" if self.align_corners is None else f", align_corners={self.align_corners}"
        return f"{what}, mode={self.mode!r}{corners}"


class BatchNorm2d(Module):
    """Batch normalisation over the channels of (N, C, H, W) (see F.batch_norm), PyTorch's
    layer: weight 1 and bias 0 (affine), running_mean 0, running_var 1 and num_batches_tracked
    0 (int64, one more each training forward) as Buffers, under PyTorch's state_dict names.
    Training normalises by the batch and moves the running statistics by ``momentum``
    (None: their cumulative average over the batches seen); eval uses them.
    track_running_stats=False keeps none and normalises by the batch in eval too."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        if isinstance(num_features, bool) or not isinstance(num_features, int) \
                or num_features < 1:
            raise ValueError(f"BatchNorm2d: num_features must be a positive int, got "
                             f"{num_features!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm2d: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features, np.float32)) if affine else None
        self.bias = Parameter(np.zeros(num_features, np.float32)) if affine else None
        if track_running_stats:
            self.running_mean = Buffer(np.zeros(num_features, np.float32))
            self.running_var = Buffer(np.ones(num_features, np.float32))
            self.num_batches_tracked = Buffer(np.array(0, np.int64))

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d: expected a 4-D input (N, C, H, W), got shape "
                             f"{tuple(x.shape)}")
        momentum, stats = self.momentum, (None, None)
        if self.track_running_stats:
            stats = (self.running_mean, self.running_var)
            if self.training:
                self.num_batches_tracked.data += 1
                if momentum is None:  # the cumulative average: batch k weighs 1/k
                    momentum = 1.0 / float(self.num_batches_tracked.data)
        # without running statistics there is nothing to use but the batch's, in eval too
        training = self.training or not self.track_running_stats
        return F.batch_norm(x, *stats, self.weight, self.bias, training, momentum or 0.0,
                            self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class ReLU(Module):
    def __init__(self, inplace=False):
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x, self.inplace)


class Sigmoid(Module):
    """1 / (1 + exp(-x)) (see F.sigmoid): squeeze-and-excitation's gate."""

    def forward(self, x):
        return F.sigmoid(x)


class Softmax(Module):
    """Softmax along ``dim`` (see F.softmax); dim is required, as PyTorch now asks."""

    def __init__(self, dim):
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"Softmax: dim must be an int, got {dim!r}")
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Dropout(Module):
    def __init__(self, p=0.5):
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class Sequential(Module):
    """Modules applied in order; their names are "0", "1", ... as in PyTorch."""

    def __init__(self, *modules):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __iter__(self):
        return (m for _, m in self.children())

    def __len__(self):
        return sum(1 for _ in self.children())

    def __getitem__(self, i):
        return list(self)[i]

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


# ---------------------------------------------------------------- helpers


def _uniform(shape, bound):
    # drawn in float32 directly: a float64 draw of fc6 at full width would be an extra 800 MB
    u = backend.rng().random(shape, dtype=np.float32)
    return (u * np.float32(2 * bound) - np.float32(bound)).astype(np.float32, copy=False)


def _dilation(value, layer, after):
    """The dilation as a pair. PyTorch's argument order puts dilation before ``after``, so a
    bool here is most likely ``after`` given by position: say so."""
    if isinstance(value, bool):
        raise TypeError(f"{layer}: dilation must be an int or a pair of ints, got {value!r} "
                        f"({after} comes after dilation, as in PyTorch: pass {after}=...)")
    return pair(value, "dilation", layer, 1)
