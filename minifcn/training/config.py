"""Every default of a training run, in one place, and the check of a run's options.

``python -m minifcn.train`` starts from DEFAULTS, lays the options given on the command line
over them and calls ``resolve``; ``minifcn.experiments`` builds its configs the same way. A
config is a plain dict: it is written to the run folder as config.json and read back by
``--resume``, ``evaluate`` and ``predict``.
"""
import math

from .. import optim
from ..models import vgg
from ..models.classifier import shipped_classifier_path
from ..models.registry import CLASSIFIER_START, PLAIN_NETS
from .limits import check_options

# A small FCN-8s whose run ends within about 10 minutes on 2 CPU cores on `shapes` (10 epochs of
# 2,000 images from the classifier, 5 from scratch; batch 8: 250 steps an epoch at ~0.2 s).
# None: set by resolve() from the data and the start (--init).
DEFAULTS = dict(
    model="fcn8s", width=0.0625, data="shapes", size=96, n_train=2000, n_val=None, data_seed=0,
    pad1=None, epochs=None, iters=None, batch_size=8, val_batch_size=16, lr=None, momentum=0.9,
    weight_decay=5e-4, lr_schedule="poly", warmup=None, loss_reduction="mean", flip=True,
    crop=None, dropout=None, conv1_lr_mult=None, init_from=None, device="auto", seed=0,
    checkpoint_every=0, loss_sampling=1.0, sampling_batch="scaled", freeze_trunk=False,
    class_weights="none", learn_upsampling="fixed", init=None, val_every=0,
)
SYNTHETIC = ("shapes", "shapes-touching", "digits", "shapes-cls")  # embedded (no download)
INITS = ("classifier", "scratch")  # --init: the shipped classifier (weights.py), or He's init

# The defaults that depend on the data. From scratch: a large lr after a warm-up, conv1_1 on
# 1/64^2 of it (it alone sees raw pixels, std ~PIXEL_STD: optim.first_layer_lr_mult) and no
# dropout (these small nets underfit). 0.08 is the largest lr we found stable: over a 1,400-step
# run at 0.15 the net died (every ReLU off, all background), and at 0.3 the loss became NaN.
# conv1_1's padding "auto" is the smallest whose derived crops still cover the input (69 for
# FCN-8s on 96x96 instead of 100: on small images the padding is most of conv1's work).
FROM_SCRATCH = dict(pad1="auto", lr=0.08, warmup=50, dropout=0.0, epochs=5,
                    conv1_lr_mult=optim.first_layer_lr_mult(vgg.PIXEL_STD))
# From the shipped classifier (--init classifier, the default where one ships) on the synthetic
# sets (docs/training.md#starting-from-a-classifier). lr: from the classifier, 0.08 beat 0.04
# in 500-step probes; 10 epochs (2,500 steps, about 8 minutes here) where scratch runs 5: the
# fine-tuned net is still rising at 1,750 (0.699 there, 0.719 after 10 epochs: the runs in
# docs/training.md#against-the-080-target). conv1_1 keeps its small lr: its weights are still
# pixel-scaled (x 1/PIXEL_STD).
FINE_TUNE = dict(pad1="auto", lr=0.08, warmup=50, dropout=0.0, epochs=10,
                 conv1_lr_mult=optim.first_layer_lr_mult(vgg.PIXEL_STD))
# On real data (voc:, folder:): the reference's choices, meant for fine-tuning ImageNet weights
# (--init-from, or --init scratch).
REFERENCE = dict(pad1=vgg.PAD1, lr=0.01, warmup=0, dropout=vgg.DROPOUT, conv1_lr_mult=1.0,
                 epochs=5)
# On real data from the shipped classifier (the default at its width): the fine-tuning recipe at
# half its lr and a longer warm-up, run for a number of steps rather than epochs. A user's small
# set is few steps an epoch (200 images at batch 8: 25), so 5 or 7 epochs stop early; and the
# synthetic sets' lr 0.08 turned the loss NaN by step 60 on a 240-image VOC-format stand-in,
# where 0.04 (warm-up 100) reached mean IU 0.46 in 800 steps
# (docs/training.md#your-own-data-from-the-classifier).
# conv1_1 keeps the reference's padding 100, which takes an image of any size ("auto" is sized
# for the synthetic sets' square images and refuses a small one).
REAL_FINE_TUNE = dict(FINE_TUNE, pad1=vgg.PAD1, lr=0.04, warmup=100, epochs=None, iters=800)
# What a config.json written before these options existed was trained with.
BEFORE_OPTIONS = dict(warmup=0, dropout=vgg.DROPOUT, conv1_lr_mult=1.0, loss_sampling=1.0,
                      sampling_batch="scaled", freeze_trunk=False, class_weights="none",
                      learn_upsampling="fixed", init="scratch", val_every=0)
# --learn-upsampling's names for the models' learn_upsampling option
LEARN_UPSAMPLING = {"fixed": False, "intermediate": "intermediate", "all": True}


