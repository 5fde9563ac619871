# %% [markdown]
# # 15 · Beyond one machine: data parallelism
#
# The paper's nets at full width train for days on one GPU. When a learner has several machines,
# or several GPUs, the simplest way to use them is **data parallelism**, the recipe of Chainer's
# ChainerMN (and of PyTorch's DistributedDataParallel):
#
# - start N processes ("ranks"), each holding the whole net; rank 0's weights are copied to all;
# - every step, each rank runs forward and backward on **its slice of the batch**;
# - one **all-reduce** sums the ranks' gradients, so that every rank holds the same sum;
# - each rank takes the same SGD step on the same sum: the weights stay identical everywhere.
#
# The promise is that N ranks at a batch of B train *the same net* as one process at a batch of
# B, only faster. This notebook checks that promise piece by piece:
#
# 1. one step split over 4 ranks by hand, in this process, against one process;
# 2. the all-reduce drawn: how N ranks sum a buffer, and what it costs;
# 3. batch normalisation, whose statistics belong to the whole batch;
# 4. the command, `mpiexec -n 2 python -m minifcn.train --distributed`, run beside one process.
#
# The details of `minifcn.distributed` (the communicators, stopping, failures, measured costs)
# are in [docs/distributed.md](../docs/distributed.md).

# %%
# %matplotlib inline
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt
import minifcn
import minifcn.functional as F
from minifcn import Tensor, data, distributed, io, models, nn, training

plt.rcParams.update({"figure.dpi": 70, "figure.figsize": (6, 3)})
np.set_printoptions(linewidth=110, precision=4)
FAST = os.environ.get("MINIFCN_TUTORIAL_FAST") == "1"   # the test suite skips the real run

# %% [markdown]
# ## 1. One step on four ranks, by hand
#
# A batch of 8 `shapes` images and a small FCN-8s (no dropout, so that every forward is the
# same). To make the point sharper, the top half of images 0 and 1 is marked *ignore* (255),
# as VOC marks object boundaries: those pixels count for nothing, so the four pairs of images
# hold different numbers of counted pixels.

# %%
shapes = data.get_dataset("shapes", "train", n=8)
images, labels = next(data.Loader(shapes, batch_size=8, shuffle=False).epoch(0))
labels[:2, :48] = 255
minifcn.manual_seed(0)
model = models.fcn8s(n_class=shapes.n_class, width=1 / 32, pad1=69, dropout=0.0)
for name, p in model.named_parameters():   # the score layers start at 0: give them a value
    if p.requires_grad and not p.data.any():
        p.data = np.random.default_rng(1).normal(0, 0.05, p.shape).astype(np.float32)
trained = [p for p in model.parameters() if p.requires_grad]


def gradients():
    """Every trainable parameter's gradient in one flat vector: what an all-reduce sends."""
    return np.concatenate([p.grad.ravel() for p in trained])


print("counted pixels in each pair of images:",
      [int((labels[k:k + 2] != 255).sum()) for k in range(0, 8, 2)])
print("numbers in the gradient:", sum(p.data.size for p in trained))

# %% [markdown]
# **One process** computes the mean loss over every counted pixel of the batch and its gradient:

# %%
loss = F.softmax_cross_entropy(model(Tensor(images)), labels)   # the mean over the batch
model.zero_grad()
loss.backward()
one = gradients()
print(f"one process: loss {loss.item():.5f}")

# %% [markdown]
# **Four ranks**, each with two images. Each one computes the loss *summed* over its own pixels
# and how many pixels it counted (`training.summed_loss`). The all-reduce adds up, over the
# ranks, the gradients and those two numbers. Dividing the summed gradient by the whole batch's
# pixel count gives the gradient of the whole batch's mean: the mean is a sum divided by a
# count, and sums split over ranks. (The loop below runs the four ranks one after the other;
# on four machines they run at once, and the `+=` is the all-reduce.)

# %%
ranks = 4
summed, total, count = 0.0, 0.0, 0.0
for rank in range(ranks):
    mine = slice(2 * rank, 2 * rank + 2)                              # this rank's slice
    loss_sum, pixels = training.summed_loss(model(Tensor(images[mine])), labels[mine])
    model.zero_grad()
    loss_sum.backward()
    summed, total, count = summed + gradients(), total + loss_sum.item(), count + pixels
parallel = summed / count
print(f"four ranks:  loss {total / count:.5f}")
print("largest difference from one process, relative to the largest gradient:",
      f"{np.abs(parallel - one).max() / np.abs(one).max():.1e}")

# %% [markdown]
# Equal up to float32 rounding: the same numbers summed in another order (each rank sums its
# images, then the ranks' sums are summed). The shortcut that looks as good, each rank taking
# the *mean* over its own pixels and the ranks averaging their gradients, is not the same:
# it weighs a pixel of a rank with few counted pixels more than a pixel of a rank with many.

# %%
averaged = 0.0
for rank in range(ranks):
    mine = slice(2 * rank, 2 * rank + 2)
    loss_mean = F.softmax_cross_entropy(model(Tensor(images[mine])), labels[mine])
    model.zero_grad()
    loss_mean.backward()
    averaged = averaged + gradients() / ranks
