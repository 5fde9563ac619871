"""The one place where minifcn's CUDA kernels are launched, on a GPU or on the CPU emulator.

``launch(name, total, **args)`` runs kernel ``name`` (a key of ``KERNELS``) with one thread per
unit of work: ``total`` threads, in blocks of ``BLOCK``. Everything it does before the last
line is the same for both runners:

1. look the kernel up in the table below: its source file and its C parameters;
2. pick the instance for the arrays' floating type (``im2col`` + float32 -> ``im2col_f32``);
3. check every argument against its C type and turn it into exactly that type: an array of the
   right dtype, C-contiguous, or a NumPy scalar (np.int32 for ``int``, np.int64 for
   ``long long``), since a kernel reads raw bytes and a wrong width is a silent wrong answer;
4. size the grid: ceil(total / BLOCK) blocks.

Then CuPy arrays go to ``cupy.RawModule`` (NVRTC-compiled once per process and source file, and
cached on disk by CuPy), NumPy arrays to ``minifcn.gpu.emulator``, which compiles the same ``.cu``
files with g++ and runs every thread of the grid on the CPU.

Every kernel's first parameter is ``long long total``; ``launch`` passes it, the caller passes
the rest by name.
"""
import numbers
from collections import namedtuple

import numpy as np

from . import kernels_dir

BLOCK = 256  # threads per block: a multiple of the warp size (32) that suits simple kernels
MAX_BLOCKS = 2**31 - 1  # CUDA's limit on gridDim.x
NVRTC_OPTIONS = ("--std=c++14",)

Kernel = namedtuple("Kernel", "source params")

# name -> (source file in kernels/, C parameters in order). T is the floating type (float or
# double). These must match the extern "C" signatures in the .cu files; tests/test_kernels.py
# checks that they do.
_IMAGE_GEOMETRY = (("h", "int"), ("w", "int"), ("kh", "int"), ("kw", "int"), ("sh", "int"),
                   ("sw", "int"), ("ph", "int"), ("pw", "int"), ("dh", "int"), ("dw", "int"),
                   ("oh", "int"), ("ow", "int"))
_TOTAL = (("total", "long long"),)
_RESIZE_TAPS = (("ry0", "const int*"), ("ry1", "const int*"), ("ly", "const T*"),
                ("rx0", "const int*"), ("rx1", "const int*"), ("lx", "const T*"))
_RESIZE_RUNS = (("first_y", "const int*"), ("end_y", "const int*"), ("first_x", "const int*"),
                ("end_x", "const int*"))
_RESIZE_SIZES = (("h", "int"), ("w", "int"), ("oh", "int"), ("ow", "int"))
KERNELS = {
    "im2col": Kernel("im2col.cu", _TOTAL + (("x", "const T*"), ("col", "T*")) + _IMAGE_GEOMETRY),
    "col2im": Kernel("im2col.cu", _TOTAL + (("col", "const T*"), ("img", "T*")) + _IMAGE_GEOMETRY),
    "maxpool_forward": Kernel(
        "pooling.cu",
        _TOTAL + (("x", "const T*"), ("y", "T*"), ("argmax", "int*")) + _IMAGE_GEOMETRY),
    "maxpool_backward": Kernel(
        "pooling.cu",
        _TOTAL + (("gy", "const T*"), ("argmax", "const int*"), ("gx", "T*")) + _IMAGE_GEOMETRY),
    "maxunpool_forward": Kernel(
        "pooling.cu",
        _TOTAL + (("x", "const T*"), ("indices", "const long long*"), ("y", "T*"))
        + (("in_plane", "long long"), ("out_plane", "long long"))),
    "maxunpool_backward": Kernel(
        "pooling.cu",
        _TOTAL + (("gy", "const T*"), ("indices", "const long long*"), ("gx", "T*"))
        + (("in_plane", "long long"), ("out_plane", "long long"))),
    # resizing: per-axis tables (int rows/columns, T weights) computed by minifcn/resize.py
    "resize_bilinear_forward": Kernel(
        "resize.cu", _TOTAL + (("x", "const T*"), ("y", "T*")) + _RESIZE_TAPS + _RESIZE_SIZES),
    "resize_bilinear_backward": Kernel(
        "resize.cu",
        _TOTAL + (("gy", "const T*"), ("gx", "T*")) + _RESIZE_TAPS + _RESIZE_RUNS
        + _RESIZE_SIZES),
    "resize_nearest_forward": Kernel(
        "resize.cu",
        _TOTAL + (("x", "const T*"), ("y", "T*"), ("ry0", "const int*"), ("rx0", "const int*"))
        + _RESIZE_SIZES),
    "resize_nearest_backward": Kernel(
        "resize.cu", _TOTAL + (("gy", "const T*"), ("gx", "T*")) + _RESIZE_RUNS + _RESIZE_SIZES),
    "softmax_cross_entropy_forward": Kernel(
        "softmax_loss.cu",
        _TOTAL + (("logits", "const T*"), ("target", "const long long*"), ("loss", "T*"),
                  ("c", "int"), ("hw", "long long"), ("ignore_index", "long long"))),
    "softmax_cross_entropy_backward": Kernel(
        "softmax_loss.cu",
        _TOTAL + (("logits", "const T*"), ("target", "const long long*"), ("gloss", "const T*"),
                  ("glogits", "T*"), ("c", "int"), ("hw", "long long"),
                  ("ignore_index", "long long"))),
}

