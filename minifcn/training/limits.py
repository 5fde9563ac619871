"""The bounds of every option that sizes memory, and the check of a checkpoint's config.

An option that sets how much memory a run takes (an image side, a padding, a number of images,
a batch, the classes of a checkpoint's config) has an upper bound far above what a learner uses,
so that a typo (``--size 5000``, ``--n-train 1e12``) or a hand-edited file is refused at once in
one line naming the option and its bound, not minutes later, half-allocated, in MemoryError:

    --size, --crop               at most MAX_SIZE (2048) pixels a side; VOC's images are at most
                                 500 and the synthetic sets' 96
    --pad1                       at most MAX_PAD1 (500); the reference nets pad by 100, full
                                 cover of a 96x96 image needs 124
    --n-train, --n-val           at most MAX_IMAGES (1,000,000): the synthetic sets make each
                                 image on demand, but an epoch's order holds one index per image
    --batch-size, --val-batch-size, and the images one step takes with --loss-sampling
                                 at most MAX_BATCH (1024); the paper's batch is 1 to 20
    --loss-sampling              at least MIN_LOSS_SAMPLING (0.01): the paper's 0.5 and 0.25;
                                 with --sampling-batch scaled a step takes 1/P times the images
    --width                      at most the models' MAX_WIDTH (4: 2.1 G parameters)
    --seed                       0 .. 2**32 - 1 (NumPy's and CuPy's seeds are unsigned)
    n_class (a checkpoint)       at most MAX_N_CLASS (255): label maps are 8-bit, 255 "ignore"

``check_options`` checks a run's config (``resolve`` calls it); ``check_checkpoint_config``
checks the config of a checkpoint before anything is built from it (``load_model`` calls it);
``check_device_option`` is the commands' check of ``--device``; ``memory_budget`` and
``check_forward_memory`` are predict's and evaluate's check of an image too big for memory at
this net (they refuse it, saying the size that fits: see ``models.memory``).
"""
import math
import numbers

from ..models.registry import MODELS, PLAIN_NETS
from ..models.vgg import MAX_WIDTH

__all__ = ["MAX_SIZE", "MAX_PAD1", "MAX_IMAGES", "MAX_BATCH", "MIN_LOSS_SAMPLING",
           "MAX_N_CLASS", "MAX_SEED", "MAX_WIDTH", "check_options", "check_checkpoint_config",
           "check_device_option", "memory_budget", "check_forward_memory", "check_max_memory"]

MAX_SIZE = 2048
MAX_PAD1 = 500
MAX_IMAGES = 1_000_000
MAX_BATCH = 1024
MIN_LOSS_SAMPLING = 0.01
MAX_N_CLASS = 255
MAX_SEED = 2**32 - 1

# option -> (largest value, why), for the ints checked alike
_UPPER = {
    "size": (MAX_SIZE, "pixels a side"),
    "crop": (MAX_SIZE, "pixels a side"),
    "pad1": (MAX_PAD1, "the reference nets pad conv1_1 by 100"),
    "n_train": (MAX_IMAGES, "images"),
    "n_val": (MAX_IMAGES, "images"),
    "batch_size": (MAX_BATCH, "images a step"),
    "val_batch_size": (MAX_BATCH, "images a batch"),
}


def _flag(key):
    return "--" + key.replace("_", "-")


def check_options(config):
    """SystemExit with a one-line message naming the option, unless every size option of
    ``config`` (a run's config, as ``resolve`` fills it) is within its bound."""
    for key, (most, unit) in _UPPER.items():
        value = config.get(key)
        if isinstance(value, numbers.Integral) and value > most:
            raise SystemExit(f"error: {_flag(key)} must be <= {most} ({unit}), got {value}")
    width = config.get("width")
    if width is not None and not (isinstance(width, numbers.Real) and 0 < width <= MAX_WIDTH):
        raise SystemExit(f"error: --width must be a number in (0, {MAX_WIDTH:g}] (1 = VGG16; "
                         f"parameters grow as width**2), got {width}")
    seed = config.get("seed")
    if seed is not None and not (isinstance(seed, numbers.Integral) and 0 <= seed <= MAX_SEED):
        raise SystemExit(f"error: --seed must be an integer in 0..{MAX_SEED}, got {seed}")
    p = config.get("loss_sampling")
    if p is not None and p < MIN_LOSS_SAMPLING:
        raise SystemExit(f"error: --loss-sampling must be >= {MIN_LOSS_SAMPLING} (a step then "
                         f"takes 1/P times the images), got {p}")
    if p is not None and p < 1 and config.get("sampling_batch", "scaled") == "scaled" \
            and isinstance(config.get("batch_size"), numbers.Integral):
        step = math.ceil(config["batch_size"] / p)
        if step > MAX_BATCH:
            raise SystemExit(f"error: --loss-sampling {p} with --batch-size "
                             f"{config['batch_size']} takes {step} images a step, more than "
                             f"{MAX_BATCH}: lower --batch-size, or --sampling-batch same")


def check_device_option(device):
    """The device ``--device`` names ('cpu' or 'cuda'; 'auto' picks), or ValueError in one line
    naming the option when it asks for a GPU that is not there (and why CuPy sees none)."""
    from .. import backend

    try:
        return backend.check_device(device)
    except backend.DeviceUnavailable:
        why = " ".join(str(backend.cupy_unavailable_reason()).split())
        raise ValueError(f"--device {device}: no GPU here ({why}); use --device cpu, or auto "
                         f"(the GPU where CuPy finds one)") from None


def _meminfo(key):
    """A /proc/meminfo or /proc/self/status field in bytes (Linux), or None."""
    for path in ("/proc/meminfo", "/proc/self/status"):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return None


