"""``python -m minifcn.models fcn8s --width 1.0 --size 500``: print a model's layer table.

Options: --width (channel scale, 1.0 = VGG16), --size (S or HxW), --n-class, --pad1 (conv1_1's
padding), --batch. The model is built (its weights drawn) but nothing runs on data.
"""
import argparse
import sys

from .fcn import MODELS, build
from .summary import summary


def _size(text):
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be S or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--size must be S or HxW, positive, got {text!r}")
    return tuple(values * 2 if len(values) == 1 else values)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minifcn.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODELS), help="which FCN")
    parser.add_argument("--width", type=float, default=1.0, help="channel scale (default 1.0)")
    parser.add_argument("--size", type=_size, default=(500, 500), help="S or HxW (default 500)")
    parser.add_argument("--n-class", type=int, default=21, help="classes (default 21)")
    parser.add_argument("--pad1", type=int, default=100, help="conv1_1 padding (default 100)")
    parser.add_argument("--batch", type=int, default=1, help="batch size N (default 1)")
    args = parser.parse_args(argv)
    try:
        model = build(args.model, n_class=args.n_class, width=args.width, pad1=args.pad1)
        print(summary(model, (args.batch, 3) + args.size))
    except (TypeError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
