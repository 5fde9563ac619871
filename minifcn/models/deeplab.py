"""DeepLab (Chen, Papandreou, Kokkinos, Murphy, Yuille): FCN's trunk kept at stride 8 by atrous
(dilated) convolution, with bilinear upsampling of the scores.

``DeepLabLargeFOV`` (v1, ICLR 2015, arXiv 1412.7062): VGG16 with pool4 and pool5 at stride 1
(3x3 windows padded by 1), so the net's output stride is 8, not 32. The layers after a pool that
no longer halves the map are dilated by the stride it lost, so that they keep seeing what they
saw in VGG16: conv5_1 ... conv5_3 by 2, and fc6, a 3x3 convolution of 1024 channels, by 12 (4,
for pool5, times 3: the "large field of view"). fc7 (1x1, 1024) and fc8 (1x1 to the classes)
follow; the stride-8 scores are resized bilinearly to the image. This is the paper's filter
rarefaction (section 3.2 of FCN; ``minifcn.models.rarefy``) turned into the trunk itself.

``DeepLabASPP`` (v3's head, arXiv 1706.05587, on the same stride-8 trunk): atrous spatial
pyramid pooling, five branches on pool5's map, concatenated and projected by a 1x1 convolution:
a 1x1 convolution, three 3x3 convolutions dilated by ``rates`` (6, 12, 18), and image pooling
(the map's mean, a 1x1 convolution, spread back over the map), each with batch normalisation
and ReLU. v3 rather than v2's four summed branches (rates 6 to 24, no BN): on a small map a
large rate's taps fall in the padding, and the branch degenerates to its centre tap, a 1x1
convolution (v3's paper, Fig. 4); image pooling is v3's answer, and on minifcn's 96x96 images
(a 12x12 map at stride 8) that is what rates 12 and 18 show.

Where minifcn departs from the papers: pool1 ... pool3 are the FCN trunk's 2x2 pools that round
up (the papers' are 3x3 padded by 1), so the shipped classifier's trunk loads by name
(conv1_1 ... conv5_3; DeepLab's fc6 and fc7 are smaller than VGG's and start new); no dropout
(the synthetic recipes train without it) and no CRF; the score layers start at zero, as FCN's.
"""
from .. import nn
from .base import Net
from .init import zeros_
from .layers import Concat, Resize
from .vgg import scaled

FC_CHANNELS, ASPP_CHANNELS = 1024, 256


class _Stride8(Net):
    """VGG16 at output stride 8: pool4 and pool5 at stride 1, conv5 dilated by 2."""

    def _trunk(self, width):
        self._vgg_blocks(width)
        c_in = 3
        for b, block in enumerate(self.blocks, 1):
            for j, c in enumerate(block, 1):
                self._conv(f"conv{b}_{j}", c_in, c, bn=False, dilation=2 if b == 5 else 1)
                c_in = c
            pool = nn.MaxPool2d(2, stride=2, ceil_mode=True) if b <= 3 else \
                nn.MaxPool2d(3, stride=1, padding=1)  # keeps the size: stride 8 from here on
            setattr(self, f"pool{b}", pool)
        return c_in

    def _features(self, x):
        h = x
        for b, block in enumerate(self.blocks, 1):
            for j in range(1, len(block) + 1):
                h = self._apply(f"conv{b}_{j}", h)
            h = getattr(self, f"pool{b}")(h)
        return h  # stride 8


class DeepLabLargeFOV(_Stride8):
    """DeepLabLargeFOV(n_class=21, width=1.0): DeepLab v1's LargeFOV net; scores
    (N, n_class, H, W) for any H, W of at least ``min_input_size``."""

    def __init__(self, n_class=21, width=1.0):
        super().__init__(n_class, width)
        c5, fc = self._trunk(width), scaled(FC_CHANNELS, width)
        self._conv("fc6", c5, fc, 3, bn=False, dilation=12)  # 4 (pool5) x 3: the large view
        self._conv("fc7", fc, fc, 1, bn=False)
        self.fc8 = zeros_(nn.Conv2d(fc, n_class, 1))
        self.upsample = Resize()

    def forward(self, x):
        h = self._apply("fc7", self._apply("fc6", self._features(x)))
        return self.upsample(self.fc8(h), x.shape)  # stride 8 -> the image's size


class DeepLabASPP(_Stride8):
    """DeepLabASPP(n_class=21, width=1.0, rates=(6, 12, 18)): the stride-8 trunk with v3's
    ASPP head and bilinear upsampling of the scores."""

    def __init__(self, n_class=21, width=1.0, rates=(6, 12, 18)):
        super().__init__(n_class, width)
        self.rates = tuple(int(r) for r in rates)
        c5, a = self._trunk(width), scaled(ASPP_CHANNELS, width)
        self._conv("aspp_1x1", c5, a, 1)
        for r in self.rates:
            self._conv(f"aspp_d{r}", c5, a, 3, dilation=r)
        self.aspp_pool = nn.AdaptiveAvgPool2d(1)  # image pooling: the whole map's mean
        self._conv("aspp_pool_conv", c5, a, 1)
        self.aspp_pool_up = Resize()
        self.aspp_cat = Concat()
        self._conv("aspp_project", (len(self.rates) + 2) * a, a, 1)
        self.score = zeros_(nn.Conv2d(a, n_class, 1))
        self.upsample = Resize()

    def forward(self, x):
        h = self._features(x)
        image = self._apply("aspp_pool_conv", self.aspp_pool(h))
        branches = [self._apply("aspp_1x1", h)]
        branches += [self._apply(f"aspp_d{r}", h) for r in self.rates]
        branches.append(self.aspp_pool_up(image, h.shape))  # the same vector at every pixel
        h = self._apply("aspp_project", self.aspp_cat(*branches))
        return self.upsample(self.score(h), x.shape)


def deeplab_largefov(n_class=21, width=1.0):
    """A DeepLabLargeFOV (see DeepLabLargeFOV)."""
    return DeepLabLargeFOV(n_class, width)


def deeplab_aspp(n_class=21, width=1.0):
    """A DeepLabASPP with v3's rates 6, 12, 18 (see DeepLabASPP)."""
    return DeepLabASPP(n_class, width)
