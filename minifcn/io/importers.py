"""Other projects' weights renamed into minifcn's: torchvision's VGG16, the PyTorch FCN port,
and the authors' Caffe nets (paper section 3.1: fully connected layers become convolutions).

PyTorch files are read by :mod:`minifcn.io.torchfile` (no PyTorch needed, no code run), Caffe's
by :mod:`minifcn.io.caffemodel`; ``import_weights`` tells the kinds apart.
"""
import contextlib
import os
import warnings
import zipfile

import numpy as np

from ..data.transforms import MEAN_RGB  # minifcn's input: RGB 0..255 minus this mean
from .caffemodel import looks_like_caffemodel, read_caffemodel
from .checkpoint import _state_of, load
from .errors import WeightFileError, check_finite, one_line, require_file
from .fromcaffe import from_caffe
from .torchfile import read_torch_state_dict

VGG16_CONV_NAMES = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
# positions of those convs inside torchvision's vgg16().features (ReLUs and pools sit between)
_TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# torchvision's input: RGB scaled to 0..1, then (x - mean) / std per channel
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)


def _check_keys(state, required, optional, where, hint=""):
    missing = [k for k in required if k not in state]
    unexpected = [k for k in state if k not in required and k not in optional]
    if missing or unexpected:
        parts = [f"{what}: {items[:12]}{' ...' if len(items) > 12 else ''}"
                 for what, items in (("missing keys", missing), ("unexpected keys", unexpected))
                 if items]
        raise ValueError(f"{where}: {'; '.join(parts)}{hint}")


def from_torchvision_vgg16(state, fold_normalisation=True, mean_rgb=MEAN_RGB):
    """torchvision ``vgg16`` weights -> minifcn's backbone names (conv1_1 ... conv5_3, fc6, fc7).

    ``features.{0,2,5,...,28}`` become the 13 convs; ``classifier.0`` (F, C5*7*7) becomes fc6
    (F, C5, 7, 7) and ``classifier.3`` (F, F) becomes fc7 (F, F, 1, 1): the paper's
    "convolutionalisation" (a 7x7 conv over the 7x7 pool5 map computes the same numbers as the
    linear layer on the flattened map). ``classifier.6`` (the ImageNet 1000-way layer) is dropped.
    Any width works: C5 is read from ``features.28``.

    fold_normalisation (default True): torchvision's net expects ``(rgb/255 - mean)/std``;
    minifcn feeds ``rgb - mean_rgb``. Scaling conv1_1's weights by ``1/(255*std_c)`` per input
    channel and adding ``sum W'[:, c, i, j] * (mean_rgb[c] - 255*mean_c)`` to its bias makes
    conv1_1 compute exactly what it did in torchvision wherever its window lies inside the image.
    Where the window covers zero padding it differs slightly: padding is 0 in *our* input, i.e.
    the colour ``mean_rgb``, where torchvision's padding is the colour ``255*mean``; these differ
    by about one grey level per channel, so the effect is small.
    """
    where = "from_torchvision_vgg16"
    state = _state_of(state, where)
    required = [f"features.{i}.{p}" for i in _TORCHVISION_CONV_INDEX for p in ("weight", "bias")]
    required += [f"classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")]
    _check_keys(state, required, ("classifier.6.weight", "classifier.6.bias"), where,
                " (expected torchvision's plain vgg16; vgg16_bn's BatchNorm layers are not "
                "supported)")
    out, c_in = {}, 3
    for name, i in zip(VGG16_CONV_NAMES, _TORCHVISION_CONV_INDEX):
        w, b = state[f"features.{i}.weight"], state[f"features.{i}.bias"]
        if w.ndim != 4 or w.shape[1:] != (c_in, 3, 3) or b.shape != (w.shape[0],):
            raise ValueError(f"{where}: features.{i} ({name}) has weight {w.shape} and bias "
                             f"{b.shape}, expected (C_out, {c_in}, 3, 3) and (C_out,)")
        out[f"{name}.weight"], out[f"{name}.bias"] = w.copy(), b.copy()
        c_in = w.shape[0]
    w6, b6 = state["classifier.0.weight"], state["classifier.0.bias"]
    if w6.ndim != 2 or w6.shape[1] != c_in * 7 * 7 or b6.shape != (w6.shape[0],):
        raise ValueError(f"{where}: classifier.0 has weight {w6.shape} and bias {b6.shape}, "
                         f"expected (F, {c_in * 49}) = (F, conv5_3 channels * 7 * 7) and (F,)")
    # torch flattens pool5 (C, 7, 7) in C-order, so a reshape restores the conv layout
    out["fc6.weight"], out["fc6.bias"] = w6.reshape(-1, c_in, 7, 7).copy(), b6.copy()
    w7, b7 = state["classifier.3.weight"], state["classifier.3.bias"]
    if w7.ndim != 2 or w7.shape[1] != w6.shape[0] or b7.shape != (w7.shape[0],):
        raise ValueError(f"{where}: classifier.3 has weight {w7.shape} and bias {b7.shape}, "
                         f"expected (F, {w6.shape[0]}) and (F,)")
    out["fc7.weight"], out["fc7.bias"] = w7.reshape(*w7.shape, 1, 1).copy(), b7.copy()
    if fold_normalisation:
        w, b = out["conv1_1.weight"], out["conv1_1.bias"]
        std, mean = np.asarray(TORCHVISION_STD), np.asarray(TORCHVISION_MEAN)
        w_new = w.astype(np.float64) / (255.0 * std)[None, :, None, None]
        # our input 0 is the colour mean_rgb, which torchvision sees as mean_rgb - 255 * mean
        shift = np.asarray(mean_rgb, dtype=np.float64) - 255.0 * mean
        b_new = b.astype(np.float64) + np.einsum("ocij,c->o", w_new, shift)
        out["conv1_1.weight"], out["conv1_1.bias"] = w_new.astype(w.dtype), b_new.astype(b.dtype)
    return out


