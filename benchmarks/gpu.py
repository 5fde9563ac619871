"""FCN-8s on the GPU: minifcn (CuPy + its CUDA kernels + cuBLAS) vs PyTorch (cuDNN), same run.

    python benchmarks/gpu.py                              # width 1.0, 1x3x500x500 (the paper's)
    python benchmarks/gpu.py --width 0.0625 --size 96     # a quick smoke run

Prints two markdown tables:
1. forward (eval, no graph) and forward+backward (train, summed loss) times of FCN-8s, median
   of --repeat runs after --warmup, minifcn vs PyTorch with the same weights on the same GPU,
   and their ratio (minifcn / PyTorch: lower is better, 1.0 = as fast);
2. each CUDA kernel of minifcn (the GPU twins of minifcn.primitives) replayed alone on the
   sizes one forward+backward pass used: calls, total time and its share of the pass (the rest
   is cuBLAS GEMMs and CuPy's element-wise ops).
float32 throughout; TF32 is switched off in PyTorch (CuPy does not use it by default), so both
sides do full float32 arithmetic. Needs CuPy and a CUDA device; PyTorch is optional.
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from _common import markdown_table, torch_or_none  # noqa: E402

import minifcn  # noqa: E402
import minifcn.functional as F  # noqa: E402
from minifcn import Tensor, backend  # noqa: E402
from minifcn.gpu import cuda  # noqa: E402
from minifcn.models import fcn8s  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=float, default=1.0, help="channel width (1.0 = VGG16)")
    p.add_argument("--size", type=int, default=500, help="input height and width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--n-class", type=int, default=21)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    return p.parse_args(argv)


# ---------------------------------------------------------------- timing


def gpu_median_ms(fn, repeat, warmup, event, elapsed_ms):
    """Median time of fn() in milliseconds, measured with CUDA events on the GPU's clock."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, end = event(), event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(elapsed_ms(start, end))
    return statistics.median(times)


def cupy_timer(cp, repeat, warmup):
    return lambda fn: gpu_median_ms(fn, repeat, warmup, cp.cuda.Event, cp.cuda.get_elapsed_time)


def torch_timer(torch, repeat, warmup):
    return lambda fn: gpu_median_ms(fn, repeat, warmup,
                                    lambda: torch.cuda.Event(enable_timing=True),
                                    lambda a, b: a.elapsed_time(b))


# ---------------------------------------------------------------- minifcn


def minifcn_passes(model, x, target):
    """(forward, forward+backward) closures for the minifcn model on the GPU."""
    def forward():
        model.eval()
        with minifcn.no_grad():
            return model(x)

    def forward_backward():
        model.train()
        model.zero_grad()
        loss = F.softmax_cross_entropy(model(x), target, 255, "sum")
        loss.backward()
        return loss

    return forward, forward_backward


# ---------------------------------------------------------------- per-kernel replay

KERNELS = ["im2col", "col2im", "maxpool_forward", "maxpool_backward",
           "softmax_cross_entropy_forward", "softmax_cross_entropy_backward"]


class Spec:
    """An array argument seen during the recorded pass: only its shape and dtype are kept."""

    def __init__(self, a):
        self.shape, self.dtype = tuple(a.shape), a.dtype

    def __eq__(self, other):
        return isinstance(other, Spec) and (self.shape, self.dtype) == (other.shape, other.dtype)

    def __hash__(self):
        return hash((self.shape, str(self.dtype)))


def record_kernel_calls(cp, run):
    """Run ``run()`` once with every minifcn.gpu.cuda kernel wrapped; return {(op, args): count},
    arrays in args replaced by Specs."""
    calls = {}
    originals = {name: getattr(cuda, name) for name in KERNELS}

    def recorder(name):
        def wrapped(*args):
            key = (name, tuple(Spec(a) if isinstance(a, cp.ndarray) else
                               (Spec(np.asarray(a)) if isinstance(a, np.ndarray) else a)
                               for a in args))
            calls[key] = calls.get(key, 0) + 1
            return originals[name](*args)
        return wrapped

    try:
        for name in KERNELS:
            setattr(cuda, name, recorder(name))
        run()
    finally:
        for name, fn in originals.items():
            setattr(cuda, name, fn)
    return calls


