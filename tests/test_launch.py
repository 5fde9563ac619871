"""minifcn.gpu.launch: the kernel table agrees with the CUDA sources, arguments reach the kernels
with their exact C types (on the emulator and, through a stand-in for CuPy's compiled kernel,
on the GPU branch), and bad arguments are refused with a clear error."""
import re
import shutil

import numpy as np
import pytest

from minifcn import primitives as P
from minifcn.gpu import cuda, launch as L

if not (shutil.which("g++") or shutil.which("c++")):
    pytest.skip("the CUDA emulator needs a C++ compiler (g++)", allow_module_level=True)


def _random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def test_kernel_table_matches_the_cuda_sources():
    """launch.KERNELS lists each kernel's C parameters; the .cu files must declare the same."""
    declared = {}
    for path in L.kernels_dir().glob("*.cu"):
        text = re.sub(r"\s+", " ", path.read_text())
        for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', text):
            parsed = []
            for param in params.split(","):
                ctype, pname = param.strip().rsplit(" ", 1)
                ctype += "*" * pname.count("*")
                parsed.append((pname.lstrip("*"), ctype.replace(" *", "*")))
            declared[name] = (path.name, parsed)
    expected = {}
    for name, spec in L.KERNELS.items():
        for suffix, ctype in (("f32", "float"), ("f64", "double")):
            expected[f"{name}_{suffix}"] = (
                spec.source, [(p, t.replace("T", ctype)) for p, t in spec.params])
    assert declared == expected


def test_emulator_source_compiles_without_warnings(tmp_path):
    from minifcn.gpu import emulator

    emulator.build(tmp_path, emulator.FLAGS + ("-Werror", "-Wshadow", "-Wconversion"))


def _capture(monkeypatch):
    """Record what launch hands to the runner instead of running the kernel."""
    from minifcn.gpu import emulator

    calls = []
    monkeypatch.setattr(emulator, "launch", lambda *a: calls.append(a))
    return calls