_FCN_LAYERS_WITH_BIAS = VGG16_CONV_NAMES + ("fc6", "fc7", "score_fr", "score_pool4", "score_pool3")
_FCN_UPSAMPLING = ("upscore", "upscore2", "upscore16", "upscore_pool4", "upscore8")


def from_fcn_port(state, bgr_to_rgb=True):
    """The PyTorch FCN port's FCN32s/16s/8s/8sAtOnce state_dict -> minifcn's (same names).

    Checks the names (backbone, fc6, fc7, score_fr required; score_pool4/3 and the upsampling
    layers optional; nothing else allowed) and that each weight is 4-d with a matching bias.
    An ``upscore*.bias`` is dropped (minifcn's upsampling layers have none, nor do the reference
    nets) if it is all zeros, and refused otherwise, since dropping it would change the output.

    bgr_to_rgb (default True): the port, like the Caffe nets it was converted from, feeds BGR
    minus the BGR mean; minifcn feeds RGB minus the same mean reordered. Reversing conv1_1's
    input channels makes the two exactly equivalent.
    """
    where = "from_fcn_port"
    state = _state_of(state, where)
    out = {}
    for name in _FCN_UPSAMPLING:
        bias = state.get(f"{name}.bias")
        if bias is not None:
            if np.any(bias != 0):
                raise ValueError(f"{where}: {name}.bias is non-zero; minifcn's upsampling layers "
                                 "have no bias, so these weights cannot be imported exactly")
            warnings.warn(f"{where}: dropping {name}.bias (all zeros; minifcn's upsampling has "
                          "no bias)")
    required = [f"{n}.{p}" for n in _FCN_LAYERS_WITH_BIAS[:16] for p in ("weight", "bias")]
    optional = ([f"{n}.{p}" for n in _FCN_LAYERS_WITH_BIAS[16:] for p in ("weight", "bias")]
                + [f"{n}.{p}" for n in _FCN_UPSAMPLING for p in ("weight", "bias")])
    _check_keys(state, required, optional, where, " (expected an FCN32s/16s/8s state_dict)")
    for key, array in state.items():
        layer, kind = key.rsplit(".", 1)
        if kind == "bias" and layer in _FCN_UPSAMPLING:
            continue
        if kind == "weight" and array.ndim != 4:
            raise ValueError(f"{where}: {key} has shape {array.shape}, expected a 4-d conv weight")
        if kind == "bias" and (f"{layer}.weight" not in state
                               or array.shape != (state[f"{layer}.weight"].shape[0],)):
            raise ValueError(f"{where}: {key} has shape {array.shape}, expected (C_out,) of "
                             f"{layer}.weight")
        out[key] = array.copy()
    if bgr_to_rgb:
        out["conv1_1.weight"] = np.ascontiguousarray(out["conv1_1.weight"][:, ::-1])
    return out


