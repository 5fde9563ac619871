"""``python -m minifcn.data SET ROOT``: write a synthetic set to ROOT in VOC2012's layout, to train
on as real data (``python -m minifcn.train --data voc:ROOT``)::

    python -m minifcn.data textures data/textures        # 200 train + 40 val images, 128 x 128
    python -m minifcn.data shapes data/shapes-voc --n-train 500 --size 96

``textures`` (regions told apart by texture alone) is the stand-in for a user's small labelled
set that docs/training.md measures the real-data recipe on.
"""
import argparse
import sys
import time

from .shapes import Shapes
from .shapes_touching import ShapesTouching
from .textures import Textures
from .writer import write_voc

SETS = {"textures": Textures, "shapes": Shapes, "shapes-touching": ShapesTouching}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("set", choices=sorted(SETS), help="the synthetic set to write")
    p.add_argument("root", help="the folder to write (new, or empty)")
    p.add_argument("--n-train", type=int, default=200, help="training images (default 200)")
    p.add_argument("--n-val", type=int, default=40, help="validation images (default 40)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    args = p.parse_args(argv)
    for name in ("n_train", "n_val"):
        if not 1 <= getattr(args, name) <= 100_000:
            p.error(f"--{name.replace('_', '-')} must be in 1..100000, got {getattr(args, name)}")
    if not 16 <= args.size <= 2048:
        p.error(f"--size must be in 16..2048, got {args.size}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    start = time.perf_counter()
    kind = SETS[args.set]
    splits = {s: kind(s, n=n, size=args.size, seed=args.seed)
              for s, n in (("train", args.n_train), ("val", args.n_val))}
    try:
        root = write_voc(args.root, splits)
    except (ValueError, OSError) as e:
        p.exit(2, f"error: {e}\n")
    print(f"wrote {args.n_train} + {args.n_val} {args.set} images ({args.size} x {args.size}) to "
          f"{root} in {time.perf_counter() - start:.1f} s; train on them with: python -m "
          f"minifcn.train --data voc:{root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