print("averaging each rank's mean, largest difference:",
      f"{np.abs(averaged - one).max() / np.abs(one).max():.1e}")

# %% [markdown]
# Random choices must follow the images too. The loader plans an epoch (order, flips, crops)
# from the shared seed, as one process would, and each rank keeps its slice of every batch:
# `data.Loader(..., shard=(rank, ranks))`. Dropout masks and loss sampling draw for the whole
# batch and keep the rank's rows (`minifcn.backend.random_rows`), so image 5 gets the mask it
# would get in one process, whichever rank holds it.

# %%
whole = data.Loader(shapes, batch_size=8, flip=True, seed=3)
shards = [data.Loader(shapes, batch_size=8, flip=True, seed=3, shard=(k, ranks))
          for k in range(ranks)]
x_whole, _ = next(whole.epoch(0))
x_shards = [next(shard.epoch(0))[0] for shard in shards]
print("each rank's images:", [len(x) for x in x_shards], "  stacked, they are the one-process "
      "batch:", np.array_equal(np.concatenate(x_shards), x_whole))

# %% [markdown]
# ## 2. The all-reduce, drawn
#
# After an all-reduce every rank holds the sum of every rank's buffer. The textbook way to do it
# with the least traffic is a **ring** (Patarasuk and Yuan, 2009; Baidu brought it to deep
# learning in 2017, and NCCL's all-reduce is built on rings): cut the buffer into N chunks and
# pass chunks round the ring of ranks.
#
# - **reduce-scatter**, N - 1 steps: at each step every rank sends one chunk to the next rank,
#   which adds it to its own; after N - 1 steps each rank holds one chunk summed over all ranks;
# - **all-gather**, N - 1 steps: the finished chunks go round the ring once more, copied.
#
# Each cell below is (rank, chunk); its number is how many ranks' contributions that rank's copy
# of the chunk holds. It ends with every copy holding all four.

# %%
n = 4
buffers = [np.random.default_rng(r).standard_normal(n) for r in range(n)]   # chunk c: number c
held = [b.copy() for b in buffers]         # what each rank holds
parts = np.ones((n, n), int)               # how many ranks' numbers each (rank, chunk) holds
frames = [("start", parts.copy())]


def pass_round(chunk_of, add):
    """Every rank r sends its chunk chunk_of(r) to rank r + 1, which adds it, or keeps it."""
    sent = [(r, chunk_of(r), held[r][chunk_of(r)], parts[r, chunk_of(r)]) for r in range(n)]
    for r, c, value, k in sent:            # the sends happen at once: all read, then all write
        to = (r + 1) % n
        held[to][c] = held[to][c] + value if add else value
        parts[to, c] = parts[to, c] + k if add else k


for step in range(n - 1):                  # reduce-scatter: rank r sends chunk r - step
    pass_round(lambda r: (r - step) % n, add=True)
    frames.append((f"reduce-scatter {step + 1}", parts.copy()))
for step in range(n - 1):                  # all-gather: rank r passes on chunk r + 1 - step
    pass_round(lambda r: (r + 1 - step) % n, add=False)
    frames.append((f"all-gather {step + 1}", parts.copy()))
fig, axes = plt.subplots(1, len(frames), figsize=(12, 2.2))
for ax, (title, grid) in zip(axes, frames):
    ax.imshow(grid, cmap="Blues", vmin=0, vmax=n)
    for (r, c), k in np.ndenumerate(grid):
        ax.text(c, r, k, ha="center", va="center", fontsize=8)
    ax.set_title(title, fontsize=8); ax.set_xticks([]); ax.set_yticks(range(n))
axes[0].set_ylabel("rank"); axes[0].set_xlabel("chunk")
plt.tight_layout(); plt.show()
print("every rank holds the sum:", all(np.allclose(h, sum(buffers)) for h in held))

# %% [markdown]
# Count the traffic: each rank sends one chunk (1/N of the buffer) per step, 2 (N - 1) steps,
# so about **twice the buffer** per step of training, whatever N. The buffer is every
# gradient: 4 bytes per trainable parameter. That is what data parallelism pays per step, on top
# of the compute that it divides by N:

# %%
for width in (1 / 16, 1.0):
    net = models.fcn8s(n_class=21, width=width)
    sent = sum(p.data.size for p in net.parameters() if p.requires_grad) * 4
    for gbit in (10, 100):
        seconds = 2 * (n - 1) / n * sent / (gbit / 8 * 1e9)
        print(f"FCN-8s width {width:<6g}: {sent / 1e6:7.1f} MB a step; ring all-reduce on {n} "
              f"ranks over {gbit:3d} Gb/s: {seconds * 1e3:7.1f} ms")

