"""Forward and forward+backward time of the hot ops, minifcn vs PyTorch CPU in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ops.py \
        [--pairs 5] [--threads 2] [--only SUBSTRING] [--before TREE] [--write-docs]

minifcn and PyTorch each run in a worker process of their own (never both in one process:
their thread pools fight on a busy machine) and the parent alternates them, A B A B, --pairs
rounds after a warm-up. Printed: the median times and the median of the per-round ratios
minifcn / PyTorch with its spread (min-max); lower is better, 1.0 = as fast. Before timing,
both workers' outputs are compared. PyTorch is optional (`pip install torch`).

--before TREE: a third worker imports minifcn from TREE (e.g. a `git worktree` of the commit
before a change), alternating with the other two: the before/after columns of a speed-up.
--write-docs replaces the ops block of docs/performance.md (the table and its stamp).
"""
import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np  # noqa: E402
from _common import (Worker, alternate_calls, blas_report, fmt_ratio, markdown_table,  # noqa: E402
                     seeded, serve, stamp, write_docs)

# (name, op, input shape, weight shape, stride, padding)
CASES = [
    ("conv2d 64->64 3x3 p1, 1x64x224x224", "conv", (1, 64, 224, 224), (64, 64, 3, 3), 1, 1),
    ("conv2d 3->64 3x3 p1, 1x3x224x224", "conv", (1, 3, 224, 224), (64, 3, 3, 3), 1, 1),
    # FCN's conv1_1: padding 100 (VGG16 width), and the default training run's (8 images of
    # 96x96, padding 69, width 0.0625): most of the output sees only padding
    ("conv2d 3->64 3x3 p100, 1x3x224x224", "conv", (1, 3, 224, 224), (64, 3, 3, 3), 1, 100),
    ("conv2d 3->4 3x3 p69, 8x3x96x96", "conv", (8, 3, 96, 96), (4, 3, 3, 3), 1, 69),
    ("max_pool2d 2x2 s2 ceil, 1x64x224x224", "pool", (1, 64, 224, 224), None, 2, 0),
    ("conv_transpose2d 21->21 k64 s32, 1x21x10x10", "deconv", (1, 21, 10, 10), (21, 21, 64, 64), 32, 0),
    ("conv_transpose2d 21->21 k4 s2, 1x21x32x32", "deconv", (1, 21, 32, 32), (21, 21, 4, 4), 2, 0),
    # the default training run's conv1_2, conv2_2, conv3_2, fc6 (a 7x7 window over a 2x2
    # output), conv2_1 (more output than input channels), upscore8 and pool1
    ("conv2d 4->4 3x3 p1, 8x4x232x232", "conv", (8, 4, 232, 232), (4, 4, 3, 3), 1, 1),
    ("conv2d 8->8 3x3 p1, 8x8x116x116", "conv", (8, 8, 116, 116), (8, 8, 3, 3), 1, 1),
    ("conv2d 16->16 3x3 p1, 8x16x58x58", "conv", (8, 16, 58, 58), (16, 16, 3, 3), 1, 1),
    ("conv2d 32->256 7x7 p0, 8x32x8x8", "conv", (8, 32, 8, 8), (256, 32, 7, 7), 1, 0),
    ("conv2d 4->8 3x3 p1, 8x4x116x116", "conv", (8, 4, 116, 116), (8, 4, 3, 3), 1, 1),
    ("conv_transpose2d 5->5 k16 s8, 8x5x14x14", "deconv", (8, 5, 14, 14), (5, 5, 16, 16), 8, 0),
    ("max_pool2d 2x2 s2 ceil, 8x4x232x232", "pool", (8, 4, 232, 232), None, 2, 0),
    # SegNet's and U-Net's: batch norm in training (running statistics updated), the weight
    # shape is gamma's; cat joins two feature maps along the channels (the "weight" is the second)
    ("batch_norm train, 8x64x128x128", "bn", (8, 64, 128, 128), (64,), 1, 0),
    ("cat dim 1, 2 x 8x64x128x128", "cat", (8, 64, 128, 128), (8, 64, 128, 128), 1, 0),
    # SegNet's first stage: pool1 keeps its indices, and the last decoder stage unpools with
    # them (the unpooling's input is the pool's output; its gradient flows to the values only)
    ("max_pool2d 2x2 s2 return_indices, 8x64x128x128", "pool_idx", (8, 64, 128, 128), None, 2, 0),
    ("max_unpool2d 2x2 s2, 8x64x64x64 -> 128x128", "unpool", (8, 64, 128, 128), None, 2, 0),
    # DeepLab's score upsampling (bilinear x8 of the stride-8 logits), and the global average
    # pooling of ASPP's image branch / squeeze-and-excitation (the "stride" slot: the size)
    ("interpolate bilinear x8, 8x21x12x12 -> 96x96", "resize", (8, 21, 12, 12), None, 96, 0),
    ("adaptive_avg_pool2d 1, 8x256x12x12", "adaptive", (8, 256, 12, 12), None, 1, 0),
    # attention: SE's gate on a 64-channel map; softmax / log_softmax over the 21 class scores of
    # the default run (the "stride" slot holds dim); the non-local block's two products on a
    # 12x12 map (HW = 144) with C' = 16 (the "weight" is the second operand)
    ("sigmoid, 8x64x48x48", "sigmoid", (8, 64, 48, 48), None, 1, 0),
    # an instance net splits its head's channels: x[:, 1:3] (the "stride" slot: the first)
    ("getitem x[:, 1:3], 8x3x96x96", "getitem", (8, 3, 96, 96), None, 1, 0),
    ("softmax dim 1, 8x21x96x96", "softmax", (8, 21, 96, 96), None, 1, 0),
    ("log_softmax dim 1, 8x21x96x96", "log_softmax", (8, 21, 96, 96), None, 1, 0),
    ("matmul (8,144,16) @ (8,16,144)", "matmul", (8, 144, 16), (8, 16, 144), 1, 0),
    ("matmul (8,144,144) @ (8,144,16)", "matmul", (8, 144, 144), (8, 144, 16), 1, 0),
    # the norms of the discriminative loss (instances.py), at an embedding's size
    ("sqrt, 8x8x96x96", "sqrt", (8, 8, 96, 96), None, 1, 0),
]
# the ops whose second array is a tensor with a gradient of its own
TWO_TENSORS = ("conv", "deconv", "bn", "cat", "matmul")


