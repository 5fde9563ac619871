""".npz weight files and training checkpoints: ``save``, ``load``, ``save_checkpoint``,
``load_checkpoint``.

A state_dict here is ``{name: ndarray}`` with the reference Caffe layer names (``conv1_1.weight``
... ``fc7.bias``, ``score_fr.*``, ``upscore.weight``...). On disk it is an ``.npz``: a zip holding
one ``<name>.npy`` per array, readable by ``np.load`` anywhere, with no pickled code. A checkpoint
is the same file with one more record, ``__meta__``: JSON text (step, lr, config...).

Every file is written atomically (:mod:`minifcn.io.atomic`), so a run killed mid-save leaves the
previous file intact, and read with every record checked first (:mod:`minifcn.io.npzfile`).
"""
import contextlib
import json
import zipfile
from collections.abc import Mapping

import numpy as np

from ..backend import as_numpy
from .atomic import atomic_path
from .errors import check_finite
from .npzfile import NpzFileError, read_npz
from .safetensors import load_safetensors, save_safetensors

META_KEY = "__meta__"  # reserved name of the checkpoint's JSON record inside the .npz


def _to_numpy(name, value, where):
    """A NumPy array from an ndarray, a CuPy array, a Tensor/Parameter (``.data``) or a number."""
    if not isinstance(value, (np.ndarray, np.generic, int, float, complex, list, tuple)):
        if type(value).__module__.split(".")[0] == "cupy":
            value = as_numpy(value)
        elif hasattr(value, "data"):  # a minifcn Tensor / Parameter holds its array in .data
            value = as_numpy(value.data)
    array = np.asarray(value)
    if array.dtype.hasobject:
        raise TypeError(f"{where}: {name!r} is a {type(value).__name__}, expected a numeric array")
    return array


def _state_of(model_or_state, where):
    """``{name: ndarray}`` from a Module (anything with ``state_dict()``) or a mapping."""
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    if not isinstance(state, Mapping):
        raise TypeError(f"{where}: expected a model with state_dict() or a dict of arrays, "
                        f"got {type(model_or_state).__name__}")
    bad = [k for k in state if not (isinstance(k, str) and k)]
    if bad:
        raise TypeError(f"{where}: array names must be non-empty strings, got {bad[:5]}")
    return {k: _to_numpy(k, v, where) for k, v in state.items()}


def _write_npz(path, arrays):
    # what np.savez does, minus its keyword-argument API (which breaks on a key named 'file')
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)


def _is_safetensors(path):
    return str(path).lower().endswith(".safetensors")


def save(model_or_state, path):
    """Save a model's ``state_dict()`` (or a ``{name: array}`` dict) to ``path``: a
    .safetensors file (Hugging Face's format, ``minifcn.io.safetensors``) when the name ends so,
    else an .npz.

    Arrays are copied to the CPU; dtypes and shapes are kept exactly. ``path`` is used as given
    (no suffix is appended). The write is atomic.
    """
    arrays = _state_of(model_or_state, "minifcn.io.save")
    if _is_safetensors(path):
        return save_safetensors(arrays, path, where="minifcn.io.save")
    if META_KEY in arrays:
        raise ValueError(f"minifcn.io.save: the name {META_KEY!r} is reserved for checkpoint "
                         "metadata")
    _write_npz(path, arrays)


def load(path):
    """Read an .npz written by :func:`save` (or ``np.savez``), or a .safetensors file (by its
    name): ``{name: ndarray}`` in file order.

    Never unpickles. The metadata record of a checkpoint, if any, is left out (see
    :func:`load_checkpoint`). Every file error is a one-line WeightFileError (a ValueError)
    naming the file; NaN or infinite arrays are refused, naming the first
    (:func:`minifcn.io.errors.check_finite`).
    """
    where = "minifcn.io.load"
    if _is_safetensors(path):
        return check_finite(load_safetensors(path, where=where), path, where)
    arrays = read_npz(path, where)
    arrays.pop(META_KEY, None)
    return check_finite(arrays, path, where)


def save_checkpoint(path, arrays, meta):
    """Save ``arrays`` (``{name: ndarray}``) and ``meta`` (a JSON-serialisable dict: step, lr,
    config...) together in one .npz, atomically. ``meta`` travels as JSON text under the reserved
    name ``'__meta__'``, so tuples come back as lists and dict keys as strings."""
    arrays = _state_of(arrays, "minifcn.io.save_checkpoint")
    if META_KEY in arrays:
        raise ValueError(f"minifcn.io.save_checkpoint: the name {META_KEY!r} is reserved for meta")
    if not isinstance(meta, Mapping):
        raise TypeError("minifcn.io.save_checkpoint: meta must be a dict, "
                        f"got {type(meta).__name__}")
    try:
        text = json.dumps(dict(meta))
    except (TypeError, ValueError) as e:
        raise TypeError(f"minifcn.io.save_checkpoint: meta is not JSON-serialisable: {e}") from None
    _write_npz(path, {**arrays, META_KEY: np.array(text)})  # a 0-d unicode array: no pickle needed


_PLAIN = {META_KEY: "it is a plain weights file (read it with minifcn.io.load)"}


def load_checkpoint(path):
    """Read a file written by :func:`save_checkpoint`: ``(arrays, meta)``. Every file error is a
    one-line WeightFileError (a ValueError) naming the file; NaN or infinite arrays are refused
    (:func:`minifcn.io.errors.check_finite`)."""
    where = "minifcn.io.load_checkpoint"
    arrays = read_npz(path, where, require=_PLAIN)
    meta = _meta_of(arrays.pop(META_KEY), path, where)
    return check_finite(arrays, path, where), meta


def load_checkpoint_meta(path):
    """The ``meta`` of a file written by :func:`save_checkpoint`, its arrays checked but left
    unread: a command can check what a checkpoint holds before it loads a big model. Errors as
    ``load_checkpoint``'s."""
    where = "minifcn.io.load_checkpoint_meta"
    record = read_npz(path, where, names={META_KEY}, require=_PLAIN)[META_KEY]
    return _meta_of(record, path, where)


def _meta_of(record, path, where):
    meta = None
    if record.ndim == 0 and record.dtype.kind == "U":
        with contextlib.suppress(ValueError, RecursionError):
            meta = json.loads(str(record[()]))
    if not isinstance(meta, dict):
        raise NpzFileError(f"{where}: {path}: its {META_KEY!r} record is not the JSON text of a "
                           "dict, as save_checkpoint writes")
    return meta
