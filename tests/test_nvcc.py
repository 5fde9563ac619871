"""The CUDA sources compile for real GPUs, without a single warning.

tests/test_kernels.py runs the kernels through g++; this file checks the other compilers:
- nvcc (skipped where it is not on PATH): every kernels/*.cu to PTX for sm_80 (A100) and sm_90
  (H100), warnings as errors, with every kernel of launch.KERNELS present in the PTX;
- NVRTC, the compiler CuPy runs at launch time (skipped where libnvrtc is not found): the same
  sources with launch.NVRTC_OPTIONS, an empty compiler log, every kernel present.
No GPU is needed for either.
"""
import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minifcn.gpu import launch as L

SOURCES = sorted(L.kernels_dir().glob("*.cu"))
ARCHS = ["sm_80", "sm_90"]


def expected_entries(source):
    """The kernel instances launch.py will ask this source for."""
    return {f"{name}_{suffix}" for name, spec in L.KERNELS.items() if spec.source == source.name
            for suffix in ("f32", "f64")}


def ptx_entries(ptx):
    return set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles_without_warnings(source, arch, tmp_path):
    out = tmp_path / f"{source.stem}.ptx"
    command = ["nvcc", "-ptx", f"-arch={arch}", *L.NVRTC_OPTIONS, "-Werror", "all-warnings",
               "-o", str(out), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert ptx_entries(out.read_text()) == expected_entries(source)


# ---------------------------------------------------------------- NVRTC, as CuPy compiles


def _nvrtc_candidates():
    if os.environ.get("MINIFCN_NVRTC"):
        yield Path(os.environ["MINIFCN_NVRTC"])
    found = ctypes.util.find_library("nvrtc")
    if found:
        yield Path(found)
    folders = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    if shutil.which("nvcc"):
        folders.append(str(Path(shutil.which("nvcc")).resolve().parent.parent))
    for folder in filter(None, folders):
        yield from sorted(Path(folder, "lib64").glob("libnvrtc.so*"))
    for entry in sys.path:  # the nvidia-cuda-nvrtc wheels that CuPy installs
        for pattern in ("nvidia/*/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
            yield from sorted(Path(p) for p in glob.glob(os.path.join(entry, pattern)))


def _load_nvrtc():
    for path in _nvrtc_candidates():
        if ".alt." in path.name:
            continue
        try:
            # NVRTC dlopens its builtins by name: load the one beside it first if there is one
            for builtins in sorted(path.parent.glob("libnvrtc-builtins.so*")):
                if ".alt." not in builtins.name:
                    ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
            return ctypes.CDLL(str(path))
        except OSError:
            continue
    return None


def nvrtc_compile(lib, source, options):
    """(status, log, ptx) of compiling ``source`` (bytes) with NVRTC's C API."""
    program = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(program), source, b"kernel.cu", 0, None, None) == 0
    try:
        opts = [o.encode() for o in options]
        status = lib.nvrtcCompileProgram(program, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        ptx = b""
        if status == 0:
            lib.nvrtcGetPTXSize(program, ctypes.byref(size))
            buffer = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(program, buffer)
            ptx = buffer.value
        return status, log.value.decode(errors="replace"), ptx.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


@pytest.fixture(scope="module")
def nvrtc():
    lib = _load_nvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found (set MINIFCN_NVRTC=/path/to/libnvrtc.so to point at it)")
    return lib


@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_nvrtc_compiles_as_cupy_would(nvrtc, source, arch):
    options = L.NVRTC_OPTIONS + (f"--gpu-architecture={arch}",)
    status, log, ptx = nvrtc_compile(nvrtc, source.read_bytes(), options)
    assert status == 0, log
    assert log.strip() == "", log  # NVRTC writes its warnings here
    assert ptx_entries(ptx) == expected_entries(source)


def test_nvrtc_log_check_can_fail(nvrtc):
    """The empty-log check above would see a warning: this source has one."""
    bad = b'extern "C" __global__ void k(float *x) { int unused = 3; x[0] = 1.0f; }'
    status, log, _ = nvrtc_compile(nvrtc, bad, L.NVRTC_OPTIONS + ("--gpu-architecture=compute_80",))
    assert status == 0 and "warning" in log
