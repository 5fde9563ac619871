"""``python -m minifcn.pretrain``: train the classifier an FCN starts from (paper section 4.1).

    python -m minifcn.pretrain                                   # VGG16 at width 0.0625 on shapes-cls
    python -m minifcn.pretrain --iters 300 --out runs/cls-try
    python -m minifcn.pretrain --resume runs/vgg16-shapes-cls-20261202-013000
    python -m minifcn.pretrain ... --save-weights my-classifier.npz   # float16, for --init-from

The paper starts every FCN from VGG16 trained on ImageNet. Here the classifier
(``minifcn.models.VGGClassifier``: conv1_1 ... pool5, fc6 and fc7 fully connected, fc8) learns
the 16 categories of ``shapes-cls`` on 224 x 224 images, the part ImageNet plays; ``python -m
minifcn.train --init-from`` a run's checkpoint then convolutionalises it (fc6 a 7x7
convolution, fc7 a 1x1) into any FCN of the same width. The classifier shipped in
minifcn/weights/ was made by this command; its .md beside it records how.

Same engine, run folder, progress bar, checkpoints, Ctrl-C, --resume and NaN handling as
``python -m minifcn.train`` (it is the same loop: a classifier's label is a 1x1 label map, and
pixel accuracy over one pixel per image is top-1 accuracy, printed after every epoch).
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import backend, io
from .data import get_dataset
from .training import DEFAULTS
from .training import limits as L
from .training.build import load_model
from .training.runs import BEST, RUN_FILES

# The recipe of the shipped classifier (see minifcn/weights/*.md for the measured run)
PRETRAIN_DEFAULTS = {**DEFAULTS, **dict(
    model="vgg16", data="shapes-cls", size=224, n_train=12000, n_val=500, batch_size=32,
    val_batch_size=50, epochs=3, lr=0.01, warmup=100, dropout=0.0, pad1=1, init="scratch",
    checkpoint_every=250)}
P = PRETRAIN_DEFAULTS


def parser():
    p = argparse.ArgumentParser(prog="python -m minifcn.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", help=f"a classification set (default {P['data']})")
    a("--width", type=float, help=f"channel multiplier, as train's (default {P['width']}); "
                                  "--init-from works into FCNs of the same width; at most "
                                  f"{L.MAX_WIDTH:g}")
    a("--size", type=int, help=f"image side, {193}..{224} (pool5 must be 7x7 for fc6; default "
                               f"{P['size']})")
    a("--n-train", type=int, help=f"training images (default {P['n_train']}; at most "
                                  f"{L.MAX_IMAGES})")
    a("--n-val", type=int, help=f"held-out images for top-1 accuracy (default {P['n_val']}; at "
                                f"most {L.MAX_IMAGES})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help=f"default {P['epochs']}")
    g.add_argument("--iters", type=int, help="train this many iterations instead of --epochs")
    a("--batch-size", type=int, help=f"default {P['batch_size']} (at most {L.MAX_BATCH})")
    a("--lr", type=float, help=f"base learning rate (default {P['lr']})")
    a("--lr-schedule", choices=["constant", "step", "poly"], help=f"default {P['lr_schedule']}")
    a("--warmup", type=int, help=f"iterations of linear lr warm-up (default {P['warmup']})")
    a("--momentum", type=float, help=f"default {P['momentum']}")
    a("--weight-decay", type=float, help=f"default {P['weight_decay']}")
    a("--dropout", type=float, help=f"after fc6 and fc7 (default {P['dropout']})")
    a("--conv1-lr-mult", type=float, help="lr multiplier of conv1_1's weight (default 1/64^2, "
                                          "as train's from scratch)")
    a("--no-flip", dest="flip", action="store_const", const=False, help="no random flips")
    a("--val-batch-size", type=int, help=f"default {P['val_batch_size']} (at most "
                                         f"{L.MAX_BATCH})")
    a("--device", choices=["cpu", "cuda", "auto"], help="default auto")
    a("--seed", type=int, help=f"0 .. 2**32 - 1 (default {P['seed']})")
    a("--checkpoint-every", type=int, help=f"also checkpoint every N iterations (default "
                                           f"{P['checkpoint_every']})")
    a("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    a("--out", help="run folder (default runs/vgg16-DATA-TIME, made unique)")
    a("--overwrite", action="store_true", help="start a new run in an --out that holds one, and "
                                               "let --save-weights replace its FILE and FILE.md")
    a("--save-weights", metavar="FILE", help="at the end, write the best weights in float16 to "
                                             "FILE (.npz) and its record to FILE.md: what "
                                             "minifcn/weights/ ships. Checked before training: "
                                             "an existing file only with --overwrite, never a "
                                             "file of the run; a missing folder is made, with "
                                             "its parents, when FILE is written, as train makes "
                                             "its --out")
    return p


def check(config):
    """A new run's options that train's resolve() does not know to refuse."""
    try:
        data = get_dataset(config["data"], "val", n=1)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: --data: {e}") from None
    if not getattr(data, "classification", False):
        raise SystemExit(f"error: --data {config['data']} is a segmentation set; pretrain "
                         f"needs a classification set (shapes-cls)")
    if not 193 <= config["size"] <= 224:
        raise SystemExit(f"error: --size must be in 193..224 (fc6 reads pool5 as 7x7, as VGG "
                         f"on 224), got {config['size']}")


def check_save_weights(path, inputs=(), overwrite=False, create=False):
    """ValueError in one line unless --save-weights may write ``path`` and its record
    ``path``.md: an .npz name, neither file one of ``inputs`` nor existing unless ``overwrite``
    (``io.check_output``); with ``create`` the missing folder is made."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"--save-weights {path}: give an .npz file name (its record is written "
                         f"beside it, as {path.stem}.md)")
    for target in (path, path.with_suffix(".md")):
        io.check_output(target, "--save-weights", overwrite, inputs, create)


