"""The training loop behind ``python -m minifcn.train``: one image's path, end to end.

    batch (data.Loader) -> Tensor -> model -> softmax_cross_entropy -> backward -> SGD step
    -> every epoch: validate (metrics) -> run folder (checkpoints, metrics.jsonl, plots)

Reliability: checkpoints are written atomically (``io.save_checkpoint``: a temporary file, then
a rename), so a kill at any moment leaves the previous one whole. A checkpoint holds the
weights, the momentum buffers, the position (epoch, batch, iteration) and the random state, so
``resume`` continues exactly where the run stopped: the data order is a pure function of
(seed, epoch), and the dropout generator's state travels in the checkpoint.
"""
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from . import backend, io, optim, viz
from . import functional as F
from .autograd import Tensor, no_grad
from .data import Loader, from_input, get_dataset
from .metrics import RunningScore

LAST, BEST = "checkpoint_last.npz", "checkpoint_best.npz"


def build_model(config):
    from .models import build, geometry

    pad1 = config["pad1"]
    if pad1 == "auto":  # the smallest conv1_1 padding whose crops still cover the input
        pad1 = config["pad1"] = geometry.min_pad1(config["model"], config.get("size"))
    elif pad1 == "full":  # the smallest at which the coarse scores reach every pixel in full
        pad1 = config["pad1"] = geometry.full_cover_pad1(config["model"], config["size"])
    return build(config["model"], n_class=config["n_class"], width=config["width"], pad1=pad1,
                 dropout=_option(config, "dropout", 0.5))


def _option(config, key, default):
    """config[key], or ``default`` for a config.json written before the option existed."""
    value = config.get(key)
    return default if value is None else value


def make_optimizer(model, config):
    """Caffe's SGD with the reference groups (biases lr x2, no decay) and, when the config asks,
    conv1_1's weight on an lr of its own (``optim.first_layer_lr_mult``)."""
    mult = _option(config, "conv1_lr_mult", 1.0)
    groups = optim.param_groups(model, lr_mults={"conv1_1.weight": mult} if mult != 1 else None)
    return optim.SGD(groups, lr=config["lr"], momentum=config["momentum"],
                     weight_decay=config["weight_decay"])


def dataset(config, split, spec=None):
    """The ``split`` of the dataset ``spec`` (default: the run's ``--data``). The synthetic sets
    are made as the run made them: same image size, data seed and, for the run's own data, the
    same number of images."""
    spec = spec or config["data"]
    kw = {}
    if spec in ("shapes", "digits"):
        kw = {"size": config["size"], "seed": config["data_seed"]}
        n = config.get({"train": "n_train", "val": "n_val"}.get(split, ""))
        if n and spec == config["data"]:
            kw["n"] = n
    return get_dataset(spec, split, **kw)


def make_datasets(config):
    return dataset(config, "train"), dataset(config, "val")


def predict_labels(model, x):
    """Arg-max class of every pixel of a (N, 3, H, W) input, as a NumPy int64 (N, H, W)."""
    with no_grad():
        scores = model(Tensor(x))
    xp = backend.get_array_module(scores.data)
    return backend.as_numpy(xp.argmax(scores.data, axis=1)).astype(np.int64)


def evaluate(model, loader, n_class, device="cpu", loss_reduction="mean", limit=None):
    """Mean loss and the paper's four metrics of ``model`` over every batch of ``loader``.

    Returns (scores dict, mean loss, a few (image, target, prediction) examples for plots)."""
    model.eval()
    running, losses, examples = RunningScore(n_class), [], []
    for i, (x, y) in enumerate(loader.epoch(0)):
        if limit is not None and i >= limit:
            break
        with no_grad():
            scores = model(Tensor(backend.to_device(x, device)))
            loss = F.softmax_cross_entropy(scores, backend.to_device(y, device),
                                           reduction=loss_reduction)
        xp = backend.get_array_module(scores.data)
        pred = backend.as_numpy(xp.argmax(scores.data, axis=1))
        running.update(y, pred)
        losses.append(loss.item())
        for j in range(len(x)):
            if len(examples) < 4:
                examples.append((from_input(x[j]), y[j], pred[j]))
    model.train()
    return running.scores(), float(np.mean(losses)), examples


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