def inputs(case):
    _, op, xs, ws, stride, pad = CASES[case]
    if op == "unpool":  # the values and indices of a 2x2 pool of the input, as both get them
        return (op, *_pooled(seeded(xs, 0)), stride, pad)
    if op == "sqrt":  # inside its domain
        return op, np.abs(seeded(xs, 0)) + np.float32(0.1), None, stride, pad
    return op, seeded(xs, 0), (seeded(ws, 1) * 0.05 if ws else None), stride, pad


def _pooled(x):
    """2x2 stride-2 max pooling of x (even sizes) and PyTorch's flat indices, in NumPy."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, h // 2, w // 2, 4)
    tap = win.argmax(-1)
    rows, cols = np.arange(h // 2)[:, None] * 2 + tap // 2, np.arange(w // 2) * 2 + tap % 2
    return np.take_along_axis(win, tap[..., None], -1)[..., 0], (rows * w + cols).astype(np.int64)


def minifcn_handlers():
    import minifcn.functional as F
    from minifcn import Tensor

    def run(case, backward):
        op, x, w, stride, pad = prepared(case)
        xt = Tensor(x, requires_grad=backward)
        wt = Tensor(w, requires_grad=backward) if op in TWO_TENSORS else None
        if op == "conv":
            y = F.conv2d(xt, wt, None, stride, pad)
        elif op == "sigmoid":
            y = F.sigmoid(xt)
        elif op == "getitem":
            y = xt[:, stride:stride + 2]
        elif op in ("softmax", "log_softmax"):
            y = getattr(F, op)(xt, stride)
        elif op == "matmul":
            y = F.matmul(xt, wt)
        elif op == "deconv":
            y = F.conv_transpose2d(xt, wt, None, stride, pad)
        elif op == "bn":
            c = x.shape[1]
            y = F.batch_norm(xt, np.zeros(c, np.float32), np.ones(c, np.float32), wt,
                             Tensor(w + 0.1, requires_grad=backward), training=True)
        elif op == "cat":
            y = F.cat([xt, wt], 1)
        elif op == "pool_idx":
            y, _ = F.max_pool2d(xt, 2, stride, pad, return_indices=True)
        elif op == "unpool":
            y = F.max_unpool2d(xt, w, 2, stride, pad)  # w: the pool's indices
        elif op == "resize":
            y = F.interpolate(xt, size=stride, mode="bilinear", align_corners=False)
        elif op == "adaptive":
            y = F.adaptive_avg_pool2d(xt, stride)
        elif op == "sqrt":
            y = F.sqrt(xt)
        else:
            y = F.max_pool2d(xt, 2, stride, pad, ceil_mode=True)
        if backward:
            y.backward(np.ones(y.shape, np.float32))
        return y.data

    return run


def torch_handlers(threads):
    import torch

    torch.set_num_threads(threads)
    tf = torch.nn.functional

    def run(case, backward):
        op, x, w, stride, pad = prepared(case)
        xt = torch.from_numpy(x).requires_grad_(backward)
        wt = torch.from_numpy(w).requires_grad_(backward) if op in TWO_TENSORS else None
        if op == "conv":
            y = tf.conv2d(xt, wt, None, stride, pad)
        elif op == "sigmoid":
            y = torch.sigmoid(xt)
        elif op == "getitem":
            y = xt[:, stride:stride + 2]
        elif op in ("softmax", "log_softmax"):
            y = getattr(tf, op)(xt, stride)
        elif op == "matmul":
            y = torch.matmul(xt, wt)
        elif op == "deconv":
            y = tf.conv_transpose2d(xt, wt, None, stride, pad)
        elif op == "bn":
            c = x.shape[1]
            y = tf.batch_norm(xt, torch.zeros(c), torch.ones(c), wt,
                              torch.from_numpy(w + 0.1).requires_grad_(backward), training=True)
        elif op == "cat":
            y = torch.cat([xt, wt], 1)
        elif op == "pool_idx":
            y, _ = tf.max_pool2d(xt, 2, stride, pad, return_indices=True)
        elif op == "unpool":
            y = tf.max_unpool2d(xt, torch.from_numpy(w), 2, stride, pad)
        elif op == "resize":
            y = tf.interpolate(xt, size=stride, mode="bilinear", align_corners=False)
        elif op == "adaptive":
            y = tf.adaptive_avg_pool2d(xt, stride)
        elif op == "sqrt":
            y = torch.sqrt(xt)
        else:
            y = tf.max_pool2d(xt, 2, stride, pad, ceil_mode=True)
        if backward:
            y.backward(torch.ones_like(y))
        return y.detach().numpy()

    return run


_prepared = {}


def prepared(case):
    if case not in _prepared:
        _prepared.clear()  # one case's arrays at a time
        _prepared[case] = inputs(case)
    return _prepared[case]


def worker(impl, threads):
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass
    run = minifcn_handlers() if impl == "minifcn" else torch_handlers(threads)

    def sample(case):  # a few thousand of the outputs, to compare the workers
        y = run(case, False).ravel()
        return y[:: max(1, y.size // 4096)].tolist()

    def report():
        if impl == "minifcn":
            import minifcn
            return f"minifcn from {os.path.dirname(os.path.dirname(minifcn.__file__))}"
        import torch
        return f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads"

    def timed(case, backward):
        run(case, backward)  # the array stays here: only the time goes back

    serve({"run": timed, "sample": sample, "report": report})


def flops(op, xshape, wshape, yshape):
    """Multiply-adds x 2 of a conv / transposed conv / matmul forward."""
    if op == "conv":
        return 2 * np.prod(yshape) * np.prod(wshape[1:])
    if op == "deconv":
        return 2 * np.prod(xshape) * np.prod(wshape[1:])
    if op == "matmul":
        return 2 * np.prod(xshape) * wshape[-1]
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5, help="alternating rounds (>= 5 for docs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", help="only the cases whose name contains this")
    ap.add_argument("--before", metavar="TREE", help="also time minifcn imported from TREE")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--worker", choices=("minifcn", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads)
    load = os.getloadavg()[0]
    print(blas_report())
    child = [os.path.abspath(__file__), "--threads", str(args.threads), "--worker"]
    workers = {"minifcn": Worker(child + ["minifcn"], args.threads)}
    if args.before:
        workers["before"] = Worker(child + ["minifcn"], args.threads, engine=args.before)
    try:
        if args.no_torch:
            raise ImportError
        import torch  # noqa: F401
        workers["PyTorch"] = Worker(child + ["torch"], args.threads)
    except ImportError:
        print("PyTorch: not installed or --no-torch (no ratios)")
    for name, w in workers.items():
        print(f"{name} worker: {w.call('report')[1]}")
    rows = []
    for case, (name, op, xs, ws, *_) in enumerate(CASES):
        if args.only and args.only not in name:
            continue
        ref = np.asarray(workers["minifcn"].call("sample", case)[1])
        for other, w in workers.items():  # the same numbers, not only the same speed
            got = np.asarray(w.call("sample", case)[1])
            assert np.allclose(got, ref, atol=1e-3, rtol=1e-3), f"{name}: {other} != minifcn"
        for backward in (False, True):
            t = alternate_calls(workers, ["run", case, backward], args.pairs, warmup=1)
            ms = {k: statistics.median(v) * 1e3 for k, v in t.items()}
            yshape = _out_shape(op, xs, ws, CASES[case][4], CASES[case][5])
            fl = flops(op, xs, ws, yshape) * (3 if backward else 1)
            row = [name, "fwd+bwd" if backward else "fwd", f"{ms['minifcn']:.1f}",
                   f"{fl / ms['minifcn'] / 1e6:.0f}" if fl else "-"]
            if "PyTorch" in t:
                row += [f"{ms['PyTorch']:.1f}", fmt_ratio(t["minifcn"], t["PyTorch"])]
            if "before" in t:
                row += [f"{ms['before']:.1f}", fmt_ratio(t["minifcn"], t["before"])]
            rows.append(row)
            print(" | ".join(row), flush=True)
    for w in workers.values():
        w.close()
    head = ["op", "pass", "minifcn ms", "minifcn GFLOP/s"]
    if "PyTorch" in workers:
        head += ["PyTorch ms", "ratio (spread)"]
    if args.before:
        head += ["before ms", "after / before (spread)"]
    table = markdown_table(head, rows)
    print(f"\nmedians of {args.pairs} alternating rounds; ratios: median of the per-round "
          f"ratios (min-max)\n{table}")
    print(stamp(load))
    if args.write_docs:
        write_docs("ops", f"{table}\n\n{stamp(load)}")
    return 0


def _out_shape(op, xs, ws, stride, pad):
    if op in ("sigmoid", "softmax", "log_softmax", "matmul", "getitem"):
        return xs  # (element-wise, or flops counted from the operands)
    n, _, h, w = xs
    if op in ("bn", "cat"):
        return xs  # (no flops counted: both are memory-bound)
    if op in ("pool_idx", "unpool", "resize", "adaptive", "sqrt"):
        return None  # (no flops to count)
    if op == "pool":
        return (n, xs[1], -(-h // 2), -(-w // 2))
    k = ws[2]
    if op == "conv":
        return (n, ws[0], (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1)
    return (n, ws[1], (h - 1) * stride - 2 * pad + k, (w - 1) * stride - 2 * pad + k)


if __name__ == "__main__":
    sys.exit(main())
