"""The paper's Table 1 in miniature: does a better classifier make a better FCN?

    python -m minifcn.experiments.backbones CLS1.npz CLS2.npz ... --iters 500 --seeds 3 --jobs 2

The paper fine-tunes FCNs from three ImageNet classifiers (AlexNet, GoogLeNet, VGG16) and finds
segmentation inherits the classifier's quality (its Table 1: 39.8, 42.5 and 56.0 mean IU on
VOC2011 val). Here one architecture stands in for three: the classifiers are the same VGG16
at width 0.0625, saved at several points of one ``python -m minifcn.pretrain`` run, so they
differ in how well they were trained and in nothing else. Each is measured twice:

- its **top-1 accuracy** on held-out ``shapes-cls`` images (``--n-val-cls``, default 500);
- the **mean IU of FCN-8s** fine-tuned from it (``--init-from``) on ``shapes``, with the same
  steps, data, data order and recipe (that of the default run) for every classifier, over
  ``--seeds`` seeds; plus the same net from He's initialisation (``--init scratch``), a
  classifier of chance accuracy, as the first row.

Writes OUT/backbones.md (the table) and OUT/backbones.png (mean IU against top-1).
"""
import argparse
import statistics
import sys
from pathlib import Path

from .. import training
from ..data import Loader, get_dataset
from ..io import check_output
from ..training import DEFAULTS, resolve
from ..training.step import validate
from . import options
from .compare import save
from .skip_architectures import run_jobs

CHANCE = 1 / 16  # shapes-cls has 16 categories


def top1(path, n_val, device="cpu"):
    """Held-out top-1 accuracy of the classifier in ``path`` (a pretrain checkpoint or its
    --save-weights file) on the first ``n_val`` images of shapes-cls's val split."""
    model, config = training.load_model(path, device)
    data = get_dataset("shapes-cls", "val", n=n_val, size=config["size"])
    scores = validate(model, Loader(data, 50, shuffle=False), data.n_class, device)[0]
    return scores["pixel_acc"]  # one labelled pixel per image: pixel accuracy is top-1


def jobs(args):
    """(config, run folder) of every fine-tuning run: scratch first, then each classifier."""
    starts = [("scratch", None)] + [(f"cls{k}", path) for k, path in enumerate(args.classifiers)]
    out = []
    for name, path in starts:
        for seed in range(args.seeds):
            config = {**DEFAULTS, "seed": seed, "iters": args.iters, "epochs": None,
                      "device": args.device, "val_every": args.val_every,
                      "init": "scratch" if path is None else None, "init_from": path,
                      "n_val": args.n_val}
            out.append((resolve(config), Path(args.out) / f"{name}-seed{seed}"))
    return out


def table(rows):
    lines = ["| start | classifier top-1 | FCN-8s mean IU | pixel acc. |", "|---|---|---|---|"]
    for r in rows:
        ius, accs = [100 * b["mean_iu"] for b in r["best"]], [100 * b["pixel_acc"] for b in r["best"]]
        sd = f" ± {statistics.stdev(ius):.1f}" if len(ius) > 1 else ""
        lines.append(f"| {r['label']} | {100 * r['top1']:.1f} | {statistics.fmean(ius):.1f}{sd} "
                     f"| {statistics.fmean(accs):.1f} |")
    return "\n".join(lines)


def plot(rows, path, title):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for r in rows:
        ius = [b["mean_iu"] for b in r["best"]]
        ax.scatter([100 * r["top1"]] * len(ius), [100 * v for v in ius], color="tab:blue", s=12)
        ax.annotate(r["label"], (100 * r["top1"], 100 * max(ius)), fontsize=7,
                    textcoords="offset points", xytext=(3, 3))
    ax.plot([100 * r["top1"] for r in rows],
            [100 * statistics.fmean(b["mean_iu"] for b in r["best"]) for r in rows],
            color="tab:blue", alpha=0.5)
    ax.set_xlabel("classifier top-1 on held-out shapes-cls (%)")
    ax.set_ylabel("FCN-8s validation mean IU (%)")
    ax.set_title(title, fontsize=7)
    ax.grid(alpha=0.3)
    save(fig, path)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.experiments.backbones",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("classifiers", nargs="+", help="classifier files (pretrain checkpoints or "
                   "--save-weights files), weakest first")
    p.add_argument("--labels", help="comma-separated names of the classifiers, for the table")
    p.add_argument("--iters", type=int, default=500, help="fine-tuning steps per run (500)")
    p.add_argument("--val-every", type=int, default=100, help="validate every N steps (100)")
    p.add_argument("--seeds", type=int, default=3, help="runs per start (3)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, in worker processes")
    p.add_argument("--n-val-cls", type=int, default=500, help="held-out images for top-1")
    p.add_argument("--n-val", type=int, default=None, help="validation images of shapes for "
                   "mean IU (default: the training default, 200)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--out", default="runs/backbones")
    args = p.parse_args(argv)
    for name, top in (("iters", 10**6), ("val_every", 10**6), ("seeds", 100), ("jobs", 64),
                      ("n_val_cls", 10**5)):
        if not 1 <= getattr(args, name) <= top:
            p.error(f"--{name.replace('_', '-')} must be in 1..{top}, got {getattr(args, name)}")
    labels = args.labels.split(",") if args.labels else [Path(c).stem for c in args.classifiers]
    if len(labels) != len(args.classifiers):
        p.error(f"--labels names {len(labels)} classifiers, {len(args.classifiers)} given")
    for path in args.classifiers:
        if not Path(path).is_file():
            p.error(f"classifier {path}: no such file")
    out = Path(args.out)
    job_list = jobs(args)
    taken = [str(d) for _, d in job_list if any((d / f).exists() for f in training.runs.RUN_FILES)]
    if taken:
        p.error(f"--out {args.out} already holds runs ({taken[0]} ...); choose another --out")
    for name in ("backbones.md", "backbones.png"):
        try:
            check_output(out / name, "--out", inputs=args.classifiers)
        except ValueError as e:
            p.error(str(e))
    device = job_list[0][0]["device"]
    accs = [CHANCE] + [top1(c, args.n_val_cls, device) for c in args.classifiers]
    print("top-1: " + ", ".join(f"{lab} {100 * a:.1f}" for lab, a in zip(["scratch"] + labels, accs)))
    print(f"{len(job_list)} runs of {args.iters} steps, {min(args.jobs, len(job_list))} at a time")
    results = run_jobs(job_list, min(args.jobs, len(job_list)))
    if None in results:
        raise SystemExit(f"error: {results.count(None)} runs failed (see above); no table")
    rows = [dict(label=lab, top1=acc, best=[best for best, _ in
                                            results[k * args.seeds:(k + 1) * args.seeds]])
            for k, (lab, acc) in enumerate(zip(["scratch (He init)"] + labels, accs))]
    title = (f"FCN-8s on shapes, width {DEFAULTS['width']:g}, {args.iters} steps from each "
             f"start, seeds 0-{args.seeds - 1}")
    text = f"{title} (best validation mean IU, mean ± std over seeds):\n\n{table(rows)}\n"
    print("\n" + text)
    options.write_text(out / "backbones.md", text)
    plot(rows, out / "backbones.png", title)
    print(f"wrote {out / 'backbones.md'} and {out / 'backbones.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