def test_launch_passes_exact_c_types(monkeypatch, rng):
    """A kernel reads raw bytes: every scalar must already have its C width, since CuPy (like
    the emulator) would pass a Python int as whatever it guesses."""
    calls = _capture(monkeypatch)
    x = _random(rng, (2, 3, 5, 5), np.float64)
    cuda.im2col(x, 3, 3, 1, 1, 1, 1, 5, 5)
    (function, grid, block, values), = calls
    assert function == "im2col_f64"
    total = 2 * 3 * 9 * 25
    assert grid == (-(-total // L.BLOCK), 1, 1) and block == (L.BLOCK, 1, 1)
    assert type(values[0]) is np.int64 and values[0] == total
    assert values[1] is x and values[2].shape == (2, 3, 3, 3, 5, 5)
    assert all(type(v) is np.int32 for v in values[3:])
    calls.clear()
    target = rng.integers(0, 3, size=(2, 5, 5))
    cuda.softmax_cross_entropy_forward(x, target, 255)
    (function, _, _, values), = calls
    assert function == "softmax_cross_entropy_forward_f64"
    assert [type(v) for v in values[4:]] == [np.int32, np.int64, np.int64]
    assert values[2].dtype == np.int64


def test_gpu_branch_hands_cupy_tuples_and_typed_scalars(monkeypatch, rng):
    """The CuPy branch of launch, with a stand-in for the compiled RawKernel: it receives
    (grid,), (block,) and a tuple of arrays and NumPy scalars, as cupy.RawKernel.__call__
    expects. The stand-in runs the emulator on them, so the result is checked too."""
    from minifcn.gpu import emulator

    class FakeCupyArray(np.ndarray):
        pass

    FakeCupyArray.__module__ = "cupy._core.core"  # launch tells CuPy arrays by their module
    seen = []

    def fake_function(source, function):
        def kernel(grid, block, args):
            assert isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple)
            assert all(isinstance(v, (FakeCupyArray, np.int32, np.int64)) for v in args)
            seen.append((source, function))
            plain = [v.view(np.ndarray) if isinstance(v, np.ndarray) else v for v in args]
            emulator.launch(function, grid + (1,) * (3 - len(grid)),
                            block + (1,) * (3 - len(block)), plain)
        return kernel

    monkeypatch.setattr(L, "_cupy_function", fake_function)
    x = _random(rng, (1, 2, 6, 5), np.float32)
    y = np.empty((1, 2, 3, 3), np.float32).view(FakeCupyArray)
    arg = np.empty((1, 2, 3, 3), np.int32).view(FakeCupyArray)
    L.launch("maxpool_forward", y.size, x=x.view(FakeCupyArray), y=y, argmax=arg,
             h=6, w=5, kh=2, kw=2, sh=2, sw=2, ph=0, pw=0, dh=1, dw=1, oh=3, ow=3)
    assert seen == [("pooling.cu", "maxpool_forward_f32")]
    want_y, want_arg = P.maxpool_forward(x, 2, 2, 2, 2, 0, 0, True)
    np.testing.assert_array_equal(y.view(np.ndarray), want_y)
    np.testing.assert_array_equal(arg.view(np.ndarray), want_arg)
    with pytest.raises(TypeError, match="must be a CuPy array"):  # a NumPy array among them
        L.launch("maxpool_forward", y.size, x=x, y=y, argmax=arg,
                 h=6, w=5, kh=2, kw=2, sh=2, sw=2, ph=0, pw=0, dh=1, dw=1, oh=3, ow=3)


def test_launch_rejects_bad_arguments(rng):
    x = _random(rng, (1, 1, 4, 4), np.float32)
    col = np.zeros((1, 1, 2, 2, 3, 3), np.float32)
    geom = dict(h=4, w=4, kh=2, kw=2, sh=1, sw=1, ph=0, pw=0, dh=1, dw=1, oh=3, ow=3)
    with pytest.raises(ValueError, match="unknown kernel"):
        L.launch("im2colx", col.size, x=x, col=col, **geom)
    with pytest.raises(TypeError, match=r"missing arguments \['ow'\]"):
        L.launch("im2col", col.size, x=x, col=col, **{k: v for k, v in geom.items() if k != "ow"})
    with pytest.raises(TypeError, match="float32 or all float64"):
        L.launch("im2col", col.size, x=x.astype(np.float64), col=col, **geom)
    with pytest.raises(TypeError, match="float32 or all float64"):
        L.launch("im2col", col.size, x=x.astype(np.float16), col=col.astype(np.float16), **geom)
    with pytest.raises(TypeError, match="C-contiguous"):
        L.launch("im2col", col.size, x=x[:, :, ::2], col=col, **geom)
    with pytest.raises(TypeError, match="must be a NumPy array"):
        L.launch("im2col", col.size, x=x.tolist(), col=col, **geom)
    with pytest.raises(TypeError, match="must be an integer"):
        L.launch("im2col", col.size, x=x, col=col, **dict(geom, kh=2.5))
    with pytest.raises(OverflowError, match="int"):
        L.launch("im2col", col.size, x=x, col=col, **dict(geom, h=2**31))
    readonly = np.empty_like(col)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        L.launch("im2col", col.size, x=x, col=readonly, **geom)
    with pytest.raises(TypeError, match="float32 or float64"):
        cuda.im2col(x.astype(np.float16), 2, 2, 1, 1, 0, 0, 3, 3)
    with pytest.raises(ValueError, match=r"minifcn.gpu.cuda: dilation must be >= 1, got \(0, 1\)"):
        cuda.im2col(x, 2, 2, 1, 1, 0, 0, 3, 3, 0, 1)  # the kernels would divide by it


def test_kernels_dir_holds_every_source():
    names = {p.name for p in L.kernels_dir().iterdir()}
    assert {"im2col.cu", "pooling.cu", "softmax_loss.cu", "emulator.h"} <= names
    assert {spec.source for spec in L.KERNELS.values()} <= names