def resolve(config):
    """Fill in the options whose default depends on the data (None in DEFAULTS) and check the
    values; returns ``config``. Bad values raise SystemExit with a one-line message."""
    model = config.get("model")
    if model in PLAIN_NETS:
        check_encoder_decoder(config)
    if config.get("init") is None:  # a file given, or the shipped classifier where there is one
        config["init"] = ("file" if config.get("init_from") else
                          "classifier" if has_shipped_classifier(config["width"])
                          and model in CLASSIFIER_START else "scratch")
    elif config.get("init_from") and config["init"] != "file":
        raise SystemExit(f"error: --init {config['init']} and --init-from both say where the "
                         f"weights start: give one")
    if config["init"] not in INITS + ("file",):
        raise SystemExit(f"error: --init must be one of {', '.join(INITS)}, got "
                         f"{config['init']!r}")
    if config["init"] == "classifier" and model not in CLASSIFIER_START + ("vgg16",):
        raise SystemExit(f"error: --init classifier: {model} has no VGG16 trunk for a "
                         f"classifier's weights (only {', '.join(CLASSIFIER_START)} have one); "
                         f"use --init scratch")
    recipe = REFERENCE
    if config["data"] in SYNTHETIC:
        recipe = FINE_TUNE if config["init"] == "classifier" else FROM_SCRATCH
    elif config["init"] == "classifier":
        recipe = REAL_FINE_TUNE
    length_given = config.get("epochs") or config.get("iters")
    for key, value in recipe.items():
        if key in ("epochs", "iters") and length_given:
            continue  # --epochs or --iters says how long: the recipe's length does not apply
        if config.get(key) is None:
            config[key] = value
    if model in PLAIN_NETS:
        config["pad1"] = None  # the recipe's conv1_1 padding is an FCN's: these pad by 1
    if not 0 <= config["dropout"] < 1:
        raise SystemExit(f"error: --dropout must be in [0, 1), got {config['dropout']}")
    for key in ("conv1_lr_mult", "warmup"):
        if not config[key] >= 0:  # also refuses NaN
            raise SystemExit(f"error: --{key.replace('_', '-')} must be >= 0, got {config[key]}")
    for key in ("width", "lr"):
        if not 0 < config[key] < math.inf:  # also refuses NaN
            raise SystemExit(f"error: --{key} must be a positive number, got {config[key]}")
    for key in ("batch_size", "val_batch_size", "epochs", "iters", "size", "n_train", "n_val",
                "crop"):
        if config.get(key) is not None and config[key] < 1:
            raise SystemExit(f"error: --{key.replace('_', '-')} must be >= 1, got {config[key]}")
    if not 0 < option(config, "loss_sampling") <= 1:
        raise SystemExit(f"error: --loss-sampling must be in (0, 1] (the share of the coarse "
                         f"grid's cells whose loss counts), got {config['loss_sampling']}")
    for key, allowed in (("class_weights", ("none", "balanced")),
                         ("sampling_batch", ("scaled", "same")),
                         ("learn_upsampling", tuple(LEARN_UPSAMPLING))):
        if option(config, key) not in allowed:
            raise SystemExit(f"error: --{key.replace('_', '-')} must be one of "
                             f"{', '.join(allowed)}, got {config[key]!r}")
    if option(config, "val_every") < 0:
        raise SystemExit(f"error: --val-every must be >= 0 (0: only at each epoch's end), got "
                         f"{config['val_every']}")
    if config["checkpoint_every"] < 0:
        raise SystemExit(f"error: --checkpoint-every must be >= 0 (0: only at each epoch's "
                         f"end), got {config['checkpoint_every']}")
    check_options(config)  # the upper bounds of the size options (limits.py)
    return config


# What --resume may change in a run that has started: its length and its optimiser's numbers.
# Everything else fixes the model, the data or their order, which the checkpoint depends on.
RESUMABLE = ("iters", "epochs", "lr", "lr_schedule", "warmup", "momentum", "weight_decay",
             "checkpoint_every", "val_batch_size", "val_every", "device")


def resume_config(config, given, where):
    """The config of a resumed run with the options ``given`` on the command line laid over it;
    raises SystemExit naming the options that cannot change. Returns (config, {key: (old, new)})."""
    config = {"init": BEFORE_OPTIONS["init"], **config}  # a run from before --init: scratch
    changed = {k: (config.get(k), v) for k, v in given.items() if config.get(k) != v}
    fixed = [k for k in changed if k not in RESUMABLE]
    if fixed:
        names = ", ".join("--" + k.replace("_", "-") for k in fixed)
        raise SystemExit(f"error: --resume {where}: {names} cannot change in a run that has "
                         f"started (only --{', --'.join(k.replace('_', '-') for k in RESUMABLE)} "
                         f"can); start a new run instead")
    config = {**config, **{k: new for k, (_, new) in changed.items()}}
    if "iters" in changed:
        config["epochs"] = None
    elif "epochs" in changed:
        config["iters"] = None
    return resolve(config), changed


def check_encoder_decoder(config):
    """SystemExit in one line for an option an encoder-decoder has nothing to apply to."""
    model = config["model"]
    for key, default, why in (
            ("pad1", None, "is FCN's conv1_1 padding (these nets pad every conv by 1)"),
            ("loss_sampling", 1.0, "samples the cells of an FCN's coarse score grid"),
            ("learn_upsampling", "fixed", "sets an FCN's bilinear upsampling layers")):
        if config.get(key) not in (None, default):
            raise SystemExit(f"error: --{key.replace('_', '-')} {why}; {model} has none "
                             f"(got {config[key]!r})")
    if config.get("freeze_trunk") and model not in CLASSIFIER_START:
        raise SystemExit(f"error: --freeze-trunk: {model} has no classifier trunk to freeze "
                         f"(only {', '.join(CLASSIFIER_START)} have one)")


def has_shipped_classifier(width):
    try:
        return bool(shipped_classifier_path(width))
    except ValueError:
        return False


def option(config, key):
    """config[key]; for a config.json written before ``key`` existed, what such runs used."""
    value = config.get(key)
    return BEFORE_OPTIONS[key] if value is None else value
