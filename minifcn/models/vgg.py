"""The VGG16 trunk every FCN stands on (paper section 4.1; the reference nets' conv1_1 ... fc7).

``FCNBase`` builds the trunk as flat attributes named as the reference layers (so the state dict
keys are ``conv1_1.weight`` ... ``fc7.bias``, as Caffe's and the PyTorch port's) and writes its
forward out layer by layer (``trunk``, then fc6 and fc7 in ``backbone``). The heads (fcn.py)
add their layers and a forward; the classifier an FCN starts from (classifier.py) shares the
trunk.

VGG16 as FCN uses it: thirteen 3x3 convolutions in five blocks, each followed by ReLU; a 2x2
stride-2 max pool after each block that rounds its output size UP (Caffe's pooling); fc6 and fc7,
VGG's classifier made convolutional (7x7 to 4096 channels, then 1x1 to 4096), each followed by
ReLU and dropout 0.5; score_fr, a 1x1 convolution to the classes. conv1_1 pads by 100 (every
other 3x3 conv by 1) so that fc6's 7x7 window fits any input and the upsampled scores cover it.
"""
import numbers

import numpy as np

from ..nn import Conv2d, ConvTranspose2d, Dropout, MaxPool2d, Module, ReLU
from . import geometry
from .init import bilinear_weight, he_normal_, zeros_

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FC_CHANNELS = 4096


def scaled(channels, width):
    """A hidden channel count at ``width`` (1.0 = VGG16): rounded, at least 1."""
    return max(1, int(round(channels * width)))


# the reference nets' conv1_1 padding and fc6/fc7 dropout: every constructor's defaults, and the
# training recipe on real data (minifcn.training.config.REFERENCE)
PAD1, DROPOUT = 100, 0.5
# typical std of a mean-subtracted 0..255 pixel: scales conv1_1's He init to unit-variance input
PIXEL_STD = 64.0


# width scales channels, so parameters grow as width**2: width 1 (VGG16) is 134 M parameters
# (fc6 alone 103 M), width 4 is 2.1 G (8.6 GB of float32, ~26 GB with gradients and momentum),
# already more than most machines train. Beyond it a typo (--width 100: 1.3 T parameters) would
# only die later, half-allocated, in MemoryError; width is for shrinking the net to learn fast.
MAX_WIDTH = 4.0


def _check_options(cls, n_class, width, pad1, dropout, learn_upsampling):
    name = cls.__name__
    for opt, value, lo in (("n_class", n_class, 1), ("pad1", pad1, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name}: {opt} must be an int, got {value!r}")
        if value < lo:
            raise ValueError(f"{name}: {opt} must be >= {lo}, got {value}")
    if (not isinstance(width, numbers.Real) or isinstance(width, bool)
            or not 0 < width <= MAX_WIDTH):
        raise ValueError(f"{name}: width must be a number in (0, {MAX_WIDTH}] (1.0 = VGG16; "
                         f"parameters grow as width**2), got {width!r}")
    if not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout!r}")
    if not (learn_upsampling is False or learn_upsampling is True
            or learn_upsampling == "intermediate"):
        raise ValueError(f"{name}: learn_upsampling must be False, True or 'intermediate', got "
                         f"{learn_upsampling!r}")


