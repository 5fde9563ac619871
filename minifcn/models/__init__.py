"""minifcn.models: FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once on a VGG16 trunk, and the
encoder-decoders that followed: SegNet, SegNet-Basic, DeconvNet and U-Net.

    import minifcn
    model = minifcn.models.fcn8s(n_class=21, width=0.125)
    scores = model(x)                       # (N, 3, H, W) -> (N, 21, H, W)
    print(minifcn.summary(model, (1, 3, 500, 500)))

Files: vgg.py (the trunk, the options), fcn.py (the heads and builders), classifier.py (the
VGG16 classifier an FCN starts from, ``convolutionalize``, the shipped
``pretrained_classifier``), layers.py (Crop, Sum, Scale), geometry.py (coordinate maps -> crop offsets), padding.py
(how much to pad conv1_1: min_pad1, score_coverage, full_cover_pad1), init.py (bilinear, He), summary.py,
base.py (what the nets after FCN share), encdec.py (the encoder-decoders' encoder), segnet.py, deconvnet.py, unet.py, deeplab.py (LargeFOV,
ASPP), fcn_context.py (FCN-8s with squeeze-and-excitation or a non-local block), instances.py (FCN-8s
with an instance head: embeddings, or centres and offsets), registry.py
(every net by name: ``build``, ``MODELS``), layer_outputs.py (every layer's output on one
input: ``record(model, x)``, what ``minifcn.viz`` draws activations and skip scores from), shift.py (denser scores, paper section 3.2: ``rarefy(model, 'pool5')`` and
``shift_and_stitch(model, x, f)``; not named rarefy.py, so the function cannot hide the module).
CLI: ``python -m minifcn.models fcn8s --width 1.0 --size 500`` prints the summary.
"""
from . import geometry, padding
from .classifier import (VGGClassifier, convolutionalize, pretrained_classifier,
                         shipped_classifier_path)
from .deconvnet import DeconvNet, deconvnet
from .encdec import EncoderDecoder
from .fcn import FCN8s, FCN8sAtOnce, FCN16s, FCN32s, fcn8s, fcn8s_atonce, fcn16s, fcn32s
from .base import Net
from .deeplab import DeepLabASPP, DeepLabLargeFOV, deeplab_aspp, deeplab_largefov
from .fcn_context import FCN8sNonLocal, FCN8sSE, fcn8s_nonlocal, fcn8s_se
from .instances import (FCN8sCentres, FCN8sEmbed, fcn8s_centres, fcn8s_embed, instances_of,
                        predict_instances)
from .registry import DEEPLABS, ENCODER_DECODERS, INSTANCE_MODELS, MODELS, PLAIN_NETS, build
from .segnet import SegNet, SegNetBasic, segnet, segnet_basic
from .unet import UNet, unet
from .init import bilinear_kernel, bilinear_weight
from .layers import Concat, Crop, Resize, Scale, Sum
from .shift import coarse_scores, rarefy, shift_and_stitch, stitched_scores
from .layer_outputs import record
from .summary import summary
from .vgg import FCNBase

__all__ = ["FCN32s", "FCN16s", "FCN8s", "FCN8sAtOnce", "FCNBase", "fcn32s", "fcn16s", "fcn8s",
           "fcn8s_atonce", "build", "MODELS", "summary", "bilinear_kernel", "bilinear_weight",
           "Crop", "Sum", "Scale", "geometry", "padding", "rarefy", "shift_and_stitch", "stitched_scores",
           "coarse_scores", "VGGClassifier", "convolutionalize", "pretrained_classifier",
           "shipped_classifier_path", "SegNet", "SegNetBasic", "DeconvNet", "UNet", "segnet",
           "segnet_basic", "deconvnet", "unet", "EncoderDecoder", "ENCODER_DECODERS",
           "Concat", "Resize", "Net", "DeepLabLargeFOV", "DeepLabASPP", "deeplab_largefov",
           "deeplab_aspp", "FCN8sSE", "FCN8sNonLocal", "fcn8s_se", "fcn8s_nonlocal", "DEEPLABS",
           "PLAIN_NETS", "FCN8sEmbed", "FCN8sCentres", "fcn8s_embed", "fcn8s_centres",
           "predict_instances", "instances_of", "INSTANCE_MODELS", "record"]
