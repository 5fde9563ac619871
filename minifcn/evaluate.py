"""``python -m minifcn.evaluate CKPT``: the paper's four metrics and per-class IU of a trained
model on a dataset split.

    python -m minifcn.evaluate runs/fcn8s-shapes-.../checkpoint_best.npz
    python -m minifcn.evaluate CKPT --data voc:/data/VOCdevkit --split val --json scores.json
    python -m minifcn.evaluate fcn8s-heavy-pascal.caffemodel --model fcn8s \
        --data voc:/data/VOCdevkit/VOC2011 --split-file seg11valid.txt

With --model the file is a weights file, not a run checkpoint: a .caffemodel, a PyTorch file
(.pth, .pt, .bin) or an .npz, imported as ``--init-from`` does (minifcn.io.import_weights),
into the net --model names at --width, with the number of classes of --data. Every learned
layer must be in the file.

Every image is scored at its own size: a batch holds images of one size (``Loader`` with
``group_by_size``), and the mean loss is taken over every counted pixel of the split (not
over batches), so --batch-size changes the speed, not the metrics nor the loss. Images are not
tiled: an image or label whose header declares more than MINIFCN_MAX_IMAGE_PIXELS pixels (an
environment variable; default 4096 x 4096 = 16,777,216) is refused before it is decoded, in one
line naming it; and before anything is scored, the memory a batch of each size needs is
estimated from the net's layers (``minifcn.models.memory``), and a size that would need more
than --max-memory (default: the memory available now) is refused in one line naming the size,
or the batch, that fits. 16-bit greyscale images are scaled to 8 bits; 16-bit labels are read as
they are (class numbers).
"""
import argparse
import json
import sys

import numpy as np

from . import backend, io
from .data import Loader, get_dataset
from .models import MODELS, build
from .training import dataset, load_model, validate, validate_instances
from .training.build import read_weights
from .training.limits import (MAX_BATCH, check_device_option, check_forward_memory,
                              check_max_memory, memory_budget)


def format_table(scores, class_names):
    lines = [f"{'pixel accuracy':<24}{scores['pixel_acc']:.4f}",
             f"{'mean accuracy':<24}{scores['mean_acc']:.4f}",
             f"{'mean IU':<24}{scores['mean_iu']:.4f}",
             f"{'frequency-weighted IU':<24}{scores['fw_iu']:.4f}", "",
             f"{'class':<24}IU"]
    for name, iu in zip(class_names, scores["per_class_iu"]):
        lines.append(f"{name:<24}{'absent' if np.isnan(iu) else f'{iu:.4f}'}")
    return "\n".join(lines)


def format_panoptic(panoptic, class_names):
    """PQ, SQ, RQ overall and per class, with each class's TP, FP and FN."""
    lines = [f"{'':<24}{'PQ':>8}{'SQ':>8}{'RQ':>8}{'TP':>6}{'FP':>6}{'FN':>6}",
             f"{'all classes':<24}" + "".join(f"{panoptic[k]:8.4f}" for k in ("pq", "sq", "rq"))]
    c = panoptic["per_class"]
    for i, name in enumerate(class_names):
        if c["tp"][i] + c["fp"][i] + c["fn"][i] == 0:
            lines.append(f"{name:<24}{'absent':>8}")
            continue
        lines.append(f"{name:<24}" + "".join(f"{c[k][i]:8.4f}" for k in ("pq", "sq", "rq"))
                     + "".join(f"{int(c[k][i]):6d}" for k in ("tp", "fp", "fn")))
    return "\n".join(lines)


def load_weights_model(path, name, width, n_class, device):
    """The --model net (``models.build``, conv1_1 padding 100 as the reference nets) with the
    weights of ``path`` (``read_weights``), in eval mode. Every learned layer must be in the
    file, and nothing the net lacks; fixed layers absent from it (bilinear upsampling) keep
    their initialisation. Errors are one line naming the file and what does not fit."""
    state = read_weights(path)  # first: a bad file is found before a big net is built
    model = build(name, n_class=n_class, width=width)
    own = model.state_dict()
    hint = f"is it another --model or --width? (given {name} at --width {width:g})"
    missing = [k for k, p in model.named_parameters() if p.requires_grad and k not in state]
    missing += [k for k, _ in model.named_buffers() if k not in state]  # running statistics
    extra = [k for k in state if k not in own]
    for what, keys in (("has no weights for", missing), ("has weights the model lacks:", extra)):
        if keys:
            more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            raise ValueError(f"{path} {what} {', '.join(keys[:4])}{more}; {hint}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{path}: {k} has shape {v.shape}, the {name} model at --width "
                             f"{width:g} with {n_class} classes {own[k].shape}; {hint}")
    model.load_state_dict(io.merge_state(own, state))
    return model.to(backend.check_device(device)).eval()


def check_batches_fit(model, loader, spec, n_class, budget):
    """ValueError in one line if a batch of one of ``loader``'s image sizes would need more than
    ``budget`` bytes: the forward (``models.memory``) and the loss's maps (scores, their
    log-softmax and the per-pixel loss: 3 x n_class floats a pixel)."""
    from collections import Counter

    for (h, w), count in Counter(loader.sizes or ()).items():
        check_forward_memory(model, h, w, budget, min(loader.batch_size, count),
                             per_pixel=3 * 4 * n_class, what=f"{spec}: its images of that size")


