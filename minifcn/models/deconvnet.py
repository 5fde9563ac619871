"""DeconvNet (Noh, Hong, Han, ICCV 2015, arXiv 1505.04366).

The encoder is VGG16 with fc6 (7x7) and fc7 (1x1) as convolutions, as in FCN, and batch
normalisation after every convolution. The decoder is the encoder mirrored: deconv6, a 7x7
transposed convolution, undoes fc6; then, stage by stage, unpooling with the pool's indices
("switches" in the paper) and 3x3 transposed convolutions with BN and ReLU, back to the input's
size; ``score``, a 1x1 convolution, gives the classes.

Where it departs from the paper: the paper's encoder sees 224x224 proposals, where pool5 is
7x7 and fc6 (unpadded) shrinks it to 1x1, which deconv6 grows back to 7x7. Here fc6 and deconv6
pad by 3, so any input size works and pool5's size is kept; on a 224 input the layers see the
same windows at pool5's centre. The paper's proposals, its ensemble with FCN-8s and its CRF
(72.5 mean IU on VOC 2012 test) are not part of the net.
"""
from .. import nn
from .encdec import EncoderDecoder
from .vgg import FC_CHANNELS, scaled


class DeconvNet(EncoderDecoder):
    """DeconvNet(n_class=21, width=1.0): VGG16 + fc6/fc7 with BN, pools with indices, and the
    mirrored unpooling and transposed-convolution stages; scores (N, n_class, H, W)."""

    def __init__(self, n_class=21, width=1.0):
        super().__init__(n_class, width)
        self._vgg_encoder(width)
        self.classifier_layers += ("fc6", "fc7")
        fc, c_in = scaled(FC_CHANNELS, width), self.blocks[-1][-1]
        self._conv("fc6", c_in, fc, 7)
        self._conv("fc7", fc, fc, 1)
        self._conv("deconv6", fc, c_in, 7, transposed=True)
        for b in range(len(self.blocks), 0, -1):
            block = self.blocks[b - 1]
            setattr(self, f"unpool{b}", nn.MaxUnpool2d(2, stride=2))
            for j in range(1, len(block) + 1):
                # the stage's last layer gives the next stage's channels (stage 1 keeps 64)
                c_out = self.blocks[b - 2][-1] if j == len(block) and b > 1 else block[j - 1]
                self._conv(f"deconv{b}_{j}", block[j - 1], c_out, transposed=True)
        self.score = nn.Conv2d(self.blocks[0][0], n_class, 1)

    def forward(self, x):
        h, pooled = self._encode(x)
        h = self._apply("fc7", self._apply("fc6", h))
        h = self._apply("deconv6", h)
        for b in range(len(self.blocks), 0, -1):
            indices, size = pooled.pop()
            h = getattr(self, f"unpool{b}")(h, indices, output_size=size)
            for j in range(1, len(self.blocks[b - 1]) + 1):
                h = self._apply(f"deconv{b}_{j}", h)
        return self.score(h)


def deconvnet(n_class=21, width=1.0):
    """A DeconvNet (see DeconvNet)."""
    return DeconvNet(n_class, width)
