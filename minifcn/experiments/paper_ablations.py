"""The paper's smaller studies, in miniature on an embedded dataset (Long, Shelhamer, Darrell
2015, sections 3.4, 4.2 and 4.3), each over several seeds with the mean and spread:

    python -m minifcn.experiments.paper_ablations --study sampling --iters 300 --seeds 2 --jobs 2
    python -m minifcn.experiments.paper_ablations --study fixed
    python -m minifcn.experiments.paper_ablations --study balance
    python -m minifcn.experiments.paper_ablations --study shift --size 96 --batch-size 8 --iters 600
    python -m minifcn.experiments.paper_ablations --study all

* sampling: loss sampling, P = 1, 0.5, 0.25 (``--loss-sampling``; 1/P times the images per step,
  as the paper). Besides the table it plots the training loss against iterations and against
  images processed, as the paper's Figure 5, into OUT/sampling.png.
* fixed: FCN-32s against "FCN-32s-fixed", whose trunk is frozen (``--freeze-trunk``).
* balance: no class weights against balanced ones (``--class-weights balanced``).
* shift: FCN-32s made denser without retraining, rarefied (stride 16, 8) or by shift-and-stitch
  (f = 2, 4), against FCN-16s and FCN-8s: mean IU against time and peak memory per image, the
  paper's "cost to improvement ratio worse than layer fusion" (section 4.2). It trains the three
  nets (--model does not apply) at one conv1_1 padding; see shift_study.py. Writes
  OUT/shift.md (the table) and OUT/shift.png (mean IU against ms per image). --rescore scores
  the nets of an earlier call again; --score-weights DIR scores, training nothing, the nets that
  skip_architectures --save-weights wrote (tutorials/assets: the same recipe, seed 0).

Every run is FCN-32s by default (the net of the paper's Figure 5 and its "fixed" row; --model
picks another), trained from scratch (``--init scratch``, whatever train's default)
with the from-scratch recipe and the conv1_1 padding at which the coarse scores cover the whole
image (``padding.full_cover_pad1``); only the switch under study differs. Each run's
folder, with its training losses (train_loss.npy: iteration, loss, images), is under --out;
OUT/summary.json gathers the studies' rows: a call adds its own studies' and keeps the others'
(so --study fixed after --study sampling keeps both).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from .. import backend, training
from ..training import DEFAULTS, resolve
from ..models import padding
from ..viz import save_figure
from . import options, shift_study
from .skip_architectures import run_jobs, table

STUDIES = {  # study -> [(label, options that differ from the plain FCN-32s run)]
    "sampling": [("P = 1 (whole images)", {}), ("P = 0.5", {"loss_sampling": 0.5}),
                 ("P = 0.25", {"loss_sampling": 0.25})],
    "fixed": [("every layer learns", {}),
              ("frozen trunk (the paper's FCN-32s-fixed)", {"freeze_trunk": True})],
    "balance": [("no class weights", {}), ("balanced", {"class_weights": "balanced"})],
}


def train_logging_losses(job, quiet=False):
    """Train one (config, run_dir) job, saving every step's (iteration, loss, images) to
    RUN_DIR/train_loss.npy; returns (best record, seconds) as skip_architectures.train_one."""
    config, run_dir = job
    steps = []
    log = print
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    f = open(Path(run_dir) / "train.log", "w") if quiet else None
    if f is not None:
        def log(msg):
            print(msg, file=f, flush=True)
    t0 = time.perf_counter()
    try:
        best = training.fit(config, run_dir, overwrite=True, log=log,
                            on_step=lambda it, loss, n: steps.append((it, loss, n)))
    except KeyboardInterrupt:  # a worker pool passes Exceptions back, not KeyboardInterrupt
        raise RuntimeError(f"stopped by Ctrl-C; resume with python -m minifcn.train "
                           f"--resume {run_dir}") from None
    finally:
        if f is not None:
            f.close()
    np.save(Path(run_dir) / "train_loss.npy", np.array(steps, dtype=np.float64))
    return best, time.perf_counter() - t0


def plot_sampling(path, curves):
    """The paper's Figure 5 in miniature: training loss (mean over seeds, smoothed over 20
    steps) against iterations and against images processed, one line per P."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2), dpi=80)
    by_iter, by_images = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for label, runs in curves:
        n = min(len(r) for r in runs)
        loss = np.mean([r[:n, 1] for r in runs], axis=0)
        k = min(20, n)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        it, images = runs[0][k - 1:n, 0], np.cumsum(runs[0][:n, 2])[k - 1:]
        by_iter.plot(it, smooth, label=label)
        by_images.plot(images, smooth, label=label)
    by_iter.set(xlabel="iteration", ylabel="training loss", title="against iterations")
    by_images.set(xlabel="images processed", title="against images (relative time)")
    by_iter.legend()
    fig.tight_layout()
    save_figure(path, fig)


