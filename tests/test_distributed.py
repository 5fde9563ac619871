"""Data parallelism (minifcn.distributed, ``python -m minifcn.train --distributed``) on the CPU.

The tests that need ranks run ``mpiexec -n 2`` (and -n 4 once) on tiny runs (width 1/64, 40x40
images, a few steps, seconds each, each with a timeout); they skip, saying why, where mpi4py or
an mpiexec is missing (``pip install -e ".[mpi]"`` brings both). The rest run in this process.

Equality with one process: after K steps at the same global batch, every weight tensor's
difference from the one-process run is at most 1e-2 of how far that tensor moved in the K steps,
or 1e-5 of the largest move of any tensor of the net, whichever is larger. The two runs add the
same numbers in another order (each rank sums its own images' gradients, then the all-reduce
sums the ranks'), and float32 keeps 24 bits: a gradient whose terms nearly cancel keeps fewer
correct digits, and training carries the difference on and amplifies it step by step
(docs/distributed.md measures how). At these 6 steps the measured worst was 4e-7 of a tensor's
move for FCN-8s and 9e-5 for U-Net, whose batch norms divide by small variances: the margin
leaves room for another BLAS's rounding. A bug is far outside it (a wrong random draw, a
per-rank batch norm: 0.4 and 1.3 of the move). A convolution's bias just before a batch norm
gets a gradient that is zero but for rounding: it does not move, and only the floor applies.

The NCCL path needs GPUs: ``test_nccl_training_equals_one_process_on_gpus`` runs only on a
machine with CuPy and a CUDA device, and skips elsewhere with the reason.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minifcn
from minifcn import backend, data, distributed, io, nn, training
from minifcn import train as train_cli
from minifcn.autograd import Tensor

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("quiet")  # no progress bars (tests/conftest.py)

# a run of a few seconds: 24 images of 40x40 in batches of 4 (one epoch of 6 steps), from
# scratch; dropout and loss sampling on (their random draws must be the one-process draws), and
# random flips (the default)
TINY = ["--width", "0.015625", "--size", "40", "--n-train", "24", "--n-val", "8",
        "--batch-size", "4", "--device", "cpu", "--warmup", "0"]
RANDOM = ["--dropout", "0.5", "--loss-sampling", "0.5", "--sampling-batch", "same"]
TIMEOUT = 180  # seconds for one mpiexec: a tiny run takes about 5


def _mpiexec():
    """(argv prefix of mpiexec, None) or (None, why the MPI tests are skipped)."""
    if importlib.util.find_spec("mpi4py") is None:
        return None, 'mpi4py is not installed (pip install -e ".[mpi]" brings it and an mpiexec)'
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which("mpiexec", path=path)
    if exe is None:
        return None, 'no mpiexec found (pip install -e ".[mpi]" brings MPICH\'s)'
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    hydra = "HYDRA" in version.stdout  # MPICH's launcher; Open MPI's needs leave to oversubscribe
    return ([exe] if hydra else [exe, "--oversubscribe"]), None


MPIEXEC, NO_MPI = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason=f"MPI tests skipped: {NO_MPI}")


def _env():
    # unbuffered: the tests read rank 0's lines as they come; one thread a rank on few cores
    env = dict(os.environ, MINIFCN_NO_PROGRESS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "")
                                                       .split(os.pathsep) if p])
    return env


def mpirun(n, args, cwd, timeout=TIMEOUT, python=("-m", "minifcn.train")):
    return subprocess.run([*MPIEXEC, "-n", str(n), sys.executable, *python, *args], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def start_mpirun(n, args, cwd, extra_env=()):
    return subprocess.Popen([*MPIEXEC, "-n", str(n), sys.executable, "-m", "minifcn.train",
                             *args], cwd=cwd, env={**_env(), **dict(extra_env)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def end(job, *pids):
    """Leave nothing running when a test fails midway: the job's ranks (a stopped one too, which
    mpiexec's own signal would not end) while they are still the job's, then mpiexec."""
    if job.poll() is None:
        for pid in pids:
            if _descends_from(pid, job.pid):  # still this job's process, not a reused id
                os.kill(pid, signal.SIGKILL)
        job.kill()
    job.wait(timeout=30)


def weights(run):
    arrays, meta = io.load_checkpoint(Path(run) / training.LAST)
    return {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}, meta


def initial_weights(config):
    """The weights a run of ``config`` starts from (fit seeds, then builds the model)."""
    backend.manual_seed(config["seed"])
    return training.build_model(config).state_dict()


def assert_same_training(one, many):
    """``many``'s weights are ``one``'s up to the order of float sums (see the module's text)."""
    w1, meta = weights(one)
    wn, meta_n = weights(many)
    assert meta_n["iteration"] == meta["iteration"]
    w0 = initial_weights(meta["config"])
    floats = [k for k, v in w0.items() if v.dtype.kind == "f"]
    assert all(np.array_equal(w1[k], wn[k]) for k in w0 if k not in floats)  # batches tracked
    update = {k: np.abs(w1[k].astype(np.float64) - w0[k]).max() for k in floats}
    floor = 1e-5 * max(update.values())  # what does not move is rounding noise below this
    for k in floats:
        difference = np.abs(w1[k].astype(np.float64) - wn[k]).max()
        assert difference <= max(1e-2 * update[k], floor), \
            f"{k}: differs by {difference:.3g} after moving {update[k]:.3g}"
    # the runs did train: the comparison means something
    assert sum(u > 1e3 * floor for u in update.values()) >= len(floats) // 3


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The one-process runs the data-parallel ones are held to: {name: run folder}."""
    where = tmp_path_factory.mktemp("one")
    runs = {"fcn8s": TINY + RANDOM + ["--iters", "6"],
            "unet": TINY + ["--model", "unet", "--iters", "6"]}
    for name, args in runs.items():
        assert train_cli.main(args + ["--out", str(where / name)]) == 0
    return {name: where / name for name in runs}


# ---------------------------------------------------------------- with mpiexec: the command


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_fcn8s_on_2_and_4_ranks_trains_the_one_process_weights(one_process, tmp_path, ranks):
    done = mpirun(ranks, ["--distributed", *TINY, *RANDOM, "--iters", "6", "--out", "run"],
                  tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(one_process["fcn8s"], tmp_path / "run")
    # rank 0 alone prints and writes: each line once, one run folder and nothing else
    assert done.stdout.count("run folder: run\n") == 1 and done.stdout.count("\nbest:") == 1
    assert f"MPI, {ranks} ranks, {4 // ranks} images each of a batch of 4" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    one = [json.loads(line) for line in (one_process["fcn8s"] / "metrics.jsonl").open()]
    many = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["iteration"] for r in many] == [r["iteration"] for r in one]


@needs_mpi
def test_a_batch_norm_net_on_2_ranks_trains_the_one_process_weights(one_process, tmp_path):
    """U-Net's batch norms are synchronised: each normalises by the whole batch's statistics."""
    done = mpirun(2, ["--distributed", *TINY, "--model", "unet", "--iters", "6", "--out", "run"],
                  tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_training(one_process["unet"], tmp_path / "run")
    w1, wn = weights(one_process["unet"])[0], weights(tmp_path / "run")[0]
    for name in ("conv1_1_bn.running_mean", "conv1_1_bn.running_var"):
        np.testing.assert_allclose(wn[name], w1[name], rtol=1e-4, atol=1e-7)


@needs_mpi
def test_sigterm_to_one_rank_stops_every_rank_with_one_checkpoint_and_resume_is_exact(tmp_path):
    """SIGTERM to rank 1 alone: its stop request travels with the next step's all-reduce, so
    every rank stops after the same step; rank 0 writes the checkpoint; the run resumed (on one
    rank: the position is the global batch's) ends where an unbroken one-process run does. A
    constant lr: the poly schedule's depends on the length, which the resume changes."""
    long = [*TINY, "--n-train", "400", "--lr-schedule", "constant"]
    args = ["--distributed", *long, "--iters", "1000", "--out", "run"]
    job, ranks = start_mpirun(2, args, tmp_path), []
    try:
        for line in job.stdout:  # rank 0 says so once the weights are shared: training starts
            if line.startswith("data parallel:"):
                break
        time.sleep(0.5)
        ranks = [_rank_pid(job.pid, 0), _rank_pid(job.pid, 1)]
        os.kill(ranks[1], signal.SIGTERM)
        out, err = job.communicate(timeout=TIMEOUT)
    finally:
        end(job, *ranks)
    assert job.returncode == 130, err[-3000:]
    assert out.count("stopped at iteration") == 1, out
    stopped = weights(tmp_path / "run")[1]["iteration"]
    assert 0 < stopped < 100  # stopped by the signal, inside the first epoch
    resumed = mpirun(1, ["--distributed", "--resume", "run", "--iters", str(stopped + 2)],
                     tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert train_cli.main(long + ["--iters", str(stopped + 2), "--out", str(tmp_path / "one")]) == 0
    assert_same_training(tmp_path / "one", tmp_path / "run")


def _rank_pid(mpiexec_pid, rank, timeout=30.0):
    """The process id of ``rank`` of the job that ``mpiexec_pid`` started (Linux's /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                env = (proc / "environ").read_bytes().split(b"\0")
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in env and b"minifcn.train" in cmd and \
                    _descends_from(int(proc.name), mpiexec_pid):
                return int(proc.name)
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} under mpiexec {mpiexec_pid}")


def _descends_from(pid, ancestor):
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="finds a rank's process through Linux's /proc")


@needs_mpi
@needs_proc
@pytest.mark.parametrize("how", ["killed", "hangs"])
def test_a_rank_that_dies_or_hangs_ends_the_run_in_bounded_time(tmp_path, how):
    """Killed (SIGKILL): MPICH's mpiexec ends the other ranks at once. Hanging (SIGSTOP): the
    other ranks' watchdog gives up after MINIFCN_DISTRIBUTED_TIMEOUT seconds with one line."""
    args = ["--distributed", *TINY, "--n-train", "400", "--iters", "1000", "--out", "run"]
    job, ranks = start_mpirun(2, args, tmp_path, {distributed.TIMEOUT_ENV: "3"}), []
    try:
        for line in job.stdout:
            if line.startswith("data parallel:"):
                break
        time.sleep(0.5)
        ranks = [_rank_pid(job.pid, 0), _rank_pid(job.pid, 1)]
        os.kill(ranks[1], signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        t0 = time.monotonic()
        out, err = job.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        end(job, *ranks)
    assert job.returncode != 0
    assert waited < 30, f"the job took {waited:.0f} s to end"
    if how == "hangs":
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert lines == ["error: --distributed: rank 0 waited 3 s for the other ranks in an "
                         "all-reduce: one of them has died or hangs "
                         f"({distributed.TIMEOUT_ENV} sets the wait)"], err[-3000:]


@needs_mpi
def test_a_batch_that_does_not_split_evenly_is_refused_naming_both_numbers(tmp_path):
    done = mpirun(2, ["--distributed", *TINY, "--batch-size", "3", "--iters", "1"], tmp_path,
                  timeout=120)
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "error: --batch-size 3 does not split evenly over 2 ranks (--distributed: the batch is "
        "the whole one, shared by the ranks); give a multiple of 2"]
    assert not (tmp_path / "runs").exists()


@needs_mpi
def test_several_ranks_without_distributed_are_refused_in_one_line(tmp_path):
    done = mpirun(2, [*TINY, "--iters", "1"], tmp_path, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "one of 2 MPI processes" in lines[0] and "--distributed" in lines[0]


# ---------------------------------------------------------------- with mpiexec: the pieces


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    """tests/_distributed_checks.py run on 2 ranks: what rank 0 measured."""
    if MPIEXEC is None:
        pytest.skip(f"MPI tests skipped: {NO_MPI}")
    where = tmp_path_factory.mktemp("checks")
    done = mpirun(2, [str(where / "out.json")], where,
                  python=(str(ROOT / "tests" / "_distributed_checks.py"),))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((where / "out.json").read_text())


def test_synchronised_batch_norm_on_two_halves_is_batch_norm_of_the_whole_batch(checks):
    bn = checks["bn"]  # float64: output, every gradient and the running statistics
    assert max(bn.values()) < 1e-12, bn


def test_the_gradients_all_reduce_sums_every_rank_and_leaves_unreached_parameters_alone(checks):
    a = checks["allreduce"]
    assert a["a"] == [[3.0] * 3] * 2 and a["b"] == [0.0, 3.0, 6.0, 9.0]  # rank 0 x1 + rank 1 x2
    assert a["c_is_none"] and a["extras"] == [30.0, 2.0]


def test_one_steps_gradient_on_two_ranks_is_the_whole_batchs_mean_gradient(checks):
    g = checks["gradient"]  # relative to each tensor's largest gradient
    assert g["summed"] < 1e-5, g
    assert g["averaged_means"] > 1e-2, g  # the shortcut the summed loss avoids is measurably wrong


def test_rank_0s_weights_buffers_momentum_and_random_state_reach_every_rank(checks):
    assert all(checks["broadcast"].values()), checks["broadcast"]


def test_a_batch_parts_random_draws_are_the_one_process_draws(checks):
    assert checks["random_rows"] == 0.0


def test_validation_over_two_ranks_gives_exactly_the_one_process_metrics(checks):
    v = checks["validate"]
    assert v["batches_per_rank"] == [2, 1]  # 10 images in batches of 4: batches 0, 2 | 1
    assert v["confusion_equal"] and v["scores_equal"] and v["classes_predicted"] >= 2
    assert v["loss"][0] == v["loss"][1]
    assert v["examples_equal"] and v["worst_images_equal"]
    assert v["worst_losses"][0] == v["worst_losses"][1]


def test_an_error_of_rank_0_ends_the_others_quietly_and_rank_0_names_another_ranks(checks):
    (lead0, agree0), (lead1, agree1) = checks["errors"]
    assert lead0 == "ValueError rank 0 refuses every_rank=True" and lead1 == "SystemExit 1"
    assert agree0 == "ValueError rank 1: no data here" and agree1 == "SystemExit 1"


# ---------------------------------------------------------------- in this process


def test_shards_of_a_batch_are_its_slices_and_cover_every_image_once():
    ds = data.get_dataset("shapes", "train", n=22, size=24)
    whole = data.Loader(ds, 6, flip=True, crop=20, seed=5)
    parts = [data.Loader(ds, 6, flip=True, crop=20, seed=5, shard=(k, 4)) for k in range(4)]
    for e in (0, 1):
        for b, (x, y) in enumerate(whole.epoch(e)):
            pieces = [next(p.epoch(e, start=b)) for p in parts]
            assert np.array_equal(np.concatenate([q[0] for q in pieces]), x)
            assert np.array_equal(np.concatenate([q[1] for q in pieces]), y)
            bounds = [p.batch_part(b) for p in parts]
            assert [s for s, _, _ in bounds] == [0] + [t for _, t, _ in bounds[:-1]]
            assert bounds[-1][1:] == (len(x), len(x))
    assert [len(p) for p in parts] == [len(whole)] * 4  # every rank steps through every batch


def test_shards_by_batches_deal_the_batches_round_the_ranks():
    ds = data.get_dataset("shapes", "val", n=10, size=24)
    whole = list(data.Loader(ds, 3, shuffle=False).epoch(0))
    parts = [list(data.Loader(ds, 3, shuffle=False, shard=(k, 2), shard_by="batches").epoch(0))
             for k in range(2)]
    assert [len(p) for p in parts] == [2, 2]
    for b, (x, _) in enumerate(whole):
        assert np.array_equal(parts[b % 2][b // 2][0], x)


def test_a_batch_too_small_to_split_is_refused_naming_the_numbers():
    ds = data.get_dataset("shapes", "train", n=17, size=24)
    with pytest.raises(ValueError, match=r"17 images in batches of 8 leave a last batch of 1"):
        data.Loader(ds, 8, shard=(0, 2))
    with pytest.raises(ValueError, match=r"over 4 processes.*batch_size is 2"):
        data.Loader(ds, 2, shard=(0, 4))


def test_random_rows_without_a_part_are_the_generators_draws():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(backend.random_rows((4, 5), generator=a), b.random((4, 5)))


def test_sync_batch_norm_on_one_process_is_batch_norm_and_its_gradient_checks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4, 5)) * 2 + 1
    plain, synced = nn.BatchNorm2d(2).double(), nn.BatchNorm2d(2).double()
    model, changed = distributed.sync_batch_norm(synced, distributed.SingleProcess())
    assert changed == 1 and isinstance(synced, distributed.SyncBatchNorm2d)
    assert set(synced.state_dict()) == set(plain.state_dict())  # a checkpoint loads either way
    np.testing.assert_allclose(synced(Tensor(x)).data, plain(Tensor(x)).data, atol=1e-12)
    np.testing.assert_allclose(synced.running_var.data, plain.running_var.data, atol=1e-12)
    xt = Tensor(x, requires_grad=True)
    assert minifcn.gradcheck(lambda t: synced(t) * Tensor(np.arange(120.0).reshape(x.shape)),
                             [xt])
    untracked = nn.BatchNorm2d(2, track_running_stats=False).double()
    expected = untracked(Tensor(x)).data
    distributed.sync_batch_norm(untracked, distributed.SingleProcess())
    np.testing.assert_allclose(untracked(Tensor(x)).data, expected, atol=1e-12)


class _TwoAlike(distributed.SingleProcess):
    """Two ranks that hold the same numbers: an all-reduce doubles them."""

    size = 2

    def allreduce(self, array):
        array *= 2
        return array


def test_the_gradients_travel_in_one_buffer_and_come_back_as_views_of_it():
    p, q = nn.Parameter(np.ones((2, 2), np.float32)), nn.Parameter(np.ones(3, np.float32))
    p.grad, q.grad = np.full((2, 2), 1.5, np.float32), np.arange(3, dtype=np.float32)
    reduce = distributed.GradientAllReduce([p, q], _TwoAlike())
    assert reduce(4.0, 0.5) == [8.0, 1.0]
    assert np.array_equal(p.grad, np.full((2, 2), 3.0)) and np.array_equal(q.grad, [0, 2, 4])
    assert p.grad.base is reduce.flat and q.grad.base is reduce.flat  # no copies
    reduce.scale(0.5)
    assert np.array_equal(q.grad, [0, 1, 2])


def test_distributed_without_mpi4py_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if not installed
    with pytest.raises(SystemExit) as e:
        train_cli.main([*TINY, "--distributed"])
    assert str(e.value).startswith("error: --distributed: data parallelism needs mpi4py")
    assert "\n" not in str(e.value) and 'pip install -e ".[mpi]"' in str(e.value)


@pytest.mark.parametrize("launcher", [("PMI_SIZE", "PMI_RANK"),
                                      ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")])
def test_a_process_of_an_mpi_job_without_distributed_is_refused_by_rank_0_only(monkeypatch,
                                                                                 launcher):
    size, rank = launcher
    monkeypatch.setenv(size, "2")
    monkeypatch.setenv(rank, "0")
    with pytest.raises(SystemExit) as e:
        train_cli.main([*TINY, "--iters", "1"])
    assert "one of 2 MPI processes" in str(e.value) and "add --distributed" in str(e.value)
    monkeypatch.setenv(rank, "1")
    with pytest.raises(SystemExit) as e:
        train_cli.main([*TINY, "--iters", "1"])
    assert e.value.code == 2  # the same refusal, said by rank 0 alone


def test_the_watchdog_ends_a_process_whose_collective_never_returns(tmp_path):
    code = ("import time\nfrom minifcn.distributed import Watchdog\n"
            "w = Watchdog(rank=3, timeout=0.5)\nwith w('a test'):\n    time.sleep(30)\n")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert time.monotonic() - t0 < 20 and done.returncode == 1
    assert done.stderr.startswith("error: --distributed: rank 3 waited 0.5 s for the other "
                                  "ranks in a test: one of them has died or hangs")


# ---------------------------------------------------------------- NCCL, on GPUs only


@needs_mpi
@pytest.mark.gpu
def test_nccl_training_equals_one_process_on_gpus(tmp_path):
    """On every GPU of the machine, one rank each (NCCL), against one process on one GPU. Runs
    only where CuPy sees a CUDA device; on one GPU that is a 1-rank NCCL job."""
    reason = backend.cupy_unavailable_reason()
    if reason is not None:
        pytest.skip(f"the NCCL path needs CuPy and a CUDA device: {reason}")
    gpus = backend.cupy_or_none().cuda.runtime.getDeviceCount()
    ranks = 2 if gpus >= 2 else 1
    cuda = [a if a != "cpu" else "cuda" for a in TINY] + RANDOM + ["--iters", "6"]
    assert train_cli.main(cuda + ["--out", str(tmp_path / "one")]) == 0
    done = mpirun(ranks, ["--distributed", *cuda, "--out", "run"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"NCCL, {ranks} GPU" in done.stdout
    assert_same_training(tmp_path / "one", tmp_path / "run")