def import_weights(path_or_state, kind="auto", fold_normalisation=True, bgr_to_rgb=True):
    """Read PyTorch weights (a torch.save file or a dict), or a Caffe .caffemodel, and rename
    them to ours.

    A .caffemodel (known by its suffix or its first bytes; never a zip) goes to
    :func:`minifcn.io.fromcaffe.from_caffe`: the authors' FCN nets or their VGG16, conv1_1's
    input channels reversed from Caffe's BGR to minifcn's RGB unless ``bgr_to_rgb=False``
    (:func:`read_caffemodel` gives the raw blobs); ``kind`` must then be 'auto'.

    kind: 'torchvision_vgg16', 'fcn_port', or 'auto' (torchvision if any key starts with
    'features.', else the FCN port's names). Options go to :func:`from_torchvision_vgg16` /
    :func:`from_fcn_port`. Returns ``{name: ndarray}`` with minifcn's names. An .npz path is
    accepted for torchvision's names only (one with our names is refused: it is ambiguous
    whether its conv1_1 expects RGB, as minifcn's own weights do, or BGR, as the port's do).

    A file is read by its reader (errors: one-line WeightFileErrors naming the file) and refused
    if a tensor holds NaN or an infinity, naming the first (:func:`~.errors.check_finite`).
    """
    kinds = ("auto", "torchvision_vgg16", "fcn_port")
    if kind not in kinds:
        raise ValueError(f"import_weights: unknown kind {kind!r}, expected one of {kinds}")
    if isinstance(path_or_state, (str, os.PathLike)):
        path = require_file(path_or_state, "import_weights")
        if not zipfile.is_zipfile(path) and (path.lower().endswith(".caffemodel")
                                             or looks_like_caffemodel(path)):
            if kind != "auto":
                raise ValueError(f"import_weights: {path} is a caffemodel; kind={kind!r} names "
                                 "PyTorch layouts (pass kind='auto')")
            raw = read_caffemodel(path)
            check_finite({f"{k}[{i}]": b for k, blobs in raw.items() for i, b in enumerate(blobs)},
                         path, "import_weights")
            with _naming(path):
                return from_caffe(raw, bgr_to_rgb=bgr_to_rgb, source=path)
        is_npz = False
        if zipfile.is_zipfile(path):
            # a zip zipfile cannot list (damaged, of a newer version...): the torch reader,
            # next, says what is wrong with it
            with contextlib.suppress(Exception):
                with zipfile.ZipFile(path) as zf:
                    is_npz = not any(m.endswith("/data.pkl") for m in zf.namelist())
        state = load(path) if is_npz else check_finite(read_torch_state_dict(path), path,
                                                       "import_weights")
        unnamed = [k for k in state if not k]
        if unnamed:
            raise WeightFileError(f"import_weights: {path} holds a tensor with an empty name; "
                                  "expected a state_dict's layer names")
    else:
        path, is_npz = None, False
        state = _state_of(path_or_state, "import_weights")
    if kind == "auto":
        kind = "torchvision_vgg16" if any(k.startswith("features.") for k in state) else "fcn_port"
    if is_npz and kind == "fcn_port":
        # an .npz with our names is most likely minifcn's own (RGB) weights: flipping conv1_1
        # as for the BGR port would silently spoil them, so make the caller say which it is
        raise ValueError(f"import_weights: {path} is an .npz with minifcn's layer names; load "
                         "minifcn's own weights with minifcn.io.load, or pass "
                         "from_fcn_port(minifcn.io.load(path)) for the port's BGR weights")
    with _naming(path):
        if kind == "torchvision_vgg16":
            return from_torchvision_vgg16(state, fold_normalisation=fold_normalisation)
        return from_fcn_port(state, bgr_to_rgb=bgr_to_rgb)


@contextlib.contextmanager
def _naming(path):
    """A file's weights that do not fit the layout (missing or unexpected names, shapes) are a
    WeightFileError naming the file; weights given as a dict keep the renamer's ValueError."""
    try:
        yield
    except ValueError as e:
        if path is None or isinstance(e, WeightFileError):
            raise
        text = str(e) if path in str(e) else f"{path}: {e}"
        raise WeightFileError(one_line(f"import_weights: {text}")) from None


def merge_state(model_state, imported):
    """``model_state`` with the arrays of ``imported`` substituted where the names match.

    For initialising part of a model (say the VGG16 backbone of an FCN) from imported weights:
    ``model.load_state_dict(merge_state(model.state_dict(), import_weights(path)))``.
    model_state: a dict of arrays or a model. Raises ValueError if an imported name is not in
    the model (listing them) or a shape differs (naming the key and both shapes). Imported
    arrays are cast to the model's dtype (float64 weights into a float32 model).
    """
    model_state = _state_of(model_state, "merge_state")
    imported = _state_of(imported, "merge_state")
    extra = [k for k in imported if k not in model_state]
    if extra:
        raise ValueError(f"merge_state: imported keys the model does not have: {extra[:12]}"
                         f"{' ...' if len(extra) > 12 else ''}")
    merged = dict(model_state)
    for key, array in imported.items():
        own = model_state[key]
        if array.shape != own.shape:
            raise ValueError(f"merge_state: {key} has shape {array.shape} in the imported weights "
                             f"but {own.shape} in the model")
        if not np.can_cast(array.dtype, own.dtype, casting="same_kind"):
            raise TypeError(f"merge_state: {key} is {array.dtype} in the imported weights but "
                            f"{own.dtype} in the model")
        merged[key] = array.astype(own.dtype)
    return merged
