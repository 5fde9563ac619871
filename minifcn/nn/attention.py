"""Attention blocks for context: squeeze-and-excitation (channels reweighted by a gate computed
from the whole image) and the non-local block (each position a weighted mean of all the
others). Both keep the shape of their input, so either can sit after any conv stage.

    SqueezeExcitation   Hu, Shen, Sun, CVPR 2018 (arXiv 1709.01507)
    NonLocal2d          Wang, Girshick, Gupta, He, CVPR 2018 (arXiv 1711.07971), embedded Gaussian

Names follow the PyTorch code people load weights from: torchvision.ops.SqueezeExcitation
(fc1, fc2) and AlexHex7/Non-local_pytorch's NONLocalBlock2D (g, theta, phi, W).
"""
from .. import functional as F
from .layers import Conv2d, ReLU, Sigmoid
from .module import Module


class SqueezeExcitation(Module):
    """x * sigmoid(fc2(relu(fc1(mean of x over H, W)))): one gate in (0, 1) per channel and
    image. fc1 (C -> max(1, C // reduction)) and fc2 (back to C) are 1x1 convolutions with
    bias, as in torchvision.ops.SqueezeExcitation, whose state dict loads here (its
    squeeze_channels is our C // reduction). The paper's r = 16 is the default."""

    def __init__(self, channels, reduction=16):
        _positive("SqueezeExcitation", "channels", channels)
        _positive("SqueezeExcitation", "reduction", reduction)
        self.channels, self.reduction = channels, reduction
        self.squeeze_channels = max(1, channels // reduction)
        self.fc1 = Conv2d(channels, self.squeeze_channels, 1)
        self.fc2 = Conv2d(self.squeeze_channels, channels, 1)
        self.activation = ReLU()
        self.scale_activation = Sigmoid()

    def forward(self, x):
        _check_input("SqueezeExcitation", x, self.channels)
        s = F.mean(x, (2, 3), keepdims=True)  # the squeeze: (N, C, 1, 1)
        s = self.scale_activation(self.fc2(self.activation(self.fc1(s))))
        return x * s

    def extra_repr(self):
        return f"{self.channels}, reduction={self.reduction}"


class NonLocal2d(Module):
    """The embedded-Gaussian non-local block: with theta, phi, g 1x1 convolutions C -> C'
    (C' = inter_channels, default C // 2, at least 1) and every position i of the H x W map,

        f_ij = softmax_j(theta(x)_i . phi(x)_j)      an (HW x HW) matrix per image
        y_i  = sum_j f_ij g(x)_j                     (N, C', H, W)
        out  = W(y) + x                              W a 1x1 convolution C' -> C

    W's weight and bias start at zero, so the block starts as the identity and a pretrained
    net it is put into is unchanged until W learns. AlexHex7/Non-local_pytorch's
    NONLocalBlock2D(sub_sample=False, bn_layer=False) under the same names; its sub-sampling
    (a max pool after phi and g) and its BatchNorm after W are not here.

    keep_attention=True keeps the last forward's f as ``last_attention``, an (N, HW, HW) array
    (NumPy or CuPy) whose row i = h * W + w holds that position's weights over all positions:
    for pictures. It is the array backward uses: read it, do not write to it. Off by default,
    as the matrix grows with (HW)^2.
    """

    def __init__(self, channels, inter_channels=None, keep_attention=False):
        _positive("NonLocal2d", "channels", channels)
        if inter_channels is None:
            inter_channels = max(1, channels // 2)
        _positive("NonLocal2d", "inter_channels", inter_channels)
        self.channels, self.inter_channels = channels, inter_channels
        self.keep_attention, self.last_attention = keep_attention, None
        self.g = Conv2d(channels, inter_channels, 1)
        self.W = Conv2d(inter_channels, channels, 1)
        self.W.weight.data[...] = 0
        self.W.bias.data[...] = 0
        self.theta = Conv2d(channels, inter_channels, 1)
        self.phi = Conv2d(channels, inter_channels, 1)

    def forward(self, x):
        _check_input("NonLocal2d", x, self.channels)
        n, _, h, w = x.shape
        flat = (n, self.inter_channels, h * w)
        theta = self.theta(x).reshape(flat).transpose(0, 2, 1)  # (N, HW, C')
        f = F.softmax(theta @ self.phi(x).reshape(flat), -1)  # (N, HW, HW), rows sum to 1
        self.last_attention = f.data if self.keep_attention else None
        # y^T = g f^T: (N, C', HW) straight away, no transpose of y before the reshape
        y = (self.g(x).reshape(flat) @ f.transpose(0, 2, 1)).reshape(flat[:2] + (h, w))
        return self.W(y) + x

    def extra_repr(self):
        keep = ", keep_attention=True" if self.keep_attention else ""
        return f"{self.channels}, inter_channels={self.inter_channels}{keep}"


def _positive(layer, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")


def _check_input(layer, x, channels):
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{layer}: expected a 4-D input (N, {channels}, H, W), got shape "
                         f"{tuple(x.shape)}")
