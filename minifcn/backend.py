"""Layer 1: which array module an array lives in, and device names.

Everything above this layer writes ``xp = get_array_module(x)`` and then uses ``xp.<fn>``,
so one source serves NumPy (CPU) and CuPy (GPU). CuPy is imported lazily, here only.
"""
import numpy as np

_cupy = None
_cupy_checked = False
_cupy_reason = "not checked yet"  # why cupy_or_none() returned None, for skip messages


def cupy_or_none():
    """Return the ``cupy`` module if it imports and sees a CUDA device, else None."""
    global _cupy, _cupy_checked, _cupy_reason
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
            else:
                _cupy_reason = "CuPy sees no CUDA device"
        except Exception as e:  # no cupy, no driver, or no device: the CPU path it is
            _cupy = None
            _cupy_reason = f"CuPy unusable: {type(e).__name__}: {e}"
    return _cupy


def cupy_unavailable_reason():
    """Why ``cupy_or_none()`` returned None (no CuPy, no device, a broken install...)."""
    cupy_or_none()
    return None if _cupy is not None else _cupy_reason


def gpu_available():
    return cupy_or_none() is not None


def get_array_module(*arrays):
    """``numpy`` or ``cupy``, whichever the arrays belong to (DeZero's / CuPy's idiom)."""
    cp = _cupy
    if cp is None and not _cupy_checked and any(
            type(a).__module__.startswith("cupy") for a in arrays):
        cp = cupy_or_none()  # a CuPy array made before minifcn looked for CuPy
    if cp is not None:
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return cp
    return np


def device_of(array):
    """'cuda' for a CuPy array, 'cpu' otherwise."""
    return "cuda" if get_array_module(array) is not np else "cpu"


class DeviceUnavailable(RuntimeError, ValueError):
    """A GPU asked for where CuPy sees none. A ValueError too: the commands turn ValueErrors
    (an option at fault) into one line."""


def check_device(device):
    """Normalise a device name; raise a clear error for anything else (``DeviceUnavailable``
    for 'cuda' without a GPU)."""
    if device in (None, "cpu"):
        return "cpu"
    if device in ("cuda", "gpu") or (isinstance(device, str) and device.startswith("cuda:")):
        if cupy_or_none() is None:
            raise DeviceUnavailable(
                f"device {device!r} asked for, but CuPy is not installed or sees no CUDA device; "
                "install with `pip install -e \".[cuda12]\"` (or cuda13) on a machine with a GPU"
            )
        return "cuda"
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'auto'")


def to_device(array, device):
    """Move an ndarray to 'cpu' (NumPy) or 'cuda' (CuPy); a no-op when it is already there."""
    device = check_device(device)
    if device == "cpu":
        return as_numpy(array)
    cp = cupy_or_none()
    return cp.asarray(array)


def as_numpy(array):
    """A NumPy array from a NumPy or CuPy array (copies from the GPU)."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get"):  # cupy.ndarray
        return array.get()
    return np.asarray(array)


_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed minifcn's random numbers (initialisation, dropout) on the CPU and, if present, GPU."""
    global _rng
    _rng = np.random.default_rng(seed)
    if cupy_or_none() is not None:
        _cupy.random.seed(seed)


def rng():
    """minifcn's NumPy random Generator (seeded by ``manual_seed``)."""
    return _rng


# This process's rows of the batch being trained on, (start, stop, rows of the whole batch), set
# by data-parallel training (minifcn.distributed); None: the process has the whole batch.
_batch_part = None


def set_batch_part(part):
    """Say which rows of each batch this process holds: ``(start, stop, total)``, or None for
    the whole batch. Random draws over a batch (``random_rows``) then stay the ones a single
    process would draw for the same images."""
    global _batch_part
    _batch_part = None if part is None else tuple(int(v) for v in part)


def random_rows(shape, xp=np, generator=None):
    """Uniform draws in [0, 1) of ``shape`` (B, ...), one row per image of a batch, from
    ``generator`` (minifcn's by default; CuPy's own for ``xp`` = cupy). With a batch part set,
    the draws for the whole batch are made and this process's B rows kept: every process of a
    data-parallel run draws alike (they share the seed), and image i gets the numbers one
    process would have given it (dropout's masks, loss sampling's cells)."""
    whole = tuple(shape)
    if _batch_part is not None:
        start, stop, total = _batch_part
        if stop - start != shape[0]:
            raise ValueError(f"random_rows: {shape[0]} rows asked for, but this process holds "
                             f"rows {start}..{stop - 1} of the batch")
        whole = (total,) + whole[1:]
    u = (generator or _rng).random(whole) if xp is np else xp.random.random(whole)
    return u if _batch_part is None else u[_batch_part[0]:_batch_part[1]]
