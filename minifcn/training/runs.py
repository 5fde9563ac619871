"""A run folder and what keeps a run safe: checkpoints, resume, Ctrl-C, the progress bar.

    RUN/config.json         every option of the run (written once, at the start)
    RUN/metrics.jsonl       one JSON record per validation
    RUN/checkpoint_last.npz weights, momentum buffers, position and random state
    RUN/checkpoint_best.npz the weights of the best validation so far
    RUN/history.png, RUN/predictions.png, RUN/confusion.png, RUN/per_class_iu.png,
    RUN/worst.png           redrawn at each validation (atomically, as the checkpoints)

Checkpoints are written atomically (``io.save_checkpoint``: a temporary file, then a rename),
so a kill at any moment leaves the previous one whole. With the position (epoch, batch,
iteration) and the random state, ``resume`` continues exactly where the run stopped: the data
order is a pure function of (seed, epoch), and the dropout generator's state travels too.
"""
import itertools
import json
import os
import signal
from pathlib import Path

from .. import backend, io

LAST, BEST = "checkpoint_last.npz", "checkpoint_best.npz"
RUN_FILES = ("config.json", "metrics.jsonl", LAST, BEST, "history.png", "predictions.png",
             "confusion.png", "per_class_iu.png", "worst.png")


def new_run_dir(base):
    """Create and return the folder ``base``, or ``base-2``, ``base-3``, ... if it exists: two
    runs started in the same second never share a folder (mkdir is atomic)."""
    for k in itertools.count(1):
        path = Path(base if k == 1 else f"{base}-{k}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue


def open_run(folder, resume=False, overwrite=False):
    """The Run in ``folder``, checked: a resumed run must have its last checkpoint; a new run
    refuses a folder that already holds a run unless ``overwrite`` (then its run files, and
    only those, are removed first)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"run folder {folder} is a file, not a folder")
    if resume:
        if not (folder / LAST).is_file():
            raise FileNotFoundError(f"--resume {folder}: no {LAST} there to continue from")
        return Run(folder)
    existing = [name for name in RUN_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"run folder {folder} already holds a run ({', '.join(existing)}); "
                              f"continue it with --resume {folder}, or start it again with "
                              f"--overwrite")
    for name in existing:
        (folder / name).unlink()
    return Run(folder)


class Run:
    """A run folder: config.json, metrics.jsonl, checkpoints, plots."""

    def __init__(self, folder):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name):
        return self.dir / name

    def write_config(self, config):
        io.atomic_write_text(self.path("config.json"), json.dumps(config, indent=2) + "\n")

    def records(self):
        p = self.path("metrics.jsonl")
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] \
            if p.exists() else []

    def append_record(self, record, keep=None):
        """Add one validation record; ``keep`` drops records past an iteration (on resume)."""
        records = [r for r in self.records() if keep is None or r["iteration"] <= keep]
        records.append(record)
        io.atomic_write_text(self.path("metrics.jsonl"),
                             "".join(json.dumps(r) + "\n" for r in records))
        return records


def save_training_checkpoint(path, model, opt, meta):
    """Weights ('model/...'), momentum buffers ('optim/...', when opt is given) and meta, in one
    atomically written .npz."""
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    if opt is not None:
        arrays.update({f"optim/{k}": backend.as_numpy(v) for k, v in opt.state_dict().items()})
    io.save_checkpoint(path, arrays, meta)


def position(epoch, batch, iteration, best, config):
    """Where a run stands: enough, with the weights, to continue it exactly."""
    return {"epoch": epoch, "batch": batch, "iteration": iteration, "best": best,
            "config": config, "rng": backend.rng().bit_generator.state}


def restore(run, model, opt):
    """Load RUN/checkpoint_last.npz into ``model`` and ``opt`` and the random state; returns
    (epoch, batch, iteration, best record) of the position to continue from."""
    arrays, meta = io.load_checkpoint(run.path(LAST))
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
    opt.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim/")})
    backend.rng().bit_generator.state = meta["rng"]
    return meta["epoch"], meta["batch"], meta["iteration"], meta.get("best")


class StopFlag:
    """While active, the first SIGINT (Ctrl-C) or SIGTERM (how ``kill`` and job schedulers stop
    a job) only sets ``requested``, so the loop can finish its step and write a checkpoint; a
    second one interrupts at once."""

    requested = False
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals alone
            self._previous = {}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def request(self):
        self.requested = True

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def progress(total, initial, desc, quiet=False):
    """A tqdm bar for one epoch (MINIFCN_NO_PROGRESS=1 turns it off, as the tests do; so does
    ``quiet``, for every rank of a data-parallel run but rank 0)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                mininterval=1.0, disable=quiet or os.environ.get("MINIFCN_NO_PROGRESS") == "1")
