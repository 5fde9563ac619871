"""FCN's heads: FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once (paper sections 4.1-4.2, Fig. 3).

Each net is the VGG16 trunk (vgg.py) plus a head that turns the stride-32 class scores into a
full-size score map. Layer names are the reference nets' (Caffe prototxts, PyTorch port), so
state dict keys match theirs:

    FCN-32s  score_fr -> upscore (k64 s32) -> crop to the input
    FCN-16s  score_fr -> upscore2 (k4 s2) -> + crop(score_pool4(pool4)) -> upscore16 (k32 s16)
             -> crop to the input
    FCN-8s   as FCN-16s up to the sum -> upscore_pool4 (k4 s2) -> + crop(score_pool3(pool3))
             -> upscore8 (k16 s8) -> crop to the input

Every crop offset is derived from the layers (geometry.py), never typed in; for the reference
nets (conv1_1 padding 100) the derivation gives 19 (32s), 5 and 27 (16s), 5, 9 and 31 (8s).
A model maps a (N, 3, H, W) Tensor to (N, n_class, H, W) scores for any H, W.
"""
from .layers import Crop, Scale, Sum
from .vgg import DROPOUT, PAD1, FCNBase


class FCN32s(FCNBase):
    """FCN-32s: one upsampling by 32 of the coarse scores (paper section 4.1).

    FCN32s(n_class=21, width=1.0, pad1=100, dropout=0.5, learn_upsampling=False); the options
    are described in ``FCNBase``. Crop offset 19 at pad1=100.
    """

    def _build_head(self):
        self.upscore = self._upscore(64, 32, final=True)
        self.score = Crop()

    def forward(self, x):
        _, _, h = self.backbone(x)
        h = self.score_fr(h)  # (N, n_class, ~H/32, ~W/32)
        h = self.upscore(h)  # stride 32 -> 1, a little larger than the padded input
        return self.score(h, x)  # crop to the input's H, W


class FCN16s(FCNBase):
    """FCN-16s: coarse scores upsampled by 2 and added to scores from pool4, then upsampled by
    16 (paper section 4.2). Crop offsets 5 (score_pool4c) and 27 (score) at pad1=100."""

    def _build_head(self):
        self.upscore2 = self._upscore(4, 2, final=False)
        self.score_pool4 = self._score(self.conv4_3.out_channels)
        self.score_pool4c = Crop()
        self.fuse_pool4 = Sum()
        self.upscore16 = self._upscore(32, 16, final=True)
        self.score = Crop()

    def forward(self, x):
        _, pool4, h = self.backbone(x)
        h = self.score_fr(h)
        upscore2 = self.upscore2(h)  # stride 32 -> 16
        h = self.score_pool4c(self.score_pool4(pool4), upscore2)  # pool4's scores, aligned
        h = self.fuse_pool4(upscore2, h)
        h = self.upscore16(h)  # stride 16 -> 1
        return self.score(h, x)

    @classmethod
    def from_fcn32s(cls, model):
        """A new FCN16s with every layer it shares with the trained FCN32s ``model`` copied
        (conv1_1 ... score_fr; same n_class, width, pad1), as the paper trained 16s from 32s.
        score_pool4 starts at zero, so the pool4 skip adds nothing at first: the output is the
        32s net's coarse scores upsampled by the new bilinear upscore2 and upscore16 (not
        bit-identical to 32s's single k64 s32 upscore, which is not carried over)."""
        return cls._staged(model, FCN32s)


class FCN8s(FCNBase):
    """FCN-8s: FCN-16s's fused scores upsampled by 2 and added to scores from pool3, then
    upsampled by 8 (paper section 4.2). Crop offsets 5, 9 and 31 at pad1=100."""

    def _build_head(self):
        self.upscore2 = self._upscore(4, 2, final=False)
        self.score_pool4 = self._score(self.conv4_3.out_channels)
        self.score_pool4c = Crop()
        self.fuse_pool4 = Sum()
        self.upscore_pool4 = self._upscore(4, 2, final=False)
        self.score_pool3 = self._score(self.conv3_3.out_channels)
        self.score_pool3c = Crop()
        self.fuse_pool3 = Sum()
        self.upscore8 = self._upscore(16, 8, final=True)
        self.score = Crop()

    def forward(self, x):
        pool3, pool4, h = self.backbone(x)
        return self.head(pool3, pool4, h, x)

    def head(self, pool3, pool4, h, x):
        """The scores from the trunk's pool3, pool4 and fc7 (h), cropped to the image x."""
        h = self.score_fr(h)
        upscore2 = self.upscore2(h)  # stride 32 -> 16
        h = self.score_pool4c(self.score_pool4(pool4), upscore2)
        h = self.fuse_pool4(upscore2, h)
        upscore_pool4 = self.upscore_pool4(h)  # stride 16 -> 8
        h = self.score_pool3c(self.score_pool3(pool3), upscore_pool4)
        h = self.fuse_pool3(upscore_pool4, h)
        h = self.upscore8(h)  # stride 8 -> 1
        return self.score(h, x)

    @classmethod
    def from_fcn16s(cls, model):
        """A new FCN8s with every layer it shares with the trained FCN16s ``model`` copied
        (the trunk, score_fr, upscore2, score_pool4), as the paper trained 8s from 16s.
        score_pool3 starts at zero, so at first the output is the 16s net's fused scores
        upsampled by the new bilinear upscore_pool4 and upscore8."""
        return cls._staged(model, FCN16s)


class FCN8sAtOnce(FCN8s):
    """FCN-8s trained in one stage from ImageNet weights (the reference 'voc-fcn8s-atonce'):
    pool4 is scaled by 0.01 and pool3 by 0.0001 before their score layers, so the skips start
    small next to the fine-tuned coarse path. Same layers and state dict keys as FCN8s (the
    scales are fixed numbers). From scratch the scaling switches the skips off; use FCN8s."""

    def _build_head(self):
        super()._build_head()
        self.scale_pool4 = Scale(0.01)
        self.scale_pool3 = Scale(0.0001)

    def forward(self, x):
        pool3, pool4, h = self.backbone(x)
        h = self.score_fr(h)
        upscore2 = self.upscore2(h)
        h = self.score_pool4c(self.score_pool4(self.scale_pool4(pool4)), upscore2)
        h = self.fuse_pool4(upscore2, h)
        upscore_pool4 = self.upscore_pool4(h)
        h = self.score_pool3c(self.score_pool3(self.scale_pool3(pool3)), upscore_pool4)
        h = self.fuse_pool3(upscore_pool4, h)
        h = self.upscore8(h)
        return self.score(h, x)


def fcn32s(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN32s (see FCNBase for the options)."""
    return FCN32s(n_class, width, pad1, dropout, learn_upsampling)


def fcn16s(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN16s (see FCNBase for the options)."""
    return FCN16s(n_class, width, pad1, dropout, learn_upsampling)


def fcn8s(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN8s (see FCNBase for the options)."""
    return FCN8s(n_class, width, pad1, dropout, learn_upsampling)


def fcn8s_atonce(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN8sAtOnce (see FCNBase for the options)."""
    return FCN8sAtOnce(n_class, width, pad1, dropout, learn_upsampling)


FCN_MODELS = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s, "fcn8s-atonce": fcn8s_atonce}
