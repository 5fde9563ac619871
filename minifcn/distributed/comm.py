"""Communicators: who the other ranks are, and the collectives (all-reduce, broadcast, gather)
that every rank calls alike. Each waits under a watchdog: a rank that died or hangs ends the
others with a one-line error rather than leave them waiting for ever."""
import contextlib
import os
import pickle
import sys
import threading
import time

import numpy as np

from .. import backend

TIMEOUT_ENV = "MINIFCN_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds: longer than rank 0's longest lone work (checkpoints, plots)
# what MPI launchers put in each process's environment: (world size, rank)
LAUNCHER_ENV = (("PMI_SIZE", "PMI_RANK"),                            # MPICH, Intel MPI
                ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),    # Open MPI
                ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"))      # MVAPICH


def launched():
    """(size, rank) of the MPI job this process was started in, read from the environment its
    launcher sets (MPICH's, Open MPI's or MVAPICH's mpiexec), without starting MPI; None when
    no such launcher started it."""
    for size, rank in LAUNCHER_ENV:
        if os.environ.get(size, "").isdigit():
            return int(os.environ[size]), int(os.environ.get(rank, "0") or 0)
    return None


def timeout_from_env():
    value = os.environ.get(TIMEOUT_ENV)
    try:
        seconds = DEFAULT_TIMEOUT if value in (None, "") else float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: expected a number of seconds > 0")
    return seconds


class SingleProcess:
    """The communicator of one process: nothing to exchange, every collective the identity."""

    rank, size, name = 0, 1, "single process"

    def allreduce(self, array):
        return array

    def broadcast(self, array):
        return array

    def broadcast_object(self, obj):
        return obj

    def gather_objects(self, obj):
        return [obj]

    def allgather_objects(self, obj):
        return [obj]

    def abort(self, code=1):
        raise SystemExit(code)


class MPICommunicator(SingleProcess):
    """Collectives over mpi4py (``MPI.COMM_WORLD`` by default). NumPy arrays go to MPI as they
    are; CuPy arrays too when ``cuda_aware`` (an MPI built with CUDA support), else through host
    memory. Each collective waits at most ``timeout`` seconds (the watchdog)."""

    def __init__(self, comm=None, timeout=None, cuda_aware=False):
        try:
            from mpi4py import MPI
        except (ImportError, RuntimeError) as e:  # no mpi4py, or no MPI library for it
            raise ImportError(f"data parallelism needs mpi4py and an MPI ({e}): "
                              f"pip install -e \".[mpi]\" (docs/distributed.md)") from None
        self.MPI, self.comm = MPI, comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.name = f"MPI, {self.size} rank{'s' * (self.size > 1)}"
        self.cuda_aware = cuda_aware
        self.watchdog = Watchdog(self.rank, timeout or timeout_from_env())

    def allreduce(self, array):
        """Sum ``array`` over the ranks, in place (every rank gets the sum); returns it."""
        host = self._host(array)
        with self.watchdog("an all-reduce"):
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        return self._back(host, array)

    def broadcast(self, array):
        """Rank 0's ``array`` into every rank's, in place; returns it."""
        host = self._host(array)
        with self.watchdog("a broadcast"):
            self.comm.Bcast(host, root=0)
        return self._back(host, array)

    def broadcast_object(self, obj):
        """Rank 0's Python object (pickled), on every rank."""
        data = np.frombuffer(pickle.dumps(obj), np.uint8) if self.rank == 0 else None
        n = self.broadcast(np.array([0 if data is None else data.size], np.int64))
        data = self.broadcast(data if data is not None else np.empty(int(n[0]), np.uint8))
        return pickle.loads(data.tobytes())

    def gather_objects(self, obj):
        """Every rank's object, as a list on rank 0 (None on the others)."""
        with self.watchdog("a gather"):
            return self.comm.gather(obj, root=0)

    def allgather_objects(self, obj):
        with self.watchdog("an all-gather"):
            return self.comm.allgather(obj)

    def abort(self, code=1):
        """End every rank at once (after an error only this rank met)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)

    def _host(self, array):
        if isinstance(array, np.ndarray):
            return array
        backend.get_array_module(array).cuda.get_current_stream().synchronize()
        return array if self.cuda_aware else backend.as_numpy(array)

    @staticmethod
    def _back(host, array):
        if host is not array:
            array.set(host)
        return array


class NCCLCommunicator(MPICommunicator):
    """One process per GPU: CuPy arrays over NCCL (``cupyx.distributed.NCCLBackend``, started
    through MPI), everything else over MPI. Each rank uses the GPU of its rank among the ranks
    of its machine (two machines of 4 GPUs: ranks 0-3 and 4-7 each take GPUs 0-3)."""

    def __init__(self, comm=None, timeout=None):
        super().__init__(comm, timeout)
        import cupy
        import cupyx.distributed

        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_rank()
        cupy.cuda.Device(local % cupy.cuda.runtime.getDeviceCount()).use()
        self.cupy = cupy
        with self.watchdog("NCCL's start"):
            self.nccl = cupyx.distributed.NCCLBackend(self.size, self.rank, use_mpi=True)
        self.name = f"NCCL, {self.size} GPU{'s' * (self.size > 1)}"

    def allreduce(self, array):
        if isinstance(array, np.ndarray):
            return super().allreduce(array)
        with self.watchdog("an NCCL all-reduce"):
            self.nccl.all_reduce(array, array, "sum")
            self.cupy.cuda.get_current_stream().synchronize()
        return array

    def broadcast(self, array):
        if isinstance(array, np.ndarray):
            return super().broadcast(array)
        with self.watchdog("an NCCL broadcast"):
            self.nccl.broadcast(array, 0)
            self.cupy.cuda.get_current_stream().synchronize()
        return array


def init(backend_name="mpi", timeout=None):
    """The communicator of this process: 'mpi', 'nccl' (GPUs) or 'single'."""
    if backend_name == "single":
        return SingleProcess()
    if backend_name == "mpi":
        return MPICommunicator(timeout=timeout)
    if backend_name == "nccl":
        return NCCLCommunicator(timeout=timeout)
    raise ValueError(f"distributed.init: backend must be 'mpi', 'nccl' or 'single', got "
                     f"{backend_name!r}")


class Watchdog:
    """Ends this process with a one-line error when a collective waits more than ``timeout``
    seconds. A rank that hangs never answers, and MPI would wait for it for ever (MPICH's
    mpiexec ends the other ranks itself when one dies, but not when one hangs, and other
    launchers may leave them running). A thread, because the main thread is inside MPI's C code
    (mpi4py lets go of the GIL there), where Python cannot interrupt it."""

    def __init__(self, rank, timeout):
        self.rank, self.timeout, self.waiting = rank, float(timeout), None
        threading.Thread(target=self._watch, daemon=True).start()

    @contextlib.contextmanager
    def __call__(self, what):
        self.waiting = (what, time.monotonic() + self.timeout)
        try:
            yield
        finally:
            self.waiting = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 20))
            waiting = self.waiting
            if waiting is not None and time.monotonic() > waiting[1]:
                message = (f"error: --distributed: rank {self.rank} waited {self.timeout:g} s "
                           f"for the other ranks in {waiting[0]}: one of them has died or hangs "
                           f"({TIMEOUT_ENV} sets the wait)\n")
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                os.write(2, message.encode())
                os._exit(1)
