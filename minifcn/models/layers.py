"""The glue layers of FCN's heads, named as in the reference Caffe nets, and of the
encoder-decoders that came after.

They hold no parameters; they are Modules so that the forward pass is a sequence of calls to
named layers, which ``minifcn.models.geometry`` can follow to derive crop offsets and which
``summary`` lists one row each.

- ``Crop``: Caffe's Crop layer. ``crop(x, like)`` keeps x[:, :, o:o+H, o:o+W] where (H, W) is
  ``like``'s size and o is ``offset``, derived from the layers' geometry when the model is
  built (never typed in: see geometry.py).
- ``Sum``: Caffe's Eltwise SUM, the fusion of a skip with the upsampled coarser scores.
- ``Scale``: multiply by a fixed number (FCN-8s at-once scales pool4 by 0.01, pool3 by 1e-4).
- ``Concat``: U-Net's skip, feature maps joined along the channels.
- ``Resize``: bilinear resampling to a given size (DeepLab).
"""
from .. import functional as F
from ..nn import Module


class Crop(Module):
    """Crop x (N, C, H', W') to the spatial size of ``like`` (.., H, W), starting at ``offset``
    on both axes -> (N, C, H, W). ``offset`` is None until the model derives it."""

    def __init__(self):
        self.offset = None

    def forward(self, x, like):
        if self.offset is None:
            raise RuntimeError("Crop: offset not set; a model derives it from its layers' "
                               "geometry (minifcn.models.geometry.crop_offsets)")
        return F.crop(x, self.offset, like)

    def extra_repr(self):
        return f"offset={self.offset}"


class Sum(Module):
    """a + b, two maps of the same shape (N, C, H, W)."""

    def forward(self, a, b):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"Sum: the two inputs must have the same shape, got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        return a + b


class Scale(Module):
    """x * factor, a fixed Python float (not learned, not in the state dict)."""

    def __init__(self, factor):
        self.factor = float(factor)

    def forward(self, x):
        return x * self.factor

    def extra_repr(self):
        return f"factor={self.factor:g}"


class Concat(Module):
    """``cat(a, b, ...)``: maps of the same size joined along the channels (dim 1)."""

    def forward(self, *maps):
        return F.cat(list(maps), dim=1)


class Resize(Module):
    """``resize(x, size)``: bilinear resampling of x to the spatial size ``size`` ((H, W), or a
    whole (N, C, H, W) shape such as ``like.shape``), PyTorch's ``F.interpolate`` with
    align_corners=False. DeepLab's score upsampling to the image, and ASPP's image pooling
    spread back over the map."""

    def forward(self, x, size):
        return F.interpolate(x, size=tuple(size[-2:]), mode="bilinear", align_corners=False)
