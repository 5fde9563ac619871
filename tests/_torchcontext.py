"""The context nets written again in plain torch.nn, from the papers' descriptions as minifcn's
docstrings state them (minifcn/models/deeplab.py, fcn_context.py, nn/attention.py), with the
same attribute names, so that a minifcn state dict loads strictly. Only tests import this
(after pytest.importorskip("torch")); nothing here reads minifcn.

FCN-8s is spelled out with the crop offsets of the authors' reference prototxts (5, 9 and 31
at conv1_1 padding 100; the last moves with the padding), not derived as minifcn derives them.
"""
import torch
from torch import nn
from torch.nn import functional as F

VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def ch(c, width):
    return max(1, int(round(c * width)))


def bilinear(x, like):
    return F.interpolate(x, size=tuple(like.shape[2:]), mode="bilinear", align_corners=False)


class _Stride8(nn.Module):
    """VGG16's 13 convs with ReLU (no BN); pool1..3 2x2 stride 2 rounding up, pool4 and pool5
    3x3 stride 1 padded by 1; conv5_x dilated by 2 (padded by 2)."""

    def trunk(self, width):
        self.blocks = [[ch(c, width) for c in block] for block in VGG16]
        c_in = 3
        for b, block in enumerate(self.blocks, 1):
            d = 2 if b == 5 else 1
            for j, c in enumerate(block, 1):
                setattr(self, f"conv{b}_{j}", nn.Conv2d(c_in, c, 3, padding=d, dilation=d))
                c_in = c
        return c_in

    def features(self, x):
        h = x
        for b, block in enumerate(self.blocks, 1):
            for j in range(1, len(block) + 1):
                h = torch.relu(getattr(self, f"conv{b}_{j}")(h))
            h = (F.max_pool2d(h, 2, 2, ceil_mode=True) if b <= 3
                 else F.max_pool2d(h, 3, 1, padding=1))
        return h


class DeepLabLargeFOV(_Stride8):
    """fc6: 3x3, 1024 * width, dilation 12 (padding 12), ReLU; fc7 1x1, ReLU; fc8 1x1 to the
    classes; bilinear to the image."""

    def __init__(self, n_class, width):
        super().__init__()
        c5, fc = self.trunk(width), ch(1024, width)
        self.fc6 = nn.Conv2d(c5, fc, 3, padding=12, dilation=12)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.fc8 = nn.Conv2d(fc, n_class, 1)

    def forward(self, x):
        h = torch.relu(self.fc7(torch.relu(self.fc6(self.features(x)))))
        return bilinear(self.fc8(h), x)


