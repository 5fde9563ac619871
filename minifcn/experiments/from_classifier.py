"""From scratch against from the classifier (paper section 4.1), FCN-32s, 16s and 8s, in miniature:

    python -m minifcn.experiments.from_classifier --iters 600 --seeds 3 --jobs 2

Each net is trained twice per seed, with the same steps, data, data order and conv1_1 padding:
once from He's initialisation with the from-scratch recipe (``--init scratch``), once from the
shipped classifier convolutionalised, with the fine-tuning recipe (``--init classifier``; see
minifcn/training/config.py). Every run validates every --val-every iterations and records its
elapsed seconds, so besides the table of the four metrics (mean and spread over the seeds) it
plots validation mean IU against minutes for both starts: OUT/from-classifier.md and .png.
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

from ..training import DEFAULTS, resolve
from . import options
from .skip_architectures import METRICS, VARIANTS, common_pad1, run_jobs

INITS = ("scratch", "classifier")


def jobs(args):
    pad1 = common_pad1(args.width, args.size)
    out = []
    for init in INITS:
        for variant in args.nets.split(","):
            for seed in range(args.seed, args.seed + args.seeds):
                config = {**DEFAULTS, "model": variant, "data": args.data, "width": args.width,
                          "size": args.size, "seed": seed, "pad1": pad1, "device": args.device,
                          "iters": args.iters, "epochs": None, "init": init,
                          "val_every": args.val_every, "n_train": args.n_train,
                          "n_val": args.n_val}
                out.append((resolve(config), Path(args.out) / f"{init}-{variant}-seed{seed}"))
    return out


def spread(values):
    return statistics.stdev(values) if len(values) > 1 else 0.0


def table(results):
    """Markdown rows: net, start, the four metrics as mean ± std over the seeds, minutes."""
    head = ("| net | start | " + " | ".join(m.replace("_", " ") for m in METRICS) +
            " | minutes |\n|---|---|" + "---|" * (len(METRICS) + 1))
    rows = [head]
    for (variant, init), runs in results.items():
        done = [r for r in runs if r is not None]
        if not done:
            rows.append(f"| FCN-{variant[3:]} | {init} | failed |")
            continue
        cells = [f"{100 * statistics.fmean(b[m] for b, _ in done):.1f} ± "
                 f"{100 * spread([b[m] for b, _ in done]):.1f}" for m in METRICS]
        minutes = statistics.fmean(s for _, s in done) / 60
        rows.append(f"| FCN-{variant[3:]} | {init} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    return "\n".join(rows)


def curves(job_list):
    """{(variant, init): [(minutes, mean IU) of each validation, per seed]} from metrics.jsonl."""
    out = {}
    for config, run_dir in job_list:
        path = Path(run_dir) / "metrics.jsonl"
        if path.exists():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            out.setdefault((config["model"], config["init"]), []).append(
                [(r["elapsed_s"] / 60, r["mean_iu"]) for r in records])
    return out


def plot(path, curve_sets, title):
    from matplotlib.figure import Figure

    from ..viz import save_figure

    fig = Figure(figsize=(9, 3.2), dpi=100)
    nets = [v for v in VARIANTS if any(k[0] == v for k in curve_sets)]
    axes = fig.subplots(1, len(nets), sharey=True, squeeze=False)[0]
    for ax, variant in zip(axes, nets):
        for init, colour in zip(INITS, ("tab:gray", "tab:blue")):
            for k, run in enumerate(curve_sets.get((variant, init), [])):
                xs, ys = zip(*run)
                ax.plot(xs, ys, color=colour, alpha=0.8, marker=".",
                        label=f"from {init}" if k == 0 else None)
        ax.set_title(f"FCN-{variant[3:]}")
        ax.set_xlabel("minutes")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation mean IU")
    axes[0].legend(fontsize="small")
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    save_figure(path, fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.experiments.from_classifier",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes", choices=["shapes", "digits"])
    p.add_argument("--iters", type=int, default=600, help="iterations per run (default 600)")
    p.add_argument("--val-every", type=int, default=100, help="validate every N iterations")
    p.add_argument("--width", type=float, default=DEFAULTS["width"])
    p.add_argument("--size", type=int, default=DEFAULTS["size"])
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--nets", default=",".join(VARIANTS), help="comma-separated (default all three)")
    p.add_argument("--out", default="runs/from-classifier", help="the folder of the runs, "
                   "from-classifier.md and .png (default runs/from-classifier; made if missing; "
                   "never over an earlier call's)")
    args = p.parse_args(argv)
    if not args.nets or set(args.nets.split(",")) - set(VARIANTS):
        p.error(f"--nets must be a comma-separated subset of {','.join(VARIANTS)}, got "
                f"{args.nets!r}")
    options.check(args)
    job_list = jobs(args)
    taken = [str(d) for _, d in job_list if (d / "config.json").exists()]
    if taken:
        raise SystemExit(f"error: --out {args.out} already holds runs ({taken[0]}, ...); choose "
                         f"another --out")
    out = Path(args.out)
    options.check_outputs(args, [(out / "from-classifier.md", "--out"),
                                 (out / "from-classifier.png", "--out")])
    print(f"{len(job_list)} runs, {min(args.jobs, len(job_list))} at a time")
    results_list = run_jobs(job_list, min(args.jobs, len(job_list)))
    results = {}
    for (config, _), result in zip(job_list, results_list):
        results.setdefault((config["model"], config["init"]), []).append(result)
    pad1 = job_list[0][0]["pad1"]
    title = (f"{args.data}, width {args.width:g}, {args.size}x{args.size}, pad1 {pad1}, "
             f"{args.iters} iterations, seeds {args.seed}-{args.seed + args.seeds - 1}")
    text = f"{title} (best validation, mean ± std over seeds):\n\n{table(results)}\n"
    print("\n" + text)
    options.write_text(out / "from-classifier.md", text)
    plot(out / "from-classifier.png", curves(job_list), title)
    print(f"wrote {out / 'from-classifier.md'} and {out / 'from-classifier.png'}")
    return 1 if None in results_list else 0


if __name__ == "__main__":
    sys.exit(main())
