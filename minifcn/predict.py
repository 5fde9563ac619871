"""``python -m minifcn.predict CKPT IMAGE... --out DIR``: segment images with a trained model.

For each image writes DIR/NAME.png (the label map as a palette PNG: pixel values are class
indices, coloured with the VOC palette) and DIR/NAME_overlay.png (the colours over the image).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import backend, viz
from .training import build_model, load_model, predict_labels
from .data import to_input


def read_image(path):
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"predict: image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"predict: cannot decode image {path}: {e}") from None


def fit_padding(model, config, h, w, device):
    """The model itself, or a copy with a larger conv1_1 padding if an h x w image needs one.

    A model trained with a small padding (pad1 'auto' on small images) may be too tight for a
    smaller image; the weights do not depend on the padding, so the same weights serve."""
    from .models import geometry

    need = geometry.min_pad1(model, min(h, w))
    if need <= model.conv1_1.padding[0]:
        return model
    bigger = build_model({**config, "pad1": need})
    bigger.load_state_dict(model.state_dict())
    return bigger.to(device).eval()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.predict", description=__doc__)
    p.add_argument("checkpoint", help="a checkpoint written by python -m minifcn.train")
    p.add_argument("images", nargs="+", help="image files (any size)")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model, config = load_model(args.checkpoint, args.device)
        device = backend.check_device(args.device)
        for path in args.images:
            image = read_image(path)
            x = backend.to_device(to_input(image)[None], device)
            net = fit_padding(model, config, *image.shape[:2], device)
            label = predict_labels(net, x)[0].astype(np.uint8)
            stem = Path(path).stem
            viz.save_label_png(out / f"{stem}.png", label)
            Image.fromarray(viz.overlay(image, label)).save(out / f"{stem}_overlay.png")
            classes = np.unique(label)
            print(f"{path}: {image.shape[1]}x{image.shape[0]}, classes {classes.tolist()} -> "
                  f"{out / (stem + '.png')}, {out / (stem + '_overlay.png')}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
