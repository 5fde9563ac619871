"""Run minifcn's CUDA kernels on the CPU, so that they can be tested without a GPU.

The ``.cu`` files in ``kernels/`` are compiled as C++ by g++, together with ``kernels/emulator.h``,
a small shim that makes CUDA's keywords (``__global__``, ``threadIdx``, ``blockIdx``, ...) mean
something to a CPU compiler and adds one ``extern "C"`` entry point per kernel,
``emu_<kernel>(grid, block, args)``, that runs every thread of the grid in turn. The library is
built once and cached on disk under a hash of the sources, in ``$MINIFCN_CACHE_DIR`` (default
``~/.cache/minifcn``), and loaded with ctypes.

``launch`` here is the CPU stand-in for a CUDA launch; ``minifcn.gpu.launch.launch`` calls it with
the very arguments (NumPy arrays and NumPy scalars of the kernel's C types) that it would hand
to CuPy. The emulator is for correctness, not speed: it runs one thread at a time.
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import kernels_dir

FLAGS = ("-std=c++14", "-O2", "-shared", "-fPIC", "-Wall", "-Wextra")
_library = None


def cache_dir():
    """Where built libraries are kept: $MINIFCN_CACHE_DIR, else $XDG_CACHE_HOME/minifcn or
    ~/.cache/minifcn, else (if that cannot be written) a folder in the temporary directory."""
    if os.environ.get("MINIFCN_CACHE_DIR"):
        return Path(os.environ["MINIFCN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    path = Path(base) / "minifcn"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"minifcn-{os.getuid() if hasattr(os, 'getuid') else 0}"


def compiler():
    """The C++ compiler: $CXX, else g++, else c++."""
    found = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not found:
        raise RuntimeError("minifcn.gpu.emulator: no C++ compiler found (looked for $CXX, g++, c++); "
                           "the CPU emulator of the CUDA kernels needs one (apt install g++)")
    return found


def sources():
    """The files the library is built from: the shim and every kernel source, in a fixed order."""
    folder = kernels_dir()
    return [folder / "emulator.h"] + sorted(folder.glob("*.cu"))


def build(directory=None, flags=FLAGS):
    """Compile the kernels and the shim into a shared library; return its path.

    The library's name holds a hash of the sources, the flags and the compiler, so an edited
    kernel is rebuilt and an unchanged one is not. Raises RuntimeError with the compiler's
    messages if compilation fails.
    """
    directory = Path(directory) if directory is not None else cache_dir()
    cxx = compiler()
    digest = hashlib.sha256()
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join((cxx,) + tuple(flags)).encode())
    target = directory / f"kernels-{digest.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    # one translation unit: the shim first, then every kernel file, exactly as written
    unit = "".join(f'#include "{p.name}"\n' for p in sources())
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        cpp = Path(tmp) / "kernels.cpp"
        cpp.write_text(unit)
        out = Path(tmp) / target.name
        command = [cxx, *flags, "-I", str(kernels_dir()), "-o", str(out), str(cpp)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError("minifcn.gpu.emulator: compiling the kernels failed:\n"
                               + " ".join(command) + "\n" + result.stderr)
        os.replace(out, target)  # atomic: a parallel test run sees the whole file or none
    return target


def library():
    """The compiled kernels, loaded once per process."""
    global _library
    if _library is None:
        _library = ctypes.CDLL(str(build()))
    return _library


def _as_ctypes(value):
    """A ctypes object holding what the kernel parameter receives: an array's address, or the
    scalar with its C width (np.int32 -> c_int32, np.float64 -> c_double, ...)."""
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    return np.ctypeslib.as_ctypes_type(value.dtype)(value.item())


def launch(function, grid, block, values):
    """Run kernel ``function`` (e.g. 'im2col_f32') over ``grid`` blocks of ``block`` threads
    (3-tuples) with ``values``: NumPy arrays and NumPy scalars in the kernel's parameter order."""
    try:
        entry = getattr(library(), f"emu_{function}")
    except AttributeError:
        raise ValueError(f"minifcn.gpu.emulator: no kernel {function!r} in {kernels_dir()}") from None
    held = [_as_ctypes(v) for v in values]  # kept alive until the call returns
    args = (ctypes.c_void_p * len(held))(*[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p)
                                           for h in held])
    dims = ctypes.c_uint * 3
    entry.restype = None
    entry(dims(*grid), dims(*block), args)