def _meta(epoch, batch, iteration, best, config):
    """Where a run stands: enough, with the weights, to continue it exactly."""
    return {"epoch": epoch, "batch": batch, "iteration": iteration, "best": best,
            "config": config, "rng": backend.rng().bit_generator.state}


def load_weights_into(model, path, log=print):
    """Initialise ``model`` from a checkpoint, an .npz of weights, or a PyTorch file (torchvision
    VGG16 or the FCN port), matching by layer name: the staged training of the paper (16s from
    32s, 8s from 16s) and fine-tuning. Layers absent from the file, or of another shape (a score
    layer with another number of classes), keep their initialisation; both are reported."""
    path = str(path)
    if path.endswith((".pt", ".pth", ".bin")):
        state = io.import_weights(path)
    else:
        state = io.load(path)
        if any(k.startswith("model/") for k in state):
            state = {k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")}
    own = dict(model.named_parameters())
    loaded = {k: v for k, v in state.items() if k in own and tuple(v.shape) == own[k].shape}
    if not loaded:
        raise ValueError(f"--init-from {path}: no layer of the file matches the model by name and "
                         f"shape (file has {sorted(state)[:5]}...)")
    merged = {**model.state_dict(), **loaded}
    model.load_state_dict(merged)
    kept = [k for k in own if k not in loaded]
    ignored = [k for k in state if k not in loaded]
    log(f"init from {path}: loaded {len(loaded)} tensors; kept at init: {kept or 'none'}; "
        f"ignored from file: {ignored or 'none'}")


def fit(config, run_dir, resume=False, log=print, on_iteration=None):
    """Train as ``config`` says, writing the run folder ``run_dir``. Returns the best record.

    on_iteration(iteration) is called after every step; returning True asks the run to stop
    as Ctrl-C does (write a checkpoint, raise KeyboardInterrupt)."""
    run = Run(run_dir)
    device = backend.check_device(config["device"])
    backend.manual_seed(config["seed"])
    train_set, val_set = make_datasets(config)
    config["n_class"] = train_set.n_class
    model = build_model(config).to(device)
    opt = make_optimizer(model, config)
    loader = Loader(train_set, config["batch_size"], shuffle=True, seed=config["seed"],
                    flip=config["flip"], crop=config.get("crop"))
    val_loader = Loader(val_set, config["val_batch_size"], shuffle=False)
    per_epoch = len(loader)
    total = config["iters"] or config["epochs"] * per_epoch
    schedule = optim.make_schedule(config["lr_schedule"], total,
                                   warmup_iters=_option(config, "warmup", 0))

    start_epoch, start_batch, iteration, best = 0, 0, 0, None
    if resume:
        arrays, meta = io.load_checkpoint(run.path(LAST))
        model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model/")})
        opt.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("optim/")})
        start_epoch, start_batch, iteration = meta["epoch"], meta["batch"], meta["iteration"]
        best = meta.get("best")
        backend.rng().bit_generator.state = meta["rng"]
        log(f"resumed {run.dir} at iteration {iteration} (epoch {start_epoch + 1}, "
            f"batch {start_batch})")
    else:
        if config.get("init_from"):
            load_weights_into(model, config["init_from"], log)
        run.write_config(config)

    def checkpoint(epoch, batch):
        save_training_checkpoint(run.path(LAST), model, opt,
                                 _meta(epoch, batch, iteration, best, config))

    stop = _StopFlag()  # Ctrl-C asks to stop at the next iteration boundary
    epoch, batch = start_epoch, start_batch  # the position of the next batch to train on
    n_epochs = math.ceil(total / per_epoch)
    model.train()
    with stop:
        while iteration < total and not stop.requested:
            bar = _progress(per_epoch, batch, f"epoch {epoch + 1}/{n_epochs}")
            t0, seen = time.perf_counter(), 0
            for x, y in loader.epoch(epoch, start=batch):
                opt.lr = config["lr"] * schedule(iteration)
                scores = model(Tensor(backend.to_device(x, device)))
                loss = F.softmax_cross_entropy(scores, backend.to_device(y, device),
                                               reduction=config["loss_reduction"])
                value = loss.item()
                if not math.isfinite(value):
                    bar.close()
                    raise FloatingPointError(
                        f"loss is {value} at iteration {iteration + 1} (epoch {epoch + 1}); the "
                        f"last good checkpoint is {run.path(LAST)}. Lower --lr (a summed loss "
                        f"needs an lr about 1/pixels-per-batch of a mean one)")
                opt.zero_grad()
                loss.backward()
                opt.step()
                iteration, batch, seen = iteration + 1, batch + 1, seen + len(x)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}",
                                img_s=f"{seen / (time.perf_counter() - t0):.1f}")
                if on_iteration is not None and on_iteration(iteration):
                    stop.request()
                if stop.requested or iteration >= total:
                    break
                if config["checkpoint_every"] and iteration % config["checkpoint_every"] == 0:
                    checkpoint(epoch, batch)
            bar.close()
            if stop.requested:
                break
            if batch >= per_epoch:
                epoch, batch = epoch + 1, 0
            best = _validate(model, val_loader, val_set, config, run, device, epoch, iteration,
                             best, log)
            checkpoint(epoch, batch)
    if stop.requested:
        checkpoint(epoch, batch)
        log(f"\nstopped at iteration {iteration}: checkpoint written to {run.path(LAST)}; "
            f"continue with: python -m minifcn.train --resume {run.dir}")
        raise KeyboardInterrupt
    _report(run, best, log)
    return best