class DeepLabASPP(_Stride8):
    """ASPP (v3) on pool5: 1x1; 3x3 dilated 6, 12, 18; image pooling (mean, 1x1, spread back
    bilinearly); each conv with BN and ReLU; cat in that order; 1x1 projection (BN, ReLU);
    ``score`` 1x1; bilinear to the image. 256 * width channels a branch."""

    def __init__(self, n_class, width, rates=(6, 12, 18)):
        super().__init__()
        c5, a = self.trunk(width), ch(256, width)
        self.rates = rates
        self.aspp_1x1, self.aspp_1x1_bn = nn.Conv2d(c5, a, 1), nn.BatchNorm2d(a)
        for r in rates:
            setattr(self, f"aspp_d{r}", nn.Conv2d(c5, a, 3, padding=r, dilation=r))
            setattr(self, f"aspp_d{r}_bn", nn.BatchNorm2d(a))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.aspp_pool_conv, self.aspp_pool_conv_bn = nn.Conv2d(c5, a, 1), nn.BatchNorm2d(a)
        self.aspp_project = nn.Conv2d((len(rates) + 2) * a, a, 1)
        self.aspp_project_bn = nn.BatchNorm2d(a)
        self.score = nn.Conv2d(a, n_class, 1)

    def branch(self, name, h):
        return torch.relu(getattr(self, f"{name}_bn")(getattr(self, name)(h)))

    def forward(self, x):
        h = self.features(x)
        image = self.branch("aspp_pool_conv", self.pool(h))
        out = [self.branch("aspp_1x1", h)] + [self.branch(f"aspp_d{r}", h) for r in self.rates]
        out.append(bilinear(image, h))
        return bilinear(self.score(self.branch("aspp_project", torch.cat(out, 1))), x)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: x * sigmoid(fc2(relu(fc1(avgpool(x)))))."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class NonLocal2d(nn.Module):
    """AlexHex7's NONLocalBlock2D (embedded Gaussian, no sub-sampling, no BN after W)."""

    def __init__(self, c, inter):
        super().__init__()
        self.inter = inter
        self.g, self.theta, self.phi = (nn.Conv2d(c, inter, 1) for _ in range(3))
        self.W = nn.Conv2d(inter, c, 1)

    def forward(self, x):
        n = x.size(0)
        g_x = self.g(x).view(n, self.inter, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(n, self.inter, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(n, self.inter, -1)
        f_div_c = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
        y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous()
        return self.W(y.view(n, self.inter, *x.size()[2:])) + x


class FCN8s(nn.Module):
    """FCN-8s (no dropout): VGG16 (conv1_1 padded by pad1, pools 2x2 rounding up), fc6 7x7,
    fc7 1x1 (ReLU), score_fr; upscore2 (k4 s2) + score_pool4 cropped at 5; upscore_pool4
    (k4 s2) + score_pool3 cropped at 9; upscore8 (k16 s8) cropped at 31 + pad1 - 100.
    ``context``: {pool: block} inserted after that pool (its output feeds both the next stage
    and the skip)."""

    def __init__(self, n_class, width, pad1=100, context=None):
        super().__init__()
        self.pad1, self.blocks = pad1, [[ch(c, width) for c in block] for block in VGG16]
        c_in = 3
        for b, block in enumerate(self.blocks, 1):
            for j, c in enumerate(block, 1):
                pad = pad1 if (b, j) == (1, 1) else 1
                setattr(self, f"conv{b}_{j}", nn.Conv2d(c_in, c, 3, padding=pad))
                c_in = c
        fc = ch(4096, width)
        self.fc6, self.fc7 = nn.Conv2d(c_in, fc, 7), nn.Conv2d(fc, fc, 1)
        self.score_fr = nn.Conv2d(fc, n_class, 1)
        self.score_pool4 = nn.Conv2d(self.blocks[3][-1], n_class, 1)
        self.score_pool3 = nn.Conv2d(self.blocks[2][-1], n_class, 1)
        self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, 2, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, 2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, 8, bias=False)
        for pool, block in (context or {}).items():
            setattr(self, f"{pool}_context", block)

    def forward(self, x):
        h, pools = x, {}
        for b, block in enumerate(self.blocks, 1):
            for j in range(1, len(block) + 1):
                h = torch.relu(getattr(self, f"conv{b}_{j}")(h))
            h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            if hasattr(self, f"pool{b}_context"):
                h = getattr(self, f"pool{b}_context")(h)
            pools[b] = h
        h = self.score_fr(torch.relu(self.fc7(torch.relu(self.fc6(h)))))
        up = self.upscore2(h)
        h = up + crop(self.score_pool4(pools[4]), 5, up)
        up = self.upscore_pool4(h)
        h = up + crop(self.score_pool3(pools[3]), 9, up)
        return crop(self.upscore8(h), 31 + self.pad1 - 100, x)


def crop(x, o, like):
    return x[:, :, o:o + like.shape[2], o:o + like.shape[3]]


def fcn8s_se(n_class, width, pad1=100):
    c = {f"pool{b}": ch(VGG16[b - 1][-1], width) for b in (3, 4, 5)}
    return FCN8s(n_class, width, pad1,
                 {p: SqueezeExcitation(n, max(1, n // 16)) for p, n in c.items()})


def fcn8s_nonlocal(n_class, width, pad1=100):
    c = ch(512, width)
    return FCN8s(n_class, width, pad1, {"pool4": NonLocal2d(c, max(1, c // 2))})


NETS = {"deeplab-largefov": DeepLabLargeFOV, "deeplab-aspp": DeepLabASPP, "fcn8s-se": fcn8s_se,
        "fcn8s-nonlocal": fcn8s_nonlocal}
