"""``python -m minifcn.train``: train an FCN, validating every epoch.

    python -m minifcn.train                        # FCN-8s, width 0.0625, on the embedded shapes
    python -m minifcn.train --model fcn32s --data digits --epochs 3
    python -m minifcn.train --data voc:/data/VOCdevkit --width 1 --batch-size 1 \\
        --init-from vgg16.pth --loss-reduction sum --lr 1e-10 --momentum 0.99   # the paper's
    python -m minifcn.train --resume runs/fcn8s-shapes-20261126-101500

Writes a run folder (--out): config.json, metrics.jsonl, checkpoint_last.npz,
checkpoint_best.npz, history.png (loss and mean IU), predictions.png (image | truth | prediction).
Ctrl-C stops after the current step with a checkpoint; --resume continues exactly.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from . import optim, trainer
from .models.vgg import PIXEL_STD

# Defaults: a small FCN-8s whose run ends within 10 minutes on 2 CPU cores on `shapes`
# (5 epochs of 2,000 images, batch 8: 1,250 steps at ~0.3 s). None: set by resolve() from the
# data. The from-scratch lr, 0.08, is the largest we found stable: over a 1,400-step run at 0.15
# the net died (every ReLU off, all background, for good), and at 0.3 the loss became NaN.
DEFAULTS = dict(
    model="fcn8s", width=0.0625, data="shapes", size=96, n_train=2000, n_val=None, data_seed=0,
    pad1=None, epochs=5, iters=None, batch_size=8, val_batch_size=16, lr=None, momentum=0.9,
    weight_decay=5e-4, lr_schedule="poly", warmup=None, loss_reduction="mean", flip=True,
    crop=None, dropout=None, conv1_lr_mult=None, init_from=None, device="auto", seed=0,
    checkpoint_every=0,
)
# conv1_1's padding: the reference's 100 for real images. On the small synthetic images the
# padding is most of conv1's work, so "auto" takes the smallest padding whose derived crop
# offsets still cover the input (69 for FCN-8s, 73 for 16s, 81 for 32s; models.geometry).
SYNTHETIC_PAD1 = "auto"
# The defaults that depend on the data. From scratch: a large lr after a warm-up, conv1_1 on
# 1/64^2 of it (it alone sees raw pixels, std ~PIXEL_STD: optim.first_layer_lr_mult) and no
# dropout (these small nets underfit). On real data: the reference's choices.
FROM_SCRATCH = dict(pad1=SYNTHETIC_PAD1, lr=0.08, warmup=50, dropout=0.0,
                    conv1_lr_mult=optim.first_layer_lr_mult(PIXEL_STD))
REFERENCE = dict(pad1=100, lr=0.01, warmup=0, dropout=0.5, conv1_lr_mult=1.0)


def _pad1(text):
    return text if text in ("auto", "full") else int(text)


def parser():
    p = argparse.ArgumentParser(prog="python -m minifcn.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", choices=["fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"], help="default fcn8s")
    a("--width", type=float, help="channel multiplier: 1.0 = VGG16, default 0.0625 (4-8-16-32-32, fc 256)")
    a("--data", help="shapes | digits | voc:ROOT | folder:ROOT (default shapes)")
    a("--size", type=int, help="image size of the synthetic sets (default 96)")
    a("--n-train", type=int, help="number of synthetic training images (default 2000)")
    a("--n-val", type=int, help="number of synthetic validation images")
    a("--pad1", type=_pad1, help="conv1_1 padding; 'auto': the smallest whose crops cover the "
                                "input; 'full': the smallest at which the coarse scores reach "
                                "every pixel at full strength (geometry.full_cover_pad1) "
                                "(default 100; auto on synthetic data)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help="default 5")
    g.add_argument("--iters", type=int, help="train this many iterations instead of --epochs")
    a("--batch-size", type=int, help="default 8 (1 = the paper's, any image size)")
    a("--crop", type=int, help="random square crop for batching images of different sizes")
    a("--lr", type=float, help="base learning rate for a mean loss (default 0.08 on the "
                              "synthetic sets, from scratch; 0.01 on real data)")
    a("--lr-schedule", choices=["constant", "step", "poly"], help="default poly")
    a("--warmup", type=int, help="iterations of linear lr warm-up (default 50 on the synthetic "
                                  "sets, 0 on real data)")
    a("--momentum", type=float, help="default 0.9 (the reference heavy recipe: 0.99)")
    a("--weight-decay", type=float, help="default 5e-4")
    a("--loss-reduction", choices=["mean", "sum"], help="mean over pixels (default) or the paper's sum")
    a("--no-flip", dest="flip", action="store_const", const=False, help="no random flips")
    a("--dropout", type=float, help="dropout after fc6 and fc7 (default 0.5, the reference's; "
                                    "0 on the synthetic sets, where the small nets underfit)")
    a("--conv1-lr-mult", type=float, help="lr multiplier of conv1_1's weight (default 1/64^2 on "
                                          "the synthetic sets, 1 on real data; see "
                                          "optim.first_layer_lr_mult)")
    a("--init-from", help="weights to start from: a minifcn checkpoint/.npz (staged training: "
                          "16s from 32s, 8s from 16s) or a PyTorch VGG16/FCN file")
    a("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    a("--device", choices=["cpu", "cuda", "auto"], help="default auto (the GPU if CuPy finds one)")
    a("--seed", type=int, help="seed of initialisation, data order and dropout (default 0)")
    a("--checkpoint-every", type=int, help="also checkpoint every N iterations (default: each epoch)")
    a("--out", help="run folder (default runs/MODEL-DATA-TIME)")
    return p


def make_config(args):
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("resume", "out")}
    config = {**DEFAULTS, **given}
    if "iters" in given:
        config["epochs"] = None
    return resolve(config)


def resolve(config):
    """Fill in the options whose default depends on the data (None in DEFAULTS) and check
    values; returns ``config``. The skip-architecture script builds its configs through this too.

    On the synthetic sets the nets are small and start from scratch (or from a net that did), so
    they get the from-scratch recipe (FROM_SCRATCH); on real data (voc:, folder:), the
    reference's settings, meant for fine-tuning ImageNet weights."""
    synthetic = config["data"] in ("shapes", "digits")
    for key, value in (FROM_SCRATCH if synthetic else REFERENCE).items():
        if config.get(key) is None:
            config[key] = value
    if not 0 <= config["dropout"] < 1:
        raise SystemExit(f"error: --dropout must be in [0, 1), got {config['dropout']}")
    for key in ("conv1_lr_mult", "warmup"):
        if not config[key] >= 0:  # also refuses NaN
            raise SystemExit(f"error: --{key.replace('_', '-')} must be >= 0, got {config[key]}")
    for key in ("width", "lr"):
        if config[key] <= 0:
            raise SystemExit(f"error: --{key} must be positive, got {config[key]}")
    for key in ("batch_size", "epochs", "iters"):
        if config[key] is not None and config[key] < 1:
            raise SystemExit(f"error: --{key.replace('_', '-')} must be >= 1, got {config[key]}")
    return config


def main(argv=None):
    args = parser().parse_args(argv)
    if args.resume:
        run_dir = Path(args.resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.exists():
            raise SystemExit(f"error: --resume {run_dir}: no config.json there")
        config = json.loads(cfg_path.read_text())
        if args.device:
            config["device"] = args.device
    else:
        config = make_config(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = config["data"].split(":")[0]
        run_dir = Path(args.out or f"runs/{config['model']}-{name}-{stamp}")
    print(f"run folder: {run_dir}")
    try:
        trainer.fit(config, run_dir, resume=bool(args.resume))
    except KeyboardInterrupt:
        return 130
    except (FloatingPointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