def load_data(spec, split, split_file, config):
    """The dataset to score: ``split`` of ``spec`` (as the run made it when ``config``), or the
    ids listed in ``split_file`` (VOC only)."""
    if split_file:
        if not spec.startswith("voc:"):
            raise ValueError(f"--split-file works with --data voc:ROOT, not {spec}")
        return get_dataset(spec, split, split_file=split_file)
    return dataset(config, split, spec) if config else get_dataset(spec, split)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint written by python -m minifcn.train, or "
                                      "with --model a weights file")
    p.add_argument("--model", choices=list(MODELS), help="the net a weights file (.caffemodel, "
                                                         ".pth, .npz...) holds; needs --data")
    p.add_argument("--width", type=float, help="with --model: the net's width (default 1, VGG16)")
    p.add_argument("--data", help="dataset (default: the one the model was trained on)")
    p.add_argument("--split", help="default val; for voc:ROOT any "
                                   "ROOT/ImageSets/Segmentation/NAME.txt")
    p.add_argument("--split-file", metavar="FILE", help="voc: score the image ids listed in FILE "
                                                        "(one a line), e.g. seg11valid.txt")
    p.add_argument("--batch-size", type=int, default=1, help=f"images a batch, 1..{MAX_BATCH} "
                   "(default 1)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON (an existing "
                   "FILE only with --overwrite, never an input file; a missing folder is made)")
    p.add_argument("--overwrite", action="store_true", help="let --json replace an existing "
                                                            "file")
    p.add_argument("--max-memory", type=float, metavar="GIB", help="refuse, before scoring, "
                   "images whose batch is estimated to need more than this many GiB (default: "
                   "what the machine, its container and ulimit -v leave available now; images "
                   "are not tiled)")
    args = p.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if args.batch_size > MAX_BATCH:
            raise ValueError(f"--batch-size must be <= {MAX_BATCH} (images a batch), got "
                             f"{args.batch_size}")
        device = check_device_option(args.device)
        max_memory = check_max_memory(args.max_memory)
        # --json never replaces the file scored or the ids read (by any path): checked now,
        # and again once the scores are in
        check_json = dict(option="--json", overwrite=args.overwrite,
                          inputs=[args.checkpoint, args.split_file])
        if args.json is not None:
            io.check_output(args.json, **check_json)
        if args.split and args.split_file:
            raise ValueError("--split and --split-file: give one of them")
        split = args.split or "val"
        if args.model:
            if not args.data:
                raise ValueError("--model needs --data (a weights file does not say its data), "
                                 "e.g. --data voc:/data/VOCdevkit")
            width = 1.0 if args.width is None else args.width
            spec, data = args.data, load_data(args.data, split, args.split_file, None)
            model = load_weights_model(args.checkpoint, args.model, width, data.n_class,
                                       device)
        else:
            if args.width is not None:
                raise ValueError("--width goes with --model (a run checkpoint knows its width)")
            if args.checkpoint.lower().endswith((".caffemodel", ".pth", ".pt", ".bin")):
                raise ValueError(f"{args.checkpoint} is a weights file, not a run checkpoint: "
                                 f"say which net it holds with --model ({', '.join(MODELS)})")
            model, config = load_model(args.checkpoint, device)
            spec = args.data or config["data"]
            data = load_data(spec, split, args.split_file, config)
            if data.n_class != config["n_class"]:
                raise ValueError(f"{spec} has {data.n_class} classes, the model "
                                 f"{config['n_class']}")
        if data.notice:
            print(f"note: {data.notice}")
        loader = Loader(data, args.batch_size, shuffle=False, group_by_size=True)
        check_batches_fit(model, loader, spec, data.n_class, max_memory or memory_budget(device))
        scores, loss, _ = validate(model, loader, data.n_class, device, desc="evaluating")
        panoptic = None
        if data.has_instances:  # instance maps to score against: panoptic quality too
            loader = Loader(data, args.batch_size, shuffle=False, group_by_size=True,
                            instances=True)
            panoptic = validate_instances(model, loader, data.n_class, device,
                                          desc="instances")
    except (FileNotFoundError, ValueError) as e:  # a file or an option at fault, named in e
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{spec} {args.split_file or split}: {len(data)} images, mean loss {loss:.4f}\n")
    print(format_table(scores, data.class_names))
    if panoptic is not None:
        how = "its instance head" if hasattr(model, "heads") else \
            "connected components of each class"
        print(f"\npanoptic quality (instances from {how}):\n")
        print(format_panoptic(panoptic, data.class_names))
    if args.json:
        out = {k: float(scores[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}
        out["loss"] = loss
        out["per_class_iu"] = {n: (None if np.isnan(v) else float(v))
                               for n, v in zip(data.class_names, scores["per_class_iu"])}
        if panoptic is not None:
            out["panoptic"] = {k: float(panoptic[k]) for k in ("pq", "sq", "rq")}
            out["panoptic"]["per_class_pq"] = {
                n: (None if np.isnan(v) else float(v))
                for n, v in zip(data.class_names, panoptic["per_class"]["pq"])}
        try:
            io.check_output(args.json, **check_json, create=True)
            io.atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
        except (OSError, ValueError) as e:  # the scores are printed above: only the file is lost
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
