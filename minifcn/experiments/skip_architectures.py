"""The paper's skip-architecture comparison (Table 2 of Long, Shelhamer, Darrell 2015), in
miniature: FCN-32s, FCN-16s and FCN-8s trained with the same budget on an embedded dataset.

    python -m minifcn.experiments.skip_architectures --iters 600                # shapes
    python -m minifcn.experiments.skip_architectures --iters 600 --seeds 3 --jobs 2
    python -m minifcn.experiments.skip_architectures --data digits --iters 3000

Every variant gets the same trunk, data, data order, seed, schedule, iterations and the same
conv1_1 padding (the smallest at which all three nets' upsampled scores cover the whole image,
see common_pad1), and is trained from scratch (no ImageNet weights, no staging), with the
from-scratch recipe of minifcn.training (--init classifier: from the shipped classifier, with
the fine-tuning recipe). Prints a markdown table of the four metrics of each net's best
validation, and writes each run folder under --out.

When a small net trained from scratch leaves its all-background phase varies a lot from one
seed to the next, so a single run per net can reorder the table by chance. --seeds N trains
each net with the seeds --seed ... --seed+N-1 (initialisation and data order; the images stay
the same) and prints the mean over the seeds, the standard deviation of mean IU and every
seed's mean IU. --jobs J trains J nets at a time in worker processes that share the CPU's
threads (on 2 cores, two one-thread runs side by side make nearly twice the steps per second of
one run on two threads); a worker writes its log to RUN_DIR/train.log instead of the terminal.
"""
import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import io, training
from . import options
from ..models import padding
from ..training import DEFAULTS, FROM_SCRATCH, resolve

VARIANTS = ("fcn32s", "fcn16s", "fcn8s")
METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


def common_pad1(width, size):
    """The conv1_1 padding for all three variants: the smallest at which every variant's coarse
    scores reach the whole input at full strength (``padding.full_cover_pad1``).

    With less (each net's minimal padding, say), the bilinear upsampling fades out over most of
    a small image, and FCN-32s, which has nothing but the coarse scores, would lose for that
    reason rather than for its stride: at 81, its validation loss stayed above that of always
    predicting the class shares for 1,250 steps; at 116 it went below within 100."""
    return max(padding.full_cover_pad1(v, size) for v in VARIANTS)


def save_weights(checkpoint, path):
    """The learned weights of a training checkpoint in float16, without the fixed bilinear
    upsampling (the model rebuilds it): about half the size of a best checkpoint, small enough
    to ship. ``training.load_model`` (and so evaluate and predict) reads the file."""
    model, config = training.load_model(checkpoint)
    learned = {f"model/{name}": p.data.astype(np.float16)
               for name, p in model.named_parameters() if p.requires_grad}
    best = io.load_checkpoint(checkpoint)[1].get("best")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    io.save_checkpoint(path, learned, {"config": config, "best": best, "learned_only": True})


def train_one(job, quiet=False):
    """Train one (config, run_dir) job; returns (best record, seconds). With ``quiet`` the
    run's log goes to RUN_DIR/train.log (a worker process), else to the terminal."""
    config, run_dir = job
    t0 = time.perf_counter()
    if not quiet:
        return training.fit(config, run_dir, overwrite=True), time.perf_counter() - t0
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir) / "train.log", "w") as f:
        try:
            best = training.fit(config, run_dir, overwrite=True,  # main() checked --out
                               log=lambda msg: print(msg, file=f, flush=True))
        except KeyboardInterrupt:  # the pool passes Exceptions back, not KeyboardInterrupt
            raise RuntimeError(f"stopped by Ctrl-C; resume with python -m minifcn.train "
                               f"--resume {run_dir}") from None
    return best, time.perf_counter() - t0


