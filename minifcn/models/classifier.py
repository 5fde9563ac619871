"""The classifier every FCN starts from, and turning it into one (paper sections 3.1 and 4.1).

``VGGClassifier`` is VGG16's topology as VGG defines it: the convolutional trunk conv1_1 ...
pool5 (vgg.py, each 3x3 conv padded by 1), then fc6 and fc7 as *fully connected* layers on the
flattened 7x7 pool5 map, each with ReLU and dropout, and fc8, the classification layer. It takes
images whose pool5 is 7x7 (224 x 224, VGG's input; any side in 193..224, as the pools round up)
and returns class scores shaped (N, n_class, 1, 1): a classifier is a segmenter with one output
pixel, so ``python -m minifcn.pretrain`` trains it with the same loss, metrics and loop as FCNs.

``convolutionalize(classifier, fcn)`` is the paper's first step: fc6's weight (fc, c*7*7) read
as a 7x7 convolution (fc, c, 7, 7), fc7's (fc, fc) as a 1x1 one; the trunk is copied as is. The
FCN's score layers keep their zero start (fc8 is dropped: its classes are not the FCN's).
"""
from pathlib import Path

import numpy as np

from .. import backend
from .. import functional as F
from ..nn import Dropout, Module, Parameter, ReLU
from .init import zeros_
from .vgg import DROPOUT, FC_CHANNELS, VGG16_BLOCKS, _check_options, build_trunk, scaled, trunk

FC6_KERNEL = 7  # pool5's size on VGG's 224 x 224 input: fc6 reads all of it
INPUT_SIZES = (193, 224)  # the input sides that give a 7x7 pool5 (each pool rounds up)


class Linear(Module):
    """A fully connected layer: x (N, in) -> x @ weight.T + bias (N, out); weight (out, in) as
    PyTorch's and Caffe's InnerProduct. He-normal start (std sqrt(2 / in)), zero bias."""

    def __init__(self, in_features, out_features):
        self.in_features, self.out_features = in_features, out_features
        w = backend.rng().standard_normal((out_features, in_features), dtype=np.float32)
        self.weight = Parameter(w * np.float32(np.sqrt(2.0 / in_features)))
        self.bias = Parameter(np.zeros(out_features, np.float32))

    def forward(self, x):
        return F.matmul(x, F.transpose(self.weight)) + self.bias

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class VGGClassifier(Module):
    """VGG16 as a classifier: VGGClassifier(n_class, width=1.0, dropout=0.5).

    width scales every hidden channel count as the FCNs' (0.0625: trunk 4-8-16-32-32, fc 256),
    so the classifier and the FCN built at the same width share every trunk and fc shape.
    Calling it on (N, 3, H, W) with H, W in 193..224 returns scores (N, n_class, 1, 1)."""

    def __init__(self, n_class, width=1.0, dropout=DROPOUT):
        _check_options(type(self), n_class, width, 1, dropout, False)
        self.config = dict(n_class=int(n_class), width=float(width), dropout=float(dropout))
        b5, fc = scaled(VGG16_BLOCKS[4][0], width), scaled(FC_CHANNELS, width)
        build_trunk(self, width, pad1=1)  # VGG's own padding: every 3x3 conv keeps the size
        self.fc6, self.relu6, self.drop6 = Linear(b5 * FC6_KERNEL**2, fc), ReLU(), Dropout(dropout)
        self.fc7, self.relu7, self.drop7 = Linear(fc, fc), ReLU(), Dropout(dropout)
        # fc8 starts at zero, as the FCNs' score layers: the first steps then train fc8 alone
        # and the trunk's gradient grows from nothing. With a random fc8 the whole net got
        # full-size gradients at once and died at lr 0.05 (every pool5 unit off by step 250)
        self.fc8 = zeros_(Linear(fc, n_class))

    def forward(self, x):
        n = x.shape[0]
        return F.reshape(self.fc8(self.features(x)), (n, self.config["n_class"], 1, 1))

    def features(self, x):
        """fc7's output (N, fc) after its ReLU and dropout: what the FCN's fc7 computes at
        each position (``convolutionalize``)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGGClassifier: input must be (N, 3, H, W), got {tuple(x.shape)}")
        _, _, pool5 = trunk(self, x)
        if tuple(pool5.shape[2:]) != (FC6_KERNEL, FC6_KERNEL):
            raise ValueError(f"VGGClassifier: input {x.shape[2]}x{x.shape[3]} gives pool5 "
                             f"{pool5.shape[2]}x{pool5.shape[3]}, but fc6 reads a "
                             f"{FC6_KERNEL}x{FC6_KERNEL} map: height and width must be in "
                             f"{INPUT_SIZES[0]}..{INPUT_SIZES[1]} (224 as VGG); convolutionalize "
                             f"it to score larger images")
        return self.fully_connected(pool5)

    def fully_connected(self, pool5):
        """fc6 and fc7 (each with ReLU and dropout) on a (N, c, 7, 7) pool5 map -> (N, fc)."""
        n, c, h, w = pool5.shape
        h = F.reshape(pool5, (n, c * h * w))  # (c, y, x) order: a 7x7 conv's weight order
        h = self.drop6(self.relu6(self.fc6(h)))
        return self.drop7(self.relu7(self.fc7(h)))


def convolutional_state(state):
    """A classifier's state dict in the FCN's names and shapes: the trunk as is, fc6's weight
    reshaped to (fc, c, 7, 7), fc7's to (fc, fc, 1, 1); fc8 left out (the FCN's score layers
    start at zero, as in the paper). Works on NumPy arrays, e.g. a checkpoint's."""
    out = {k: v for k, v in state.items() if not k.startswith("fc8.")}
    fc, inputs = out["fc6.weight"].shape
    c = inputs // FC6_KERNEL**2
    if c * FC6_KERNEL**2 != inputs:
        raise ValueError(f"convolutionalize: fc6.weight has {inputs} inputs, not a multiple of "
                         f"{FC6_KERNEL}x{FC6_KERNEL} (a VGGClassifier's fc6 reads a 7x7 pool5)")
    out["fc6.weight"] = out["fc6.weight"].reshape(fc, c, FC6_KERNEL, FC6_KERNEL)
    out["fc7.weight"] = out["fc7.weight"].reshape(*out["fc7.weight"].shape, 1, 1)
    return out


