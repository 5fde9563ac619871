"""How FCN's layers start (paper section 3.3 and 4.3; the reference nets' fillers).

- ``bilinear_kernel(k)`` / ``bilinear_weight(channels, k)``: an upsampling layer that starts as
  bilinear interpolation, each class upsampled on its own (identity across classes).
- ``he_normal_(layer)``: the VGG16 trunk's start when training from scratch (He et al. 2015),
  normal with std sqrt(2 / fan_in), zero biases. The default uniform start of ``nn.Conv2d``
  shrinks the signal through FCN's ~15 unnormalised layers; He's keeps its scale. The paper
  fine-tunes from ImageNet VGG16, whose weights overwrite these.
- ``zeros_(layer)``: score layers start at zero, so a net that gains a skip starts with the
  predictions it had (paper section 4.2).
"""
import math

import numpy as np

from .. import backend


def bilinear_kernel(k):
    """The (k, k) float32 filter of bilinear interpolation for an upsampling layer of kernel k.

    factor = (k + 1) // 2; center = factor - 1 for odd k, factor - 0.5 for even k;
    filt[i, j] = (1 - |i - center| / factor) * (1 - |j - center| / factor).
    For stride s the reference nets use k = 2s: k4 s2, k16 s8, k32 s16, k64 s32.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"bilinear_kernel: k must be a positive int, got {k!r}")
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(k) - center) / factor  # the 1-D hat, separable in y and x
    return np.outer(ramp, ramp).astype(np.float32)


def bilinear_weight(channels, k):
    """A transposed-convolution weight (channels, channels, k, k) that upsamples every channel
    bilinearly and on its own: weight[c, c] = bilinear_kernel(k), every other pair zero."""
    if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"bilinear_weight: channels must be a positive int, got {channels!r}")
    weight = np.zeros((channels, channels, k, k), dtype=np.float32)
    weight[np.arange(channels), np.arange(channels)] = bilinear_kernel(k)
    return weight


def he_normal_(layer):
    """Fill a Conv2d's weight with N(0, 2 / fan_in) (fan_in = C_in * kH * kW), its bias with 0."""
    c_out, c_in, kh, kw = layer.weight.shape
    std = math.sqrt(2.0 / (c_in * kh * kw))
    w = backend.rng().standard_normal((c_out, c_in, kh, kw), dtype=np.float32)
    w *= np.float32(std)  # in place: fc6 at full width is 100M numbers, no second copy
    layer.weight.data = w
    if layer.bias is not None:
        layer.bias.data = np.zeros(layer.bias.shape, dtype=np.float32)
    return layer


def zeros_(layer):
    """Set a layer's weight (and bias) to zero."""
    layer.weight.data = np.zeros(layer.weight.shape, dtype=np.float32)
    if getattr(layer, "bias", None) is not None:
        layer.bias.data = np.zeros(layer.bias.shape, dtype=np.float32)
    return layer