# the C scalar types used above, as NumPy types (int is 32-bit, long long 64-bit on every
# platform CUDA supports). Scalar parameters are integers only; arrays are T, int or long long.
_C_TYPES = {"int": np.int32, "long long": np.int64}
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _is_cupy_array(value):
    return type(value).__module__.split(".")[0] == "cupy"


def _base_type(ctype):
    """'const T*' -> ('T', True); 'int' -> ('int', False)."""
    pointer = ctype.endswith("*")
    return ctype.replace("const", "").rstrip("*").strip(), pointer


def _floating_dtype(name, spec, args):
    """The dtype that T stands for: that of the T arrays, which must all agree."""
    dtypes = {np.dtype(args[p].dtype) for p, ctype in spec.params
              if _base_type(ctype) == ("T", True) and hasattr(args.get(p), "dtype")}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _SUFFIX:
        raise TypeError(f"launch({name!r}): the floating arrays must all be float32 or all "
                        f"float64, got {sorted(map(str, dtypes))}")
    return next(iter(dtypes))


def _marshal(name, spec, args, dtype, on_gpu):
    """The argument list in C order, each value checked against and cast to its C type."""
    values = []
    for p, ctype in spec.params:
        base, pointer = _base_type(ctype)
        value = args[p]
        want = dtype if base == "T" else np.dtype(_C_TYPES[base])
        if pointer:
            if _is_cupy_array(value) != on_gpu or not hasattr(value, "flags"):
                where = "a CuPy array" if on_gpu else "a NumPy array"
                raise TypeError(f"launch({name!r}): {p} ({ctype}) must be {where}, got "
                                f"{type(value).__name__}")
            if value.dtype != want or not value.flags.c_contiguous:
                raise TypeError(f"launch({name!r}): {p} ({ctype}) must be a C-contiguous "
                                f"{want} array, got {value.dtype} (contiguous: "
                                f"{bool(value.flags.c_contiguous)})")
            # (CuPy's flags have no 'writeable': its arrays always are)
            if "const" not in ctype and not getattr(value.flags, "writeable", True):
                raise ValueError(f"launch({name!r}): output {p} is a read-only array")
            values.append(value)
        else:
            if not isinstance(value, (numbers.Integral, np.integer)) or isinstance(value, bool):
                raise TypeError(f"launch({name!r}): {p} ({ctype}) must be an integer, got "
                                f"{value!r}")
            info = np.iinfo(want)
            if not info.min <= int(value) <= info.max:
                raise OverflowError(f"launch({name!r}): {p}={value} does not fit a C {ctype}")
            values.append(want.type(value))  # e.g. np.int64(5): a Python int has no C width
    return values


def launch(name, total, **args):
    """Run kernel ``name`` with ``total`` threads, on the GPU for CuPy arrays and on the CPU
    emulator for NumPy arrays. ``args`` are the kernel's parameters after ``total``, by name."""
    if name not in KERNELS:
        raise ValueError(f"launch: unknown kernel {name!r}; known: {sorted(KERNELS)}")
    spec = KERNELS[name]
    missing = [p for p, _ in spec.params[1:] if p not in args]
    extra = [p for p in args if p not in dict(spec.params[1:])]
    if missing or extra:
        raise TypeError(f"launch({name!r}): missing arguments {missing}, unexpected {extra}; "
                        f"the kernel takes {[p for p, _ in spec.params[1:]]}")
    args = dict(args, total=total)
    on_gpu = any(_is_cupy_array(v) for v in args.values())
    dtype = _floating_dtype(name, spec, args)
    values = _marshal(name, spec, args, dtype, on_gpu)
    total = int(total)
    if total == 0:  # nothing to do, and CUDA refuses an empty grid
        return
    blocks = (total + BLOCK - 1) // BLOCK
    if blocks > MAX_BLOCKS:
        raise ValueError(f"launch({name!r}): {total} threads need {blocks} blocks of {BLOCK}, "
                         f"more than CUDA's {MAX_BLOCKS}")
    function = f"{name}_{_SUFFIX[dtype]}"
    # ---- the only lines that differ between the GPU and the emulator
    if on_gpu:
        _cupy_function(spec.source, function)((blocks,), (BLOCK,), tuple(values))
    else:
        from . import emulator

        emulator.launch(function, (blocks, 1, 1), (BLOCK, 1, 1), values)


_cupy_modules = {}
_cupy_functions = {}


def _cupy_function(source, function):
    """The compiled kernel ``function`` of ``kernels/<source>`` for the current GPU.

    Each source file becomes one ``cupy.RawModule``, compiled by NVRTC once per process and
    device (CuPy also keeps the binary in ~/.cupy/kernel_cache for the next process)."""
    import cupy

    device = cupy.cuda.Device().id
    if (device, source) not in _cupy_modules:
        code = (kernels_dir() / source).read_text()
        _cupy_modules[device, source] = cupy.RawModule(code=code, options=NVRTC_OPTIONS)
    if (device, function) not in _cupy_functions:
        _cupy_functions[device, function] = _cupy_modules[device, source].get_function(function)
    return _cupy_functions[device, function]
