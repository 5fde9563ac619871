"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015, arXiv 1505.04597).

The contracting path is five stages of two 3x3 convolutions (64 -> 1024 channels at width 1),
with a 2x2 max pool between them. The expanding path goes back up four times: a 2x2 stride-2
transposed convolution ("up-convolution") halves the channels and doubles the size, the
contracting path's map of that size is *concatenated* to it, and two 3x3 convolutions mix them.
``score``, a 1x1 convolution, gives the classes. The skips carry whole feature maps and are
concatenated, where FCN adds class scores.

Choices (the paper's net differs):
- The convolutions pad by 1, so each stage keeps its size and the output has the input's size;
  the paper's are unpadded (its output is 184 pixels smaller than its input) and it crops the
  skips to fit and tiles large images with overlap. Padding keeps U-Net comparable with the
  other nets here on whole small images; its cost is that the border pixels see zeros.
- Batch normalisation after every 3x3 convolution, as most reimplementations since (e.g.
  milesial/Pytorch-UNet); the 2015 net had none.
- The pools round up. On an odd map the up-convolution is then one pixel larger than the skip;
  ``upNc`` crops it at offset 0, derived from the layers' geometry as FCN's crops are.
"""
from .. import nn
from . import geometry
from .encdec import EncoderDecoder
from .layers import Concat, Crop
from .vgg import scaled

CHANNELS = (64, 128, 256, 512, 1024)


class UNet(EncoderDecoder):
    """UNet(n_class=21, width=1.0): the contracting and expanding paths with concatenated skips
    and padded convolutions; scores (N, n_class, H, W) for any H, W."""

    def __init__(self, n_class=21, width=1.0):
        super().__init__(n_class, width)
        chans = [scaled(c, width) for c in CHANNELS]
        c_in = 3
        for b, c in enumerate(chans, 1):
            self._conv(f"conv{b}_1", c_in, c)
            self._conv(f"conv{b}_2", c, c)
            if b < len(chans):
                setattr(self, f"pool{b}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
            c_in = c
        for b in range(len(chans) - 1, 0, -1):
            c = chans[b - 1]
            setattr(self, f"up{b}", nn.ConvTranspose2d(chans[b], c, 2, stride=2))
            setattr(self, f"up{b}c", Crop())
            setattr(self, f"cat{b}", Concat())
            self._conv(f"dec{b}_1", 2 * c, c)  # the skip's c channels and the up-conv's c
            self._conv(f"dec{b}_2", c, c)
        self.score = nn.Conv2d(chans[0], n_class, 1)
        self.depth = len(chans)
        for name, offset in geometry.crop_offsets(self).items():
            getattr(self, name).offset = offset

    def forward(self, x):
        h, skips = x, []
        for b in range(1, self.depth + 1):
            h = self._apply(f"conv{b}_2", self._apply(f"conv{b}_1", h))
            if b < self.depth:
                skips.append(h)  # kept whole until the expanding path takes it
                h = getattr(self, f"pool{b}")(h)
        for b in range(self.depth - 1, 0, -1):
            skip = skips.pop()
            h = getattr(self, f"up{b}")(h)
            h = getattr(self, f"up{b}c")(h, skip)  # to the skip's size (odd maps)
            h = getattr(self, f"cat{b}")(skip, h)
            h = self._apply(f"dec{b}_2", self._apply(f"dec{b}_1", h))
        return self.score(h)


def unet(n_class=21, width=1.0):
    """A UNet (see UNet)."""
    return UNet(n_class, width)
