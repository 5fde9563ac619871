"""Export a trained model for other tools: PyTorch, ONNX, safetensors.

    python -m minifcn.export CHECKPOINT --to pytorch|onnx|safetensors --out FILE [--overwrite]

CHECKPOINT is a checkpoint of ``python -m minifcn.train`` (read with
``minifcn.training.load_model``). What each target writes:

  pytorch      a state dict for the PyTorch FCN port's nets (wkentaro/pytorch-fcn, torchfcn's
               FCN32s / FCN16s / FCN8s / FCN8sAtOnce): the same layer names as minifcn's
               (Caffe's), with conv1_1's input channels reversed, since the port, like Caffe,
               reads BGR. ``torch.load(FILE, weights_only=True)`` reads it, and
               ``FCN8s(n_class).load_state_dict(...)`` takes it strictly at width 1. Written
               in torch's zip format by :func:`save_torch_state_dict` (no torch needed).
  onnx         the whole net for inference (see :mod:`minifcn.onnx_export`): input "image"
               (N, 3, H, W), output "scores" (N, n_class, H, W), N, H and W free.
  safetensors  minifcn's own state dict (RGB conv1_1) as a .safetensors file
               (:mod:`minifcn.safetensors`).

Every input is RGB pixels 0..255 minus ``minifcn.data.transforms.MEAN_RGB`` (for the port:
BGR minus the same mean in BGR order). An existing FILE is refused unless --overwrite; FILE is
written to a temporary name and renamed (``minifcn.io.atomic_path``), so a failed export
leaves whatever was there before. Errors are one line naming the file or option.
"""
import argparse
import json
import math
import os
import struct
import sys
import warnings
import zipfile

import numpy as np

from .atomic import atomic_path
from .safetensors import save_safetensors

__all__ = ["to_pytorch", "to_onnx", "to_safetensors", "pytorch_state_dict",
           "save_torch_state_dict", "PORT_PAD1", "main"]

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
    inverse of ``minifcn.io.from_fcn_port``. dtypes are the model's."""
    state = _state(model, "pytorch_state_dict")
    state["conv1_1.weight"] = np.ascontiguousarray(state["conv1_1.weight"][:, ::-1])
    return state


