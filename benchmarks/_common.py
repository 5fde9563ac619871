"""Shared helpers for the benchmark scripts: alternating timing, BLAS report, stamps, and the
marked blocks of docs/performance.md they write (--write-docs)."""
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the minifcn a benchmark imports: this checkout, or the tree --before names (in its workers)
ENGINE = os.environ.get("MINIFCN_BENCH_ENGINE", ROOT)
if ENGINE not in sys.path:
    sys.path.insert(0, ENGINE)
DOCS = os.path.join(ROOT, "docs", "performance.md")


def blas_report():
    """One line naming the BLAS library, its kernel (core type) and threads NumPy uses."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "BLAS: threadpoolctl not installed (pip install threadpoolctl) - kernel unknown"
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    parts = [f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture')} "
             f"threads={i.get('num_threads')}" for i in infos]
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return "BLAS: " + "; ".join(parts) + (f"  (env {env})" if env else "")


def torch_or_none(threads=None):
    try:
        import torch
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    return torch


def torch_report(torch):
    if torch is None:
        return "PyTorch: not installed (minifcn only, no ratios)"
    return f"PyTorch: {torch.__version__}, {torch.get_num_threads()} threads"


# ----------------------------------------------------------------------------- worker processes
#
# minifcn and PyTorch never share a process while timed: each has its own thread pools (OpenBLAS
# pthreads, torch's OpenMP), and in one process on 2 busy cores they wait on each other's
# spinning threads (measured: a step 3-15x slower for both). Each runs in a worker of its own,
# and the parent alternates them: worker A runs a pass, then worker B, A, B...

_TAG = "@@minifcn-bench "  # protocol lines on stdout; anything else a library prints is skipped


def thread_env(threads, engine=None):
    """The environment of a worker: every pool at ``threads``; ``engine``: the checkout whose
    minifcn it imports (--before: an older commit's tree, timed beside this one)."""
    env = dict(os.environ)
    if engine:
        env["MINIFCN_BENCH_ENGINE"] = os.path.abspath(engine)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "MINIFCN_NUM_THREADS"):
        env[var] = str(threads)
    return env


def serve(handlers):
    """The worker's side: for each JSON line [name, *args] on stdin, run handlers[name](*args)
    and answer its wall time and result (JSON) on one line; starts by answering 'ready'."""
    print(_TAG + json.dumps({"time": 0.0, "result": "ready"}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        name, *args = json.loads(line)
        t0 = time.perf_counter()
        result = handlers[name](*args)
        elapsed = time.perf_counter() - t0
        print(_TAG + json.dumps({"time": elapsed, "result": result}), flush=True)


class Worker:
    """A child process running ``serve``: ``call(name, *args)`` -> (seconds, result)."""

    def __init__(self, argv, threads, engine=None):
        self.proc = subprocess.Popen([sys.executable] + argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env=thread_env(threads, engine))
        self._answer()

    def call(self, name, *args):
        self.proc.stdin.write(json.dumps([name, *args]) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def _answer(self):
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                answer = json.loads(line[len(_TAG):])
                return answer["time"], answer["result"]
        raise RuntimeError(f"benchmark worker {self.proc.args[1:]} died (exit "
                           f"{self.proc.wait()}); its error is above")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def alternate_calls(workers, call, pairs=5, warmup=1):
    """Like ``alternate`` over workers ({name: Worker}), each running ``call`` (a list
    [name, *args]); the worker's own timing of the call is used. -> {name: [seconds]}."""
    return alternate({name: (lambda w=w: w.call(*call)[0]) for name, w in workers.items()},
                     pairs, warmup, timer=lambda fn: fn())


def alternate(runs, pairs=5, warmup=1, timer=None):
    """Time each callable of ``runs`` ({name: fn}) in turn, A B A B ..., ``pairs`` rounds after
    ``warmup`` untimed rounds, so that a change in the machine's load hits all of them alike.
    Returns {name: [seconds per round]}."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    times = {name: [] for name in runs}
    for _ in range(pairs):
        for name, fn in runs.items():
            if timer is not None:  # fn() returns its own time (a worker's)
                times[name].append(timer(fn))
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio_stats(a, b):
    """Median, min and max of the per-round ratios a[i] / b[i] (rounds timed side by side)."""
    r = [x / y for x, y in zip(a, b)]
    return statistics.median(r), min(r), max(r)


def fmt_ratio(a, b):
    med, lo, hi = ratio_stats(a, b)
    return f"{med:.2f} ({lo:.2f}-{hi:.2f})"


def best_time(fn, repeat=5, warmup=1):
    """Best wall time of fn() over `repeat` runs after `warmup` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def markdown_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def seeded(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------- stamps and docs


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine():
    """'2-core AMD EPYC (KVM), OpenBLAS 0.3.31 Haswell kernel, NumPy 2.4.6, load 1.2'."""
    kernel = "BLAS unknown"
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            version = ".".join(str(blas[0].get("version")).split(".")[:3])
            kernel = f"OpenBLAS {version} {blas[0].get('architecture')} kernel" \
                if blas[0].get("internal_api") == "openblas" else str(blas[0].get("internal_api"))
    except ImportError:
        pass
    virt = " (KVM)" if "hypervisor" in open("/proc/cpuinfo").read() else ""
    return (f"{os.cpu_count()}-core {_cpu_name()}{virt}, {kernel}, NumPy {np.__version__}, "
            f"load {os.getloadavg()[0]:.1f}")


def commit():
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "minifcn",
                                "benchmarks"], capture_output=True, text=True).stdout.strip()
        return out + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"


def stamp(load_before=None):
    """The 'Made by: COMMAND · date · commit · machine' line of a table written now."""
    argv = [os.path.relpath(sys.argv[0], ROOT)] + [a for a in sys.argv[1:] if a != "--write-docs"]
    command = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python " + " ".join(argv)
    load = f" (load {load_before:.1f} before the run)" if load_before is not None else ""
    return (f"Made by: `{command}` · {datetime.date.today().isoformat()} · commit {commit()} · "
            f"{machine()}{load}")


def write_docs(block, text, path=DOCS):
    """Replace the lines between '<!-- BEGIN block -->' and '<!-- END block -->' in path."""
    with open(path) as f:
        doc = f.read()
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(block)} -->\n).*?(<!-- END {re.escape(block)} -->)",
                         re.S)
    if not pattern.search(doc):
        raise SystemExit(f"write_docs: no '<!-- BEGIN {block} -->' ... '<!-- END {block} -->' "
                         f"block in {path}")
    doc = pattern.sub(lambda m: m.group(1) + text.rstrip("\n") + "\n" + m.group(2), doc)
    with open(path, "w") as f:
        f.write(doc)
    print(f"wrote the {block} block of {os.path.relpath(path, ROOT)}")
