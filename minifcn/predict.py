"""``python -m minifcn.predict CKPT IMAGE... --out DIR``: segment images with a trained model.

For each image it writes two new files, named after the image's whole file name:

  DIR/SUB/NAME.label.png    the label map as a palette PNG: pixel values are class indices,
                            coloured with the VOC palette
  DIR/SUB/NAME.overlay.png  the colours over the image

and for a net with an instance head (fcn8s-embed, fcn8s-centres) two more:

  DIR/SUB/NAME.instances.png          the instance map: pixel values are instance ids (0: none),
                                      a palette PNG (16-bit greyscale past 255 instances)
  DIR/SUB/NAME.instances-overlay.png  each instance in its own colour over the image

NAME keeps its extension (cat.jpg -> cat.jpg.label.png) and SUB is the image's folder relative
to the deepest folder that holds all the images (none when they share one). Two images never
share SUB/NAME and the two kinds end differently, so no two outputs can have the same name:
a/x.jpg, b/x.jpg and b/x.png give a/x.jpg.*, b/x.jpg.* and b/x.png.*; dog.png's overlay is
dog.png.overlay.png, dog_overlay.png's label map dog_overlay.png.label.png.

Nothing is lost: unless --overwrite is given, predict refuses (before it loads the model, and
writing nothing) an output that exists already, or one that would land in an input image's
folder; even with --overwrite it never writes over an input image. Outputs stay inside DIR: a
symbolic link under DIR to a folder elsewhere is refused (DIR itself may be a link). Each file is written to a
temporary name, then renamed. An image that cannot be read is reported, one line each, after
the others are done; the exit status is then 1, as for a refusal.

There is no tiling: each image goes through the net whole (tiles would change the scores at
their seams, FCN's receptive field being hundreds of pixels). An image whose header declares
more than MINIFCN_MAX_IMAGE_PIXELS pixels (an environment variable; default 4096 x 4096 =
16,777,216) is refused before it is decoded. Before its forward, the memory an image needs is
estimated from the net's layers (``minifcn.models.memory``); one that would need more than
--max-memory (default: the memory available now) is refused, one line naming the size that
fits. Either way predict goes on with the next. A 16-bit greyscale image is scaled to 8 bits;
32-bit and floating-point images are refused.
"""
import argparse
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from . import backend, io, viz
from .training import build_model, load_model, predict_labels
from .training.limits import (check_device_option, check_forward_memory, check_max_memory,
                              memory_budget)
from .data import to_input
from .data.readers import read_image

KINDS = ("label", "overlay")
INSTANCE_KINDS = ("instances", "instances-overlay")


def kinds_of(checkpoint):
    """The outputs predict writes for the net in ``checkpoint``, read from its metadata alone
    (so that outputs are checked before the model loads): KINDS, and INSTANCE_KINDS for a net
    with an instance head. An unreadable file gets KINDS: load_model then says what is wrong."""
    from .models.registry import INSTANCE_MODELS

    try:
        meta = io.checkpoint.load_checkpoint_meta(checkpoint)
        return KINDS + (INSTANCE_KINDS if meta["config"]["model"] in INSTANCE_MODELS else ())
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return KINDS


def fit_padding(model, config, h, w, device):
    """The model itself, or a copy with a larger conv1_1 padding if an h x w image needs one.

    A model trained with a small padding (pad1 'auto' on small images) may be too tight for a
    smaller image; the weights do not depend on the padding, so the same weights serve."""
    from .models import FCNBase, padding

    if not isinstance(model, FCNBase):  # no conv1_1 padding to grow: its min_input_size holds
        return model
    need = padding.min_pad1(model, min(h, w))
    if need <= model.conv1_1.padding[0]:
        return model
    bigger = build_model({**config, "pad1": need})
    bigger.load_state_dict(model.state_dict())
    return bigger.to(device).eval()


