"""Every net by the name the commands know it by: ``build('segnet', n_class=21, width=0.125)``.

``FCN_MODELS`` take the FCN options (n_class, width, pad1, dropout, learn_upsampling: see
``FCNBase``); ``ENCODER_DECODERS`` take n_class and width (see encdec.py). ``MODELS`` is both.
"""
from .deconvnet import deconvnet
from .fcn import FCN_MODELS
from .segnet import segnet, segnet_basic
from .unet import unet

ENCODER_DECODERS = {"segnet": segnet, "segnet-basic": segnet_basic, "deconvnet": deconvnet,
                    "unet": unet}
MODELS = {**FCN_MODELS, **ENCODER_DECODERS}
# the nets on VGG16's trunk, which can start from a VGG16 classifier (--init classifier)
CLASSIFIER_START = (*FCN_MODELS, "segnet", "deconvnet")


def canonical(name):
    """The registry's spelling of a net's name ('_' may stand for '-'), or ValueError."""
    key = str(name).lower().replace("_", "-")
    if key not in MODELS:
        raise ValueError(f"build: unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return key


def build(name, **options):
    """The model called ``name`` (one of ``MODELS``; '_' may stand for '-'), built with
    ``options``. An encoder-decoder takes only n_class and width: another option is refused
    in one line rather than ignored."""
    key = canonical(name)
    if key in ENCODER_DECODERS:
        extra = sorted(set(options) - {"n_class", "width"})
        if extra:
            raise ValueError(f"build: {key} takes n_class and width only (no {', '.join(extra)}: "
                             f"those are FCN options)")
    return MODELS[key](**options)
