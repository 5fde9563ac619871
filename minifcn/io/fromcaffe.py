"""Caffe's weights (``minifcn.io.caffemodel.read_caffemodel``'s ``{layer: [blobs]}``) renamed and
reshaped into minifcn's state_dict: the authors' FCN nets and the VGG16 they fine-tune.

Paper section 3.1: VGG16's fully connected fc6 and fc7 become 7x7 and 1x1 convolutions
("convolutionalisation"); section 4.2: FCN-8s at-once's fixed scalings are numbers in
minifcn's code, not weights.
"""
import warnings

import numpy as np

__all__ = ["from_caffe", "AT_ONCE_SCALES", "TRUNK", "SCORES", "UPSAMPLING"]

TRUNK = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
         "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")  # = io.VGG16_CONV_NAMES
SCORES = ("score_fr", "score_pool4", "score_pool3")
UPSAMPLING = ("upscore", "upscore2", "upscore16", "upscore_pool4", "upscore8")
# FCN-8s at-once's fixed Scale layers (minifcn.models.FCN8sAtOnce: Scale(0.01), Scale(0.0001)):
# numbers in minifcn's code, constant-filled blobs with lr 0 in the authors' net
AT_ONCE_SCALES = {"scale_pool4": 0.01, "scale_pool3": 0.0001}
DROPPED = ("fc8",)  # VGG16's ImageNet classifier


def _vector(blob, n, where):
    """A bias blob ((n,), or V1's (1, 1, 1, n)) -> (n,)."""
    if blob.size != n or any(d != 1 for d in blob.shape[:-1]):
        raise ValueError(f"from_caffe: {where} bias has shape {blob.shape}, expected ({n},)")
    return blob.reshape(n).copy()


def _conv(name, blobs, c_in=None, kernel=None):
    """(weight (C_out, C_in, k, k), bias (C_out,)) of a Convolution layer's blobs."""
    w = blobs[0]
    if (w.ndim != 4 or (c_in is not None and w.shape[1] != c_in)
            or (kernel is not None and w.shape[2:] != (kernel, kernel))):
        want = f"(C_out, {c_in if c_in is not None else 'C_in'}, {kernel or 'k'}, {kernel or 'k'})"
        raise ValueError(f"from_caffe: {name} weight has shape {w.shape}, expected {want}")
    if len(blobs) > 2:
        raise ValueError(f"from_caffe: {name} has {len(blobs)} blobs, expected weight and bias")
    bias = (_vector(blobs[1], w.shape[0], name) if len(blobs) == 2
            else np.zeros(w.shape[0], w.dtype))  # bias_term: false is a zero bias
    return w.copy(), bias


def _fully_connected(name, blobs, c_in, kernel):
    """fc6/fc7 as a conv: an InnerProduct's (F, c_in*k*k) weight, or V1's (1, 1, F, c_in*k*k),
    becomes (F, c_in, k, k); an FCN net's fc6/fc7 are convolutions already."""
    w = blobs[0]
    if w.ndim == 4 and w.shape[:2] == (1, 1) and w.shape[3] == c_in * kernel * kernel != kernel:
        w = w.reshape(w.shape[2:])
    if w.ndim == 2:
        if w.shape[1] != c_in * kernel * kernel:
            raise ValueError(f"from_caffe: {name} (InnerProduct) weight has shape {w.shape}, "
                             f"expected (F, {c_in * kernel * kernel}) = (F, {c_in}*{kernel}*"
                             f"{kernel})")
        # Caffe flattens its (C, k, k) input in C-order, so a reshape restores the conv layout
        blobs = [w.reshape(w.shape[0], c_in, kernel, kernel), *blobs[1:]]
    return _conv(name, blobs, c_in, kernel)