def entry(path):
    """The folder entry ``path`` names, symbolic links in its folders followed."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), name)


def check_inside(out, folder):
    """ValueError in one line unless ``folder`` (an output's) is inside the folder ``out`` once
    symbolic links are followed: a link planted under --out to a folder elsewhere would send
    outputs there. --out itself may be a link: the folder it leads to is the one given."""
    root, real = os.path.realpath(out), os.path.realpath(folder)
    if os.path.commonpath([root, real]) != root:
        raise ValueError(f"--out {out}: {folder} leads outside --out (to {real}) through a "
                         "symbolic link; outputs stay inside --out: remove the link, or choose "
                         "another folder")


def plan(images, out, overwrite, kinds=KINDS):
    """{image: {kind: output path}} for ``images`` (one given twice is kept once), or ValueError
    with a one-line reason if writing them could lose a file or leave --out."""
    if not out:
        raise ValueError("--out is empty: give the folder to write into")
    first = {}
    for p in images:
        first.setdefault(os.path.abspath(p), p)
    top = os.path.commonpath([os.path.dirname(a) for a in first])
    outputs = {p: {k: Path(out, os.path.relpath(os.path.dirname(a), top),
                           f"{os.path.basename(a)}.{k}.png") for k in kinds}
               for a, p in first.items()}
    inputs = {e for a in first for e in (entry(a), os.path.realpath(a))}
    folders = {os.path.dirname(e) for e in inputs}
    planned = [entry(q) for qs in outputs.values() for q in qs.values()]
    if len(set(planned)) < len(planned):  # only through symbolic links under --out
        raise ValueError(f"--out {out}: two outputs would be the same file (symbolic links?)")
    for folder in {q.parent for qs in outputs.values() for q in qs.values()}:
        check_inside(out, folder)
    for image, qs in outputs.items():
        for q in qs.values():
            if entry(q) in inputs:
                raise ValueError(f"{image}: its output {q} is one of the input images, which "
                                 "predict never replaces, even with --overwrite")
            if not overwrite and os.path.dirname(entry(q)) in folders:
                raise ValueError(f"--out {out} would put outputs next to the input image "
                                 f"{image}: choose another folder, or pass --overwrite")
            if os.path.lexists(q):  # something to lose: the commands' one check of a file
                io.check_output(q, "--out", overwrite, inputs=list(first))
    return outputs


def write_png(path, save, overwrite, out):
    """``save(name)`` writes a PNG to ``name``; it lands at ``path``, inside the folder ``out``,
    all or nothing."""
    check_inside(out, path.parent)  # again: a link may have been planted since plan() looked
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and os.path.lexists(path):  # appeared since plan() looked
        raise FileExistsError(f"{path} appeared meanwhile; left alone (see --overwrite)")
    with io.atomic_path(path) as tmp:
        save(tmp)


def predict_instances(model, x):
    """(classes (H, W) uint8, instance ids (H, W)) of one image x (1, 3, H, W)."""
    from .models.instances import instances_of

    classes, ids = instances_of(model, x)
    return classes[0].astype(np.uint8), ids[0]


def write_instances(out, image, ids, overwrite, root):
    """The instance map (palette PNG, 16-bit past 255 ids) and its overlay in colours."""
    def save(tmp):
        if ids.max() <= 255:
            viz.save_label_png(tmp, ids.astype(np.uint8))
        else:
            Image.fromarray(ids.astype(np.uint16)).save(tmp, format="PNG")

    # colours by id, cycling through the palette's 254 (0 is no instance, 255 is ignore)
    tinted = Image.fromarray(viz.overlay(image, np.where(ids > 0, (ids - 1) % 254 + 1, 0)
                                         .astype(np.uint8)))
    write_png(out["instances"], save, overwrite, root)
    write_png(out["instances-overlay"], lambda tmp: tinted.save(tmp, format="PNG"), overwrite,
              root)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by python -m minifcn.train")
    p.add_argument("images", nargs="+", help="image files (any size)")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist and "
                   "allow writing next to the images (never over an image itself)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--max-memory", type=float, metavar="GIB", help="refuse an image whose "
                   "forward is estimated to need more than this many GiB (default: what the "
                   "machine, its container and ulimit -v leave available now; images are not "
                   "tiled)")
    args = p.parse_args(argv)
    try:
        device = check_device_option(args.device)
        max_memory = check_max_memory(args.max_memory)
        outputs = plan(args.images, args.out, args.overwrite, kinds_of(args.checkpoint))
        io.check_folder(args.out, f"--out {args.out}")
        model, config = load_model(args.checkpoint, device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failures = []
    for path, out in outputs.items():
        try:
            image = read_image(path, "predict")
            x = backend.to_device(to_input(image)[None], device)
            net = fit_padding(model, config, *image.shape[:2], device)
            budget = max_memory or memory_budget(device)  # now: other processes come and go
            check_forward_memory(net, *image.shape[:2], budget)
            if "instances" in out:  # a net with an instance head: classes and instances
                label, ids = predict_instances(net, x)
                write_instances(out, image, ids, args.overwrite, args.out)
            else:
                label = predict_labels(net, x)[0].astype(np.uint8)
            tinted = Image.fromarray(viz.overlay(image, label))
            write_png(out["label"], lambda tmp: viz.save_label_png(tmp, label), args.overwrite,
                      args.out)
            write_png(out["overlay"], lambda tmp: tinted.save(tmp, format="PNG"), args.overwrite,
                      args.out)
        except (OSError, ValueError) as e:  # the reader's messages name the image already
            failures.append(f"error: {e}" if str(path) in str(e) else f"error: {path}: {e}")
            continue
        print(f"{path}: {image.shape[1]}x{image.shape[0]}, classes {np.unique(label).tolist()}"
              f" -> {out['label']}, {out['overlay']}")
    for line in failures:
        print(line, file=sys.stderr)
    if failures:
        print(f"error: {len(failures)} of {len(outputs)} images failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