def replay_inputs(cp, op, args):
    """Fresh arrays of the recorded shapes, with values the kernel accepts."""
    out = list(args)
    for i, a in enumerate(args):
        if not isinstance(a, Spec):
            continue
        if a.dtype.kind == "f":
            out[i] = cp.random.standard_normal(a.shape, dtype=a.dtype)
        elif op == "maxpool_backward":  # argmax: an offset inside a kh x kw window
            kh, kw = args[4], args[5]
            out[i] = cp.random.randint(0, kh * kw, size=a.shape, dtype=a.dtype)
        else:  # a softmax target: class indices of the logits' C classes
            out[i] = cp.random.randint(0, args[0].shape[1], size=a.shape, dtype=a.dtype)
    return out


def kernel_table(cp, calls, timer, pass_ms):
    per_op = {}
    for (op, args), count in calls.items():
        inputs = replay_inputs(cp, op, args)
        fn = getattr(cuda, op)
        ms = timer(lambda: fn(*inputs))
        n, total = per_op.get(op, (0, 0.0))
        per_op[op] = (n + count, total + count * ms)
    rows = [[op, n, f"{ms:.3f}", f"{100 * ms / pass_ms:.1f}%"]
            for op, (n, ms) in sorted(per_op.items(), key=lambda kv: -kv[1][1])]
    kernels_ms = sum(ms for _, ms in per_op.values())
    rows.append(["all kernels", sum(n for n, _ in per_op.values()), f"{kernels_ms:.3f}",
                 f"{100 * kernels_ms / pass_ms:.1f}%"])
    return markdown_table(["kernel (per forward+backward)", "calls", "ms", "share"], rows)


# ---------------------------------------------------------------- PyTorch reference


def torch_fcn8s(torch, model):
    """The same FCN-8s in PyTorch (cuDNN), built from the minifcn model's layer sizes, crop
    offsets and weights, so that both compute the same function."""
    nn = torch.nn
    state = model.state_dict()
    cfg, offsets = model.config, model.offsets

    def conv(name, padding=0):
        w = state[f"{name}.weight"]
        layer = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding=padding)
        layer.weight.data.copy_(torch.from_numpy(w))
        layer.bias.data.copy_(torch.from_numpy(state[f"{name}.bias"]))
        return layer

    def upscore(name, stride):
        w = state[f"{name}.weight"]
        layer = nn.ConvTranspose2d(w.shape[0], w.shape[1], tuple(w.shape[2:]), stride=stride,
                                   bias=False)
        layer.weight.data.copy_(torch.from_numpy(w))
        layer.weight.requires_grad_(getattr(model, name).weight.requires_grad)
        return layer

    class FCN8s(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]
            self.blocks = nn.ModuleList()
            for b, n in blocks:
                layers = []
                for i in range(1, n + 1):
                    pad = cfg["pad1"] if (b, i) == (1, 1) else 1
                    layers += [conv(f"conv{b}_{i}", pad), nn.ReLU(inplace=True)]
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                self.blocks.append(nn.Sequential(*layers))
            drop = cfg["dropout"]
            self.fc = nn.Sequential(conv("fc6"), nn.ReLU(inplace=True), nn.Dropout(drop),
                                    conv("fc7"), nn.ReLU(inplace=True), nn.Dropout(drop))
            self.score_fr = conv("score_fr")
            self.score_pool4 = conv("score_pool4")
            self.score_pool3 = conv("score_pool3")
            self.upscore2 = upscore("upscore2", 2)
            self.upscore_pool4 = upscore("upscore_pool4", 2)
            self.upscore8 = upscore("upscore8", 8)

        def forward(self, x):
            h = x
            for i, block in enumerate(self.blocks):
                h = block(h)
                if i == 2:
                    pool3 = h
                elif i == 3:
                    pool4 = h
            h = self.score_fr(self.fc(h))
            up2 = self.upscore2(h)
            o = offsets["score_pool4c"]
            h = self.score_pool4(pool4)[:, :, o:o + up2.shape[2], o:o + up2.shape[3]] + up2
            up4 = self.upscore_pool4(h)
            o = offsets["score_pool3c"]
            h = self.score_pool3(pool3)[:, :, o:o + up4.shape[2], o:o + up4.shape[3]] + up4
            h = self.upscore8(h)
            o = offsets["score"]
            return h[:, :, o:o + x.shape[2], o:o + x.shape[3]].contiguous()

    return FCN8s()


