"""Speed and peak memory of FCN-32s/16s/8s: minifcn against the same nets in PyTorch (CPU).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/models.py \
        [--quick | --sizes 1x224,1x500] [--pairs 5] [--threads 2] [--variants fcn8s,...] \
        [--before TREE] [--no-memory] [--write-docs]
    ... python benchmarks/models.py --default-run     # the step of `python -m minifcn.train`

Configurations: width 1.0 (VGG16) on 1x3x224x224 and 1x3x320x320, width 0.125 on 1x3x96x96
(--quick: width 0.125 only; --sizes: WIDTHxSIZE pairs); 21 classes, conv1_1 padding 100. For
each: forward (eval mode, no graph) and forward+backward (train mode with dropout, mean softmax
cross-entropy against random labels, all gradients). --default-run: instead, the default
training run's net and batch: FCN-8s (or --variants) at width 0.0625 (or --width) on
8x3x96x96, 5 classes, conv1_1 padding as the training default 'auto' (69 for FCN-8s, 73 for
16s, 81 for 32s), no dropout.

Times: each implementation builds its net in a worker process of its own and the parent
alternates them (A B A B, --pairs rounds after a warm-up; benchmarks/_common.py says why never
in one process). Printed: medians, and the median of the per-round ratios with its spread.
--before TREE adds a worker importing minifcn from TREE (a `git worktree` of an older commit).

Peak memory: each (implementation, configuration, forward or forward+backward) runs in a fresh
child process, which builds the model, resets the kernel's peak-RSS counter
(/proc/self/clear_refs), and reports the peak RSS of the first run minus the RSS just before
it: the memory the pass itself needed (activations, saved buffers, gradients, scratch), seen
the same way for NumPy and PyTorch (tracemalloc would miss PyTorch's allocator).

PyTorch (if installed) runs the same nets written as the PyTorch port writes them: nn.Conv2d
with padding 100, MaxPool2d(2, 2, ceil_mode=True), in-place ReLU, ConvTranspose2d without
bias, crops by slicing at the offsets minifcn derives. Both get the same thread count (BLAS
via threadpoolctl, torch.set_num_threads). Before timing, the two are checked to give the same
scores for the same weights.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import (Worker, alternate_calls, fmt_ratio, markdown_table, serve, stamp,  # noqa: E402
                     thread_env, write_docs)

VGG = [("conv1_1", 64), ("conv1_2", 64), ("conv2_1", 128), ("conv2_2", 128), ("conv3_1", 256),
       ("conv3_2", 256), ("conv3_3", 256), ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512),
       ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512)]
BLOCK_ENDS = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}
N_CLASS = 21


# ----------------------------------------------------------------------------- the PyTorch twin


def torch_fcn(variant, width, offsets, n_class=N_CLASS, pad1=100, dropout=0.5):
    """FCN-32s/16s/8s in PyTorch, layer names as minifcn's (so state dicts load by name)."""
    import torch.nn as nn

    def c(ch):
        return max(1, int(round(ch * width)))

    class FCN(nn.Module):
        def __init__(self):
            super().__init__()
            cin = 3
            for name, ch in VGG:
                setattr(self, name, nn.Conv2d(cin, c(ch), 3, padding=pad1 if name == "conv1_1"
                                              else 1))
                cin = c(ch)
            self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.relu = nn.ReLU(inplace=True)
            self.drop = nn.Dropout(dropout)
            self.fc6 = nn.Conv2d(cin, c(4096), 7)
            self.fc7 = nn.Conv2d(c(4096), c(4096), 1)
            self.score_fr = nn.Conv2d(c(4096), n_class, 1)
            up = {"fcn32s": [("upscore", 64, 32)],
                  "fcn16s": [("upscore2", 4, 2), ("upscore16", 32, 16)],
                  "fcn8s": [("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)]}
            for name, k, s in up[variant]:
                layer = nn.ConvTranspose2d(n_class, n_class, k, s, bias=False)
                layer.weight.requires_grad_(False)  # fixed bilinear, as minifcn's default
                setattr(self, name, layer)
            if variant != "fcn32s":
                self.score_pool4 = nn.Conv2d(c(512), n_class, 1)
            if variant == "fcn8s":
                self.score_pool3 = nn.Conv2d(c(256), n_class, 1)

        def forward(self, x):
            h, pools = x, {}
            for name, _ in VGG:
                h = self.relu(getattr(self, name)(h))
                if name in BLOCK_ENDS:
                    h = self.pool(h)
                    pools[name[:5]] = h
            h = self.drop(self.relu(self.fc6(h)))
            h = self.drop(self.relu(self.fc7(h)))
            h = self.score_fr(h)
            H, W = x.shape[2:]
            if variant == "fcn32s":
                o = offsets["score"]
                return self.upscore(h)[:, :, o:o + H, o:o + W].contiguous()
            up2 = self.upscore2(h)
            o = offsets["score_pool4c"]
            h = self.score_pool4(pools["conv4"])[:, :, o:o + up2.shape[2], o:o + up2.shape[3]]
            h = up2 + h
            o = offsets["score"]
            if variant == "fcn16s":
                return self.upscore16(h)[:, :, o:o + H, o:o + W].contiguous()
            up4 = self.upscore_pool4(h)
            o3 = offsets["score_pool3c"]
            h = up4 + self.score_pool3(pools["conv3"])[:, :, o3:o3 + up4.shape[2],
                                                       o3:o3 + up4.shape[3]]
            return self.upscore8(h)[:, :, o:o + H, o:o + W].contiguous()

    return FCN()


# ----------------------------------------------------------------------------- memory


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak():
    """Reset the peak-RSS counter (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- one net


def setup(impl, variant, width, size, batch, n_class, pad1, dropout, threads, offsets):
    """(forward, train_step) closures of one implementation's net on one random batch."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:  # the environment variables set by the parent still apply
        pass
    rng = np.random.default_rng(0)
    x_np = (rng.standard_normal((batch, 3, size, size)) * 50).astype(np.float32)
    t_np = rng.integers(0, n_class, (batch, size, size))
    if impl == "minifcn":
        import minifcn
        import minifcn.functional as F
        from minifcn.models import build

        model = build(variant, n_class=n_class, width=width, pad1=pad1, dropout=dropout)
        x = minifcn.Tensor(x_np)

        def forward():
            model.eval()
            with minifcn.no_grad():
                model(x)

        def train_step():
            model.train()
            model.zero_grad()
            F.softmax_cross_entropy(model(x), t_np).backward()
        return forward, train_step
    import torch

    torch.set_num_threads(threads)
    model = torch_fcn(variant, width, offsets, n_class, pad1, dropout)
    x, t = torch.from_numpy(x_np), torch.from_numpy(t_np)

    def forward():
        model.eval()
        with torch.no_grad():
            model(x)

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), t).backward()
    return forward, train_step


def peak(impl, mode, config):
    """The extra peak RSS of the first pass, in a fresh process (reported in MB)."""
    forward, train_step = setup(impl, **config)
    exact = reset_peak()
    base = _status_kb("VmRSS")
    (forward if mode == "fwd" else train_step)()
    return dict(peak_mb=((_status_kb("VmHWM") if exact else _ru_maxrss_kb()) - base) / 1024,
                exact=exact)


def _ru_maxrss_kb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ----------------------------------------------------------------------------- the parent


def child_argv(request):
    return [os.path.abspath(__file__), "--child", json.dumps(request)]


def measure_peak(impl, config, mode, args, engine=None):
    out = subprocess.run([sys.executable] + child_argv(dict(kind="peak", impl=impl, mode=mode,
                                                            config=config)),
                         capture_output=True, text=True, env=thread_env(args.threads, engine),
                         timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} {config} {mode} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def environment(args):
    import numpy as np

    lines = [f"python {sys.version.split()[0]}, numpy {np.__version__}, threads {args.threads}"]
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        with threadpool_limits(args.threads):
            for info in threadpool_info():
                lines.append("numpy BLAS: " + ", ".join(
                    f"{k}={info.get(k)}" for k in ("internal_api", "version", "architecture",
                                                   "threading_layer", "num_threads")))
    except ImportError:
        lines.append("numpy BLAS: threadpoolctl not installed, cannot tell")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            lines.append(f"note: {var}={os.environ[var]} is set")
    try:
        import torch

        torch.set_num_threads(args.threads)
        lines.append(f"torch {torch.__version__}, torch.get_num_threads() = "
                     f"{torch.get_num_threads()}")
    except ImportError:
        lines.append("torch not installed: minifcn only, no ratios")
    return lines


def check_same_scores(configs):
    """minifcn and the PyTorch twin give the same scores for the same (random) weights, for
    each config's net: its variant, width, classes and conv1_1 padding (one image of at most
    96 x 109 pixels, eval mode; each net once)."""
    import numpy as np
    import torch

    import minifcn
    from minifcn.models import build

    rng = np.random.default_rng(0)
    worst = 0.0
    nets = {(c["variant"], c["width"], c["n_class"], c["pad1"]): c["size"] for c in configs}
    for (variant, width, n_class, pad1), size in nets.items():
        model = build(variant, n_class=n_class, width=width, pad1=pad1).eval()
        for _, p in model.named_parameters():  # random everywhere, score layers included
            fan_in = np.prod(p.shape[1:]) if p.ndim > 1 else 10
            p.data = (rng.standard_normal(p.shape) * np.sqrt(2 / fan_in)).astype(np.float32)
        twin = torch_fcn(variant, width, model.offsets, n_class, pad1).eval()
        twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        size = min(size, 96)
        x = (rng.standard_normal((1, 3, size, size + 13)) * 50).astype(np.float32)
        with minifcn.no_grad():
            ours = model(minifcn.Tensor(x)).numpy()
        with torch.no_grad():
            theirs = twin(torch.from_numpy(x)).numpy()
        if ours.shape != theirs.shape:
            raise AssertionError(f"{variant}: shapes differ {ours.shape} vs {theirs.shape}")
        rel = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
        worst = max(worst, rel)
        if rel > 1e-4:
            raise AssertionError(f"{variant}: minifcn and PyTorch differ, max rel error {rel:.2e}")
    return worst


def worker(request):
    forward, train_step = setup(request["impl"], **request["config"])
    serve({"fwd": forward, "train": train_step})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 0.125 on 96x96 only")
    parser.add_argument("--default-run", action="store_true",
                        help="the default training run's step: width 0.0625, 8x3x96x96, "
                             "5 classes, the training default conv1_1 padding, no dropout")
    parser.add_argument("--width", type=float,
                        help="with --default-run: the channel multiplier (default 0.0625)")
    parser.add_argument("--sizes", help="WIDTHxSIZE,... (default 1x224,1x320,0.125x96)")
    parser.add_argument("--pairs", type=int, default=5,
                        help="alternating timed rounds (0: peak memory only)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--variants", help="default fcn32s,fcn16s,fcn8s (--default-run: fcn8s)")
    parser.add_argument("--before", metavar="TREE", help="also time minifcn imported from TREE")
    parser.add_argument("--no-memory", action="store_true", help="times only")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the models (or models_default_run) block of "
                             "docs/performance.md")
    parser.add_argument("--block", help="the docs block --write-docs replaces (default: models, "
                        "or models_default_run with --default-run)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        request = json.loads(args.child)
        if request["kind"] == "worker":
            return worker(request)
        print(json.dumps(peak(request["impl"], request["mode"], request["config"])))
        return 0

    from minifcn.models import build

    if args.width is not None and not args.default_run:
        parser.error("--width goes with --default-run (the other configurations are fixed)")
    variants = (args.variants or ("fcn8s" if args.default_run else "fcn32s,fcn16s,fcn8s")).split(",")
    if args.default_run:
        from minifcn.models import padding

        configs = [dict(variant=v, width=args.width or 0.0625, size=96, batch=8, n_class=5,
                        pad1=padding.min_pad1(v, 96), dropout=0.0) for v in variants]
    else:  # the reference nets: one image, 21 classes, conv1_1 padding 100, dropout 0.5
        sizes = [(0.125, 96)] if args.quick else [(1.0, 224), (1.0, 320), (0.125, 96)]
        if args.sizes:
            sizes = [tuple(float(v) for v in s.split("x")) for s in args.sizes.split(",")]
        configs = [dict(variant=v, width=width, size=int(size), batch=1, n_class=N_CLASS,
                        pad1=100, dropout=0.5) for width, size in sizes for v in variants]
    load = os.getloadavg()[0]
    print("\n".join(environment(args)))
    impls = {"minifcn": None}
    if args.before:
        impls["before"] = args.before
    try:
        import torch  # noqa: F401
        impls["torch"] = None
        print(f"same scores as PyTorch for the same weights: max rel error "
              f"{check_same_scores(configs):.1e}")
    except ImportError:
        pass
    print(f"median of {args.pairs} alternating rounds after a warm-up; ratio: median of the "
          f"per-round ratios (min-max); peak: extra RSS of one pass in a fresh process\n")
    rows = []
    for config in configs:
        config = dict(config, threads=args.threads)
        config["offsets"] = build(config["variant"], n_class=2, width=1 / 64,
                                  pad1=config["pad1"]).offsets  # geometry only
        times = {}
        if args.pairs:  # --pairs 0: peak memory only
            workers = {name: Worker(child_argv(dict(kind="worker", config=config, impl="torch"
                                                    if name == "torch" else "minifcn")),
                                    args.threads, engine)
                       for name, engine in impls.items()}
            times = {mode: alternate_calls(workers, [mode], args.pairs, warmup=1)
                     for mode in ("fwd", "train")}
            for w in workers.values():
                w.close()
        peaks = {} if args.no_memory else {
            (name, mode): measure_peak("torch" if name == "torch" else "minifcn", config, mode,
                                       args, engine)["peak_mb"]
            for name, engine in impls.items() for mode in ("fwd", "train")}
        shape = f"{config['batch']}x{config['size']}x{config['size']}"
        for name in impls:
            row = [f"{config['variant']} {config['width']:g}", shape, name]
            for mode in ("fwd", "train"):
                row.append(f"{statistics.median(times[mode][name]):.3f}" if times else "-")
            row += [f"{peaks[(name, m)]:.0f}" if peaks else "-" for m in ("fwd", "train")]
            rows.append(row)
        for name in [n for n in impls if n != "minifcn"]:
            row = ["", "", f"minifcn / {name}"]
            row += [fmt_ratio(times[m]["minifcn"], times[m][name]) if times else "-"
                    for m in ("fwd", "train")]
            row += [f"{peaks[('minifcn', m)] / max(peaks[(name, m)], 1):.2f}" if peaks else "-"
                    for m in ("fwd", "train")]
            rows.append(row)
        print("\n".join(" | ".join(r) for r in rows[-len(impls) * 2 + 1:]), flush=True)
    table = markdown_table(["net", "input", "impl", "fwd s", "fwd+bwd s", "fwd MB",
                            "fwd+bwd MB"], rows)
    print(table)
    print(stamp(load))
    if args.write_docs:
        write_docs(args.block or ("models_default_run" if args.default_run else "models"),
                   f"{table}\n\n{stamp(load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
