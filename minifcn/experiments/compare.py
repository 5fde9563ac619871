"""What the comparison experiments share (encoder_decoders.py, context.py): a set of nets
trained with the same data, step budget and seeds, then measured the same way.

``parser`` holds their common options; ``run`` trains every (model, start) row over the seeds
(``skip_architectures.run_jobs``: several at a time with --jobs) and measures each net once:
parameters and multiply-adds from the layers' trace, the time and peak memory of a training step
(tracemalloc: NumPy's allocations) after the runs; ``figure`` draws every net's predictions on
the same validation images; ``table`` prints the markdown table.
"""
import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from .. import backend, metrics, optim, training
from ..data import Loader
from ..models.geometry import trace
from ..training import DEFAULTS, resolve
from ..training.step import predict_labels, train_step
from . import options
from .skip_architectures import run_jobs


def parser(prog, doc, out, nets):
    """The options every comparison takes (``nets``: the names --nets may pick from)."""
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=500, help="training steps per run (500)")
    p.add_argument("--width", type=float, default=DEFAULTS["width"])
    p.add_argument("--size", type=int, default=DEFAULTS["size"])
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--seeds", type=int, default=3, help="runs per net and start (3)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, in worker processes")
    p.add_argument("--steps", type=int, default=5, help="timed steps per net (5)")
    p.add_argument("--nets", default=",".join(nets), help=f"which nets, comma-separated "
                   f"(default all: {', '.join(nets)})")
    p.add_argument("--out", default=out, help=f"the folder of the runs, the table and the "
                   f"figures (default {out}; made if missing)")
    p.add_argument("--figure", help="where to write the predictions figure (default "
                   "OUT/predictions.png)")
    p.add_argument("--overwrite", action="store_true", help="replace the runs, table and "
                   "figures of an earlier call (without it, an existing one is refused before "
                   "anything trains)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    return p


def check(p, args, nets):
    """SystemExit in one line for a bad option (``options.check``), parser.error for an unknown
    net; the nets --nets picks."""
    options.check(args)
    chosen = args.nets.split(",")
    unknown = [n for n in chosen if n not in nets]
    if unknown:
        p.error(f"--nets: unknown {', '.join(unknown)}; choose from {', '.join(nets)}")
    return chosen


def run(args, rows, labels, data="shapes", outputs=()):
    """Train every (model, start) of ``rows`` for each seed, then measure each net; returns a
    dict per row: label, start, model, params, macs, step_s, peak, best (records), ius, runs,
    configs. Refused first, in one line: runs of an earlier call in --out, or a file the
    experiment writes at the end (OUT/table.json and ``outputs``, (path, option) pairs) that
    exists, without --overwrite."""
    jobs = []
    for model, start in rows:
        for seed in range(args.seeds):
            config = {**DEFAULTS, "model": model, "data": data, "width": args.width,
                      "size": args.size, "seed": seed, "device": args.device, "init": start,
                      "n_train": args.n_train, "n_val": args.n_val, "iters": args.iters,
                      "epochs": None, "batch_size": args.batch_size}
            jobs.append((resolve(config), Path(args.out) / f"{model}-{start}-seed{seed}"))
    taken = [str(d) for _, d in jobs if any((d / f).exists() for f in training.runs.RUN_FILES)]
    if taken and not args.overwrite:
        raise SystemExit(f"error: --out {args.out} already holds runs ({taken[0]} ...); pass "
                         f"--overwrite to replace them, or choose another --out")
    options.check_outputs(args, [(Path(args.out) / "table.json", "--out"), *outputs])
    print(f"{len(jobs)} runs of {args.iters} steps, {min(args.jobs, len(jobs))} at a time")
    results = run_jobs(jobs, min(args.jobs, len(jobs)))
    if None in results:
        raise SystemExit(f"error: {results.count(None)} runs failed (see above); no table")
    table_rows, cost = [], {}
    for i, (model, start) in enumerate(rows):
        part = list(zip(jobs[i * args.seeds:(i + 1) * args.seeds],
                        results[i * args.seeds:(i + 1) * args.seeds]))
        if model not in cost:  # the same net costs the same from either start
            config = part[0][0][0]
            config = {**config, "n_class": training.dataset(config, "train").n_class}
            cost[model] = (*net_size(config), *step_cost(config, args.steps, args.batch_size))
        params, macs, step_s, peak = cost[model]
        table_rows.append(dict(
            label=labels[model], start=start, model=model, params=params, macs=macs,
            step_s=step_s, peak=peak, best=[best for _, (best, _) in part],
            ius=[best["mean_iu"] for _, (best, _) in part],
            runs=[str(run_dir) for (_, run_dir), _ in part],
            configs=[cfg for (cfg, _), _ in part]))
    return table_rows


def boundary_iu(run_dir, band, config):
    """Mean IU of the run's best checkpoint over the validation pixels near a true edge."""
    model, _ = training.load_model(Path(run_dir) / training.BEST)
    loader = Loader(training.dataset(config, "val"), 16, shuffle=False, group_by_size=True)
    running = metrics.RunningScore(model.config["n_class"])
    for x, y in loader.epoch(0):
        near = metrics.boundary_mask(y, band)
        running.update(y[near], predict_labels(model, x)[near])
    return running.scores()["mean_iu"]


def step_cost(config, steps, batch_size):
    """(seconds per training step, peak bytes of one step) of the net ``config`` builds, on
    one batch of its training data."""
    data = training.dataset(config, "train")
    backend.manual_seed(0)
    model = training.build_model({**config, "n_class": data.n_class}).to(config["device"])
    opt = optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = next(iter(Loader(data, batch_size, shuffle=True, seed=0).epoch(0)))
    x, y = backend.to_device(x, config["device"]), backend.to_device(y, config["device"])
    times = []
    for i in range(2 + steps):
        t0 = time.perf_counter()
        train_step(model, opt, x, y)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()  # after the warm-up: the buffers every step reuses already exist
    train_step(model, opt, x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times[2:]), peak


def net_size(config):
    """(parameters, multiply-adds for one image) of the net ``config`` builds."""
    model = training.build_model(config)
    steps = trace(model, (1, 3, config["size"], config["size"]))
    return sum(p.data.size for p in model.parameters()), sum(s.macs for s in steps)


def figure(runs, config, path, n_images=4):
    """Each net's predictions (first seed) on the first validation images, one row per net."""
    import matplotlib

    matplotlib.use("Agg")
    from ..data.transforms import to_input
    from ..viz import colorize

    data = training.dataset(config, "val")
    images = [data[i][0] for i in range(n_images)]  # (H, W, 3) RGB
    x = np.stack([to_input(im) for im in images])
    rows = [("image", images), ("truth", [colorize(data[i][1]) for i in range(n_images)])]
    for label, run_dir in runs:
        model, _ = training.load_model(Path(run_dir) / training.BEST)
        rows.append((label, [colorize(p) for p in predict_labels(model, x)]))
    grid(rows, path)


def grid(rows, path, size=1.3):
    """A figure of pictures: one row per (label, [picture, ...]), written to ``path``."""
    import matplotlib.pyplot as plt

    n = max(len(pictures) for _, pictures in rows)
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows)), squeeze=False)
    for r, (label, pictures) in enumerate(rows):
        for c, picture in enumerate(pictures):
            axes[r, c].imshow(picture)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=7)
    save(fig, path)


def save(fig, path):
    """Lay out and write a matplotlib figure at ``path`` (its folder made), atomically, then
    close it."""
    import matplotlib.pyplot as plt

    from ..viz import save_figure

    fig.tight_layout()
    fig.set_dpi(80)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(path, fig)
    plt.close(fig)


def table(rows, extra=()):
    """The markdown table of ``rows`` (``run``'s dicts); ``extra``: (heading, function of a
    row -> cell) columns after mean IU."""
    head = ("net", "start", "mean IU", *(h for h, _ in extra), "params", "MACs / image",
            "time / step", "peak memory / step")
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        ius = [100 * v for v in r["ius"]]
        spread = f" ± {statistics.stdev(ius):.1f}" if len(ius) > 1 else ""
        lines.append("| " + " | ".join((
            r["label"], r["start"], f"{statistics.fmean(ius):.1f}{spread}",
            *(cell(r) for _, cell in extra), f"{r['params'] / 1e3:.0f} K",
            f"{r['macs'] / 1e6:.0f} M", f"{1e3 * r['step_s']:.0f} ms",
            f"{r['peak'] / 2**20:.0f} MiB")) + " |")
    return "\n".join(lines)
