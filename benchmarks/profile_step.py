"""Where one training step of the default run goes, layer by layer, minifcn beside PyTorch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/profile_step.py \
        [--steps 5] [--pairs 7] [--threads 2] [--width 0.0625] [--write-docs]

The default run's step (``python -m minifcn.train`` with no options: FCN-8s, width 0.0625,
batch 8 of 3x96x96 ``shapes`` images, 5 classes, conv1_1 padding 69, no dropout, Caffe's SGD
with the reference groups) split into each layer's forward and backward, the loss, zeroing the
gradients, the optimiser step, data loading (``minifcn.data.Loader``) and the rest (the
model's Python, the autograd walk: sorting the graph, summing and copying gradients).

Each implementation runs in a worker process of its own (benchmarks/_common.py says why) and
the parent alternates them. How minifcn is timed: the script wraps, in this process only, ``Function.apply`` (a forward,
charged to the layer whose ``forward`` is running) and each recorded Function's ``backward``;
nothing in minifcn carries timers. PyTorch (the twin of benchmarks/models.py, same weights'
shapes) is profiled by ``torch.profiler``: each layer's forward is a ``record_function``
range, and each backward node is charged to the layer whose forward op has its sequence number.

First, without any instrumentation, whole steps of the two alternate (A B A B, --pairs rounds)
and the median ratio and its spread are printed: a training step (data, forward, loss, backward,
optimiser) and forward+backward alone (the targets' measurement). Then --steps profiled steps,
alternating, give the per-layer table (medians). Profiling slows both a little, PyTorch's more.
"""
import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # run from a checkout without installing
import numpy as np  # noqa: E402
from _common import (Worker, alternate_calls, blas_report, fmt_ratio, markdown_table,  # noqa: E402
                     serve, stamp, write_docs)

import minifcn.functional as F  # noqa: E402
from minifcn import optim  # noqa: E402
from minifcn.autograd import Function, Tensor  # noqa: E402
from minifcn.data import Loader, get_dataset  # noqa: E402
from minifcn.models import build, padding, vgg  # noqa: E402
from minifcn.training.step import train_step  # noqa: E402

IGNORE = 255


def batches(width_size, batch, seed=0):
    """Endless training batches of the default run's data: shapes, flips, shuffled."""
    data = get_dataset("shapes", "train", n=2000, size=width_size, seed=0)
    loader = Loader(data, batch, shuffle=True, seed=seed, flip=True)
    e = 0
    while True:
        yield from loader.epoch(e)
        e += 1


def minifcn_setup(args, pad1):
    model = build("fcn8s", n_class=5, width=args.width, pad1=pad1, dropout=0.0)
    groups = optim.param_groups(model, lr_mults={
        "conv1_1.weight": optim.first_layer_lr_mult(vgg.PIXEL_STD)})
    return model, optim.SGD(groups, lr=args.lr, momentum=0.9, weight_decay=5e-4)


def torch_setup(torch, args, pad1, offsets):
    from models import torch_fcn

    model = torch_fcn("fcn8s", args.width, offsets, n_class=5, pad1=pad1, dropout=0.0)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if n.endswith("weight") and n != "conv1_1.weight"]},
              {"params": [p for n, p in named if n.endswith("bias")], "lr": 2 * args.lr,
               "weight_decay": 0.0},
              {"params": [model.conv1_1.weight], "lr": args.lr / vgg.PIXEL_STD ** 2}]
    return model, torch.optim.SGD(groups, lr=args.lr, momentum=0.9, weight_decay=5e-4)


# ----------------------------------------------------------------------------- minifcn's timers


class Recorder:
    """Per-label seconds of the Functions' forwards and backwards and the modules' forwards."""

    def __init__(self):
        self.label = None
        self.fwd, self.bwd, self.module = defaultdict(float), defaultdict(float), defaultdict(float)

    def reset(self):
        self.fwd.clear(), self.bwd.clear(), self.module.clear()


