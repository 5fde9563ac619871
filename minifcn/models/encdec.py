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
from ..nn import MaxPool2d
from .base import Net


def indexed_pool():
    """A 2x2 stride-2 max pool that rounds up, as the FCNs' trunk (every pixel of an odd map
    takes part), and keeps where each maximum was, for the decoder's unpooling."""
    return MaxPool2d(2, stride=2, ceil_mode=True, return_indices=True)


class EncoderDecoder(Net):
    """A Net with VGG16's encoder and pools that keep their indices (SegNet, DeconvNet), or its
    own (SegNet-Basic, U-Net)."""

    def _vgg_encoder(self, width):
        """VGG16's thirteen convolutions (conv1_1 ... conv5_3, under the trunk's names, each
        with BN and ReLU) and five 2x2 pools that keep their indices (SegNet, DeconvNet)."""
        self._vgg_blocks(width)
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