# %% [markdown]
# At full width, 537 MB of gradients a step (VGG16's fc6 alone is 410 MB): the network, not
# the arithmetic, decides whether more machines help. docs/distributed.md measures the
# all-reduce on this machine and sets it against the compute of a step.
#
# ## 3. Batch normalisation belongs to the whole batch
#
# A batch-norm layer normalises each channel by the mean and variance of *its batch*. On N ranks
# each rank sees only B / N images; normalising by those would train another net than one
# process does (PyTorch's DistributedDataParallel does exactly that by default, keeping each
# rank's statistics). The statistics of two halves are not the batch's:

# %%
features = np.random.default_rng(0).standard_normal((8, 3, 6, 6)) * [[[1.0]], [[2.0]], [[0.5]]]
features[:4] += 1.0   # the first half brighter, as two ranks' images may well be
print("whole batch mean:", features.mean(axis=(0, 2, 3)))
print("first half mean: ", features[:4].mean(axis=(0, 2, 3)))
print("second half mean:", features[4:].mean(axis=(0, 2, 3)))

# %% [markdown]
# minifcn synchronises instead: `distributed.sync_batch_norm(model, comm)` turns each
# `BatchNorm2d` into a `SyncBatchNorm2d` that sums, over the ranks, the channel sums it needs: in
# the forward the batch's mean, then its variance about that mean, and in the backward the two
# sums that the input's gradient needs. Three small all-reduces per layer and step, and the
# result is the one-process layer. On the do-nothing communicator of one process,
# `distributed.SingleProcess()`, it *is* the plain layer, so the same script runs anywhere:

# %%
plain, synced = nn.BatchNorm2d(3).double(), nn.BatchNorm2d(3).double()
distributed.sync_batch_norm(synced, distributed.SingleProcess())
print(type(synced).__name__, "- largest difference from BatchNorm2d:",
      np.abs(synced(Tensor(features)).data - plain(Tensor(features)).data).max())

# %% [markdown]
# ## 4. The command
#
# With the `[mpi]` extra installed (`pip install -e ".[mpi]"`: mpi4py and MPICH's `mpiexec`),
#
#     mpiexec -n 2 python -m minifcn.train --distributed --batch-size 8 ...
#
# starts two ranks of one run: `--batch-size` is the whole batch (4 images a rank), rank 0 alone
# prints and writes the run folder, and the weights after K steps are those of
# `python -m minifcn.train --batch-size 8 ...`. The cell below runs both for 6 steps of a tiny
# net (about ten seconds) and compares every weight, when MPI is installed. (The test suite
# skips it: `tests/test_distributed.py` does the same checks.)

# %%
mpiexec = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                        os.environ.get("PATH", "")]))
tiny = ["--width", "0.015625", "--size", "40", "--n-train", "24", "--n-val", "8",
        "--batch-size", "4", "--iters", "6", "--warmup", "0", "--device", "cpu"]
if FAST or mpiexec is None:
    print("skipped:", "the test suite's fast mode" if FAST else
          "no mpiexec (pip install -e \".[mpi]\")")
else:
    where = Path(tempfile.mkdtemp())
    env = dict(os.environ, MINIFCN_NO_PROGRESS="1", OPENBLAS_NUM_THREADS="1",
               MINIFCN_NUM_THREADS="1")   # one thread a rank: two ranks share two cores
    for command in ([sys.executable, "-m", "minifcn.train", *tiny, "--out", "one"],
                    [mpiexec, "-n", "2", sys.executable, "-m", "minifcn.train", "--distributed",
                     *tiny, "--out", "two"]):
        done = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True)
        print("$", " ".join(Path(c).name if c in (sys.executable, mpiexec) else c
                            for c in command))
        print("\n".join(line for line in done.stdout.splitlines()
                        if line.startswith(("data", "best"))))
    one_w, _ = io.load_checkpoint(where / "one" / training.LAST)
    two_w, _ = io.load_checkpoint(where / "two" / training.LAST)
    moved = [k for k in one_w if k.startswith("model/") and one_w[k].dtype.kind == "f"
             and np.abs(one_w[k]).max() > 1e-6]
    worst = max(np.abs(one_w[k] - two_w[k]).max() / np.abs(one_w[k]).max() for k in moved)
    print(f"largest difference between the two runs' weights, relative to each tensor's "
          f"largest: {worst:.1e}")

# %% [markdown]
# ## Exercise
#
# 1. In section 1, give the ranks 3, 1, 2 and 2 images instead of 2 each. Does the summed-loss
#    recipe still give the one-process gradient? Does the averaged shortcut get better or worse?
#    (`--batch-size 7` on 2 ranks is refused by the command; why might uneven shards still
#    happen at the end of an epoch, and what does `data.Loader(..., shard=...)` do then?)
# 2. In section 2, time is bandwidth plus latency: each of the 2 (N - 1) steps also waits for the
#    network's latency, say 20 microseconds. For how many ranks does the latency of a step cost
#    as much as the bytes at width 1/16, on 100 Gb/s?
# 3. Suppose a VOC step at full width, 8 images, computes for 1 s on one GPU. With the ring's
#    traffic above, how many GPUs on 10 Gb/s Ethernet make a step faster than on one GPU, and
#    from how many does adding one more save less than a tenth of a second? And on 100 Gb/s?