def _cgroup_free():
    """What this container's memory limit leaves (cgroup v2, then v1), or None."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f, open(usage) as g:
                most, used = f.read().strip(), int(g.read().strip())
        except (OSError, ValueError):
            continue
        if most.isdigit() and int(most) < 2**60:  # "max", or v1's huge "no limit"
            return max(0, int(most) - used)
    return None


def memory_budget(device="cpu"):
    """The bytes a forward pass may take on ``device`` now: on a GPU what CuPy says is free; on
    the CPU the least of the memory the system has available (MemAvailable), what this
    container's limit leaves, and what the address-space limit (ulimit -v) leaves. None when
    nothing can be read (then nothing is refused)."""
    from .. import backend

    if device == "cuda":
        return int(backend.cupy_or_none().cuda.runtime.memGetInfo()[0])
    known = [_meminfo("MemAvailable"), _cgroup_free()]
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            known.append(max(0, soft - (_meminfo("VmSize") or 0)))
    except (ImportError, OSError, ValueError):
        pass
    known = [k for k in known if k is not None]
    return min(known) if known else None


def check_max_memory(gib):
    """--max-memory GIB as bytes (None: not given), or ValueError in one line."""
    if gib is None:
        return None
    if not 0 < gib < math.inf:
        raise ValueError(f"--max-memory must be a positive number of GiB, got {gib}")
    return int(gib * 2**30)


def _gib(n):
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_forward_memory(model, h, w, budget, n=1, per_pixel=0, what="the image"):
    """ValueError in one line if ``model``'s forward on n images of h x w (plus ``per_pixel``
    bytes a pixel: the loss's maps) is estimated (``models.memory.forward_bytes``) to need more
    than ``budget`` bytes; it says the size, in the same proportions, that fits. Nothing when
    ``budget`` is None, or the net does not take such an input (its own error says so)."""
    from ..models.geometry import GeometryError
    from ..models.memory import forward_bytes, largest_fitting

    if budget is None:
        return
    try:
        need = forward_bytes(model, (n, model.conv1_1.in_channels, h, w), per_pixel=per_pixel)
    except GeometryError:
        return
    if need <= budget:
        return
    fits = largest_fitting(model, h, w, budget, n, per_pixel=per_pixel)
    hint = f"up to about {fits[1]}x{fits[0]} fits: shrink it" if fits[0] else "nothing fits"
    if n > 1 and largest_fitting(model, h, w, budget, 1, per_pixel=per_pixel) == (h, w):
        hint = "one at a time fits: lower --batch-size"
    raise ValueError(f"{what} ({w}x{h}{f', {n} at a time' if n > 1 else ''}) would need about "
                     f"{_gib(need)} for {type(model).__name__}'s forward (estimated from its "
                     f"layers), more than the {_gib(budget)} available (--max-memory); {hint}, "
                     f"or raise --max-memory")


def _fail(where, message):
    raise ValueError(f"{where}: its config {message}")


def _int_in(config, key, lo, hi, where, optional=False):
    value = config.get(key)
    if value is None and optional:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) \
            or not lo <= value <= hi:
        _fail(where, f"has {key} {value!r}; expected an int in {lo}..{hi}")


def check_checkpoint_config(config, where):
    """ValueError (one line, starting with ``where``) unless ``config`` (a checkpoint's) is a
    dict that names a model this minifcn builds, with n_class, width and the FCNs' conv1_1
    padding of the right types and within the bounds above. Called before anything is built:
    a file of a few bytes cannot ask for a net of 10**9 classes."""
    if not isinstance(config, dict):
        raise ValueError(f"{where}: its config is a {type(config).__name__}, not a dict")
    missing = [k for k in ("model", "n_class", "width") if k not in config]
    if missing:
        _fail(where, f"lacks {', '.join(missing)}; is it a minifcn training checkpoint?")
    model = config["model"]
    known = (*MODELS, "vgg16")
    if not isinstance(model, str) or model not in known:
        _fail(where, f"names the model {model!r}; expected one of {', '.join(known)}")
    _int_in(config, "n_class", 1, MAX_N_CLASS, where)
    width = config["width"]
    if not isinstance(width, numbers.Real) or isinstance(width, bool) \
            or not 0 < width <= MAX_WIDTH:
        _fail(where, f"has width {width!r}; expected a number in (0, {MAX_WIDTH:g}]")
    dropout = config.get("dropout")
    if dropout is not None and (not isinstance(dropout, numbers.Real) or isinstance(dropout, bool)
                                or not 0 <= dropout < 1):
        _fail(where, f"has dropout {dropout!r}; expected a number in [0, 1)")
    pad1 = config.get("pad1")
    if pad1 in ("auto", "full"):
        _int_in(config, "size", 1, MAX_SIZE, where)  # the padding is derived from it
    elif pad1 is not None:
        _int_in(config, "pad1", 0, MAX_PAD1, where)
    elif model not in PLAIN_NETS and model != "vgg16":
        _fail(where, f"lacks pad1 (conv1_1's padding), which {model} needs")
    for key, hi in (("size", MAX_SIZE), ("n_train", MAX_IMAGES), ("n_val", MAX_IMAGES),
                    ("data_seed", MAX_SEED)):
        _int_in(config, key, 0 if key == "data_seed" else 1, hi, where, optional=True)
    for key, allowed in (("learn_upsampling", ("fixed", "intermediate", "all")),
                         ("freeze_trunk", (False, True))):
        if config.get(key) is not None and config[key] not in allowed:
            _fail(where, f"has {key} {config[key]!r}; expected one of "
                         f"{', '.join(map(str, allowed))}")
    for key in ("data", "device"):
        if key in config and not isinstance(config[key], str):
            _fail(where, f"has {key} {config[key]!r}; expected a string")
    return config
