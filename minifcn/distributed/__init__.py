"""Data parallelism: one process per CPU node or GPU, the same weights in every one.

As Chainer's ChainerMN does it for a NumPy/CuPy engine, each of N processes (ranks) holds the
whole net and trains on its slice of every batch:

    rank 0's weights --broadcast--> every rank            (once, at the start)
    each rank: its images -> model -> loss -> backward    (its gradients, of its own images)
    all the gradients, packed in one flat buffer -> ONE all-reduce (a sum over the ranks)
    each rank: the same SGD step on the same summed gradients -> the same weights again

The batch is the global one (``--batch-size``), split over the ranks; the loss is summed over
each rank's pixels and divided by the pixels of the whole batch (summed in the same all-reduce),
so the N-process gradient is the one-process gradient up to the order of float summation.

Communicators (every collective sums or copies in place; the same code runs on each):

    SingleProcess        one process, every collective the identity: one script runs anywhere
    MPICommunicator      mpi4py: NumPy arrays, on one machine or many (``mpiexec -n N``)
    NCCLCommunicator     CuPy arrays over NCCL (cupyx.distributed), one process per GPU

A rank that dies or hangs never answers, and MPI would wait for it for ever: every collective
here runs under a watchdog that ends the process with a one-line error after
MINIFCN_DISTRIBUTED_TIMEOUT seconds (default 300). Batch normalisation is synchronised:
``sync_batch_norm`` makes each BatchNorm2d normalise by the statistics of the whole batch, as
one process does (docs/distributed.md says why and what it costs).

Read in this order: comm.py (the communicators, the watchdog), parallel.py (broadcast, the
gradients' all-reduce, errors every rank agrees on), batchnorm.py; then the step that uses them,
``training.step.parallel_train_step``, and ``training.loop.fit(..., comm=...)``.
"""
from .batchnorm import SyncBatchNorm2d, sync_batch_norm
from .comm import (DEFAULT_TIMEOUT, TIMEOUT_ENV, MPICommunicator, NCCLCommunicator,
                   SingleProcess, Watchdog, init, launched)
from .parallel import (GradientAllReduce, agree, broadcast_state, check_replicas, every_rank,
                       lead_does, replica_digest)

__all__ = ["init", "launched", "SingleProcess", "MPICommunicator", "NCCLCommunicator",
           "Watchdog", "TIMEOUT_ENV", "DEFAULT_TIMEOUT", "broadcast_state", "GradientAllReduce",
           "check_replicas", "replica_digest", "lead_does", "agree", "every_rank",
           "sync_batch_norm", "SyncBatchNorm2d"]