class FCNBase(Module):
    """The VGG16 trunk and score_fr; subclasses add their head in ``_build_head`` and write
    ``forward``; the crop offsets are then derived from the layers (``_derive_geometry``).

    Options (every FCN class and builder takes them):
      n_class: number of classes (21 for PASCAL VOC: 20 + background).
      width: scales every hidden channel count (1.0 = VGG16: 64-128-256-512-512, fc 4096;
        0.125 = 8-16-32-64-64, fc 512); the topology is unchanged.
      pad1: conv1_1's padding, 100 as the reference nets. A smaller one makes small images
        cheaper; the crop offsets follow (they are derived, see geometry.py). Below a minimum
        (81 for FCN-32s, 73 for 16s, 69 for 8s) the upsampled scores no longer cover the input
        and the constructor raises ValueError; with pad1 < 100 tiny inputs are refused at
        forward time (``min_input_size``).
      dropout: after fc6 and fc7 (0.5). ``eval()`` turns it off.
      learn_upsampling: False (default) keeps every upsampling layer fixed at bilinear, as the
        reference code does (lr 0); the paper's text learns the intermediate ones
        ('intermediate'), and the authors report no significant difference. We follow the
        reference code: its released weights were trained so, and from scratch it is one
        moving part less. True learns all of them. A fixed layer is a Parameter with
        requires_grad=False: the optimiser and gradcheck skip it, the state dict keeps it.

    Initialisation: trunk conv1_1 ... fc7 He-normal with zero biases (conv1_1's divided by
    PIXEL_STD, since the input is raw mean-subtracted pixels) (the paper fine-tunes from
    ImageNet VGG16 instead, whose weights overwrite these), score layers zero, upsampling
    bilinear. Calling the model on a (N, 3, H, W) Tensor returns scores (N, n_class, H, W).
    """

    def __init__(self, n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
        _check_options(type(self), n_class, width, pad1, dropout, learn_upsampling)
        self.config = dict(n_class=int(n_class), width=float(width), pad1=int(pad1),
                           dropout=float(dropout), learn_upsampling=learn_upsampling)
        b5, fc = scaled(VGG16_BLOCKS[4][0], width), scaled(FC_CHANNELS, width)

        build_trunk(self, width, pad1)
        # VGG's fully connected layers as convolutions (paper section 3.1)
        self.fc6, self.relu6, self.drop6 = he_normal_(Conv2d(b5, fc, 7)), ReLU(inplace=True), Dropout(dropout)
        self.fc7, self.relu7, self.drop7 = he_normal_(Conv2d(fc, fc, 1)), ReLU(inplace=True), Dropout(dropout)
        self.score_fr = self._score(fc)
        self._build_head()
        self._derive_geometry()

    def _build_head(self):  # pragma: no cover - each FCN defines its head
        raise NotImplementedError

    # ---- building blocks of the heads --------------------------------------------------------
    def _score(self, c_in):
        """A 1x1 score layer c_in -> n_class, started at zero."""
        return zeros_(Conv2d(c_in, self.config["n_class"], 1))

    def _upscore(self, kernel, stride, final):
        """An upsampling layer n_class -> n_class, no bias, started bilinear; learned or fixed
        as ``learn_upsampling`` says (``final``: the one that ends at stride 1)."""
        n, learn = self.config["n_class"], self.config["learn_upsampling"]
        layer = ConvTranspose2d(n, n, kernel, stride=stride, bias=False)
        layer.weight.data = bilinear_weight(n, kernel)
        layer.weight.requires_grad = learn is True or (learn == "intermediate" and not final)
        return layer

    def _derive_geometry(self):
        """Set every Crop's offset from the layers' coordinate maps (geometry.py)."""
        try:
            offsets = geometry.crop_offsets(self)
        except geometry.GeometryError as e:
            raise ValueError(f"{type(self).__name__}: pad1={self.config['pad1']} does not work: "
                             f"{e}. The smallest conv1_1 padding that does is "
                             f"{geometry.min_pad1(self)}") from None
        for name, offset in offsets.items():
            getattr(self, name).offset = offset
        self._min_input = None

    @property
    def offsets(self):
        """{crop layer name: offset}, e.g. FCN-8s {'score_pool4c': 5, 'score_pool3c': 9,
        'score': 31}."""
        return {name: m.offset for name, m in self.children() if hasattr(m, "offset")}

    @property
    def min_input_size(self):
        """Smallest height/width this model accepts (1 with conv1_1 padding 100)."""
        if self._min_input is None:
            self._min_input = geometry.min_input_size(self)
        return self._min_input

    def __call__(self, x):
        name = type(self).__name__
        if x.ndim != 4 or x.shape[1] != self.conv1_1.in_channels:
            raise ValueError(f"{name}: input must be (N, {self.conv1_1.in_channels}, H, W), "
                             f"got shape {tuple(x.shape)}")
        h, w = x.shape[2:]
        if min(h, w) < self.min_input_size:
            raise ValueError(
                f"{name}: input {h}x{w} is too small for pad1={self.config['pad1']}: height and "
                f"width must be at least {self.min_input_size}; pad1="
                f"{geometry.min_pad1(self, min(h, w))} or more would take this input")
        return self.forward(x)

    # ---- the trunk's forward ------------------------------------------------------------------
    def backbone(self, x):
        """VGG16 from the image (N, 3, H, W) to fc7. Returns (pool3, pool4, fc7): pool3 at
        stride 8, pool4 at stride 16 (the skips) and fc7 after ReLU and dropout at stride 32,
        all in padded coordinates (conv1_1's padding grows every map)."""
        pool3, pool4, h = trunk(self, x)
        h = self.drop6(self.relu6(self.fc6(h)))
        h = self.drop7(self.relu7(self.fc7(h)))
        return pool3, pool4, h

    # ---- staged training (paper section 4.2) ------------------------------------------------
    @classmethod
    def _staged(cls, parent, parent_cls):
        if type(parent) is not parent_cls:
            raise TypeError(f"{cls.__name__}.from_{parent_cls.__name__.lower()}: expected a "
                            f"{parent_cls.__name__}, got {type(parent).__name__}")
        child = cls(**parent.config)
        own = dict(child.named_parameters())
        first = parent.parameters()[0]
        device, dtype = first.device, first.dtype
        child.to(device=device, dtype=dtype)
        for name, p in parent.named_parameters():
            if name in own and own[name].shape == p.shape:
                own[name].data = p.data.copy()  # shared layers: conv1_1 ... score_fr (...)
        child.train(parent.training)
        return child


def build_trunk(net, width, pad1):
    """Set VGG16's convolutional part on ``net`` as attributes conv1_1, relu1_1, ... pool5:
    3x3 convolutions He-initialised (conv1_1 padded by ``pad1``, the others by 1), each with an
    in-place ReLU, and a 2x2 stride-2 pool that rounds up after each block. The FCNs and the
    classifier they start from (classifier.py) share it, layer names included."""
    chans = [3] + [scaled(c, width) for block in VGG16_BLOCKS for c in block]
    k = 0
    for b, block in enumerate(VGG16_BLOCKS, 1):
        for j in range(1, len(block) + 1):
            conv = he_normal_(Conv2d(chans[k], chans[k + 1], 3, padding=pad1 if k == 0 else 1))
            setattr(net, f"conv{b}_{j}", conv)
            setattr(net, f"relu{b}_{j}", ReLU(inplace=True))
            k += 1
        setattr(net, f"pool{b}", MaxPool2d(2, stride=2, ceil_mode=True))  # 1/2 ... 1/32
    # He init assumes inputs of unit variance; ours are pixels minus the mean (0..255 scale,
    # std ~64), which would make every activation ~64x too large and blow up the first steps
    net.conv1_1.weight.data /= np.float32(PIXEL_STD)


def trunk(net, x):
    """conv1_1 ... pool5 of a net built by ``build_trunk``, layer by layer, on the image x
    (N, 3, H, W). Returns (pool3, pool4, pool5): strides 8, 16 and 32."""
    h = net.relu1_1(net.conv1_1(x))
    h = net.relu1_2(net.conv1_2(h))
    h = net.pool1(h)
    h = net.relu2_1(net.conv2_1(h))
    h = net.relu2_2(net.conv2_2(h))
    h = net.pool2(h)
    h = net.relu3_1(net.conv3_1(h))
    h = net.relu3_2(net.conv3_2(h))
    h = net.relu3_3(net.conv3_3(h))
    pool3 = h = _context(net, "pool3", net.pool3(h))
    h = net.relu4_1(net.conv4_1(h))
    h = net.relu4_2(net.conv4_2(h))
    h = net.relu4_3(net.conv4_3(h))
    pool4 = h = _context(net, "pool4", net.pool4(h))
    h = net.relu5_1(net.conv5_1(h))
    h = net.relu5_2(net.conv5_2(h))
    h = net.relu5_3(net.conv5_3(h))
    return pool3, pool4, _context(net, "pool5", net.pool5(h))


def _context(net, pool, h):
    """The context block a net inserts after ``pool``, if it has one (``pool4_context``: FCN-8s
    with squeeze-and-excitation or a non-local block, fcn_context.py); else h as it is."""
    block = getattr(net, f"{pool}_context", None)
    return h if block is None else block(h)

__all__ = ["FCNBase", "scaled", "VGG16_BLOCKS", "FC_CHANNELS", "build_trunk", "trunk"]