def save_weights(checkpoint, path, overwrite=False):
    """The learned weights of a training checkpoint in float16 (half the bytes; the FCN
    fine-tunes in float32), with the run's config and best record, written atomically; and
    beside it FILE.md, the record of how it was made (``record``)."""
    path = Path(path)
    check_save_weights(path, [checkpoint], overwrite, create=True)  # again: the run took a while
    model, config = load_model(checkpoint)
    arrays = {f"model/{k}": p.data.astype(np.float16) for k, p in model.named_parameters()}
    best = io.load_checkpoint(checkpoint)[1].get("best")
    io.save_checkpoint(path, arrays, {"config": config, "best": best, "learned_only": True})
    io.atomic_write_text(path.with_suffix(".md"), record(path, config, best))
    print(f"wrote {path} (float16, {path.stat().st_size / 1e6:.2f} MB) and its record "
          f"{path.with_suffix('.md')}")


def command(config):
    """The pretrain command line that makes ``config``: the options that differ from the
    defaults (derived ones, such as the number of classes, left out)."""
    words = ["python -m minifcn.pretrain"]
    for key, default in PRETRAIN_DEFAULTS.items():
        value = config.get(key)
        if key in parser_options() and default is not None and value != default:
            flag = "--" + key.replace("_", "-")
            words.append(flag if value is True else ("--no-flip" if key == "flip" else
                                                     f"{flag} {value}"))
    return " ".join(words)


def parser_options():
    return {a.dest for a in parser()._actions}


def record(path, config, best):
    """FILE.md: what the weights are, the command, data, seed, accuracy, commit and machine."""
    import platform
    import subprocess
    import time

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    minutes = best.get("elapsed_s", 0) / 60
    device = config["device"] if config["device"] != "auto" else (
        "cuda" if backend.gpu_available() else "cpu")
    return (f"# {path.name}\n\n"
            f"A `minifcn.models.VGGClassifier` (VGG16's topology at width {config['width']:g}) "
            f"trained on `{config['data']}` ({config['n_train']} training images of "
            f"{config['size']} x {config['size']}, data seed {config['data_seed']}; seed "
            f"{config['seed']}), float16. Load it with `minifcn.models.pretrained_classifier()`;"
            f" `python -m minifcn.train --init classifier` starts from it.\n\n"
            f"- command: `{command(config)}`\n"
            f"- best validation (iteration {best['iteration']}, {config['n_val']} held-out "
            f"images): top-1 accuracy {best['top1']:.3f}, mean class accuracy "
            f"{best['mean_acc']:.3f} (chance {1 / config['n_class']:.3f})\n"
            f"- training time to that validation: {minutes:.1f} min\n"
            f"- commit: {commit} · written {time.strftime('%Y-%m-%d')} · machine: "
            f"{os.cpu_count()}-core {cpu}, {device}\n")


def after(args, run_dir):
    if args.save_weights:
        save_weights(Path(run_dir) / BEST, args.save_weights, args.overwrite)


def main(argv=None):
    from . import train

    args = parser().parse_args(argv)
    if args.save_weights is not None:  # refuse before training, not after
        run = args.resume or args.out  # its files are the run's, never the weights'
        try:
            check_save_weights(args.save_weights,
                               [Path(run, name) for name in RUN_FILES] if run else [],
                               args.overwrite)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    return train.main(argv, make_parser=parser, defaults=PRETRAIN_DEFAULTS, check=check,
                      after=after)


if __name__ == "__main__":
    sys.exit(main())