# torch's storage class for each dtype it can rebuild from a weights_only pickle
_STORAGE = {np.dtype(k): v for k, v in {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage",
    "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}.items()}
_ALIGN = 64  # torch 2.x starts each storage record's bytes at a multiple of 64 in the zip


class _Pickle:
    """Just the pickle opcodes (protocol 2) a state dict of tensors needs, written by hand: the
    ``pickle`` module would want to import torch to name torch's functions."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def op(self, code):
        self.out += code

    def str(self, text):
        data = text.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE

    def int(self, value):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])  # BININT1
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)  # BININT2
        elif -2**31 <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)  # BININT
        else:
            data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + bytes([len(data)]) + data  # LONG1

    def glob(self, module, name):
        self.out += b"c" + f"{module}\n{name}\n".encode("ascii")  # GLOBAL

    def tuple(self, ints):
        self.out += b"("  # MARK
        for v in ints:
            self.int(v)
        self.out += b"t"  # TUPLE

    def tensor(self, key, storage, array):
        """torch._utils._rebuild_tensor_v2(<storage key>, 0, shape, stride, False, OrderedDict())
        with the storage as a persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)."""
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.op(b"((")  # MARK the call's arguments, MARK the persistent id
        self.str("storage")
        self.glob("torch", storage)
        self.str(key)
        self.str("cpu")
        self.int(array.size)
        self.op(b"tQ")  # TUPLE, BINPERSID
        self.int(0)  # storage offset
        self.tuple(array.shape)
        self.tuple(math.prod(array.shape[i + 1:]) for i in range(array.ndim))  # C order
        self.op(b"\x89")  # NEWFALSE: requires_grad
        self.glob("collections", "OrderedDict")
        self.op(b")R")  # EMPTY_TUPLE, REDUCE: OrderedDict(), the backward hooks
        self.op(b"tR")  # TUPLE of the arguments, REDUCE: call _rebuild_tensor_v2


def _torch_pickle(arrays):
    """data.pkl for ``{name: C-contiguous array}``: a dict name -> tensor, storage keys '0'..."""
    p = _Pickle()
    p.op(b"}(")  # EMPTY_DICT, MARK
    for key, (name, array) in enumerate(arrays.items()):
        p.str(name)
        p.tensor(str(key), _STORAGE[array.dtype], array)
    p.op(b"u.")  # SETITEMS, STOP
    return bytes(p.out)


def _aligned_record(zf, name, size):
    """A ZipInfo for a stored record ``name`` whose data will start at a multiple of _ALIGN, by
    padding the local header's extra field (as torch does)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.file_size = zipfile.ZIP_STORED, size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule for a record of this size
    header = 30 + len(name.encode("utf-8")) + (20 if zip64 else 0)
    pad = -(zf.fp.tell() + header + 4) % _ALIGN
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # id 'FB', torch's padding id
    return info, zip64


def save_torch_state_dict(arrays, path, archive="archive"):
    """Write ``arrays`` ({name: ndarray}) as ``torch.save`` would a dict of tensors, without
    torch: a stored zip of ``archive/data.pkl`` (a pickle calling only
    torch._utils._rebuild_tensor_v2, torch.<X>Storage and collections.OrderedDict, all that
    ``torch.load(weights_only=True)`` allows), ``archive/data/<key>`` (each tensor's bytes,
    little-endian, 64-byte aligned), ``archive/byteorder`` ("little"), ``archive/version`` ("3")
    and ``.format_version`` / ``.storage_alignment`` as torch 2.x writes them. Atomic."""
    where = "save_torch_state_dict"
    own = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        dtype = array.dtype.newbyteorder("=") if array.dtype.byteorder in "<>" else array.dtype
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: names must be non-empty strings, got {name!r}")
        if dtype not in _STORAGE:
            raise ValueError(f"{where}: {name!r} has dtype {array.dtype}; torch files here hold "
                             f"{', '.join(str(d) for d in _STORAGE)}")
        # asarray, not ascontiguousarray, which makes a 0-d array 1-d
        own[name] = np.asarray(array, dtype=dtype.newbyteorder("<"), order="C")
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", _torch_pickle(own))
        zf.writestr(f"{archive}/.format_version", "1")
        zf.writestr(f"{archive}/.storage_alignment", str(_ALIGN))
        zf.writestr(f"{archive}/byteorder", "little")
        for key, array in enumerate(own.values()):
            info, zip64 = _aligned_record(zf, f"{archive}/data/{key}", array.nbytes)
            with zf.open(info, "w", force_zip64=zip64) as f:
                f.write(array.reshape(-1).view(np.uint8).data)
        zf.writestr(f"{archive}/version", "3\n")


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
    if pad1 != PORT_PAD1:
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
    :func:`minifcn.onnx_export.to_onnx`); needs the onnx package (pip install -e ".[export]")."""
    from .onnx_export import to_onnx as _to_onnx

    _to_onnx(model, path, opset=opset)


# ---- the command -------------------------------------------------------------------------------

TARGETS = {"pytorch": to_pytorch, "onnx": to_onnx, "safetensors": to_safetensors}


def check_out(out, overwrite):
    """ValueError (one line, naming --out) unless ``out`` can be written as a new file (or an
    existing one replaced, with ``overwrite``)."""
    if not out:
        raise ValueError("--out is empty: give the file to write")
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise ValueError(f"--out {out} is a folder; give a file name")
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"--out {out}: folder {folder} is not writable")
    if os.path.lexists(out) and not overwrite:
        raise ValueError(f"--out {out} already exists: choose another name, or pass --overwrite "
                         "to replace it")


def parser():
    p = argparse.ArgumentParser(prog="python -m minifcn.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by python -m minifcn.train")
    p.add_argument("--to", required=True, choices=sorted(TARGETS), help="the format to write")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


def _load(checkpoint):
    from .training import load_model

    try:
        return load_model(checkpoint)[0]
    except (KeyError, TypeError) as e:  # a config this minifcn cannot build a model from
        raise ValueError(f"{checkpoint}: its config does not describe a model this minifcn can "
                         f"build ({type(e).__name__}: {e})") from None
    except ValueError as e:  # e.g. weights that do not fit the model: say which file
        if str(checkpoint) in str(e):
            raise
        raise ValueError(f"{checkpoint}: {e}") from None


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        check_out(args.out, args.overwrite)
        if args.to == "onnx":  # before the model is loaded, which can take a while
            from .onnx_export import require_onnx

            require_onnx("--to onnx")
        model = _load(args.checkpoint)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            TARGETS[args.to](model, args.out)
    except (ImportError, ValueError, OSError) as e:  # OSError: FileNotFoundError too
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{args.checkpoint} -> {args.out} ({args.to}, {type(model).__name__}, "
          f"{os.path.getsize(args.out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