def instrument(model, rec):
    """Wrap Function.apply and every sub-module's forward (this process only)."""
    plain_apply = Function.apply.__func__

    def timed_apply(cls, *inputs, **options):
        label = rec.label or f"({cls.__name__}, outside any layer)"
        t0 = time.perf_counter()
        out = plain_apply(cls, *inputs, **options)
        rec.fwd[label] += time.perf_counter() - t0
        fn = out._fn
        if fn is not None:
            plain_backward = fn.backward

            def timed_backward(g):
                t0 = time.perf_counter()
                result = plain_backward(g)
                rec.bwd[label] += time.perf_counter() - t0
                fn.__dict__.pop("backward", None)  # break the fn -> wrapper -> fn cycle
                return result

            fn.backward = timed_backward
        return out

    Function.apply = classmethod(timed_apply)
    for name, m in model.named_modules():
        if name:
            m.forward = _labelled(rec, name, m.forward)


def _labelled(rec, name, forward):
    def run(*args, **kwargs):
        previous, rec.label = rec.label, name
        t0 = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            rec.module[name] += time.perf_counter() - t0
            rec.label = previous
    return run


def minifcn_profiled_step(model, opt, data, rec):
    """One step as training.step.train_step does it, each phase timed."""
    phases = {}
    t = [time.perf_counter()]

    def mark(name):
        t.append(time.perf_counter())
        phases[name] = t[-1] - t[-2]

    x, y = next(data)
    mark("data")
    scores = model(Tensor(x))
    mark("forward")
    rec.label = "loss"
    loss = F.softmax_cross_entropy(scores, y)
    loss.item()
    rec.label = None
    mark("loss fwd")
    opt.zero_grad()
    mark("zero_grad")
    loss.backward()
    mark("backward")
    opt.step()
    mark("optimiser")
    layers = {name: (t, rec.bwd.get(name, 0.0)) for name, t in rec.module.items()}
    layers["loss"] = (phases.pop("loss fwd"), rec.bwd.get("loss", 0.0))
    phases["forward: Python outside the layers"] = phases.pop("forward") - sum(rec.module.values())
    phases["autograd walk"] = phases.pop("backward") - sum(rec.bwd.values())
    return layers, phases


# ----------------------------------------------------------------------------- PyTorch's profile


def torch_labels(torch, model):
    """Forward hooks opening a record_function range per layer, named as minifcn's layers
    (the twin shares one ReLU and one pool module: they are named after the conv before)."""
    state = {"last": None, "open": []}

    def name_of(mod_name):
        last = state["last"] or ""
        if mod_name == "relu":
            return "relu" + last[4:] if last.startswith("conv") else "relu" + last[2:]
        if mod_name == "pool":
            return "pool" + last[4]
        if mod_name == "drop":
            return "drop" + last[2:]
        state["last"] = mod_name
        return mod_name

    def pre(mod_name):
        def hook(module, inputs):
            rf = torch.autograd.profiler.record_function("L:" + name_of(mod_name))
            rf.__enter__()
            state["open"].append(rf)
        return hook

    def post(module, inputs, output):
        state["open"].pop().__exit__(None, None, None)

    for mod_name, m in model.named_children():
        m.register_forward_pre_hook(pre(mod_name))
        m.register_forward_hook(post)
    return state


