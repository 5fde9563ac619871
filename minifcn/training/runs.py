"""A run folder and what keeps a run safe: checkpoints, resume, Ctrl-C, the progress bar.

    RUN/config.json         every option of the run (written once, at the start)
    RUN/metrics.jsonl       one JSON record per validation
    RUN/checkpoint_last.npz weights, momentum buffers, position and random state
    RUN/checkpoint_best.npz the weights of the best validation so far
    RUN/history.png, RUN/predictions.png

Checkpoints are written atomically (``io.save_checkpoint``: a temporary file, then a rename),
so a kill at any moment leaves the previous one whole. With the position (epoch, batch,
iteration) and the random state, ``resume`` continues exactly where the run stopped: the data
order is a pure function of (seed, epoch), and the dropout generator's state travels too.
"""
import json
import os
from pathlib import Path

from .. import backend, io

LAST, BEST = "checkpoint_last.npz", "checkpoint_best.npz"


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
    """While active, the first SIGINT (Ctrl-C) only sets ``requested``, so the loop can finish
    its step and write a checkpoint; a second one interrupts at once."""

    requested = False

    def __enter__(self):
        import signal

        self._signal = signal
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def request(self):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            self._signal.signal(self._signal.SIGINT, self._previous)
        return False


def progress(total, initial, desc):
    """A tqdm bar for one epoch (MINIFCN_NO_PROGRESS=1 turns it off, as the tests do)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                mininterval=1.0, disable=os.environ.get("MINIFCN_NO_PROGRESS") == "1")
