"""What the encoder-decoders share: SegNet, SegNet-Basic, DeconvNet and U-Net.

They were built after FCN, and they answer its coarse stride-32 scores differently: an encoder
shrinks the image as VGG16 does, and a decoder as deep as the encoder grows it back, stage by
stage, to the input's size. What crosses from the encoder to the decoder is what sets them
apart (docs/encoder_decoders.md):

    FCN-8s     class scores of pool3 and pool4, added to the upsampled coarse scores
    SegNet     only the pools' indices (where each window's maximum was): max_unpool2d puts
               each value back there, zeros elsewhere, and convolutions fill the gaps
    DeconvNet  the same indices, with transposed convolutions to fill the gaps
    U-Net      whole feature maps, concatenated with the upsampled ones

Every convolution but the last is followed by batch normalisation and ReLU, named
``<conv>_bn`` and ``<conv>_relu``. The pools round up (``ceil_mode``), as the FCNs' do, so every
pixel of an odd-sized map takes part; each unpooling or crop returns to the exact size of the
map its pool took in, so the scores have the input's size.

Options: ``n_class`` and ``width`` as the FCNs' (width 1.0 = VGG16's channels). There is no
conv1_1 padding to choose (pad1): every 3x3 convolution pads by 1 and the sizes come back by
construction, not by cropping. Any input of at least ``min_input_size`` pixels a side gives
scores of its size.
"""
import math
import numbers

import numpy as np

from .. import backend
from ..nn import BatchNorm2d, Conv2d, ConvTranspose2d, MaxPool2d, Module, ReLU
from . import geometry
from .init import he_normal_
from .vgg import MAX_WIDTH, PIXEL_STD, VGG16_BLOCKS, scaled


def indexed_pool():
    """A 2x2 stride-2 max pool that rounds up, as the FCNs' trunk (every pixel of an odd map
    takes part), and keeps where each maximum was, for the decoder's unpooling."""
    return MaxPool2d(2, stride=2, ceil_mode=True, return_indices=True)


class EncoderDecoder(Module):
    """The options check, the input check and the layer helpers of the encoder-decoders.

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
        (SegNet's and DeconvNet's five pools: 17, as 17 -> 9 -> 5 -> 3 -> 2 -> 1)."""
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

    def _conv(self, name, c_in, c_out, k=3, transposed=False, bn=True):
        """Set layer ``name`` (k x k, padded to keep the size, He-normal start) and, unless
        ``bn`` is False, ``name_bn`` and ``name_relu`` after it."""
        if transposed:
            layer = ConvTranspose2d(c_in, c_out, k, padding=k // 2)
            # He's std with the fan-in of the convolution it is the adjoint of: c_in * k * k
            std = math.sqrt(2.0 / (c_in * k * k))
            w = backend.rng().standard_normal(layer.weight.shape, dtype=np.float32)
            layer.weight.data = w * np.float32(std)
            layer.bias.data = np.zeros(c_out, np.float32)
        else:
            layer = he_normal_(Conv2d(c_in, c_out, k, padding=k // 2))
        if name == "conv1_1":
            # the input is raw pixels minus the mean (std ~PIXEL_STD), as for the FCNs: the
            # training recipes give conv1_1 a learning rate to match this scale
            layer.weight.data /= np.float32(PIXEL_STD)
        setattr(self, name, layer)
        if bn:
            setattr(self, f"{name}_bn", BatchNorm2d(c_out))
            setattr(self, f"{name}_relu", ReLU(inplace=True))

    def _vgg_encoder(self, width):
        """VGG16's thirteen convolutions (conv1_1 ... conv5_3, under the trunk's names, each
        with BN and ReLU) and five 2x2 pools that keep their indices (SegNet, DeconvNet)."""
        self.blocks = [[scaled(c, width) for c in block] for block in VGG16_BLOCKS]
        self.classifier_layers = tuple(f"conv{b}_{j}" for b, block in enumerate(self.blocks, 1)
                                       for j in range(1, len(block) + 1))
        c_in = 3
        for b, block in enumerate(self.blocks, 1):
            for j, c in enumerate(block, 1):
                self._conv(f"conv{b}_{j}", c_in, c)
                c_in = c
            setattr(self, f"pool{b}", indexed_pool())

    def _encode(self, x):
        """The VGG16 encoder's forward: (pool5, [(indices, size before the pool) per pool])."""
        h, pooled = x, []
        for b, block in enumerate(self.blocks, 1):
            for j in range(1, len(block) + 1):
                h = self._apply(f"conv{b}_{j}", h)
            size = h.shape  # the decoder gets the indices and this size, not the map
            h, indices = getattr(self, f"pool{b}")(h)
            pooled.append((indices, size))
        return h, pooled

    def _apply(self, name, h):
        """Layer ``name``, then its batch normalisation and ReLU where it has them."""
        h = getattr(self, name)(h)
        if hasattr(self, f"{name}_bn"):
            h = getattr(self, f"{name}_relu")(getattr(self, f"{name}_bn")(h))
        return h
