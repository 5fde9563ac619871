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
import sys
from pathlib import Path

import numpy as np

from . import io
from .data import get_dataset
from .training import DEFAULTS
from .training.build import load_model
from .training.runs import BEST

# The recipe of the shipped classifier (see minifcn/weights/*.md for the measured run)
PRETRAIN_DEFAULTS = {**DEFAULTS, **dict(
    model="vgg16", data="shapes-cls", size=224, n_train=20000, n_val=500, batch_size=16,
    val_batch_size=50, epochs=4, lr=0.02, warmup=200, dropout=0.0, pad1=1, init="scratch",
    checkpoint_every=250)}
P = PRETRAIN_DEFAULTS


def parser():
    p = argparse.ArgumentParser(prog="python -m minifcn.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", help=f"a classification set (default {P['data']})")
    a("--width", type=float, help=f"channel multiplier, as train's (default {P['width']}); "
                                  "--init-from works into FCNs of the same width")
    a("--size", type=int, help=f"image side, {193}..{224} (pool5 must be 7x7 for fc6; default "
                               f"{P['size']})")
    a("--n-train", type=int, help=f"training images (default {P['n_train']})")
    a("--n-val", type=int, help=f"held-out images for top-1 accuracy (default {P['n_val']})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help=f"default {P['epochs']}")
    g.add_argument("--iters", type=int, help="train this many iterations instead of --epochs")
    a("--batch-size", type=int, help=f"default {P['batch_size']}")
    a("--lr", type=float, help=f"base learning rate (default {P['lr']})")
    a("--lr-schedule", choices=["constant", "step", "poly"], help=f"default {P['lr_schedule']}")
    a("--warmup", type=int, help=f"iterations of linear lr warm-up (default {P['warmup']})")
    a("--momentum", type=float, help=f"default {P['momentum']}")
    a("--weight-decay", type=float, help=f"default {P['weight_decay']}")
    a("--dropout", type=float, help=f"after fc6 and fc7 (default {P['dropout']})")
    a("--conv1-lr-mult", type=float, help="lr multiplier of conv1_1's weight (default 1/64^2, "
                                          "as train's from scratch)")
    a("--no-flip", dest="flip", action="store_const", const=False, help="no random flips")
    a("--val-batch-size", type=int, help=f"default {P['val_batch_size']}")
    a("--device", choices=["cpu", "cuda", "auto"], help="default auto")
    a("--seed", type=int, help=f"default {P['seed']}")
    a("--checkpoint-every", type=int, help=f"also checkpoint every N iterations (default "
                                           f"{P['checkpoint_every']})")
    a("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    a("--out", help="run folder (default runs/vgg16-DATA-TIME, made unique)")
    a("--overwrite", action="store_true", help="start a new run in an --out that holds one")
    a("--save-weights", metavar="FILE", help="at the end, write the best weights in float16 to "
                                             "FILE (.npz; never over an existing file): what "
                                             "minifcn/weights/ ships")
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


def save_weights(checkpoint, path):
    """The learned weights of a training checkpoint in float16 (half the bytes; the FCN
    fine-tunes in float32), with the run's config and best record, written atomically."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"--save-weights {path}: the file exists; give a new name")
    model, config = load_model(checkpoint)
    arrays = {f"model/{k}": p.data.astype(np.float16) for k, p in model.named_parameters()}
    best = io.load_checkpoint(checkpoint)[1].get("best")
    path.parent.mkdir(parents=True, exist_ok=True)
    io.save_checkpoint(path, arrays, {"config": config, "best": best, "learned_only": True})
    print(f"wrote {path} (float16, {path.stat().st_size / 1e6:.2f} MB)")


def after(args, run_dir):
    if args.save_weights:
        save_weights(Path(run_dir) / BEST, args.save_weights)


def main(argv=None):
    from . import train

    given = parser().parse_args(argv).save_weights
    if given and Path(given).exists():  # refuse before training, not after
        raise SystemExit(f"error: --save-weights {given}: the file exists; give a new name")
    return train.main(argv, make_parser=parser, defaults=PRETRAIN_DEFAULTS, check=check,
                      after=after)


if __name__ == "__main__":
    sys.exit(main())
