"""The paper's skip-architecture comparison (Table 2 of Long, Shelhamer, Darrell 2015), in
miniature: FCN-32s, FCN-16s and FCN-8s trained with the same budget on an embedded dataset.

    python -m minifcn.experiments.skip_architectures                  # shapes
    python -m minifcn.experiments.skip_architectures --data digits --iters 1500

Every variant gets the same trunk, data, data order, seed, schedule, iterations and the same
conv1_1 padding (the largest of the three minimal ones, so no variant sees more context), and
is trained from scratch (no ImageNet weights, no staging). Prints a markdown table of the four
metrics of each net's best validation, and writes each run folder under --out.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from .. import trainer
from ..models import build, geometry
from ..train import DEFAULTS

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")


def common_pad1(width, size):
    """The smallest conv1_1 padding that suits all three variants at this input size."""
    return max(geometry.min_pad1(build(v, n_class=2, width=width), size) for v in VARIANTS)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.experiments.skip_architectures",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes", choices=["shapes", "digits"])
    p.add_argument("--iters", type=int, default=None, help="iterations per net (default: the "
                   "trainer's default epochs)")
    p.add_argument("--width", type=float, default=DEFAULTS["width"])
    p.add_argument("--size", type=int, default=DEFAULTS["size"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/skip-architectures")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    args = p.parse_args(argv)
    pad1 = common_pad1(args.width, args.size)
    rows = []
    for variant in VARIANTS:
        config = {**DEFAULTS, "model": variant, "data": args.data, "width": args.width,
                  "size": args.size, "seed": args.seed, "pad1": pad1, "device": args.device}
        if args.iters:
            config.update(iters=args.iters, epochs=None)
        print(f"\n== {variant} (pad1 {pad1}) ==")
        t0 = time.perf_counter()
        best = trainer.fit(config, Path(args.out) / f"{args.data}-{variant}")
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
