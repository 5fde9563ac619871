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
``check_device_option`` is the commands' check of ``--device``.
"""
import math
import numbers

from ..models.registry import MODELS, PLAIN_NETS
from ..models.vgg import MAX_WIDTH

__all__ = ["MAX_SIZE", "MAX_PAD1", "MAX_IMAGES", "MAX_BATCH", "MIN_LOSS_SAMPLING",
           "MAX_N_CLASS", "MAX_SEED", "MAX_WIDTH", "check_options", "check_checkpoint_config",
           "check_device_option"]

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
