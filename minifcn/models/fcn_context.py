"""FCN-8s with attention for context: squeeze-and-excitation or a non-local block in its trunk.

Both blocks are inserted after a pool of the VGG16 trunk (``pool3_context`` ...: see
``vgg.trunk``), so what they change reaches both the deeper layers and the skip that FCN-8s
scores from that pool. The trunk, the head and their names are FCN-8s's: the shipped
classifier loads into them as into FCN-8s, and the blocks start new.

- ``FCN8sSE``: ``nn.SqueezeExcitation`` (Hu et al. 2018, reduction 16) after pool3, pool4 and
  pool5, the three maps FCN-8s reads: each block weighs its map's channels by a gate computed
  from the whole map's mean, so the pool3 and pool4 skips and the coarse path can each stress
  the channels that matter for the image at hand. SE-Net puts a block in every residual stage;
  the pools are where VGG16's stages end. The gates start near 0.5, not 1: the block does not
  start as the identity (as in SE-Net).
- ``FCN8sNonLocal``: one ``nn.NonLocal2d`` (Wang et al. 2018, embedded Gaussian) after pool4.
  At stride 16 every position still covers a part of an object, and there are 16 times fewer
  positions than at pool3 (stride 8), so the HW x HW attention matrix is 256 times smaller
  (Wang et al. also found one block at that stage, res4, as good as more); conv5, fc6, fc7 and
  the pool4 skip all see its output. Its last 1x1 convolution starts at zero, so the net starts
  as FCN-8s exactly.
"""
from ..nn import NonLocal2d, SqueezeExcitation
from .fcn import FCN8s
from .vgg import DROPOUT, PAD1


class FCN8sSE(FCN8s):
    """FCN-8s with squeeze-and-excitation after pool3, pool4 and pool5 (FCNBase's options)."""

    def _build_head(self):
        super()._build_head()
        for pool, conv in (("pool3", self.conv3_3), ("pool4", self.conv4_3),
                           ("pool5", self.conv5_3)):
            setattr(self, f"{pool}_context", SqueezeExcitation(conv.out_channels))


class FCN8sNonLocal(FCN8s):
    """FCN-8s with a non-local block after pool4 (FCNBase's options)."""

    def _build_head(self):
        super()._build_head()
        self.pool4_context = NonLocal2d(self.conv4_3.out_channels)


def fcn8s_se(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN8sSE (see FCNBase for the options)."""
    return FCN8sSE(n_class, width, pad1, dropout, learn_upsampling)


def fcn8s_nonlocal(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN8sNonLocal (see FCNBase for the options)."""
    return FCN8sNonLocal(n_class, width, pad1, dropout, learn_upsampling)
