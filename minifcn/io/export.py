"""A trained model for other tools: PyTorch (the FCN port's names), ONNX, safetensors.

What each writes is said in ``python -m minifcn.export --help`` (minifcn/export.py, the command).
Every file is written atomically (:mod:`minifcn.io.atomic`).
"""
import json
import warnings

import numpy as np

from .safetensors import save_safetensors
from .torchwrite import save_torch_state_dict

PORT_PAD1 = 100  # the port's conv1_1 padding; its crop offsets (19; 5, 27; 5, 9, 31) follow it


def _state(model, where):
    if not hasattr(model, "state_dict") or not hasattr(model, "conv1_1"):
        raise TypeError(f"{where}: expected a minifcn FCN model, got {type(model).__name__}")
    return model.state_dict()  # NumPy copies, from the GPU too


# ---- PyTorch -----------------------------------------------------------------------------------

def pytorch_state_dict(model):
    """``{name: ndarray}`` for the PyTorch FCN port's net of the same kind: minifcn's names and
    shapes are the port's already (fc6 (4096, 512, 7, 7) at width 1; upscore*, like the port's,
    without bias), so only conv1_1.weight changes: its input channels reversed, RGB -> BGR. The
    inverse of ``minifcn.io.from_fcn_port``. dtypes are the model's. A net after FCN that is not an
    FCN (SegNet, DeconvNet, U-Net, DeepLab) has no port: its state dict is written as it is, RGB
    conv1_1 and batch norm's buffers included, for a PyTorch module with the same attribute
    names."""
    state = _state(model, "pytorch_state_dict")
    if not _is_fcn(model):  # no port, no Caffe heritage: the state dict as it is (RGB)
        return state
    state["conv1_1.weight"] = np.ascontiguousarray(state["conv1_1.weight"][:, ::-1])
    return state


def _is_fcn(model):
    from ..models import FCNBase

    return isinstance(model, FCNBase)


def to_pytorch(model, path):
    """Write ``model``'s weights at ``path`` for the PyTorch FCN port (see
    :func:`pytorch_state_dict`): ``net.load_state_dict(torch.load(path, weights_only=True))``.

    The file is torch's zip format written by :func:`save_torch_state_dict` (minifcn never
    imports torch). The port pads conv1_1 by 100 and crops by fixed offsets; a model built with
    another ``pad1`` gets a warning: its weights load, but the port runs them at padding 100,
    which moves the coarse score grid against the image, so its scores are close to the
    model's but not the same (as ``predict`` with a larger padding)."""
    state = pytorch_state_dict(model)
    pad1 = model.conv1_1.padding[0]
    if _is_fcn(model) and pad1 != PORT_PAD1:
        warnings.warn(f"to_pytorch: the model pads conv1_1 by {pad1}, the PyTorch port by "
                      f"{PORT_PAD1}: the weights load, but the port's scores will not be the "
                      "model's exactly", stacklevel=2)
    save_torch_state_dict(state, path)


def to_safetensors(model, path):
    """Write ``model``'s state dict with minifcn's names (RGB conv1_1) as .safetensors, with the
    model's config as metadata ({"format": "minifcn", "model": "FCN8s", "config": JSON})."""
    meta = {"format": "minifcn", "model": type(model).__name__}
    if isinstance(getattr(model, "config", None), dict):
        meta["config"] = json.dumps(model.config)
    save_safetensors(_state(model, "to_safetensors"), path, metadata=meta,
                     where="to_safetensors")


def to_onnx(model, path, opset=17):
    """Write ``model`` at ``path`` as an ONNX model for inference (see
    :func:`minifcn.io.onnx.to_onnx`); needs the onnx package (pip install -e ".[export]")."""
    from .onnx import to_onnx as _to_onnx

    _to_onnx(model, path, opset=opset)
