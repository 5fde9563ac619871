"""``python -m minifcn.evaluate CKPT``: the paper's four metrics and per-class IU of a trained
model on a dataset split.

    python -m minifcn.evaluate runs/fcn8s-shapes-.../checkpoint_best.npz
    python -m minifcn.evaluate CKPT --data voc:/data/VOCdevkit --split val --json scores.json

Every image is scored at its own size: a batch holds images of one size (``Loader`` with
``group_by_size``), so --batch-size changes the speed, not the metrics.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import backend, io
from .training import dataset, load_model, validate
from .data import Loader


def format_table(scores, class_names):
    lines = [f"{'pixel accuracy':<24}{scores['pixel_acc']:.4f}",
             f"{'mean accuracy':<24}{scores['mean_acc']:.4f}",
             f"{'mean IU':<24}{scores['mean_iu']:.4f}",
             f"{'frequency-weighted IU':<24}{scores['fw_iu']:.4f}", "",
             f"{'class':<24}IU"]
    for name, iu in zip(class_names, scores["per_class_iu"]):
        lines.append(f"{name:<24}{'absent' if np.isnan(iu) else f'{iu:.4f}'}")
    return "\n".join(lines)


def check_writable(path, option):
    """Raise ValueError naming ``option`` unless a file can be written at ``path``: it is not a
    folder, and a temporary file can be made beside it (so the scores are not lost after a
    whole evaluation; as root, permission bits alone would say yes)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; expected the name of a file to write")
    folder = path.absolute().parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot write a file in {folder} "
                         f"({e.strerror or e})") from None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by python -m minifcn.train")
    p.add_argument("--data", help="dataset (default: the one the model was trained on)")
    p.add_argument("--split", default="val", help="default val")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    args = p.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.json:
            check_writable(args.json, "--json")
        model, config = load_model(args.checkpoint, args.device)
        spec = args.data or config["data"]
        data = dataset(config, args.split, spec)
        if data.n_class != config["n_class"]:
            raise ValueError(f"{spec} has {data.n_class} classes, the model {config['n_class']}")
        if data.notice:
            print(f"note: {data.notice}")
        loader = Loader(data, args.batch_size, shuffle=False, group_by_size=True)
        device = backend.check_device(args.device)
        scores, loss, _ = validate(model, loader, data.n_class, device)
    except (FileNotFoundError, ValueError) as e:  # a file or an option at fault, named in e
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{spec} {args.split}: {len(data)} images, mean loss {loss:.4f}\n")
    print(format_table(scores, data.class_names))
    if args.json:
        out = {k: float(scores[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}
        out["loss"] = loss
        out["per_class_iu"] = {n: (None if np.isnan(v) else float(v))
                               for n, v in zip(data.class_names, scores["per_class_iu"])}
        io.atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
