"""Every net by the name the commands know it by: ``build('segnet', n_class=21, width=0.125)``.

``FCN_MODELS`` (FCN-32s ... 8s, and FCN-8s with context blocks) take the FCN options (n_class,
width, pad1, dropout, learn_upsampling: see ``FCNBase``); ``PLAIN_NETS``, the encoder-decoders
(encdec.py) and DeepLab (deeplab.py), take n_class and width only. ``MODELS`` is all of them.
"""
from .deconvnet import deconvnet
from .deeplab import deeplab_aspp, deeplab_largefov
from .fcn import FCN_MODELS as _FCNS
from .fcn_context import fcn8s_nonlocal, fcn8s_se
from .instances import fcn8s_centres, fcn8s_embed
from .segnet import segnet, segnet_basic
from .unet import unet

FCN_MODELS = {**_FCNS, "fcn8s-se": fcn8s_se, "fcn8s-nonlocal": fcn8s_nonlocal,
              "fcn8s-embed": fcn8s_embed, "fcn8s-centres": fcn8s_centres}
ENCODER_DECODERS = {"segnet": segnet, "segnet-basic": segnet_basic, "deconvnet": deconvnet,
                    "unet": unet}
DEEPLABS = {"deeplab-largefov": deeplab_largefov, "deeplab-aspp": deeplab_aspp}
PLAIN_NETS = {**ENCODER_DECODERS, **DEEPLABS}
INSTANCE_MODELS = ("fcn8s-embed", "fcn8s-centres")  # FCN-8s with an instance head
MODELS = {**FCN_MODELS, **PLAIN_NETS}
# the nets on VGG16's trunk, which can start from a VGG16 classifier (--init classifier)
CLASSIFIER_START = (*FCN_MODELS, "segnet", "deconvnet", *DEEPLABS)


def canonical(name):
    """The registry's spelling of a net's name ('_' may stand for '-'), or ValueError."""
    key = str(name).lower().replace("_", "-")
    if key not in MODELS:
        raise ValueError(f"build: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return key


def build(name, **options):
    """The model called ``name`` (one of ``MODELS``; '_' may stand for '-'), built with
    ``options``. The nets after FCN take only n_class and width: another option is refused in
    one line rather than ignored."""
    key = canonical(name)
    if key in PLAIN_NETS:
        extra = sorted(set(options) - {"n_class", "width"})
        if extra:
            raise ValueError(f"build: {key} takes n_class and width only (no {', '.join(extra)}: "
                             f"those are FCN options)")
    return MODELS[key](**options)
