"""How much to pad conv1_1: the smallest padding that fits, and the one whose scores cover
every pixel. Each function takes an FCN or a model's name ('fcn8s', ...): the geometry does not
depend on the width or the classes.

FCN pads conv1_1 by 100 so that any image of at least one pixel fits and the crops that line the
coarse scores up with the image stay inside the map (paper section 4.1; the authors' FAQ). The
least that does that is ``min_pad1``; more is needed for the scores to reach the image's borders
at full strength (``score_coverage``, ``full_cover_pad1``).
"""
import numpy as np

from ..autograd import Tensor, no_grad
from . import geometry
from .registry import build
from .geometry import GeometryError


def _net(model, **options):
    """A tiny net of ``model``'s kind (a name or an FCN) built with ``options``."""
    options = {"n_class": 1, "width": 1 / 64, **options}
    return build(model, **options) if isinstance(model, str) else type(model)(**options)


def min_pad1(model, size=None, limit=1024):
    """The smallest conv1_1 padding for which the upsampled scores cover the input (every crop
    offset >= 0) and, if ``size`` is given, a size x size input fits.

    model: an FCN, or a model name ('fcn8s', ...; the geometry does not depend on the width or
    the classes). Reference nets: 81 for FCN-32s, 73 for FCN-16s, 69 for FCN-8s; for small
    images fc6 also needs pool5 >= 7, e.g. min_pad1('fcn8s', 32) == 82. A trainer on small
    images can build with ``pad1=min_pad1(name, size)``: at 96x96 FCN-8s's conv1 maps shrink
    from 294 to 232 pixels a side, about 0.6x the work.
    """
    return geometry.min_pad1(_net(model) if isinstance(model, str) else model, size, limit)


def pad1_by_side(model):
    """The conv1_1 padding ``predict`` runs the FCN ``model`` at, by the shorter side of the
    image: a list whose entry i is the padding for a shorter side of i + 1 pixels; its last
    entry, the model's own padding, serves every longer side too (from the smallest side the
    model takes as it is, ``geometry.min_input_size``). A smaller image needs more padding:
    fc6's 7x7 window must fit and the crops must stay inside the map; the weights do not depend
    on the padding, so the same net serves (``predict.fit_padding``): max(own, min_pad1(side)).

    One entry for a net at padding 100 (it takes any image as it is); FCN-8s at 69 (the
    training default on 96x96): 57 entries, from 97 for a 1-pixel side down to 69 from 57
    pixels up. ``minifcn.io.onnx`` puts the table into the exported graph."""
    own = model.conv1_1.padding[0]
    largest = geometry.min_input_size(model)
    table = [own] * (largest + 1)
    for side in range(largest - 1, 0, -1):  # smaller sides need as much padding or more
        table[side] = geometry.min_pad1(model, side, start=table[side + 1])
    return table[1:] if largest > 1 else [own]


def score_coverage(model, size, pad1=None):
    """How much of a constant coarse score reaches each pixel of a size x size input: the output
    of the net when score_fr says 1 everywhere and every other score layer 0. A (size, size)
    array.

    The fixed bilinear upsampling interpolates between neighbouring score cells; past the
    outermost cell centres there is only one neighbour, and the output fades towards 0 there.
    The crop keeps part of that fading rim when the padding is small, and on small images with
    few score cells the rim is most of the image: FCN-8s at 96x96 with the minimal padding 69
    passes on average 0.40 of its coarse scores, 0 at the corners. A net can learn to make up for
    it, but slowly, and FCN-32s hardly does. ``full_cover_pad1`` finds the padding without rim.

    model: an FCN, or a model name ('fcn8s', ...).
    """
    if pad1 is None:
        pad1 = 100 if isinstance(model, str) else model.config["pad1"]
    net = _net(model, pad1=pad1, dropout=0.0).eval()  # the geometry alone
    state = net.state_dict()
    for key in state:
        if key.startswith("score"):  # score_fr, score_pool4, score_pool3: weights and biases
            state[key] = np.zeros_like(state[key])
    state["score_fr.bias"] = np.ones_like(state["score_fr.bias"])
    net.load_state_dict(state)
    with no_grad():
        return net(Tensor(np.zeros((1, 3, size, size), np.float32))).data[0, 0]


def full_cover_pad1(model, size, threshold=0.99, limit=1024):
    """The smallest conv1_1 padding at which the coarse scores reach every pixel of a size x
    size input at full strength (``score_coverage`` >= threshold everywhere). Reference nets at
    96x96: 113 for FCN-32s, 121 for FCN-16s, 124 for FCN-8s (the paper's 100 leaves 0.37 in the
    corners)."""
    for p in range(min_pad1(model, size), limit + 1):
        if score_coverage(model, size, p).min() >= threshold:
            return p
    raise GeometryError(f"geometry: no conv1_1 padding up to {limit} covers a {size}x{size} input")
