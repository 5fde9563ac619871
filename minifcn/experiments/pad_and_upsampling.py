"""Two questions the FCN trackers keep asking, measured in miniature on ``shapes``: why does
conv1_1 pad by 100, and does learning the upsampling matter? (Long, Shelhamer, Darrell 2015,
section 4.1 and 3.3; the authors' FAQ answers both in prose.)

    python -m minifcn.experiments.pad_and_upsampling --iters 500 --seeds 2

Three kinds of run, each FCN-8s at train's default width on 96x96 ``shapes``, from the shipped
classifier with train's fine-tuning recipe, --iters steps, seeds 0 ... --seeds - 1:

  pad 100   conv1_1 padded by 100 (the reference nets), fixed bilinear upsampling;
  pad MIN   the smallest padding that still works (``padding.min_pad1``: 69 for FCN-8s at 96,
            train's default), fixed bilinear upsampling;
  learned   pad MIN, every upsampling layer learned (``--learn-upsampling all``).

--study pad compares the first two, --study upsampling the last two, --study all (default)
trains the three (the pad MIN runs serve both). Each run's best checkpoint is scored on the
validation images three ways: mean IU over every pixel, over the pixels less than --band pixels
from the image's border (``metrics.border_mask``: where too little padding lets the upsampled
scores fade, ``padding.score_coverage``), and over the rest.

What the padding costs, for the pad study: multiply-adds per image (counted from the layers'
trace, ``geometry.trace``), and the time and peak memory (tracemalloc: NumPy's allocations) of
one training step at --batch-size, the two nets' steps alternating for --rounds rounds so that
both see the same load on a shared machine (median, and the ratio).

Prints the markdown tables of docs/fcn.md with a stamp line (command, date, commit, machine,
load), writes each run under --out, the numbers to OUT/table.json, and the figures
OUT/pad.png (the score coverage of both paddings and the mean IU per region) and
OUT/upsampling.png (``viz.upsampling_figure`` of the first learned run: each layer's learned
kernels against the bilinear start). --figures DIR writes the figures there instead (e.g.
docs/images, as pad-100.png and learned-upsampling.png).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from .. import backend, metrics, optim, training
from ..data import Loader
from ..models import padding
from ..models.geometry import trace
from ..training import DEFAULTS, resolve
from ..training.step import predict_labels, train_step
from .skip_architectures import run_jobs

MODEL = "fcn8s"
# run name -> (pad1, learn_upsampling); "min" is resolved to padding.min_pad1 for --size
RUNS = {"pad100": (100, "fixed"), "padmin": ("min", "fixed"), "learned": ("min", "all")}
STUDIES = {"pad": ("pad100", "padmin"), "upsampling": ("padmin", "learned"),
           "all": ("pad100", "padmin", "learned")}
REGIONS = ("all", "border", "inside")
SETTINGS = ("width", "size", "iters", "batch_size", "seeds", "band")  # kept for --redraw


def parser():
    p = argparse.ArgumentParser(prog="python -m minifcn.experiments.pad_and_upsampling",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="all", choices=list(STUDIES))
    p.add_argument("--iters", type=int, default=500, help="training steps per run (500)")
    p.add_argument("--seeds", type=int, default=2, help="runs per setting (2)")
    p.add_argument("--width", type=float, default=DEFAULTS["width"])
    p.add_argument("--size", type=int, default=DEFAULTS["size"])
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--band", type=int, default=8, help="border band: pixels less than this "
                   "many from the image's edge (8)")
    p.add_argument("--rounds", type=int, default=10, help="timed steps per net, alternating "
                   "(10)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, in worker processes")
    p.add_argument("--out", default="runs/pad-and-upsampling")
    p.add_argument("--figures", metavar="DIR", help="write the figures to DIR/pad-100.png and "
                   "DIR/learned-upsampling.png (default OUT/pad.png, OUT/upsampling.png)")
    p.add_argument("--overwrite", action="store_true", help="replace the runs of an earlier "
                   "call in --out")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--redraw", action="store_true", help="train and measure nothing: print "
                   "the tables and draw the figures from OUT/table.json of an earlier call")
    return p


def configs(args):
    """{run name: [config per seed]} for the runs --study needs."""
    pad_min = padding.min_pad1(MODEL, args.size)
    out = {}
    for name in STUDIES[args.study]:
        pad1, learn = RUNS[name]
        out[name] = [resolve({
            **DEFAULTS, "model": MODEL, "data": "shapes", "width": args.width,
            "size": args.size, "seed": seed, "device": args.device, "n_train": args.n_train,
            "n_val": args.n_val, "iters": args.iters, "epochs": None,
            "batch_size": args.batch_size, "pad1": pad_min if pad1 == "min" else pad1,
            "learn_upsampling": learn}) for seed in range(args.seeds)]
    return out


def region_scores(run_dir, config, band):
    """{region: mean IU} of the run's best checkpoint on the validation images: every pixel,
    the border band (``metrics.border_mask``) and the rest."""
    model, _ = training.load_model(Path(run_dir) / training.BEST)
    loader = Loader(training.dataset(config, "val"), 16, shuffle=False, group_by_size=True)
    running = {r: metrics.RunningScore(model.config["n_class"]) for r in REGIONS}
    for x, y in loader.epoch(0):
        pred, near = predict_labels(model, x), metrics.border_mask(y, band)
        for region, mask in (("all", np.ones_like(near)), ("border", near), ("inside", ~near)):
            running[region].update(y[mask], pred[mask])
    return {r: running[r].scores()["mean_iu"] for r in REGIONS}


def macs(config):
    """Multiply-adds for one image of the net ``config`` builds (its layers' trace), and the
    share of them in conv1_1 and conv1_2, the layers the padding grows most."""
    steps = trace(training.build_model(config), (1, 3, config["size"], config["size"]))
    total = sum(s.macs for s in steps)
    return total, sum(s.macs for s in steps if s.name in ("conv1_1", "conv1_2")) / total


def alternating_cost(cfgs, rounds, batch_size):
    """[(median seconds per training step, peak bytes of one step)] of the nets ``cfgs`` build,
    on the same batch; each round times one step of every net in turn, so a change of load on a
    shared machine hits them all alike."""
    data = training.dataset(cfgs[0], "train")
    x, y = next(iter(Loader(data, batch_size, shuffle=True, seed=0).epoch(0)))
    nets = []
    for config in cfgs:
        backend.manual_seed(0)
        model = training.build_model({**config, "n_class": data.n_class})
        model.to(config["device"])
        opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        xd, yd = backend.to_device(x, config["device"]), backend.to_device(y, config["device"])
        for _ in range(2):  # warm-up: buffers allocated, caches filled
            train_step(model, opt, xd, yd)
        nets.append((model, opt, xd, yd))
    times = [[] for _ in nets]
    for _ in range(rounds):
        for t, (model, opt, xd, yd) in zip(times, nets):
            t0 = time.perf_counter()
            train_step(model, opt, xd, yd)
            t.append(time.perf_counter() - t0)
    peaks = []
    for model, opt, xd, yd in nets:
        tracemalloc.start()
        train_step(model, opt, xd, yd)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return [(statistics.median(t), peak) for t, peak in zip(times, peaks)]


def machine():
    """The CPU, its cores (and the BLAS threads, when set) and the load averages now, for the
    stamp."""
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    threads = f", OPENBLAS_NUM_THREADS={threads}" if threads else ""
    return f"{model}, {os.cpu_count()} cores{threads}, load {load}"


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _mean_sd(values, scale=100):
    v = [scale * x for x in values]
    return f"{statistics.fmean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")


def label(name, result):
    pad1, learn = result["pad1"], result["learn_upsampling"]
    return f"pad {pad1}, {'fixed bilinear' if learn == 'fixed' else 'learned'} upsampling"


def table(results, names, band):
    """The markdown table of the runs ``names``: mean IU overall, in the border band and
    inside (mean ± sd over seeds), each seed's overall mean IU."""
    head = ("run", "mean IU", f"border band ({band} px)", "inside", "mean IU per seed")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name in names:
        r = results[name]
        seeds = " / ".join(f"{100 * s['all']:.1f}" for s in r["scores"])
        lines.append("| " + " | ".join(
            (label(name, r), *(_mean_sd([s[g] for s in r["scores"]]) for g in REGIONS),
             seeds)) + " |")
    return "\n".join(lines)


def cost_table(results, batch_size):
    """The markdown table of what the padding costs: multiply-adds, time and memory per step."""
    a, b = results["pad100"], results["padmin"]
    head = ("conv1_1 padding", "MACs / image", "in conv1", f"time / step (batch {batch_size})",
            "peak memory / step")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in (b, a):
        lines.append(f"| {r['pad1']} | {r['macs'] / 1e6:.0f} M | {100 * r['conv1_share']:.0f} % "
                     f"| {1e3 * r['step_s']:.0f} ms | {r['peak'] / 2**20:.0f} MiB |")
    lines.append(f"| ratio {a['pad1']} / {b['pad1']} | {a['macs'] / b['macs']:.2f} | | "
                 f"{a['step_s'] / b['step_s']:.2f} | {a['peak'] / b['peak']:.2f} |")
    return "\n".join(lines)


def pad_figure(results, size, band):
    """The score coverage of both paddings (``padding.score_coverage``, the border band
    outlined) and the mean IU of each region, mean over seeds with each seed a dot."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    runs = [results["padmin"], results["pad100"]]
    fig = Figure(figsize=(11, 3.4), dpi=100)
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.5]})
    for ax, r in zip(axes, runs):
        cover = padding.score_coverage(MODEL, size, pad1=r["pad1"])
        im = ax.imshow(cover, vmin=0, vmax=1, cmap="viridis")
        ax.add_patch(Rectangle((band - 0.5, band - 0.5), size - 2 * band, size - 2 * band,
                               fill=False, edgecolor="white", linestyle="--"))
        ax.set_title(f"pad {r['pad1']}: coverage, mean {cover.mean():.2f}", fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03, label="share of the coarse score")
    ax = axes[2]
    for k, r in enumerate(runs):
        xs = np.arange(len(REGIONS)) + (k - 0.5) * 0.38
        vals = [[100 * s[g] for s in r["scores"]] for g in REGIONS]
        ax.bar(xs, [statistics.fmean(v) for v in vals], 0.36, label=f"pad {r['pad1']}")
        for x, v in zip(xs, vals):
            ax.plot([x] * len(v), v, "k.", markersize=4)
    ax.set_xticks(range(len(REGIONS)), ["all pixels", f"border band ({band} px)", "inside"])
    ax.set_ylabel("mean IU (%)")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def measure(args):
    """Train and score every run --study needs, and the pad study's costs; returns ({run name:
    numbers}, the stamp line)."""
    command = "python -m minifcn.experiments.pad_and_upsampling " + " ".join(args.argv)
    started, load_before, code = datetime.datetime.now(), machine(), commit()  # as it starts
    cfgs = configs(args)
    jobs = [(c, Path(args.out) / f"{name}-seed{c['seed']}") for name in cfgs for c in cfgs[name]]
    taken = [str(d) for _, d in jobs if any((d / f).exists() for f in training.runs.RUN_FILES)]
    if taken and not args.overwrite:
        raise SystemExit(f"error: --out {args.out} already holds runs ({taken[0]} ...); pass "
                         f"--overwrite to replace them, or choose another --out")
    print(f"{len(jobs)} runs of {args.iters} steps, {min(args.jobs, len(jobs))} at a time")
    done = run_jobs(jobs, min(args.jobs, len(jobs)))
    if None in done:
        raise SystemExit(f"error: {done.count(None)} runs failed (see above); no table")
    results, k = {}, 0
    for name, seeds in cfgs.items():
        part = jobs[k:k + len(seeds)]
        k += len(seeds)
        results[name] = dict(
            pad1=seeds[0]["pad1"], learn_upsampling=seeds[0]["learn_upsampling"],
            runs=[str(d) for _, d in part], configs=[c for c, _ in part],
            scores=[region_scores(d, c, args.band) for c, d in part])
    if "pad100" in results:
        pair = [results["pad100"], results["padmin"]]
        for r in pair:
            config = r["configs"][0]
            r["macs"], r["conv1_share"] = macs(
                {**config, "n_class": training.dataset(config, "train").n_class})
        for r, (step_s, peak) in zip(pair, alternating_cost(
                [r["configs"][0] for r in pair], args.rounds, args.batch_size)):
            r["step_s"], r["peak"] = step_s, peak
    stamp = (f"Made by: `{command}` · {started:%Y-%m-%d} · commit {code} · {machine()} "
             f"(load at the start {load_before.rsplit('load ', 1)[1]}) · "
             f"{(datetime.datetime.now() - started).total_seconds() / 60:.0f} min")
    Path(args.out, "table.json").write_text(json.dumps(
        {"results": results, "stamp": stamp,
         "settings": {key: getattr(args, key) for key in SETTINGS}}, indent=1))
    return results, stamp


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    from .. import viz

    p = parser()
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    for name in ("iters", "seeds", "jobs", "rounds", "batch_size", "size", "n_train"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.band < 1 or 2 * args.band >= args.size:
        p.error(f"--band must be >= 1 and leave an inside (< size/2 = {args.size / 2}), got "
                f"{args.band}")
    if args.redraw:
        try:
            saved = json.loads(Path(args.out, "table.json").read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: --redraw: cannot read {args.out}/table.json ({e})")
        results, stamp = saved["results"], saved["stamp"]
        for key in SETTINGS:  # the numbers were made with these
            setattr(args, key, saved["settings"][key])
    else:
        results, stamp = measure(args)
    figures = Path(args.figures) if args.figures else Path(args.out)
    figures.mkdir(parents=True, exist_ok=True)
    names = {"pad": "pad-100.png" if args.figures else "pad.png",
             "up": "learned-upsampling.png" if args.figures else "upsampling.png"}
    if "pad100" in results:
        viz.save_figure(figures / names["pad"], pad_figure(results, args.size, args.band))
    if "learned" in results:
        model, _ = training.load_model(Path(results["learned"]["runs"][0]) / training.BEST)
        viz.save_figure(figures / names["up"], viz.upsampling_figure(model))
    print(f"\nFCN-8s, width {args.width}, shapes {args.size}x{args.size}, from the classifier, "
          f"{args.iters} steps of batch {args.batch_size}, seeds 0-{args.seeds - 1}; best "
          f"checkpoint's mean IU in %:\n")
    if "pad100" in results:
        print(table(results, ("padmin", "pad100"), args.band) + "\n")
        print(cost_table(results, args.batch_size) + "\n")
    if "learned" in results:
        print(table(results, ("padmin", "learned"), args.band) + "\n")
    print(stamp)
    print(f"\nfigures in {figures}; numbers: {Path(args.out) / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