def run_jobs(jobs, n_workers, worker=train_one):
    """(best record, seconds) of every job, in order, or None for a run that failed (its error
    printed); n_workers > 1 trains them side by side in fresh processes (spawned, so that a GPU
    context is never copied by fork), each with its share of the CPU's threads and no progress
    bar. Ctrl-C stops every run after its current step, with a checkpoint. ``worker(job,
    quiet)`` trains one job (a top-level function, so that a spawned worker can import it)."""
    if n_workers == 1:  # one after the other, each run's log on the terminal
        results = []
        for config, run_dir in jobs:
            print(f"\n== {config['model']} seed {config['seed']} ==")
            results.append(worker((config, run_dir)))
        return results
    threads = str(max(1, len(os.sched_getaffinity(0)) // n_workers))
    worker_env = {"OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads,
                  "MKL_NUM_THREADS": threads, "MINIFCN_NUM_THREADS": threads,
                  "MINIFCN_NO_PROGRESS": "1"}
    saved = {k: os.environ.get(k) for k in worker_env}
    pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        os.environ.update(worker_env)  # read by each worker's imports; workers start on submit
        futures = [pool.submit(worker, job, True) for job in jobs]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v
    results = []
    try:
        for (config, run_dir), future in zip(jobs, futures):
            what = f"{config['model']} seed {config['seed']}"
            try:
                best, seconds = future.result()
            except Exception as e:  # one failed run (or a worker killed) leaves the others
                print(f"{what}: FAILED ({type(e).__name__}: {e}); see {run_dir}/train.log",
                      flush=True)
                results.append(None)
                continue
            print(f"{what}: best mean IU {best['mean_iu']:.3f} in {seconds / 60:.1f} min "
                  f"({run_dir}/train.log)", flush=True)
            results.append((best, seconds))
    except KeyboardInterrupt:  # the workers got the signal too: let them checkpoint and stop
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def table(rows, n_seeds, first="net"):
    """Markdown table of rows (label, [(best, seconds) or None per seed]): the metrics are
    means over the seeds that finished; with several seeds, also the standard deviation of mean
    IU and every seed's mean IU ("failed" for a run that did not finish)."""
    columns = [first, "pixel acc.", "mean acc.", "mean IU", "f.w. IU"]
    columns += ["mean IU per seed"] if n_seeds > 1 else []
    lines = ["| " + " | ".join(columns + ["train time"]) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, runs in rows:
        done = [run for run in runs if run is not None]
        cells = [label]
        if not done:
            cells += ["-"] * (len(columns) - 1) + ["-"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        mean = {m: 100 * statistics.fmean(best[m] for best, _ in done) for m in METRICS}
        ius = [100 * best["mean_iu"] for best, _ in done]
        spread = f" ± {statistics.stdev(ius):.1f}" if len(ius) > 1 else ""
        cells += [f"{mean['pixel_acc']:.1f}", f"{mean['mean_acc']:.1f}",
                  f"{mean['mean_iu']:.1f}{spread}", f"{mean['fw_iu']:.1f}"]
        if n_seeds > 1:
            cells.append(" / ".join("failed" if run is None else f"{100 * run[0]['mean_iu']:.1f}"
                                    for run in runs))
        cells.append(f"{statistics.fmean(seconds for _, seconds in done) / 60:.1f} min")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minifcn.experiments.skip_architectures",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shapes", choices=["shapes", "digits"])
    p.add_argument("--iters", type=int, default=None, help="iterations per net (default: the "
                   "default epochs of python -m minifcn.train)")
    p.add_argument("--width", type=float, default=DEFAULTS["width"])
    p.add_argument("--size", type=int, default=DEFAULTS["size"])
    p.add_argument("--n-train", type=int, default=DEFAULTS["n_train"])
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=1, help="runs per net, seeds --seed, --seed+1, "
                   "... (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="nets trained at a time, in worker "
                   "processes (default 1: in this process)")
    p.add_argument("--out", default="runs/skip-architectures", help="the folder of the runs and "
                   "the table DATA-table.json (default runs/skip-architectures; made if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace the runs, table and saved "
                   "weights of an earlier call (without it, they are refused before anything "
                   "trains)")
    p.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    p.add_argument("--init", default="scratch", choices=["scratch", "classifier"],
                   help="where every net starts: 'scratch' (default, the study as the tables "
                   "in docs/experiments.md ran it) or 'classifier' (the shipped one, with "
                   "train's fine-tuning recipe)")
    p.add_argument("--save-weights", metavar="DIR", help="also write each net's best learned "
                   "weights (of the first seed), in float16, to DIR/DATA-NET.npz (tutorial 06 "
                   "ships these); DIR is a folder, made if missing")
    args = p.parse_args(argv)
    options.check(args)  # before anything is derived from them (the padding) or trained
    table_path = Path(args.out) / f"{args.data}-table.json"
    weights = {v: Path(args.save_weights) / f"{args.data}-{v}.npz" for v in VARIANTS} \
        if args.save_weights else {}
    pad1 = common_pad1(args.width, args.size)
    seeds = list(range(args.seed, args.seed + args.seeds))
    jobs = []
    for variant in VARIANTS:
        for seed in seeds:
            config = {**DEFAULTS, "model": variant, "data": args.data, "width": args.width,
                      "size": args.size, "seed": seed, "pad1": pad1, "device": args.device,
                      "n_train": args.n_train, "n_val": args.n_val,
                      "init": args.init}
            if args.iters:
                config.update(iters=args.iters, epochs=None)
            name = f"{args.data}-{variant}" + (f"-seed{seed}" if args.seeds > 1 else "")
            jobs.append((resolve(config), Path(args.out) / name))
    taken = [str(d) for _, d in jobs if any((d / f).exists() for f in training.runs.RUN_FILES)]
    if taken and not args.overwrite:
        raise SystemExit(f"error: --out {args.out} already holds runs ({', '.join(taken[:3])}"
                         f"{'...' if len(taken) > 3 else ''}); pass --overwrite to replace them, "
                         f"or choose another --out")
    options.check_outputs(args, [(table_path, "--out")]
                          + [(w, "--save-weights") for w in weights.values()])
    n_workers = min(args.jobs, len(jobs))
    print(f"{len(jobs)} runs (pad1 {pad1}), {n_workers} at a time")
    results = run_jobs(jobs, n_workers)
    per_variant = [(v, results[i * len(seeds):(i + 1) * len(seeds)])
                   for i, v in enumerate(VARIANTS)]
    if args.save_weights:
        for variant, (_, run_dir), result in zip(VARIANTS, jobs[::len(seeds)],
                                                 results[::len(seeds)]):
            if result is not None:
                save_weights(run_dir / training.BEST, weights[variant])
    budget = f"{args.iters} iterations" if args.iters else f"{FROM_SCRATCH['epochs']} epochs"
    runs = (f"seeds {seeds[0]}-{seeds[-1]}, mean of {len(seeds)}" if len(seeds) > 1
            else f"seed {seeds[0]}")
    print(f"\n{args.data}, width {args.width}, {args.size}x{args.size}, conv1_1 padding {pad1}, "
          f"{budget} each, {runs}, from {args.init} (best validation):\n")
    print(table([(f"FCN-{v[3:]}", runs) for v, runs in per_variant], len(seeds)))
    options.write_text(table_path, json.dumps(
        [{"net": v, **run[0], "seed": seed, "seconds": run[1]}
         for v, runs in per_variant for seed, run in zip(seeds, runs) if run is not None],
        indent=2))
    failed = results.count(None)
    if failed:
        print(f"\n{failed} of {len(jobs)} runs failed (marked above); the table averages the rest")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
