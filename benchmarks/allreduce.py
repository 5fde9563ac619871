"""What data parallelism costs a step: the gradients' all-reduce beside each rank's compute.

    mpiexec -n 2 python benchmarks/allreduce.py [--widths 0.0625 1] [--repeat 5]

For FCN-8s at each width (the default run's net: 5 classes, conv1_1 padding 69, batch 8 of
96x96 images, so 4 images a rank on 2 ranks) it measures, on every rank at once:

- the bytes all-reduced a step: the trainable parameters x 4 (float32; the fixed bilinear
  upsampling is not sent), plus three numbers (loss, pixels, stop);
- one all-reduce of that buffer (``distributed.GradientAllReduce``'s one MPI_Allreduce), after a
  barrier, the median of --repeat;
- one rank's compute: forward, loss and backward on its 4 images, the median of --repeat
  (the SGD step is left out: every rank does it alike, with or without the others).

Rank 0 prints a Markdown table and its stamp. Each rank runs one BLAS thread (OMP_NUM_THREADS
and OPENBLAS_NUM_THREADS are set to 1 unless given): two ranks on a 2-core machine. It also
measures one all-reduce of 128 float64 numbers (a batch norm layer's, docs/distributed.md): the
latency each message pays.

    python benchmarks/allreduce.py --model

prints instead the paper model of docs/distributed.md (no MPI, no timing): a step on N ranks
of FCN-8s at width 1 as the compute of B/N images plus a ring all-reduce of its gradients.
"""
import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before NumPy loads its BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # run from a checkout without installing
import numpy as np  # noqa: E402
from _common import markdown_table, stamp  # noqa: E402

from minifcn import backend, distributed, models  # noqa: E402
from minifcn.autograd import Tensor  # noqa: E402
from minifcn.training.step import summed_loss  # noqa: E402


def measure(comm, width, repeat):
    backend.manual_seed(0)
    model = models.fcn8s(n_class=5, width=width, pad1=69)
    reduce = distributed.GradientAllReduce(model.parameters(), comm)
    buffer = np.ones(reduce.size + 3, np.float32)
    times = []
    for _ in range(repeat + 1):  # the first warms up (page faults of a new buffer)
        comm.comm.Barrier()
        t0 = time.perf_counter()
        comm.allreduce(buffer)
        times.append(time.perf_counter() - t0)
    reduce_s = statistics.median(times[1:])
    rng = np.random.default_rng(comm.rank)
    x = rng.standard_normal((4, 3, 96, 96)).astype(np.float32)
    y = rng.integers(0, 5, (4, 96, 96))
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        total, _ = summed_loss(model(Tensor(x)), y)
        model.zero_grad()
        total.backward()
        times.append(time.perf_counter() - t0)
    compute_s = statistics.median(times[1:])
    # the slowest rank sets the pace
    slowest = [max(comm.allgather_objects(t)) for t in (reduce_s, compute_s)]
    return (reduce.size, *slowest)


def latency(comm, repeat=50):
    small, times = np.ones(128), []
    for _ in range(repeat + 1):
        comm.comm.Barrier()
        t0 = time.perf_counter()
        comm.allreduce(small)
        times.append(time.perf_counter() - t0)
    return max(comm.allgather_objects(statistics.median(times[1:])))


# The paper model's numbers: FCN-8s at width 1 with VOC's 21 classes sends this many bytes; the
# PyTorch port's report of about two days for the reference recipe's 100,000 steps of one image
# on one GPU gives the compute of an image; the paper's minibatch is 20 images (section 4.1)
MODEL_BYTES, MODEL_IMAGE_S, MODEL_BATCH, MODEL_LATENCY_S = 537.5e6, 2 * 86400 / 100_000, 20, 20e-6


def paper_model():
    rows = []
    for gbit in (10, 100):
        for n in (1, 2, 4, 5, 10, 20):
            compute = MODEL_IMAGE_S * MODEL_BATCH / n
            send = 0.0 if n == 1 else (2 * (n - 1) / n * MODEL_BYTES / (gbit / 8 * 1e9)
                                       + 2 * (n - 1) * MODEL_LATENCY_S)
            rows.append([f"{gbit} Gb/s", n, f"{compute:.2f} s", f"{send:.2f} s",
                         f"{compute + send:.2f} s",
                         f"{MODEL_IMAGE_S * MODEL_BATCH / (compute + send):.1f}x"])
    print(markdown_table(["network", "ranks N", "compute (B/N images)", "all-reduce",
                          "step", "speed-up"], rows))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=float, nargs="+", default=[0.0625, 1.0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--model", action="store_true", help="print the paper model and exit")
    args = p.parse_args()
    if args.model:
        return paper_model()
    load = os.getloadavg()[0]
    comm = distributed.MPICommunicator()
    small_s = latency(comm)
    rows = []
    for width in args.widths:
        n, reduce_s, compute_s = measure(comm, width, args.repeat)
        mb = (n + 3) * 4 / 1e6
        rows.append([f"{width:g}", f"{n:,}", f"{mb:,.1f} MB", f"{reduce_s * 1e3:,.1f} ms",
                     f"{mb / 1e3 / reduce_s:.2f} GB/s", f"{compute_s * 1e3:,.0f} ms",
                     f"{reduce_s / (reduce_s + compute_s):.1%}"])
    if comm.rank == 0:
        print(markdown_table(["width", "parameters sent", "all-reduced a step", "one all-reduce",
                              "rate", "compute of a rank (4 images)", "all-reduce's share"],
                             rows))
        print(f"\none all-reduce of 128 float64 numbers (a message's latency): "
              f"{small_s * 1e6:.0f} us")
        print()
        print(stamp(load).replace("env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python",
                                  f"mpiexec -n {comm.size} python"))


if __name__ == "__main__":
    main()
