"""A run folder and what keeps a run safe: checkpoints, resume, Ctrl-C, the progress bar.

    RUN/config.json         every option of the run (at the start; after the next checkpoint
                            of a resumed run whose options changed)
    RUN/metrics.jsonl       one JSON record per validation
    RUN/checkpoint_last.npz weights, momentum buffers, position and random state
    RUN/checkpoint_best.npz the weights of the best validation so far
    RUN/history.png, RUN/predictions.png, RUN/confusion.png, RUN/per_class_iu.png,
    RUN/worst.png           redrawn at each validation (atomically, as the checkpoints)
    RUN/run.lock            while a process runs there: its pid and host (lock.py)

Checkpoints are written atomically (``io.save_checkpoint``: a temporary file, then a rename),
so a kill at any moment leaves the previous one whole. With the position (epoch, batch,
iteration) and the random state, ``resume`` continues exactly where the run stopped: the data
order is a pure function of (seed, epoch), and the dropout generator's state travels too.
The files agree with each other whenever the run is killed: the best checkpoint is written
before the record that names it, config.json after the checkpoint it describes, and
``--resume`` continues with the config of checkpoint_last.npz, refusing a config.json that
disagrees with it (``run_config``).
"""
import itertools
import json
import math
import os
import signal
from pathlib import Path

from .. import backend, io
from ..io.errors import described
from .lock import holder_of, lock_run

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


def open_run(folder, resume=False, overwrite=False, log=print):
    """The Run in ``folder``, locked for this process (``Run.close()`` unlocks it) and checked:
    a resumed run must have its last checkpoint; a new run refuses a folder that already holds
    a run unless ``overwrite`` (then its run files, and only those, are removed first). A
    folder another process runs in is refused (``lock.lock_run``)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"run folder {folder} is a file, not a folder")
    run = Run(folder)
    run.lock = lock_run(folder, log)  # before anything is read or removed
    try:
        if resume:
            if not (folder / LAST).is_file():
                raise FileNotFoundError(f"--resume {folder}: no {LAST} there to continue from")
            return run
        existing = [name for name in RUN_FILES if (folder / name).exists()]
        if existing and not overwrite:
            raise FileExistsError(f"run folder {folder} already holds a run "
                                  f"({', '.join(existing)}); continue it with --resume {folder}, "
                                  f"or start it again with --overwrite")
        for name in existing:
            (folder / name).unlink()
    except BaseException:
        run.close()
        raise
    return run


# what every line of metrics.jsonl holds (the classifier's add top1), and the numbers among them
RECORD_FIELDS = ("epoch", "iteration", "loss", "pixel_acc", "mean_acc", "mean_iu", "fw_iu")
NUMBERS = ("loss", "pixel_acc", "mean_acc", "mean_iu", "fw_iu", "top1", "elapsed_s")


class Run:
    """A run folder: config.json, metrics.jsonl, checkpoints, plots."""

    lock = None

    def __init__(self, folder):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name):
        return self.dir / name

    def close(self):
        """Unlock the folder (open_run locked it)."""
        if self.lock is not None:
            self.lock.release()

    def write_config(self, config):
        """config.json, unless it already says ``config``."""
        text = json.dumps(config, indent=2) + "\n"
        try:
            if json.loads(self.path("config.json").read_text()) == json.loads(text):
                return
        except (OSError, ValueError):
            pass
        io.atomic_write_text(self.path("config.json"), text)

    def records(self, required=()):
        """The records of metrics.jsonl, each checked (a hand edit is a ValueError naming the
        line): a JSON object with RECORD_FIELDS and the ``required`` ones, numbers where
        numbers belong."""
        p = self.path("metrics.jsonl")
        if not p.exists():
            return []
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{p} cannot be read ({described(e)})") from None
        records = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                problem = _record_problem(record, dict.fromkeys(RECORD_FIELDS + required))
            except ValueError as e:
                problem = f"is not JSON ({e})"
            if problem:
                raise ValueError(f"{p} line {n} {problem}; the run writes one JSON record a "
                                 f"validation: undo the edit, or remove the line")
            records.append(record)
        return records

    def append_record(self, record, keep=None):
        """Add one validation record; ``keep`` drops records past an iteration (on resume)."""
        records = [r for r in self.records() if keep is None or r["iteration"] <= keep]
        records.append(record)
        io.atomic_write_text(self.path("metrics.jsonl"),
                             "".join(json.dumps(r) + "\n" for r in records))
        return records


def _record_problem(record, required):
    """What is wrong with one record of metrics.jsonl, or None."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    missing = [k for k in required if k not in record]
    if missing:
        return f"lacks {', '.join(missing)}"
    for key in ("epoch", "iteration"):
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"has {key} {value!r}, not a count (an integer >= 0)"
    for key in NUMBERS:
        value = record.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"has {key} {value!r}, not a number"
    return None


def run_config(folder, given=()):
    """The config ``--resume`` continues the run in ``folder`` with: the one its
    checkpoint_last.npz was made with. config.json must say the same, except for the options
    ``given`` on the command line (which replace both); a config.json that disagrees (a hand
    edit) is a ValueError naming the keys. A missing config.json is written again from the
    checkpoint."""
    folder = Path(folder)
    last = folder / LAST
    if not last.is_file():
        raise FileNotFoundError(f"--resume {folder}: no {LAST} there to continue from")
    try:
        config = io.checkpoint.load_checkpoint_meta(last).get("config")
    except Exception as e:  # any damage: the file is named, the run is not started
        raise ValueError(f"--resume {folder}: {LAST} cannot be read ({described(e)})") from None
    if not isinstance(config, dict) or not config:
        raise ValueError(f"--resume {folder}: {LAST} holds no config to continue with")
    path = folder / "config.json"
    try:
        written = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return config
    except (OSError, ValueError) as e:
        raise ValueError(f"--resume {folder}: config.json is damaged ({described(e)}); the run's "
                         f"config is in {LAST}: undo the edit, or remove config.json to have it "
                         f"written again from the checkpoint") from None
    if not isinstance(written, dict):
        raise ValueError(f"--resume {folder}: config.json is not a JSON object; undo the edit, "
                         f"or remove config.json to have it written again from the checkpoint")
    absent = "(absent)"
    keys = [k for k in {**config, **written} if k not in given
            and not _same(written.get(k, absent), config.get(k, absent))]
    if keys:
        holder = holder_of(folder)
        if holder:  # a run going on there rewrites both files
            raise ValueError(f"run folder {folder} is in use by {holder}: wait for it to end, "
                             f"or stop it")
        said = ", ".join(f"{k} ({written.get(k, absent)!r} there, {config.get(k, absent)!r} in "
                         f"the checkpoint)" for k in keys[:6])
        more = f" and {len(keys) - 6} more" if len(keys) > 6 else ""
        raise ValueError(f"--resume {folder}: config.json disagrees with {LAST}, whose config "
                         f"the run continues with, on {said}{more}; undo the edit (or remove "
                         f"config.json: it is written again from the checkpoint), and give "
                         f"what may change as options (--lr ...)")
    return config


def _same(a, b):
    """Values of two JSON files equal (NaN equal to NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


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


def progress(total, initial, desc, disable=False):
    """A tqdm bar: a run's steps, a validation's images (MINIFCN_NO_PROGRESS=1 turns every bar
    off, as the tests do; ``disable`` too, e.g. on every rank of a data-parallel run but 0)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                mininterval=1.0,
                disable=disable or os.environ.get("MINIFCN_NO_PROGRESS") == "1")