def torch_passes(torch, net, x, target):
    def forward():
        net.eval()
        with torch.no_grad():
            return net(x)

    def forward_backward():
        net.train()
        net.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(x), target, ignore_index=255,
                                                 reduction="sum")
        loss.backward()
        return loss

    return forward, forward_backward


# ---------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    cp = backend.cupy_or_none()
    if cp is None:
        sys.exit("benchmarks/gpu.py: needs CuPy and a CUDA device (pip install -e \".[cuda12]\" "
                 "or \".[cuda13]\" on a machine with an NVIDIA GPU)")
    timer = cupy_timer(cp, args.repeat, args.warmup)
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    shape = (args.batch, 3, args.size, args.size)
    print(f"# FCN-8s width {args.width}, input {'x'.join(map(str, shape))}, "
          f"{args.n_class} classes, float32")
    print(f"GPU: {name}; CuPy {cp.__version__}, CUDA runtime "
          f"{cp.cuda.runtime.runtimeGetVersion()}")

    minifcn.manual_seed(0)
    model = fcn8s(n_class=args.n_class, width=args.width)
    rng = np.random.default_rng(0)
    # score layers start at zero; random ones make the backward pass do real work everywhere
    for layer in (model.score_fr, model.score_pool4, model.score_pool3):
        layer.weight.data = (0.01 * rng.standard_normal(layer.weight.shape)).astype(np.float32)
    x_np = (50 * rng.standard_normal(shape)).astype(np.float32)
    t_np = rng.integers(0, args.n_class, size=(args.batch, args.size, args.size))
    t_np[:, : args.size // 10] = 255  # some ignored pixels, as in VOC's borders
    torch_state = model.state_dict()  # taken before the move: the PyTorch copy starts equal
    model.to("cuda")
    x, target = Tensor(cp.asarray(x_np)), cp.asarray(t_np)
    forward, forward_backward = minifcn_passes(model, x, target)

    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    forward()  # first call: NVRTC compiles the kernels (cached on disk for later runs)
    end.record()
    end.synchronize()
    first_ms = cp.cuda.get_elapsed_time(start, end)
    ours = {"forward": timer(forward), "forward+backward": timer(forward_backward)}
    print(f"minifcn first forward (includes kernel compilation unless cached): {first_ms:.1f} ms")

    theirs = {}
    torch = None if args.no_torch else torch_or_none()
    if torch is not None and not torch.cuda.is_available():
        print("PyTorch has no CUDA here: no reference column")
        torch = None
    if torch is not None:
        cp.get_default_memory_pool().free_all_blocks()
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        print(f"PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()} "
              "(benchmark mode, TF32 off)")
        model_cpu = fcn8s(n_class=args.n_class, width=args.width)
        model_cpu.load_state_dict(torch_state)
        net = torch_fcn8s(torch, model_cpu).cuda()
        tx = torch.from_numpy(x_np).cuda()
        tt = torch.from_numpy(t_np).cuda()
        t_forward, t_forward_backward = torch_passes(torch, net, tx, tt)
        # same weights, same input: the scores must agree (else the comparison means nothing)
        ours_y = cp.asnumpy(forward().data)
        theirs_y = t_forward().cpu().numpy()
        rel = np.abs(ours_y - theirs_y).max() / max(np.abs(theirs_y).max(), 1e-30)
        print(f"scores minifcn vs PyTorch: max |diff| / max |score| = {rel:.2e}")
        ttimer = torch_timer(torch, args.repeat, args.warmup)
        theirs = {"forward": ttimer(t_forward), "forward+backward": ttimer(t_forward_backward)}
        del net, tx, tt
        torch.cuda.empty_cache()

    rows = []
    for what, ms in ours.items():
        ref = theirs.get(what)
        rows.append([what, f"{ms:.2f}", f"{ref:.2f}" if ref else "-",
                     f"{ms / ref:.2f}" if ref else "-"])
    print()
    print(markdown_table(["FCN-8s pass", "minifcn ms", "PyTorch ms", "ratio"], rows))

    calls = record_kernel_calls(cp, forward_backward)
    print()
    print(kernel_table(cp, calls, timer, ours["forward+backward"]))


if __name__ == "__main__":
    main()
