"""``python -m minifcn.models fcn8s --width 1.0 --size 500``: print a model's layer table.

Any net of ``minifcn.models.MODELS``: the FCNs and the encoder-decoders (segnet, segnet-basic,
deconvnet, unet). Options: --width (channel scale, 1.0 = VGG16), --size (S or HxW), --n-class,
--pad1 (conv1_1's padding; FCNs only), --batch. The model is built (its weights drawn) but nothing runs on data.

``--coords FILE.png`` also writes the net's coordinate map (``minifcn.viz.coords_figure``):
each layer's grid and receptive field against the input, how the padding and the crops line
the grids up with the image, and what the pixel --pixel R,C (default the centre) sees in each
layer. It needs a square --size; an existing FILE is kept unless --overwrite.
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
    parser.add_argument("--coords", metavar="FILE.png", help="also write the coordinate map "
                        "there (a square --size)")
    parser.add_argument("--pixel", type=_pixel, help="R,C: the image pixel whose receptive "
                        "fields --coords draws (default the centre)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --coords "
                        "file")
    args = parser.parse_args(argv)
    if args.coords is not None and args.size[0] != args.size[1]:
        parser.error(f"--coords needs a square --size (the layers are square), got "
                     f"{args.size[0]}x{args.size[1]}")
    if args.pixel is not None and (args.coords is None or max(args.pixel) >= args.size[0]):
        parser.error("--pixel needs --coords" if args.coords is None else
                     f"--pixel {args.pixel[0]},{args.pixel[1]} is outside the "
                     f"{args.size[0]}x{args.size[0]} input")
    try:
        if args.coords is not None:
            from .. import io
            io.check_output(args.coords, "--coords", args.overwrite)
        options = dict(n_class=args.n_class, width=args.width)
        if args.pad1 is not None:  # an FCN option: an encoder-decoder refuses it in one line
            options["pad1"] = args.pad1
        model = build(args.model, **options)
        print(summary(model, (args.batch, 3) + args.size))
        if args.coords is not None:
            write_coords(model, args)
    except (TypeError, ValueError, OSError) as e:
        parser.exit(2, f"error: {e}\n")
    return 0


def _pixel(text):
    try:
        r, c = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pixel must be R,C (two ints), got {text!r}") from None
    if min(r, c) < 0:
        raise argparse.ArgumentTypeError(f"--pixel must be >= 0, got {text!r}")
    return r, c


def write_coords(model, args):
    """Draw the coordinate map and write it to --coords (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from .. import io, viz

    fig = viz.coords_figure(model, args.size[0], pixel=args.pixel)
    io.check_output(args.coords, "--coords", args.overwrite, create=True)
    viz.save_figure(args.coords, fig)
    print(f"coordinate map: {args.coords}")


if __name__ == "__main__":
    sys.exit(main())