class _StopFlag:
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


def _progress(total, initial, desc):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                mininterval=1.0, disable=os.environ.get("MINIFCN_NO_PROGRESS") == "1")


def _validate(model, val_loader, val_set, config, run, device, epoch, iteration, best, log):
    s, val_loss, examples = evaluate(model, val_loader, val_set.n_class, device,
                                     config["loss_reduction"])
    record = {"epoch": epoch, "iteration": iteration, "loss": val_loss,
              **{k: float(s[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}}
    records = run.append_record(record, keep=iteration - 1)
    log(f"epoch {epoch} iter {iteration}: val loss {val_loss:.4f}  pixel acc "
        f"{record['pixel_acc']:.3f}  mean acc {record['mean_acc']:.3f}  mean IU "
        f"{record['mean_iu']:.3f}  f.w. IU {record['fw_iu']:.3f}")
    viz.plot_history(run.path("history.png"), records)
    viz.save_prediction_grid(run.path("predictions.png"), *zip(*examples),
                             class_names=val_set.class_names)
    if best is None or record["mean_iu"] > best["mean_iu"]:
        best = record
        save_training_checkpoint(run.path(BEST), model, None,
                                 _meta(epoch, 0, iteration, best, config))
    return best


def _report(run, best, log):
    if best is None:
        return
    log(f"\nbest: epoch {best['epoch']} (iteration {best['iteration']}): mean IU "
        f"{best['mean_iu']:.3f}, pixel acc {best['pixel_acc']:.3f}, mean acc "
        f"{best['mean_acc']:.3f}, f.w. IU {best['fw_iu']:.3f}")
    log(f"run folder: {run.dir} (config.json, metrics.jsonl, {LAST}, {BEST}, history.png, "
        "predictions.png)")


def load_model(checkpoint_path, device="cpu"):
    """Rebuild the model a training checkpoint was made with and load its weights.
    Returns (model in eval mode, config).

    Also reads the float16 "learned weights only" files of ``skip_architectures
    --save-weights`` (meta ``learned_only``): the layers they leave out (the fixed bilinear
    upsampling) are rebuilt by the model itself."""
    arrays, meta = io.load_checkpoint(checkpoint_path)
    config = meta.get("config")
    if not config:
        raise ValueError(f"{checkpoint_path}: not a minifcn training checkpoint (no config)")
    model = build_model(config)
    state = {k[6:]: v for k, v in arrays.items() if k.startswith("model/")}
    if meta.get("learned_only"):
        missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in state]
        if missing:
            raise ValueError(f"{checkpoint_path}: learned weights missing for {missing}")
        full = model.state_dict()
        full.update({k: v.astype(full[k].dtype) for k, v in state.items()})
        state = full
    model.load_state_dict(state)
    return model.to(backend.check_device(device)).eval(), config
