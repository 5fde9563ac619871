"""Speed and peak memory of FCN-32s/16s/8s: minifcn against the same nets in PyTorch (CPU).

    python benchmarks/models.py [--quick] [--repeat N] [--threads 2] [--variants fcn8s,...]
    python benchmarks/models.py --default-run     # one step of `python -m minifcn.train`

Configurations: width 1.0 (VGG16) on 1x3x224x224 and 1x3x320x320, width 0.125 on 1x3x96x96
(--quick: width 0.125 only); 21 classes, conv1_1 padding 100. For each: forward (eval mode,
no graph) and forward+backward (train mode with dropout, mean softmax cross-entropy against
random labels, all gradients), the median of --repeat timed runs after one warm-up run.
--default-run: instead, the default training run's net and batch: FCN-8s (or --variants) at
width 0.0625 (or --width) on 8x3x96x96, 5 classes, conv1_1 padding as the training default 'auto' (69
for FCN-8s, 73 for 16s, 81 for 32s), no dropout.

Peak memory: each (implementation, configuration, forward or forward+backward) runs in a fresh
child process, which builds the model, resets the kernel's peak-RSS counter
(/proc/self/clear_refs), and reports the peak RSS of the first run minus the RSS just before
it: the memory the pass itself needed (activations, saved buffers, gradients, scratch), seen
the same way for NumPy and PyTorch (tracemalloc would miss PyTorch's allocator).

PyTorch (if installed) runs the same nets written as the PyTorch port writes them: nn.Conv2d
with padding 100, MaxPool2d(2, 2, ceil_mode=True), in-place ReLU, ConvTranspose2d without
bias, crops by slicing at the offsets minifcn derives. Both get the same thread count (BLAS
via threadpoolctl, torch.set_num_threads). Before timing, the two are checked to give the same
scores for the same weights. Times move from run to run on shared machines: read the ratios.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

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


# ----------------------------------------------------------------------------- one measurement


def child(impl, variant, width, size, batch, n_class, pad1, dropout, mode, repeat, threads,
          offsets):
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
    else:
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

    run = forward if mode == "fwd" else train_step
    exact = reset_peak()
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    peak = (_status_kb("VmHWM") if exact else _ru_maxrss_kb()) - base
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return dict(time=statistics.median(times) if times else first, first=first,
                peak_mb=peak / 1024, exact_peak=exact)


def _ru_maxrss_kb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ----------------------------------------------------------------------------- the parent


def measure(impl, config, mode, args):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINIFCN_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(
        dict(impl=impl, mode=mode, repeat=args.repeat, threads=args.threads, **config))]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 0.125 on 96x96 only")
    parser.add_argument("--default-run", action="store_true",
                        help="the default training run's step: width 0.0625, 8x3x96x96, "
                             "5 classes, the training default conv1_1 padding, no dropout")
    parser.add_argument("--width", type=float,
                        help="with --default-run: the channel multiplier (default 0.0625)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--variants", help="default fcn32s,fcn16s,fcn8s (--default-run: fcn8s)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(**json.loads(args.child))))
        return 0

    from minifcn.models import build

    if args.width is not None and not args.default_run:
        parser.error("--width goes with --default-run (the other configurations are fixed)")
    variants = (args.variants or ("fcn8s" if args.default_run else "fcn32s,fcn16s,fcn8s")).split(",")
    if args.default_run:
        from minifcn.models import geometry

        configs = [dict(variant=v, width=args.width or 0.0625, size=96, batch=8, n_class=5,
                        pad1=geometry.min_pad1(v, 96), dropout=0.0) for v in variants]
    else:  # the reference nets: one image, 21 classes, conv1_1 padding 100, dropout 0.5
        sizes = [(0.125, 96)] if args.quick else [(1.0, 224), (1.0, 320), (0.125, 96)]
        configs = [dict(variant=v, width=width, size=size, batch=1, n_class=N_CLASS, pad1=100,
                        dropout=0.5) for width, size in sizes for v in variants]
    print("\n".join(environment(args)))
    try:
        import torch  # noqa: F401
        impls = ["minifcn", "torch"]
        print(f"same scores as PyTorch for the same weights: max rel error "
              f"{check_same_scores(configs):.1e}")
    except ImportError:
        impls = ["minifcn"]
    print(f"median of {args.repeat} runs after a warm-up; peak = extra RSS of one pass\n")
    head = (f"{'model':<8} {'width':>6} {'input':>9}  {'impl':<8} {'fwd s':>8} "
            f"{'fwd+bwd s':>10} {'fwd MB':>8} {'fwd+bwd MB':>11}")
    print(head)
    print("-" * len(head))
    for config in configs:
        variant, width, size = config["variant"], config["width"], config["size"]
        config["offsets"] = build(variant, n_class=2, width=1 / 64,
                                  pad1=config["pad1"]).offsets  # geometry only
        res = {}
        for impl in impls:
            res[impl] = {mode: measure(impl, config, mode, args) for mode in ("fwd", "train")}
            r = res[impl]
            shape = f"{config['batch']}x{size}x{size}"
            print(f"{variant:<8} {width:>6g} {shape:>9}  {impl:<8} "
                  f"{r['fwd']['time']:>8.3f} {r['train']['time']:>10.3f} "
                  f"{r['fwd']['peak_mb']:>8.0f} {r['train']['peak_mb']:>11.0f}", flush=True)
        if len(impls) == 2:
            a, b = res["minifcn"], res["torch"]
            print(f"{'':<8} {'':>6} {'':>9}  {'ratio':<8} "
                  f"{a['fwd']['time'] / b['fwd']['time']:>8.2f} "
                  f"{a['train']['time'] / b['train']['time']:>10.2f} "
                  f"{a['fwd']['peak_mb'] / max(b['fwd']['peak_mb'], 1):>8.2f} "
                  f"{a['train']['peak_mb'] / max(b['train']['peak_mb'], 1):>11.2f}", flush=True)
    if not all(r[m]["exact_peak"] for r in res.values() for m in r):
        print("note: /proc/self/clear_refs not writable: peaks from ru_maxrss include the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
