"""What the weight readers raise, and the checks they share.

Every reader of a weights file (npzfile, checkpoint, safetensors, torchfile with torchlegacy and
torchpickle, caffemodel) raises, for a file it cannot read, a :class:`WeightFileError`: a
ValueError (so each command's ``except ValueError`` prints it as ``error: ...``) whose message is
one line naming the file and what was expected. Each reader has its own subclass (NpzFileError,
SafetensorsError, TorchFileError, CaffemodelError), and weights that are NaN or infinite are a
:class:`NonFiniteWeightsError`. A missing file is a FileNotFoundError. Nothing else is raised
for a bad file (tests/test_fuzz_readers.py holds the readers to it); a MemoryError stays one.
"""
import os
import reprlib

import numpy as np

__all__ = ["WeightFileError", "NonFiniteWeightsError", "one_line", "described", "human_bytes",
           "require_file", "check_finite"]

short = reprlib.Repr()  # bounded reprs for messages: a hostile value can be huge or deep
short.maxstring = short.maxother = 60


class WeightFileError(ValueError):
    """A weights file that cannot be read: its one-line message names the file and what was
    expected."""


class NonFiniteWeightsError(WeightFileError):
    """Weights holding NaN or an infinity: the message names the file and the first such
    tensor."""


def one_line(text):
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(text).split())


def human_bytes(nbytes):
    """'512 B', '199.4 kB', '64.8 MiB', '37.3 GiB'."""
    for unit in ("B", "kB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def described(e):
    """``zlib.error: Error -3 ...``: an exception as a message names it (module unless builtin)."""
    kind = type(e).__name__ if type(e).__module__ == "builtins" else \
        f"{type(e).__module__}.{type(e).__name__}"
    return f"{kind}: {e}"


def require_file(path, where, error=WeightFileError):
    """``path`` as a str, once it is known to be a file: FileNotFoundError if nothing is there,
    ``error`` (one line) if it is a folder or something else that is not a file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where}: no such file {path!r}")
    if os.path.isdir(path):
        raise error(f"{where}: {path} is a folder, expected a weights file")
    if not os.path.isfile(path):
        raise error(f"{where}: {path} is not a regular file, expected a weights file")
    return path


_CHUNK = 1 << 22  # elements checked at a time: the check's own memory stays a few MiB


def _first_bad(array):
    """(index, value) of the first NaN or infinity in ``array`` (C order), or None."""
    flat = array.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        ok = np.isfinite(flat[start: start + _CHUNK])
        if not ok.all():
            i = start + int(np.argmin(ok))
            return np.unravel_index(i, array.shape), flat[i]
    return None


def check_finite(arrays, path, where):
    """Raise :class:`NonFiniteWeightsError` naming ``path`` and the first tensor of ``arrays``
    (``{name: ndarray}``, in order) that holds a NaN or an infinity; integer and boolean arrays
    cannot. Returns ``arrays``."""
    for name, array in arrays.items():
        if array.dtype.kind not in "fc":
            continue
        bad = _first_bad(array)
        if bad is not None:
            index, value = bad
            count = array.size - int(np.count_nonzero(np.isfinite(array)))
            at = f" at {tuple(int(i) for i in index)}" if array.ndim else ""
            raise NonFiniteWeightsError(one_line(
                f"{where}: {path}: tensor {short.repr(name)} holds {value}{at} ({count} of "
                f"{array.size} values are NaN or infinite); expected finite weights (a run "
                "that diverged? start from an earlier checkpoint or from other weights)"))
    return arrays