def from_caffe(layers, bgr_to_rgb=True, source=None):
    """Caffe blobs (:func:`read_caffemodel`'s ``{layer: [blobs]}``) -> minifcn's state_dict.

    Takes the authors' FCN nets (same layer names as minifcn: conv1_1 ... fc7, score_fr,
    score_pool4/3, upscore*) and their VGG16 start point (VGG_ILSVRC_16_layers: fc6, fc7 as
    InnerProduct layers, reshaped to 7x7 and 1x1 convolutions, the paper's
    convolutionalisation, section 3.1; fc8, the ImageNet classifier, dropped), at any width:
    every shape is read from the blobs and the trunk's channels checked from layer to layer.
    Deconvolution weights are (C_in, C_out, k, k) in Caffe as in minifcn; a zero bias on one is
    dropped (minifcn's upsampling has none), a non-zero one refused. FCN-8s at-once's
    scale_pool4 / scale_pool3 blobs are skipped once checked to hold minifcn's constants.

    bgr_to_rgb (default True): Caffe's nets read BGR minus the mean (104.00699, 116.66877,
    122.67892); minifcn feeds RGB minus the same mean reordered, so reversing conv1_1's input
    channels makes the nets compute the same numbers. (VGG16 was trained with the mean
    (103.939, 116.779, 123.68), within one grey level of it, as the authors fine-tuned it.)
    ``source``, the file the layers came from, is named in the errors.
    """
    try:
        return _from_caffe(layers, bgr_to_rgb)
    except ValueError as e:
        if source is None:
            raise
        raise ValueError(str(e).replace("from_caffe: ", f"from_caffe: {source}: ", 1)) from None


def _from_caffe(layers, bgr_to_rgb):
    unknown = [n for n in layers if n not in TRUNK + ("fc6", "fc7") + SCORES + UPSAMPLING
               + tuple(AT_ONCE_SCALES) + DROPPED]
    missing = [n for n in TRUNK + ("fc6", "fc7") if n not in layers]
    if unknown or missing:
        parts = [f"{what}: {', '.join(names)}" for what, names in
                 (("layers minifcn's FCNs do not have", unknown), ("missing layers", missing))
                 if names]
        raise ValueError(f"from_caffe: {'; '.join(parts)} (expected the authors' FCN-32s/16s/8s "
                         "nets or VGG16)")
    out, c_in = {}, 3
    for name in TRUNK:
        out[f"{name}.weight"], out[f"{name}.bias"] = _conv(name, layers[name], c_in, 3)
        c_in = out[f"{name}.weight"].shape[0]
    widths = {"conv3_3": out["conv3_3.weight"].shape[0], "conv4_3": out["conv4_3.weight"].shape[0]}
    out["fc6.weight"], out["fc6.bias"] = _fully_connected("fc6", layers["fc6"], c_in, 7)
    fc = out["fc6.weight"].shape[0]
    out["fc7.weight"], out["fc7.bias"] = _fully_connected("fc7", layers["fc7"], fc, 1)
    for name, source in zip(SCORES, (out["fc7.weight"].shape[0], widths["conv4_3"],
                                     widths["conv3_3"])):
        if name in layers:
            out[f"{name}.weight"], out[f"{name}.bias"] = _conv(name, layers[name], source, 1)
    for name in UPSAMPLING:
        if name not in layers:
            continue
        w, *rest = layers[name]
        if w.ndim != 4 or w.shape[2] != w.shape[3] or len(rest) > 1:
            raise ValueError(f"from_caffe: {name} has blobs {[b.shape for b in layers[name]]}, "
                             "expected one (C_in, C_out, k, k) weight")
        if rest and np.any(rest[0] != 0):
            raise ValueError(f"from_caffe: {name} has a non-zero bias; minifcn's upsampling "
                             "layers have none, so these weights cannot be imported exactly")
        if rest:
            warnings.warn(f"from_caffe: dropping {name}'s bias (all zeros; minifcn's "
                          "upsampling has none)")
        out[f"{name}.weight"] = w.copy()
    for name, factor in AT_ONCE_SCALES.items():
        if name in layers and not all(np.allclose(b, factor if i == 0 else 0.0, rtol=1e-6,
                                                  atol=0) for i, b in enumerate(layers[name])):
            raise ValueError(f"from_caffe: {name} does not hold {factor:g} everywhere; "
                             f"minifcn.models.FCN8sAtOnce scales by that fixed number")
    if bgr_to_rgb:
        out["conv1_1.weight"] = np.ascontiguousarray(out["conv1_1.weight"][:, ::-1])
    return out
