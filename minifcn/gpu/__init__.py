"""The GPU glue: CUDA twins of the primitives (``cuda``), the one place a kernel is launched
(``launch``), and the CPU emulator that runs the same ``.cu`` sources without a GPU
(``emulator``). The CUDA sources themselves live in the top-level ``kernels/`` folder."""
from pathlib import Path


def kernels_dir():
    """The folder holding the ``.cu`` sources: ``minifcn/kernels`` in an installed wheel,
    ``kernels/`` beside the package in a source checkout."""
    package = Path(__file__).resolve().parent.parent  # minifcn/
    for candidate in (package / "kernels", package.parent / "kernels"):
        if (candidate / "im2col.cu").is_file():
            return candidate
    raise FileNotFoundError(f"minifcn.gpu: CUDA sources not found in {package / 'kernels'} "
                            f"or {package.parent / 'kernels'}; reinstall minifcn")
