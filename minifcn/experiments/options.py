"""What every experiment checks before it trains anything, and how it writes its tables.

An experiment trains for minutes or hours, then writes a table and figures. Every option and
every file it will write is checked first (``check``), so that ``--width nan``, ``--seed -1``,
an ``--out`` that is a file or a figure that would replace one is said in one line at once,
not as a traceback after the training:

* the counts (--iters, --seeds, --jobs, --steps, --batch-size, --size, --n-train, --n-val ...)
  are >= 1 and within train's bounds (``minifcn.training.limits``); --seeds at most
  MAX_SEEDS, --jobs at most MAX_JOBS (each job is a process with its own net);
* --width is a number in (0, 4]; --seed (and the last seed, --seed + --seeds - 1) in
  0 .. 2**32 - 1; --device can be had (no cuda without a GPU);
* --out, and a --save-weights folder, are folders or can be made (a missing one is made,
  with its parents, when the first file is written, as train makes its --out);
* each file the experiment writes at the end goes through ``io.check_output``
  (``check_outputs``): an existing one is replaced only with --overwrite, where the experiment
  has it.
"""
import os

from .. import io
from ..training import limits

__all__ = ["check", "check_outputs", "write_text", "MAX_SEEDS", "MAX_JOBS"]

MAX_SEEDS = 100  # runs per net and setting
MAX_JOBS = 64  # worker processes, each with its own net and data

# options that count something: each >= 1 when given (None: the experiment's default)
_COUNTS = ("iters", "seeds", "jobs", "steps", "batch_size", "size", "n_train", "n_val",
           "val_every", "time_rounds", "band")
_UPPER = {"size": limits.MAX_SIZE, "n_train": limits.MAX_IMAGES, "n_val": limits.MAX_IMAGES,
          "batch_size": limits.MAX_BATCH, "seeds": MAX_SEEDS, "jobs": MAX_JOBS}


def _flag(name):
    return "--" + name.replace("_", "-")


def _refuse(message):
    raise SystemExit(f"error: {' '.join(str(message).split())}")


def check(args):
    """SystemExit with a one-line message (as train's) for the first option of ``args`` that is
    out of range, a --device that cannot be had, or an --out (or --save-weights folder) that is
    a file or cannot be made. Returns nothing."""
    for name in _COUNTS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            _refuse(f"{_flag(name)} must be >= 1, got {value}")
        if value is not None and name in _UPPER and value > _UPPER[name]:
            _refuse(f"{_flag(name)} must be <= {_UPPER[name]}, got {value}")
    width = getattr(args, "width", None)
    if width is not None and not 0 < width <= limits.MAX_WIDTH:  # NaN fails both
        _refuse(f"--width must be a number in (0, {limits.MAX_WIDTH:g}] (1 = VGG16), got {width}")
    seed = getattr(args, "seed", None)
    if seed is not None:
        last = seed + max(getattr(args, "seeds", 1) or 1, 1) - 1
        if not 0 <= seed <= last <= limits.MAX_SEED:
            _refuse(f"--seed must be an integer in 0..{limits.MAX_SEED} (with --seeds, the last "
                    f"seed too), got {seed}")
    try:
        if hasattr(args, "device"):
            limits.check_device_option(args.device)
        for name in ("out", "save_weights"):
            folder = getattr(args, name, None)
            if folder is None:
                continue
            if not str(folder).strip():
                raise ValueError(f"{_flag(name)} is empty: give a folder")
            io.check_folder(folder, f"{_flag(name)} {folder}")
    except ValueError as e:
        _refuse(e)


def check_outputs(args, outputs):
    """SystemExit in one line unless the experiment may write every file of ``outputs`` ((path, option)
    pairs: what it writes once trained), as ``io.check_output`` says: never a folder, an
    existing file only with --overwrite (where the experiment has it)."""
    try:
        for path, option in outputs:
            io.check_output(path, option, overwrite=getattr(args, "overwrite", False))
    except ValueError as e:
        _refuse(e)


def write_text(path, text):
    """Write an experiment's table (``text``) at ``path`` atomically, its folder made if need
    be (``check`` said before the training that it may be written)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    io.atomic_write_text(path, text)