def torch_profiled_step(torch, model, opt, data, state):
    from torch.profiler import ProfilerActivity, profile, record_function

    phases = {}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        x, y = next(data)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        phases["data"] = time.perf_counter() - t0
        state["last"] = None
        with record_function("P:forward"):
            scores = model(x)
        with record_function("L:loss"):
            loss = torch.nn.functional.cross_entropy(scores, y, ignore_index=IGNORE)
            loss.item()
        with record_function("P:zero_grad"):
            opt.zero_grad(set_to_none=True)
        with record_function("P:backward"):
            loss.backward()
        with record_function("P:optimiser"):
            opt.step()
    fwd, bwd, seq_label = defaultdict(float), defaultdict(float), {}
    events = prof.events()
    for e in events:
        if e.name.startswith(("L:", "P:")):
            fwd[e.name] += e.time_range.elapsed_us() / 1e6
    for e in events:  # the forward ops of each labelled range
        parent = e.cpu_parent
        if e.sequence_nr >= 0 and parent is not None and parent.name.startswith("L:"):
            seq_label.setdefault(e.sequence_nr, parent.name)
    crop_sum = "(crops, sums: inline in the twin's forward)"
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function:") and "AccumulateGrad" not in e.name:
            bwd[seq_label.get(e.sequence_nr, crop_sum)] += e.time_range.elapsed_us() / 1e6
    inner = sum(v for k, v in fwd.items() if k.startswith("L:") and k != "L:loss")
    layers = {k[2:]: (v, bwd.pop(k, 0.0)) for k, v in fwd.items() if k.startswith("L:")}
    layers[crop_sum] = (fwd["P:forward"] - inner, bwd.pop(crop_sum, 0.0))
    walk = fwd["P:backward"] - sum(b for _, b in layers.values())
    phases.update({"zero_grad": fwd["P:zero_grad"], "optimiser": fwd["P:optimiser"],
                   "autograd walk": walk})
    return layers, phases


# ----------------------------------------------------------------------------- the workers


