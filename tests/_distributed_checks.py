"""Run under ``mpiexec -n 2 python tests/_distributed_checks.py OUT.json`` by
tests/test_distributed.py: the pieces of minifcn.distributed that need two real ranks. Each rank
computes its part; rank 0 writes what the test asserts on (differences from a one-process
reference, computed here on rank 0 from the whole batch) to OUT.json."""
import json
import sys

import numpy as np

from minifcn import backend, data, distributed, models, nn, optim
from minifcn import functional as F
from minifcn.autograd import Tensor
from minifcn.training import summed_loss, validate

comm = distributed.MPICommunicator(timeout=60)
assert comm.size == 2, "run with mpiexec -n 2"
rank = comm.rank
out = {}


def whole(part):
    """The two ranks' arrays, stacked along the batch (on rank 0; None elsewhere)."""
    parts = comm.gather_objects(part)
    return None if parts is None else np.concatenate(parts)


def biggest_difference(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# ---- synchronised batch norm: two halves of a batch against the whole batch in one process
rng = np.random.default_rng(0)
x = rng.standard_normal((4, 3, 5, 6)) * 3 + 1.5  # the whole batch, on both ranks
g = rng.standard_normal(x.shape)
mine = slice(2 * rank, 2 * rank + 2)
bn = nn.BatchNorm2d(3, momentum=0.3).double()
bn.weight.data[:], bn.bias.data[:] = [0.5, 2.0, -1.0], [0.1, -0.2, 0.3]
distributed.sync_batch_norm(bn, comm)
xt = Tensor(x[mine], requires_grad=True)
y = bn(xt)
y.backward(g[mine])
y_all, gx_all = whole(y.data), whole(xt.grad)
gw = comm.allreduce(bn.weight.grad.copy())  # each rank's own part: their sum is the batch's
gb = comm.allreduce(bn.bias.grad.copy())
if rank == 0:
    ref = nn.BatchNorm2d(3, momentum=0.3).double()
    ref.weight.data[:], ref.bias.data[:] = bn.weight.data, bn.bias.data
    xr = Tensor(x, requires_grad=True)
    yr = ref(xr)
    yr.backward(g)
    # and the forward from its definition, written out here
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    by_hand = ((x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
               * bn.weight.data[:, None, None] + bn.bias.data[:, None, None])
    out["bn"] = {"y": biggest_difference(y_all, yr.data),
                 "y_by_hand": biggest_difference(y_all, by_hand),
                 "gx": biggest_difference(gx_all, xr.grad),
                 "gweight": biggest_difference(gw, ref.weight.grad),
                 "gbias": biggest_difference(gb, ref.bias.grad),
                 "running_mean": biggest_difference(bn.running_mean.data, ref.running_mean.data),
                 "running_var": biggest_difference(bn.running_var.data, ref.running_var.data)}

# ---- the gradients' all-reduce: one buffer, extras at its end, untouched parameters stay so
a, b, c = (nn.Parameter(np.zeros(s, np.float32)) for s in ((2, 3), (4,), (5,)))
a.grad = np.full((2, 3), rank + 1.0, np.float32)
b.grad = np.arange(4, dtype=np.float32) * (rank + 1)
extras = distributed.GradientAllReduce([a, b, c], comm)(10.0 * (rank + 1), 1.0)
if rank == 0:
    out["allreduce"] = {"a": a.grad.tolist(), "b": b.grad.tolist(), "c_is_none": c.grad is None,
                        "extras": extras}

# ---- rank 0's state to every rank: weights, buffers, momentum, the random state
backend.manual_seed(rank)  # different on each rank on purpose
net = models.segnet_basic(n_class=3, width=1 / 64)
opt = optim.SGD(net.parameters(), lr=0.1)
if rank == 0:  # one momentum buffer on rank 0 only, as after a resume
    opt.velocity[0][0] = np.ones_like(opt.groups[0]["params"][0].data)
distributed.broadcast_state(comm, net, opt)
digests = comm.allgather_objects((distributed.replica_digest(net),
                                  {k: v.tobytes().hex() for k, v in net.state_dict().items()
                                   if "running" in k}, sorted(opt.state_dict()),
                                  float(backend.rng().random())))
if rank == 0:
    out["broadcast"] = {"same_weights": digests[0][0] == digests[1][0],
                        "same_buffers": digests[0][1] == digests[1][1],
                        "same_momentum_keys": digests[0][2] == digests[1][2],
                        "same_random_state": digests[0][3] == digests[1][3]}

# ---- the random draws of a batch part are one process's draws for those rows
backend.manual_seed(7)
backend.set_batch_part((3 * rank, 3 * rank + 3 - rank, 5))  # rows 0-2 and 3-4 of 5
part = backend.random_rows((3 - rank, 2, 2))
backend.set_batch_part(None)
draws = whole(part)
if rank == 0:
    backend.manual_seed(7)
    out["random_rows"] = biggest_difference(draws, backend.random_rows((5, 2, 2)))

# ---- validation: each rank scores every other batch; rank 0 merges them
backend.manual_seed(3)
val = data.get_dataset("shapes", "val", n=10, size=40)
model = models.fcn8s(n_class=val.n_class, width=1 / 64)
for _, p in model.named_parameters():  # the score layers start at 0: let every class win somewhere
    if not p.data.any():
        p.data = np.random.default_rng(p.size).standard_normal(p.shape).astype(np.float32) * 0.1
sharded = data.Loader(val, 4, shuffle=False, group_by_size=True, shard=(rank, 2),
                      shard_by="batches")
merged = validate(model, sharded, val.n_class, worst=3, comm=comm)
if rank == 0:
    alone = validate(model, data.Loader(val, 4, shuffle=False, group_by_size=True),
                     val.n_class, worst=3)
    out["validate"] = {
        "confusion_equal": bool((merged[0]["confusion"] == alone[0]["confusion"]).all()),
        "scores_equal": all(merged[0][k] == alone[0][k] for k in ("pixel_acc", "mean_iu")),
        "loss": [merged[1], alone[1]],
        "examples_equal": all(all(np.array_equal(p, q) for p, q in zip(e, f))
                              for e, f in zip(merged[2], alone[2])) and
        len(merged[2]) == len(alone[2]) == 4,
        "worst_losses": [[w[3] for w in merged[3]], [w[3] for w in alone[3]]],
        "worst_images_equal": all(np.array_equal(w[0], v[0]) for w, v in zip(merged[3], alone[3])),
        "classes_predicted": int((merged[0]["confusion"].sum(axis=0) > 0).sum())}
else:
    assert merged is None
counts = comm.gather_objects(len(sharded))
if rank == 0:
    out["validate"]["batches_per_rank"] = counts

# ---- one step's gradient from the same weights: the summed loss over each rank's pixels,
# all-reduced and divided by the whole batch's count, against the mean over the whole batch
train = data.get_dataset("shapes", "train", n=8, size=40)
x, y = next(data.Loader(train, 4, flip=True, seed=1).epoch(0))
y[3, :20] = 255  # rank 1's images count fewer pixels: a per-rank mean would weigh them wrong
model.eval()  # no dropout: every forward of an image the same
trained = [p for p in model.parameters() if p.requires_grad]
mine = slice(2 * rank, 2 * rank + 2)
total, count = summed_loss(model(Tensor(x[mine])), y[mine])
model.zero_grad()
total.backward()
reduce = distributed.GradientAllReduce(trained, comm)
_, whole_count = reduce(total.item(), count)
reduce.scale(1 / whole_count)
parallel = [p.grad.copy() for p in trained]
model.zero_grad()
F.softmax_cross_entropy(model(Tensor(x[mine])), y[mine]).backward()  # this rank's own mean
averaged = [comm.allreduce(p.grad.copy()) / 2 for p in trained]
if rank == 0:
    model.zero_grad()
    F.softmax_cross_entropy(model(Tensor(x)), y).backward()
    one = [p.grad for p in trained]

    def worst(grads):
        return max(float(np.abs(g - o).max() / np.abs(o).max()) for g, o in zip(grads, one)
                   if np.abs(o).max() > 0)

    out["gradient"] = {"summed": worst(parallel), "averaged_means": worst(averaged)}

# ---- errors: rank 0's refusal ends rank 1 quietly; rank 1's failure is named by rank 0
def refuse():
    raise ValueError("rank 0 refuses")


try:
    distributed.lead_does(comm, refuse)
    lead = "no error"
except SystemExit as e:
    lead = f"SystemExit {e.code}"
except ValueError as e:
    lead = f"ValueError {e} every_rank={distributed.every_rank(e)}"
try:
    distributed.agree(comm, OSError("no data here") if rank == 1 else None)
    agreed = "no error"
except SystemExit as e:
    agreed = f"SystemExit {e.code}"
except ValueError as e:
    agreed = f"ValueError {e}"
errors = comm.gather_objects((lead, agreed))
if rank == 0:
    out["errors"] = errors
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
