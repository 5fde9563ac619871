"""FCN-8s that tells instances apart: a second head beside the semantic one.

FCN labels pixels with classes, so two touching discs come out as one disc-coloured region.
Three ways to get instances on one FCN-8s trunk (docs/instances.md):

- the baseline a user tries first: FCN-8s's classes, then the connected components of each
  class (``minifcn.instances.connected_components``); it must merge touching objects;
- ``FCN8sEmbed``: an embedding head of ``EMBED_DIM`` channels trained with the discriminative
  loss (De Brabandere et al. 2017): a pixel's embedding is pulled towards its instance's mean
  and the means pushed apart; at inference the foreground's embeddings are clustered;
- ``FCN8sCentres``: a centre heatmap and a 2-channel offset to the instance's centre
  (Panoptic-DeepLab, Cheng et al. 2020); at inference the heatmap's peaks are the instances and
  each foreground pixel joins the peak its offset points nearest to.

The instance head mirrors FCN-8s's head layer for layer (``inst_fr`` on fc7, ``inst_pool4`` and
``inst_pool3`` on the skips, fixed bilinear upsampling, the same crops), so it shares the trunk
and the crop geometry; ``forward`` returns the semantic scores alone, so training's validation,
evaluate, predict and export treat these nets as FCN-8s; ``heads`` returns both.
"""
import numpy as np

from .. import backend
from .. import instances as inst
from ..autograd import Tensor, no_grad
from ..nn import Conv2d, ConvTranspose2d
from .fcn import FCN8s
from .init import bilinear_weight, he_normal_, zeros_
from .layers import Crop, Sum
from .vgg import DROPOUT, PAD1

EMBED_DIM = 2  # the embedding's size: 2 makes a picture, and a few objects fit apart in it


class FCN8sInstances(FCN8s):
    """FCN-8s with an instance head of ``EXTRA`` channels (FCNBase's options)."""

    EXTRA = 0

    def _build_head(self):
        super()._build_head()
        n = self.EXTRA
        self.inst_fr = self._instance_start(Conv2d(self.score_fr.in_channels, n, 1))
        self.inst_up2 = _fixed_bilinear(n, 4, 2)
        self.inst_pool4 = zeros_(Conv2d(self.conv4_3.out_channels, n, 1))
        self.inst_pool4c, self.inst_fuse4 = Crop(), Sum()
        self.inst_up4 = _fixed_bilinear(n, 4, 2)
        self.inst_pool3 = zeros_(Conv2d(self.conv3_3.out_channels, n, 1))
        self.inst_pool3c, self.inst_fuse3 = Crop(), Sum()
        self.inst_up8 = _fixed_bilinear(n, 16, 8)
        self.inst = Crop()

    def _instance_start(self, layer):
        return zeros_(layer)

    def _derive_geometry(self):
        super()._derive_geometry()
        # the instance head is the semantic head's twin, layer for layer: the same crops
        for mine, theirs in (("inst_pool4c", "score_pool4c"), ("inst_pool3c", "score_pool3c"),
                             ("inst", "score")):
            getattr(self, mine).offset = getattr(self, theirs).offset

    def heads(self, x):
        """(semantic scores (N, n_class, H, W), instance head (N, EXTRA, H, W))."""
        pool3, pool4, h = self.backbone(x)
        return self.head(pool3, pool4, h, x), self.instance_head(pool3, pool4, h, x)

    def instance_head(self, pool3, pool4, h, x):
        """FCN-8s's head again, on the same trunk maps, with the instance layers."""
        h = self.inst_up2(self.inst_fr(h))  # stride 32 -> 16
        h = self.inst_fuse4(h, self.inst_pool4c(self.inst_pool4(pool4), h))
        h = self.inst_up4(h)  # stride 16 -> 8
        h = self.inst_fuse3(h, self.inst_pool3c(self.inst_pool3(pool3), h))
        return self.inst(self.inst_up8(h), x)  # stride 8 -> 1, cropped to the image


class FCN8sEmbed(FCN8sInstances):
    """FCN-8s with an embedding head trained by the discriminative loss."""

    EXTRA = EMBED_DIM
    # the discriminative loss's share of the training loss: at the recipe's lr 0.08 the sum of
    # FCN's loss and the whole discriminative loss turned NaN within 40 steps; a tenth trains
    LOSS_WEIGHT = 0.1

    def _instance_start(self, layer):
        # random, not zero: with every embedding equal, the loss has no direction to push
        return he_normal_(layer)

    def instance_loss(self, extra, instances):
        return inst.discriminative_loss(extra, instances) * self.LOSS_WEIGHT

    def group(self, extra, foreground):
        """Instance ids (N, H, W) of the foreground pixels, from their embeddings."""
        return inst.cluster_embeddings(backend.as_numpy(extra.data), foreground)


class FCN8sCentres(FCN8sInstances):
    """FCN-8s with a centre heatmap (channel 0) and offsets to the centre (channels 1, 2)."""

    EXTRA = 3
    # Panoptic-DeepLab weighs the heatmap's MSE by 200: beside FCN's loss at the recipe's lr
    # 0.08, a weight of 5 already turned the loss NaN within 12 steps; 1 trains. The offsets'
    # L1 keeps the paper's 0.01 (pixels: a 20-pixel miss costs 0.2)
    CENTRE_WEIGHT, OFFSET_WEIGHT = 1.0, 0.01

    def instance_loss(self, extra, instances):
        return inst.centre_offset_loss(extra[:, :1], extra[:, 1:], inst.centre_targets(instances),
                                       centre_weight=self.CENTRE_WEIGHT,
                                       offset_weight=self.OFFSET_WEIGHT)

    def group(self, extra, foreground):
        e = backend.as_numpy(extra.data)
        return inst.group_by_centres(e[:, :1], e[:, 1:], foreground)


def _fixed_bilinear(n, kernel, stride):
    """A fixed (not learned) bilinear upsampling of n channels, as FCN-8s's upscore layers."""
    layer = ConvTranspose2d(n, n, kernel, stride=stride, bias=False)
    layer.weight.data = bilinear_weight(n, kernel)
    layer.weight.requires_grad = False
    return layer


def predict_instances(model, scores, extra=None, stuff=(0,)):
    """(classes, instances), each (N, H, W) int64, from a net's outputs: the semantic argmax,
    and the instance map: the model's own grouping where it has an instance head, else the
    connected components of each thing class (the baseline). Each instance then takes the
    majority class of its pixels."""
    classes = backend.as_numpy(scores.data).argmax(axis=1)
    foreground = ~np.isin(classes, stuff)
    if extra is None or not hasattr(model, "group"):
        ids = inst.connected_components(classes, stuff=stuff)
    else:
        ids = model.group(extra, foreground)
    return inst.instance_classes(classes, ids), ids


def instances_of(model, x, stuff=(0,)):
    """(classes, instances) of the images x (N, 3, H, W) (an array on the model's device): the
    net run without gradients (both heads where it has two), then ``predict_instances``."""
    with no_grad():
        t = Tensor(x)
        scores, extra = model.heads(t) if hasattr(model, "heads") else (model(t), None)
    return predict_instances(model, scores, extra, stuff)


def fcn8s_embed(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN8sEmbed (see FCNBase for the options)."""
    return FCN8sEmbed(n_class, width, pad1, dropout, learn_upsampling)


def fcn8s_centres(n_class=21, width=1.0, pad1=PAD1, dropout=DROPOUT, learn_upsampling=False):
    """An FCN8sCentres (see FCNBase for the options)."""
    return FCN8sCentres(n_class, width, pad1, dropout, learn_upsampling)