def worker(impl, args):
    """Build the net, its optimiser and data in this process and serve step / fwd_bwd /
    profile (the last instruments the process for good: call it after the others)."""
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass
    pad1 = padding.min_pad1("fcn8s", args.size)
    model, opt = minifcn_setup(args, pad1)
    data = batches(args.size, args.batch)
    x0, y0 = next(batches(args.size, args.batch, seed=1))
    if impl == "minifcn":
        rec, instrumented = Recorder(), []

        def profile():
            if not instrumented:
                instrument(model, rec)
                instrumented.append(True)
            rec.reset()
            return minifcn_profiled_step(model, opt, data, rec)

        def fwd_bwd():
            model.zero_grad()
            F.softmax_cross_entropy(model(Tensor(x0)), y0).backward()

        def step():
            train_step(model, opt, *next(data))

        serve({"step": step,
               "fwd_bwd": fwd_bwd, "profile": profile})
        return
    import torch

    torch.set_num_threads(args.threads)
    tmodel, topt = torch_setup(torch, args, pad1, model.offsets)
    del model, opt
    ce = torch.nn.functional.cross_entropy
    state = {}

    def step():
        x, y = next(data)
        loss = ce(tmodel(torch.from_numpy(x)), torch.from_numpy(y), ignore_index=IGNORE)
        loss.item()
        topt.zero_grad(set_to_none=True)
        loss.backward()
        topt.step()

    def fwd_bwd():
        tmodel.zero_grad(set_to_none=True)
        ce(tmodel(torch.from_numpy(x0)), torch.from_numpy(y0), ignore_index=IGNORE).backward()

    def profile():
        if not state:
            state.update(torch_labels(torch, tmodel))
        return torch_profiled_step(torch, tmodel, topt, data, state)

    serve({"step": step, "fwd_bwd": fwd_bwd, "profile": profile,
           "report": lambda: f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"})


# ----------------------------------------------------------------------------- the tables

CROPS = "(crops, sums: inline in the twin's forward)"
PHASES = ["forward: Python outside the layers", "autograd walk", "zero_grad", "optimiser", "data"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="profiled steps of each (median)")
    ap.add_argument("--pairs", type=int, default=7, help="uninstrumented A B rounds (>= 5)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--width", type=float, default=0.0625)
    ap.add_argument("--size", type=int, default=96, help="image side (the default run's 96)")
    ap.add_argument("--batch", type=int, default=8, help="images per step (the default run's 8)")
    ap.add_argument("--lr", type=float, default=0.08,
                    help="SGD's rate (the default run's 0.08; width 1 diverges there: 0.001)")
    ap.add_argument("--block", default="profile_step",
                    help="the docs/performance.md block --write-docs replaces")
    ap.add_argument("--no-torch", action="store_true", help="minifcn only")
    ap.add_argument("--before", metavar="TREE", help="also profile minifcn imported from TREE")
    ap.add_argument("--write-docs", action="store_true",
                    help="replace the profile_step block of docs/performance.md")
    ap.add_argument("--worker", choices=("minifcn", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args)
    load = os.getloadavg()[0]
    print(blas_report())
    child = [os.path.abspath(__file__), "--threads", str(args.threads), "--width", str(args.width),
             "--size", str(args.size), "--batch", str(args.batch), "--lr", str(args.lr)]
    workers = {"minifcn": Worker(child + ["--worker", "minifcn"], args.threads)}
    if args.before:
        workers["before"] = Worker(child + ["--worker", "minifcn"], args.threads, args.before)
    if not args.no_torch:
        try:
            import torch  # noqa: F401  (only to know whether the worker can run)
            workers["PyTorch"] = Worker(child + ["--worker", "torch"], args.threads)
            print(workers["PyTorch"].call("report")[1])
        except ImportError:
            print("PyTorch: not installed (minifcn only, no ratios)")
    rows = []
    for call, what in (("step", "training step: data, forward, loss, backward, SGD"),
                       ("fwd_bwd", "forward+backward of one batch")):
        times = alternate_calls(workers, [call], args.pairs, warmup=2)
        a, b, old = times["minifcn"], times.get("PyTorch"), times.get("before")
        rows.append([what, f"{statistics.median(a) * 1e3:.0f}",
                     f"{statistics.median(b) * 1e3:.0f}" if b else "-",
                     fmt_ratio(a, b) if b else "-"]
                    + ([f"{statistics.median(old) * 1e3:.0f}", fmt_ratio(a, old)] if old else []))
    total_table = markdown_table(["measurement (uninstrumented)", "minifcn ms", "PyTorch ms",
                                  "ratio (spread)"]
                                 + (["before ms", "after / before"] if args.before else []), rows)
    print(f"\n{args.pairs} alternating rounds after 2 warm-ups, medians; ratio: median of the "
          f"per-round ratios (min-max):")
    print(total_table)

    profiles = {name: [] for name in workers}
    for _ in range(args.steps):
        for name, w in workers.items():
            profiles[name].append(w.call("profile")[1])
    for w in workers.values():
        w.close()

    def med(name, pick):
        values = [pick(*p) for p in profiles.get(name, [])]
        return f"{statistics.median(values) * 1e3:.1f}" if values else "-"

    ours = profiles["minifcn"][0][0]
    impls = ["minifcn", "PyTorch"] + (["before"] if args.before else [])
    rows = []
    for layer in list(ours) + ([CROPS] if "PyTorch" in workers else []):
        cells = [med(name, lambda lay, ph, i=i: lay.get(layer, (0.0, 0.0))[i])
                 for name in impls for i in (0, 1)]
        if all(c in ("-", "0.0") for c in cells):
            continue  # dropout 0: no op at all
        rows.append([layer] + cells)
    for phase in PHASES:
        where = 1 if phase == "autograd walk" else 0
        cells = [med(name, lambda lay, ph: ph.get(phase, 0.0)) for name in impls]
        rows.append([phase] + [c for cell in cells for c in
                               ((cell, "") if where == 0 else ("", cell))])
    total = [med(name, lambda lay, ph: sum(f + b for f, b in lay.values()) + sum(ph.values()))
             for name in impls]
    rows.append(["whole step, profiled"] + [c for cell in total for c in (cell, "")])
    prof_table = markdown_table(["layer / phase"] + [f"{name} {d} ms" for name in impls
                                                     for d in ("fwd", "bwd")], rows)
    print(f"\nprofiled: median of {args.steps} alternating steps")
    print(prof_table)
    print(stamp(load))
    if args.write_docs:
        write_docs(args.block, f"{total_table}\n\n{prof_table}\n\n{stamp(load)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
