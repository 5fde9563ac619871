"""What the nets after FCN share: SegNet, DeconvNet, U-Net (encdec.py) and DeepLab
(deeplab.py).

``Net`` checks the two options they take, ``n_class`` and ``width`` (width 1.0 = the papers'
channels; FCN's pad1, dropout and learn_upsampling are not theirs), checks the input, knows the
smallest input the layers take (from the geometry trace), and builds a convolution with its
batch normalisation and ReLU under the names ``NAME``, ``NAME_bn``, ``NAME_relu``.
"""
import math
import numbers

import numpy as np

from .. import backend
from ..nn import BatchNorm2d, Conv2d, ConvTranspose2d, Module, ReLU
from . import geometry
from .init import he_normal_
from .vgg import MAX_WIDTH, PIXEL_STD, VGG16_BLOCKS, scaled


class Net(Module):
    """The options check, the input check and the layer helpers of the nets after FCN.

    ``classifier_layers``: the layers a VGG16 classifier of the same width fills by name (the
    shipped classifier's conv1_1 ... conv5_3, and fc6, fc7 for DeconvNet); empty for the nets
    without VGG16's trunk, which start from scratch."""

    classifier_layers = ()
    _min_input = None

    def __init__(self, n_class=21, width=1.0):
        name = type(self).__name__
        if not isinstance(n_class, numbers.Integral) or isinstance(n_class, bool) or n_class < 1:
            raise ValueError(f"{name}: n_class must be an int >= 1, got {n_class!r}")
        if (not isinstance(width, numbers.Real) or isinstance(width, bool)
                or not 0 < width <= MAX_WIDTH):
            raise ValueError(f"{name}: width must be a number in (0, {MAX_WIDTH}] (1.0 = the "
                             f"paper's channels), got {width!r}")
        self.config = dict(n_class=int(n_class), width=float(width))

    @property
    def min_input_size(self):
        """The smallest height/width the net takes: each 2x2 pool needs a map of 2 or more
        (five pools: 17, as 17 -> 9 -> 5 -> 3 -> 2 -> 1)."""
        if self._min_input is None:
            self._min_input = geometry.min_input_size(self)
        return self._min_input

    def __call__(self, x):
        name, c = type(self).__name__, self.conv1_1.in_channels
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"{name}: input must be (N, {c}, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[2:]) < self.min_input_size:
            raise ValueError(f"{name}: input {x.shape[2]}x{x.shape[3]} is too small: height and "
                             f"width must be at least {self.min_input_size} (one pixel left "
                             f"after the pools)")
        return self.forward(x)

    def _conv(self, name, c_in, c_out, k=3, transposed=False, bn=True, relu=True, dilation=1):
        """Set layer ``name`` (k x k, padded to keep the size, He-normal start) and, where asked,
        ``name_bn`` and ``name_relu`` after it."""
        pad = dilation * (k // 2)
        if transposed:
            layer = ConvTranspose2d(c_in, c_out, k, padding=pad)
            # He's std with the fan-in of the convolution it is the adjoint of: c_in * k * k
            std = math.sqrt(2.0 / (c_in * k * k))
            w = backend.rng().standard_normal(layer.weight.shape, dtype=np.float32)
            layer.weight.data = w * np.float32(std)
            layer.bias.data = np.zeros(c_out, np.float32)
        else:
            layer = he_normal_(Conv2d(c_in, c_out, k, padding=pad, dilation=dilation))
        if name == "conv1_1":
            # the input is raw pixels minus the mean (std ~PIXEL_STD), as for the FCNs: the
            # training recipes give conv1_1 a learning rate to match this scale
            layer.weight.data /= np.float32(PIXEL_STD)
        setattr(self, name, layer)
        if bn:
            setattr(self, f"{name}_bn", BatchNorm2d(c_out))
        if relu:
            setattr(self, f"{name}_relu", ReLU(inplace=True))

    def _vgg_blocks(self, width):
        """VGG16's channels at ``width``, block by block, and the names of its thirteen
        convolutions: the layers a VGG16 classifier fills (``classifier_layers``)."""
        self.blocks = [[scaled(c, width) for c in block] for block in VGG16_BLOCKS]
        self.classifier_layers = tuple(f"conv{b}_{j}" for b, block in enumerate(self.blocks, 1)
                                       for j in range(1, len(block) + 1))

    def _apply(self, name, h):
        """Layer ``name``, then its batch normalisation and ReLU where it has them."""
        h = getattr(self, name)(h)
        for after in (f"{name}_bn", f"{name}_relu"):
            if hasattr(self, after):
                h = getattr(self, after)(h)
        return h
