"""``python -m minifcn.models fcn8s --width 1.0 --size 500``: print a model's layer table.

Any net of ``minifcn.models.MODELS``: the FCNs and the encoder-decoders (segnet, segnet-basic,
deconvnet, unet). Options: --width (channel scale, 1.0 = VGG16), --size (S or HxW), --n-class,
--pad1 (conv1_1's padding; FCNs only), --batch. The model is built (its weights drawn) but nothing runs on data.
"""
import argparse
import sys

from .registry import MODELS, build
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
    parser.add_argument("model", choices=list(MODELS), help="which net")
    parser.add_argument("--width", type=float, default=1.0, help="channel scale (default 1.0)")
    parser.add_argument("--size", type=_size, default=(500, 500), help="S or HxW (default 500)")
    parser.add_argument("--n-class", type=int, default=21, help="classes (default 21)")
    parser.add_argument("--pad1", type=int, help="conv1_1 padding of an FCN (default 100)")
    parser.add_argument("--batch", type=int, default=1, help="batch size N (default 1)")
    args = parser.parse_args(argv)
    try:
        options = dict(n_class=args.n_class, width=args.width)
        if args.pad1 is not None:  # an FCN option: an encoder-decoder refuses it in one line
            options["pad1"] = args.pad1
        model = build(args.model, **options)
        print(summary(model, (args.batch, 3) + args.size))
    except (TypeError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