def is_classifier_state(state):
    """True for a VGGClassifier's weights (fc6 fully connected, 2-D), False for an FCN's."""
    w = state.get("fc6.weight")
    return w is not None and np.ndim(w) == 2


def convolutionalize(classifier, fcn, scores=False):
    """Load a ``VGGClassifier``'s trunk, fc6 and fc7 into ``fcn`` (any FCN of the same width),
    fc6 and fc7 as convolutions; returns ``fcn``. Its score layers are left as they are (zero
    when new), unless ``scores``: then fc8 becomes score_fr, a 1x1 convolution to the
    classifier's classes (the FCN must have as many), and the FCN scores the classifier's
    classes at every position: a heatmap. The FCN's fc7 at a position computes the classifier's
    fc7 on the 224-pixel window that position sees (tests/test_models_classifier.py: exactly
    where the window's surroundings carry nothing)."""
    if not isinstance(classifier, VGGClassifier):
        raise TypeError(f"convolutionalize: expected a VGGClassifier, got "
                        f"{type(classifier).__name__}")
    params = {k: p.data for k, p in classifier.named_parameters()}
    state = convolutional_state(params)
    if scores:
        state["score_fr.weight"] = params["fc8.weight"].reshape(*params["fc8.weight"].shape, 1, 1)
        state["score_fr.bias"] = params["fc8.bias"]
    own = dict(fcn.named_parameters())
    wrong = [f"{k} {tuple(v.shape)} vs {own[k].shape if k in own else 'missing'}"
             for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"convolutionalize: the classifier and {type(fcn).__name__} differ in "
                         f"{', '.join(wrong[:3])}: build both at the same width")
    for k, v in state.items():  # onto the FCN's device and dtype, as a copy
        own[k].data = backend.get_array_module(own[k].data).asarray(v, own[k].dtype).copy()
    return fcn


# the classifiers that ship with minifcn, made by python -m minifcn.pretrain (each .npz has a .md
# beside it with the command, data, accuracy and commit)
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def shipped_classifier_path(width=0.0625):
    """Path of the shipped classifier of ``width``; ValueError naming the widths there are."""
    path = WEIGHTS_DIR / f"classifier-shapes-cls-w{width:g}.npz"
    if not path.is_file():
        have = sorted(p.stem.rsplit("-w", 1)[1] for p in WEIGHTS_DIR.glob("classifier-*.npz"))
        raise ValueError(f"--init classifier: no shipped classifier at --width {width:g} "
                         f"(shipped widths: {', '.join(have) or 'none'}); use one of those, "
                         f"--init scratch, or --init-from FILE")
    return path


def pretrained_classifier(width=0.0625):
    """The shipped VGGClassifier of ``width``, trained on shapes-cls, in eval mode (float32)."""
    from .. import io

    arrays, meta = io.load_checkpoint(shipped_classifier_path(width))
    config = meta["config"]
    model = VGGClassifier(config["n_class"], width=config["width"], dropout=config["dropout"])
    model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items()})
    return model.eval()
