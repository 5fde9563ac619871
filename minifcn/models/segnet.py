"""SegNet and SegNet-Basic (Badrinarayanan, Kendall, Cipolla, PAMI 2017, arXiv 1511.00561).

SegNet's encoder is VGG16's 13 convolutions (no fc6, fc7), each with batch normalisation and
ReLU, and five 2x2 stride-2 max pools that keep the *indices* of their maxima. Its decoder
mirrors the encoder: each stage first max-unpools with the indices of the matching pool (each
value goes back where its maximum came from, zeros elsewhere: a sparse map), then 3x3
convolutions with BN and ReLU make the map dense again. The last one, conv1_1_D, gives the
class scores. Layer names follow the authors' Caffe prototxt (conv1_1, conv1_1_bn, ...,
conv1_1_D): the encoder's are the VGG16 trunk's, so a classifier's trunk loads by name.

Only the indices cross from encoder to decoder, not feature maps: at inference the encoder's
maps can be dropped as soon as they are pooled (the paper's memory argument against FCN's and
U-Net's skips).

SegNet-Basic is the paper's small model for analysis: four stages of one 7x7 convolution of
64 channels (BN, ReLU, pool) and four decoder stages of unpooling and a 7x7 convolution with BN
and no ReLU, then a 1x1 classifier (as ChainerCV's reproduction; the paper's LRN is left out).
"""
from .. import nn
from .encdec import EncoderDecoder, indexed_pool
from .vgg import scaled


class SegNet(EncoderDecoder):
    """SegNet(n_class=21, width=1.0): VGG16's 13 convolutions with BN, pools with indices, and
    the mirrored decoder; scores (N, n_class, H, W) for any H, W."""

    def __init__(self, n_class=21, width=1.0):
        super().__init__(n_class, width)
        self._vgg_encoder(width)
        # the decoder, stage 5 first: the last convolution of stage b gives stage b-1's
        # channels (the mirror of the encoder), and conv1_1_D gives the class scores
        for b in range(len(self.blocks), 0, -1):
            block = self.blocks[b - 1]
            setattr(self, f"unpool{b}", nn.MaxUnpool2d(2, stride=2))
            for j in range(len(block), 0, -1):
                last = j == 1
                c_out = (self.blocks[b - 2][-1] if b > 1 else n_class) if last else block[j - 1]
                scores = last and b == 1
                self._conv(f"conv{b}_{j}_D", block[j - 1], c_out, bn=not scores, relu=not scores)

    def forward(self, x):
        h, pooled = self._encode(x)
        for b in range(len(self.blocks), 0, -1):
            indices, size = pooled.pop()
            # sparse: each maximum back where it was, zeros elsewhere
            h = getattr(self, f"unpool{b}")(h, indices, output_size=size)
            for j in range(len(self.blocks[b - 1]), 0, -1):
                h = self._apply(f"conv{b}_{j}_D", h)  # dense again
        return h


class SegNetBasic(EncoderDecoder):
    """SegNetBasic(n_class=21, width=1.0): 4 encoder stages (7x7 conv of 64 * width channels,
    BN, ReLU, pool with indices) and 4 decoder stages (unpool, 7x7 conv, BN), then a 1x1
    classifier ``score``."""

    STAGES, CHANNELS, KERNEL = 4, 64, 7

    def __init__(self, n_class=21, width=1.0):
        super().__init__(n_class, width)
        c = scaled(self.CHANNELS, width)
        for b in range(1, self.STAGES + 1):
            self._conv(f"conv{b}_1", 3 if b == 1 else c, c, self.KERNEL)
            setattr(self, f"pool{b}", indexed_pool())
            setattr(self, f"unpool{b}", nn.MaxUnpool2d(2, stride=2))
        for b in range(self.STAGES, 0, -1):
            self._conv(f"conv{b}_1_D", c, c, self.KERNEL, relu=False)  # as ChainerCV's
        self.score = nn.Conv2d(c, n_class, 1)

    def forward(self, x):
        h, pooled = x, []
        for b in range(1, self.STAGES + 1):
            h = self._apply(f"conv{b}_1", h)
            size = h.shape
            h, indices = getattr(self, f"pool{b}")(h)
            pooled.append((indices, size))
        for b in range(self.STAGES, 0, -1):
            indices, size = pooled.pop()
            h = getattr(self, f"unpool{b}")(h, indices, output_size=size)
            h = self._apply(f"conv{b}_1_D", h)
        return self.score(h)


def segnet(n_class=21, width=1.0):
    """A SegNet (see SegNet)."""
    return SegNet(n_class, width)


def segnet_basic(n_class=21, width=1.0):
    """A SegNetBasic (see SegNetBasic)."""
    return SegNetBasic(n_class, width)
