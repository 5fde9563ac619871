"""minifcn: Fully Convolutional Networks (Long, Shelhamer, Darrell 2015) from scratch.

Public names: Tensor, no_grad, gradcheck, summary, manual_seed, cat, and the submodules
functional (import as F), nn, models, optim, metrics, data, io, training.
"""
from . import functional, nn
from .functional import cat
from .autograd import Tensor, is_grad_enabled, no_grad
from .backend import gpu_available, manual_seed
from .gradcheck import GradcheckError, gradcheck  # the function (the package is its home)

__version__ = "0.1.0"


def __getattr__(name):
    # heavier layers load on first use, so `import minifcn` stays light
    import importlib

    if name in ("models", "optim", "metrics", "data", "io", "viz", "simple", "training", "export"):
        return importlib.import_module(f"minifcn.{name}")
    if name == "summary":
        from .models import summary

        return summary
    raise AttributeError(f"module 'minifcn' has no attribute {name!r}")


__all__ = ["Tensor", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError", "summary",
           "manual_seed", "cat", "gpu_available", "functional", "nn", "models", "optim", "metrics",
           "data", "io"]
