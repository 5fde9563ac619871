"""The paper's skip-architecture comparison (Table 2 of Long, Shelhamer, Darrell 2015), in
miniature: FCN-32s, FCN-16s and FCN-8s trained with the same budget on an embedded dataset.

    python -m minifcn.experiments.skip_architectures                  # shapes
    python -m minifcn.experiments.skip_architectures --data digits --iters 1500

Every variant gets the same trunk, data, data order, seed, schedule, iterations and the same
conv1_1 padding (the smallest at which all three nets' upsampled scores cover the whole image,
see common_pad1), and is trained from scratch (no ImageNet weights, no staging), with the
trainer's from-scratch recipe. Prints a markdown table of the four
metrics of each net's best validation, and writes each run folder under --out.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .. import io, trainer
from ..models import build, geometry
from ..train import DEFAULTS, resolve

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")


def common_pad1(width, size):
    """The conv1_1 padding for all three variants: the smallest at which every variant's coarse
    scores reach the whole input at full strength (``geometry.full_cover_pad1``).

    With less (each net's minimal padding, say), the bilinear upsampling fades out over most of
    a small image, and FCN-32s, which has nothing but the coarse scores, would lose for that
    reason rather than for its stride: at 81, its validation loss stayed above that of always
    predicting the class shares for 1,250 steps; at 116 it went below within 100."""
    return max(geometry.full_cover_pad1(v, size) for v in VARIANTS)


def save_weights(checkpoint, path):
    """The learned weights of a training checkpoint in float16, without the fixed bilinear
    upsampling (the model rebuilds it): about half the size of a best checkpoint, small enough
    to ship. ``trainer.load_model`` (and so evaluate and predict) reads the file."""
    model, config = trainer.load_model(checkpoint)
    learned = {f"model/{name}": p.data.astype(np.float16)
               for name, p in model.named_parameters() if p.requires_grad}
    best = io.load_checkpoint(checkpoint)[1].get("best")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    io.save_checkpoint(path, learned, {"config": config, "best": best, "learned_only": True})


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.experiments.skip_architectures",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes", choices=["shapes", "digits"])
    p.add_argument("--iters", type=int, default=None, help="iterations per net (default: the "
                   "trainer's default epochs)")
    p.add_argument("--width", type=float, default=DEFAULTS["width"])
    p.add_argument("--size", type=int, default=DEFAULTS["size"])
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/skip-architectures")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--save-weights", metavar="DIR", help="also write each net's best learned "
                   "weights, in float16, to DIR/DATA-NET.npz (tutorial 06 ships these)")
    args = p.parse_args(argv)
    pad1 = common_pad1(args.width, args.size)
    rows = []
    for variant in VARIANTS:
        config = {**DEFAULTS, "model": variant, "data": args.data, "width": args.width,
                  "size": args.size, "seed": args.seed, "pad1": pad1, "device": args.device,
                  "n_train": args.n_train, "n_val": args.n_val}
        if args.iters:
            config.update(iters=args.iters, epochs=None)
        resolve(config)
        print(f"\n== {variant} (pad1 {pad1}) ==")
        t0 = time.perf_counter()
        run_dir = Path(args.out) / f"{args.data}-{variant}"
        best = trainer.fit(config, run_dir)
        if args.save_weights:
            save_weights(run_dir / trainer.BEST, Path(args.save_weights) / f"{args.data}-{variant}.npz")
        rows.append((variant, best, time.perf_counter() - t0))
    budget = f"{args.iters} iterations" if args.iters else f"{DEFAULTS['epochs']} epochs"
    header = (f"\n{args.data}, width {args.width}, {args.size}x{args.size}, conv1_1 padding "
              f"{pad1}, {budget} each (best validation):\n")
    lines = ["| net | pixel acc. | mean acc. | mean IU | f.w. IU | train time |",
             "|---|---|---|---|---|---|"]
    for variant, best, seconds in rows:
        lines.append(f"| FCN-{variant[3:]} | {100 * best['pixel_acc']:.1f} | "
                     f"{100 * best['mean_acc']:.1f} | {100 * best['mean_iu']:.1f} | "
                     f"{100 * best['fw_iu']:.1f} | {seconds / 60:.1f} min |")
    print(header + "\n".join(lines))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.data}-table.json").write_text(json.dumps(
        [{"net": v, **b, "seconds": s} for v, b, s in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
