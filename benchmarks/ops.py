"""Forward and forward+backward time of the hot ops, minifcn vs PyTorch CPU in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ops.py [--repeat 5]

Prints a markdown table; the ratio column is minifcn time / PyTorch time (lower is better,
1.0 = as fast). PyTorch is optional (`pip install torch`); without it the ratio is '-'.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
from _common import best_time, blas_report, markdown_table, seeded, torch_or_none  # noqa: E402

import minifcn.functional as F  # noqa: E402
from minifcn import Tensor  # noqa: E402

# (name, op, input shape, weight shape, stride, padding)
CASES = [
    ("conv2d 64->64 3x3 p1", "conv", (1, 64, 224, 224), (64, 64, 3, 3), 1, 1),
    ("conv2d 3->64 3x3 p1", "conv", (1, 3, 224, 224), (64, 3, 3, 3), 1, 1),
    # FCN's conv1_1: padding 100 (VGG16 width), and the default training run's (8 images of
    # 96x96, padding 69, width 0.0625): most of the output sees only padding
    ("conv2d 3->64 3x3 p100", "conv", (1, 3, 224, 224), (64, 3, 3, 3), 1, 100),
    ("conv2d 3->4 3x3 p69, 8x96x96", "conv", (8, 3, 96, 96), (4, 3, 3, 3), 1, 69),
    ("max_pool2d 2x2 s2 ceil", "pool", (1, 64, 224, 224), None, 2, 0),
    ("conv_transpose2d 21->21 k64 s32", "deconv", (1, 21, 10, 10), (21, 21, 64, 64), 32, 0),
    ("conv_transpose2d 21->21 k4 s2", "deconv", (1, 21, 32, 32), (21, 21, 4, 4), 2, 0),
    # the default training run's fc6 (a 7x7 window over a 2x2 output), conv2_1 (more output
    # than input channels) and upscore8 (8 images, width 0.0625, 5 classes)
    ("conv2d 32->256 7x7 p0, 8x8x8", "conv", (8, 32, 8, 8), (256, 32, 7, 7), 1, 0),
    ("conv2d 4->8 3x3 p1, 8x116x116", "conv", (8, 4, 116, 116), (8, 4, 3, 3), 1, 1),
    ("conv_transpose2d 5->5 k16 s8, 8x14x14", "deconv", (8, 5, 14, 14), (5, 5, 16, 16), 8, 0),
    ("max_pool2d 2x2 s2 ceil, 8x4x232x232", "pool", (8, 4, 232, 232), None, 2, 0),
]


def flops(op, xshape, wshape, yshape):
    """Multiply-adds x 2 of a conv / transposed conv forward."""
    if op == "conv":
        return 2 * np.prod(yshape) * np.prod(wshape[1:])
    if op == "deconv":
        return 2 * np.prod(xshape) * np.prod(wshape[1:])
    return 0


def run_minifcn(op, x, w, stride, pad, backward):
    xt = Tensor(x, requires_grad=backward)
    wt = Tensor(w, requires_grad=backward) if w is not None else None
    if op == "conv":
        y = F.conv2d(xt, wt, None, stride, pad)
    elif op == "deconv":
        y = F.conv_transpose2d(xt, wt, None, stride, pad)
    else:
        y = F.max_pool2d(xt, 2, stride, pad, ceil_mode=True)
    if backward:
        y.backward(np.ones(y.shape, np.float32))
    return y


def run_torch(torch, op, x, w, stride, pad, backward):
    tf = torch.nn.functional
    xt = torch.from_numpy(x).requires_grad_(backward)
    wt = torch.from_numpy(w).requires_grad_(backward) if w is not None else None
    if op == "conv":
        y = tf.conv2d(xt, wt, None, stride, pad)
    elif op == "deconv":
        y = tf.conv_transpose2d(xt, wt, None, stride, pad)
    else:
        y = tf.max_pool2d(xt, 2, stride, pad, ceil_mode=True)
    if backward:
        y.backward(torch.ones_like(y))
    return y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    torch = torch_or_none(args.threads)
    print(blas_report())
    print(f"PyTorch: {torch.__version__ + f', {torch.get_num_threads()} threads' if torch else 'not installed'}")
    rows = []
    for name, op, xs, ws, stride, pad in CASES:
        x = seeded(xs, 0)
        w = seeded(ws, 1) * 0.05 if ws else None
        y = run_minifcn(op, x, w, stride, pad, False)
        if torch is not None:  # same numbers, not only the same speed
            ref = run_torch(torch, op, x, w, stride, pad, False).detach().numpy()
            assert np.allclose(y.data, ref, atol=1e-3, rtol=1e-3), f"{name}: minifcn != PyTorch"
        for backward in (False, True):
            t = best_time(lambda: run_minifcn(op, x, w, stride, pad, backward), args.repeat)
            tt = best_time(lambda: run_torch(torch, op, x, w, stride, pad, backward),
                           args.repeat) if torch else None
            fl = flops(op, xs, ws, y.shape) * (3 if backward else 1)
            rows.append([name, "fwd+bwd" if backward else "fwd", f"{t * 1e3:.1f}",
                         f"{fl / t / 1e9:.0f}" if fl else "-",
                         f"{tt * 1e3:.1f}" if tt else "-", f"{t / tt:.2f}" if tt else "-"])
    print(markdown_table(["op", "pass", "minifcn ms", "minifcn GFLOP/s", "PyTorch ms",
                          "ratio"], rows))


if __name__ == "__main__":
    main()
