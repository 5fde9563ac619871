"""Synchronised batch normalisation: each BatchNorm2d normalises by the statistics of the whole
batch, summed over the ranks, as one process does with the whole batch.

PyTorch's DistributedDataParallel keeps per-rank statistics by default (SyncBatchNorm is its
opt-in): N ranks then normalise N smaller batches, and train another net than one process does.
minifcn synchronises, so that N ranks give the one-process weights; it costs three all-reduces
of 2 x channels numbers per layer and step (docs/distributed.md)."""
from .. import backend
from ..autograd import Function
from ..nn import BatchNorm2d
from .comm import SingleProcess


class SyncBatchNorm(Function):
    """F.batch_norm in training mode with the statistics of the whole batch, summed over the
    ranks: the mean, then the variance about it (two all-reduces of C numbers, in float64, as
    one process computes them: no E[x^2] - mean^2 and its cancellation), and in backward the two
    sums that x's gradient needs (one all-reduce). The weight's and bias's gradients stay this
    rank's own: the gradient all-reduce sums them with the rest."""

    def forward(self, x, *affine, comm, running_mean, running_var, momentum, eps, has_weight,
                has_bias):
        xp = backend.get_array_module(x)
        n, c = x.shape[:2]
        x3 = x.reshape(n, c, -1)
        sums = xp.concatenate([x3.sum(axis=(0, 2), dtype=xp.float64),
                               xp.asarray([x3.shape[0] * x3.shape[2]], xp.float64)])
        comm.allreduce(sums)
        m = float(sums[-1])  # values per channel in the whole batch
        mean = (sums[:c] / m).astype(x.dtype)
        xc = x3 - mean[:, None]
        var = comm.allreduce((xc * xc).sum(axis=(0, 2), dtype=xp.float64)) / m
        var = var.astype(x.dtype)
        weight = affine[0] if has_weight else xp.ones(c, x.dtype)
        bias = affine[-1] if has_bias else xp.zeros(c, x.dtype)
        invstd = 1 / xp.sqrt(var + x.dtype.type(eps))
        if running_mean is not None:  # as norm.BatchNorm: the unbiased variance, in place
            keep = 1 - momentum
            running_mean[...] = keep * running_mean + momentum * mean
            running_var[...] = keep * running_var + momentum * var * (m / max(m - 1, 1))
        self.saved = (xc * invstd[:, None], invstd, weight, m, comm, has_weight, has_bias)
        return (self.saved[0] * weight[:, None] + bias[:, None]).reshape(x.shape)

    def backward(self, g):
        xhat, invstd, weight, m, comm, has_weight, has_bias = self.saved
        xp = backend.get_array_module(g)
        g3 = g.reshape(xhat.shape)
        gb, gw = g3.sum(axis=(0, 2)), (g3 * xhat).sum(axis=(0, 2))  # this rank's
        c = len(gb)
        whole = comm.allreduce(xp.concatenate([gb, gw]).astype(xp.float64)).astype(g.dtype)
        gb_all, gw_all = whole[:c, None] / m, whole[c:, None] / m  # the means of g, g * xhat
        gx = (weight * invstd)[:, None] * (g3 - gb_all - xhat * gw_all)
        return (gx.reshape(g.shape),) + ((gw,) if has_weight else ()) + \
            ((gb,) if has_bias else ())


class SyncBatchNorm2d(BatchNorm2d):
    """BatchNorm2d whose training statistics are the whole batch's over the ranks. Evaluation
    exchanges nothing: it uses the running statistics, or without them each batch's own, and
    one rank scores a whole validation batch. Made by ``sync_batch_norm``."""

    comm = SingleProcess()

    def forward(self, x):
        if not self.training or x.ndim != 4:  # evaluation: per batch, as one process (and
            return super().forward(x)         # BatchNorm2d's own refusal of a wrong shape)
        momentum, running = self.momentum, (None, None)
        if self.track_running_stats:
            self.num_batches_tracked.data += 1
            if momentum is None:  # the cumulative average, as BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked.data)
            running = (self.running_mean.data, self.running_var.data)
        affine = (self.weight, self.bias) if self.affine else ()
        return SyncBatchNorm.apply(x, *affine, comm=self.comm, running_mean=running[0],
                                   running_var=running[1], momentum=momentum or 0.0,
                                   eps=self.eps, has_weight=self.affine, has_bias=self.affine)


def sync_batch_norm(model, comm):
    """Make every BatchNorm2d of ``model`` a SyncBatchNorm2d on ``comm``, in place (same
    parameters, buffers and state_dict names); returns the model and how many it changed."""
    changed = 0
    for _, m in model.named_modules():
        if type(m) is BatchNorm2d:
            m.__class__, m.comm = SyncBatchNorm2d, comm
            changed += 1
    return model, changed