def read_summary(path):
    """The studies' rows of an earlier call in the same --out (OUT/summary.json), which this
    call keeps and adds its own to; {} if there is none. SystemExit in one line for a file of
    that name that is not such a summary (never replaced)."""
    if not path.exists():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: --out {path} is not the summary this experiment writes "
                         f"({e}); choose another --out") from None
    if not isinstance(summary, dict):
        raise SystemExit(f"error: --out {path} is not the summary this experiment writes (a "
                         f"JSON object of studies); choose another --out")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.experiments.paper_ablations",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="all", choices=[*STUDIES, "shift", "all"])
    p.add_argument("--model", default="fcn32s", choices=["fcn32s", "fcn16s", "fcn8s"],
                   help="the net every run trains (default fcn32s, the paper's; from scratch in "
                        "a CPU budget it stays all-background, so docs/experiments.md uses fcn16s)")
    p.add_argument("--data", default="shapes", choices=["shapes", "digits"])
    p.add_argument("--iters", type=int, default=300, help="iterations per run (default 300)")
    p.add_argument("--width", type=float, default=DEFAULTS["width"])
    p.add_argument("--size", type=int, default=64, help="image size (default 64)")
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4, help="images per step at P = 1")
    p.add_argument("--seeds", type=int, default=2, help="runs per setting (default 2)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, in worker processes")
    p.add_argument("--out", default="runs/paper-ablations", help="the folder of the runs, "
                   "summary.json and the figures (default runs/paper-ablations; made if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace the runs and figures of "
                   "an earlier call, and their rows in summary.json (without it, they are "
                   "refused before anything trains; --rescore replaces the shift table and plot "
                   "it rescores)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--time-rounds", type=int, default=20, help="shift study: passes per method "
                   "and seed timed, one image at a time, alternating the methods (default 20)")
    p.add_argument("--rescore", action="store_true", help="shift study: score the nets that an "
                   "earlier call trained in --out again (time, memory, metrics), training nothing")
    p.add_argument("--score-weights", metavar="DIR", help="shift study: score, training nothing, "
                   "the nets DIR/DATA-fcn32s|16s|8s.npz that skip_architectures --save-weights "
                   "wrote (tutorials/assets: its 600-step seed-0 nets)")
    args = p.parse_args(argv)
    options.check(args)
    studies = [*STUDIES, "shift"] if args.study == "all" else [args.study]
    out = Path(args.out)
    if (args.rescore or args.score_weights) and studies != ["shift"]:
        p.error("--rescore and --score-weights apply to --study shift only")
    summary = read_summary(out / "summary.json")  # each call adds its studies' rows
    sets = shift_study.weight_sets(args.score_weights, args.data) if args.score_weights else None
    pad1 = padding.full_cover_pad1(args.model, args.size)  # the coarse scores cover every pixel
    seeds = list(range(args.seeds))
    base = {**DEFAULTS, "model": args.model, "data": args.data, "width": args.width,
            "size": args.size, "n_train": args.n_train, "n_val": args.n_val,
            "batch_size": args.batch_size, "iters": args.iters, "epochs": None, "pad1": pad1,
            "device": args.device, "init": "scratch"}  # from scratch, whatever train's default
    jobs, labels = [], []
    for study in studies:
        if study == "shift":  # three nets, one label each
            shift_jobs = shift_study.jobs(base, seeds, Path(args.out) / study)
            jobs += shift_jobs
            labels += [(study, config["model"]) for config, _ in shift_jobs]
            continue
        for i, (label, switches) in enumerate(STUDIES[study]):
            for seed in seeds:
                config = {**base, "seed": seed, **switches}
                jobs.append((resolve(config), Path(args.out) / study / f"{i}-seed{seed}"))
                labels.append((study, label))
    if not args.rescore:  # --rescore replaces the shift table and plot of the call it rescores
        taken = [str(d) for _, d in jobs
                 if any((d / f).exists() for f in training.runs.RUN_FILES)]
        if taken and not args.overwrite and not args.score_weights:
            raise SystemExit(f"error: --out {args.out} already holds runs ({taken[0]}...); pass "
                             f"--overwrite to replace them, or choose another --out")
        figures = ["sampling.png"] * ("sampling" in studies) \
            + ["shift.md", "shift.png"] * ("shift" in studies)
        options.check_outputs(args, [(out / name, "--out") for name in figures])
    if args.score_weights:
        summary["shift"] = shift_study.report(sets, out, args.time_rounds,
                                              backend.check_device(args.device))
        options.write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return 0
    if args.rescore:
        results = [({}, 0.0) if (d / training.BEST).exists() else None for _, d in jobs]
        if results.count(None):
            raise SystemExit(f"error: --rescore: {results.count(None)} of the {len(jobs)} runs "
                             f"have no {training.BEST} in {out / 'shift'}; train them first")
    else:
        nets = sorted({config["model"] for config, _ in jobs})
        print(f"{len(jobs)} runs of {', '.join(nets)} ({args.iters} steps each), "
              f"{min(args.jobs, len(jobs))} at a time")
        results = run_jobs(jobs, min(args.jobs, len(jobs)), worker=train_logging_losses)
    for study in studies:
        if study == "shift":
            mine = [i for i, (s, _) in enumerate(labels) if s == study]
            sets = shift_study.trained_sets([jobs[i] for i in mine], [results[i] for i in mine])
            summary[study] = shift_study.report(sets, out, args.time_rounds,
                                                backend.check_device(args.device))
            continue
        rows = []
        for label, _ in STUDIES[study]:
            runs = [r for (s, lab), r in zip(labels, results) if (s, lab) == (study, label)]
            rows.append((label, runs))
        print(f"\n{study}: {args.data} {args.size}x{args.size}, width {args.width}, "
              f"{args.iters} steps, seeds {seeds[0]}-{seeds[-1]} (best validation):\n")
        print(table(rows, len(seeds), first="setting"))
        summary[study] = [{"setting": label, "seed": seed, **run[0], "seconds": run[1]}
                          for label, runs in rows for seed, run in zip(seeds, runs) if run]
        if study == "sampling":
            curves = [(label, [np.load(d / "train_loss.npy") for (_, d), (s, lab), r
                               in zip(jobs, labels, results)
                               if (s, lab) == (study, label) and r is not None])
                      for label, _ in STUDIES[study]]
            curves = [(label, runs) for label, runs in curves if runs]
            if curves:
                plot_sampling(out / "sampling.png", curves)
                print(f"\ntraining loss curves: {out / 'sampling.png'}")
                for label, runs in curves:
                    images = statistics.fmean(r[:, 2].sum() for r in runs)
                    print(f"  {label}: {images:.0f} images in {args.iters} steps")
    options.write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    failed = results.count(None)
    if failed:
        print(f"\n{failed} of {len(jobs)} runs failed (marked above); the tables average the rest")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
