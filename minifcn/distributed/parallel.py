"""The data-parallel step's pieces: rank 0's state to every rank, the gradients summed in one
all-reduce, a check that the ranks still hold one net, and errors every rank agrees on."""
import hashlib

import numpy as np

from .. import backend


def broadcast_state(comm, model, optimizer=None):
    """Rank 0's weights, buffers (batch norm's statistics), momentum buffers and random state
    into every rank: the start of a run, new or resumed, is rank 0's."""
    for _, tensor in [*model.named_parameters(), *model.named_buffers()]:
        comm.broadcast(tensor.data)
    if optimizer is not None:
        # a resumed run has momentum buffers on rank 0 only: the others make theirs first
        keys = comm.broadcast_object(sorted(optimizer.state_dict()))
        for key in keys:
            _, g, i = key.split(".")
            p = optimizer.groups[int(g)]["params"][int(i)]
            if optimizer.velocity[int(g)][int(i)] is None:
                optimizer.velocity[int(g)][int(i)] = backend.get_array_module(p.data).zeros_like(
                    p.data)
            comm.broadcast(optimizer.velocity[int(g)][int(i)])
    backend.rng().bit_generator.state = comm.broadcast_object(backend.rng().bit_generator.state)


class GradientAllReduce:
    """Sums the gradients of ``params`` over the ranks in ONE all-reduce: they are packed into
    one flat buffer (made once, reused every step), a few numbers ride along at its end (the
    loss, the pixels it counted, a stop request), and each parameter's ``.grad`` becomes its
    view of the summed buffer. One big message, not one per layer: every message pays the
    network's latency once."""

    def __init__(self, params, comm):
        self.params, self.comm = [p for p in params if p.requires_grad], comm
        self.size = sum(p.data.size for p in self.params)
        self.flat = None

    def __call__(self, *extra):
        """All-reduce the gradients and ``extra`` (numbers); returns the summed extras."""
        first = self.params[0].data
        xp = backend.get_array_module(first)
        if self.flat is None or self.flat.size != self.size + len(extra):
            self.flat = xp.empty(self.size + len(extra), first.dtype)
        flat, at = self.flat, 0
        # a parameter no gradient reached (the same ones on every rank: they run one graph)
        # adds zeros, and keeps no gradient after, so that SGD skips it as it does in one process
        reached = [p.grad is not None for p in self.params]
        for p, has in zip(self.params, reached):
            n = p.data.size
            flat[at:at + n] = p.grad.ravel() if has else 0
            at += n
        flat[at:] = xp.asarray(extra, flat.dtype)
        self.comm.allreduce(flat)
        at = 0
        for p, has in zip(self.params, reached):
            p.grad = flat[at:at + p.data.size].reshape(p.shape) if has else None
            at += p.data.size
        return [float(v) for v in backend.as_numpy(flat[at:])]

    def scale(self, factor):
        """Multiply every summed gradient by ``factor`` (1 / the whole batch's pixels)."""
        self.flat[:self.size] *= self.flat.dtype.type(factor)


def replica_digest(model):
    """A digest of every parameter's bytes: equal on all ranks while their weights are."""
    h = hashlib.blake2b(digest_size=16)
    for _, p in model.named_parameters():
        h.update(np.ascontiguousarray(backend.as_numpy(p.data)).data)
    return h.hexdigest()


def check_replicas(comm, model):
    """Raise ValueError on every rank when the ranks' weights are no longer bitwise equal (an
    all-reduce that gave ranks different sums would let them drift apart unseen)."""
    digests = comm.allgather_objects(replica_digest(model))
    if len(set(digests)) > 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise _every_rank(ValueError(f"--distributed: the weights of rank(s) {odd} differ from "
                                     f"rank 0's"))


# ---------------------------------------------------------------- errors, seen by every rank


def every_rank(error):
    """Whether every rank raised ``error`` alike (then rank 0 alone reports it, and no rank
    need end the others): a loss that is not finite (each rank sees the summed one) and the
    errors that ``lead_does``, ``agree`` and ``check_replicas`` hand to every rank."""
    return isinstance(error, FloatingPointError) or getattr(error, "every_rank", False)


def _every_rank(error):
    error.every_rank = True
    return error


def lead_does(comm, fn):
    """``fn()`` on rank 0 only, its result handed to every rank. If it fails (a run folder that
    holds a run, a damaged checkpoint), rank 0 raises its error and says it; the other ranks
    leave quietly with the same exit status."""
    if comm.rank == 0:
        try:
            result = fn()
        except BaseException as e:
            comm.broadcast_object(("error", _exit_status(e)))
            raise _every_rank(e)
        comm.broadcast_object(("ok", result))
        return result
    status, value = comm.broadcast_object(None)
    if status == "error":
        raise SystemExit(value)
    return value


def agree(comm, error):
    """After work every rank did alike (building the datasets and the model), every rank or
    none goes on: ``error`` is this rank's exception or None. When any rank failed, rank 0
    raises the first failure (naming the rank when not its own) and the others leave quietly."""
    errors = comm.allgather_objects(None if error is None else str(error))
    failed = [r for r, e in enumerate(errors) if e is not None]
    if not failed:
        return
    if comm.rank != 0:
        raise SystemExit(1)
    raise _every_rank(error if error is not None else
                      ValueError(f"rank {failed[0]}: {errors[failed[0]]}"))


def _exit_status(e):
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else 1
    return 130 if isinstance(e, KeyboardInterrupt) else 1
