"""``fit``: the loop behind ``python -m minifcn.train``, one image's path end to end.

    data.Loader batch -> train_step (step.py: model, loss, backward, SGD) -> every epoch:
    validate (metrics) -> run folder (runs.py: metrics.jsonl, checkpoints, plots)

Everything here around ``train_step`` is bookkeeping: the learning-rate schedule, the position
in the data (so that a stopped run resumes exactly), Ctrl-C, NaN and the progress bar.
"""
import math
import time

from .. import backend, distributed, io, optim, viz
from ..data import Loader
from ..io.errors import described
from .build import (balanced_class_weights, build_model, check_data, dataset, final_stride,
                    load_weights_into, make_optimizer, shipped_classifier)
from .config import option
from .runs import BEST, LAST, StopFlag, open_run, position, progress, restore, \
    RUN_FILES, save_training_checkpoint
from .step import parallel_train_step, sample_loss_cells, train_step, validate


def fit(config, run_dir, resume=False, overwrite=False, log=print, on_iteration=None,
        on_step=None, comm=None):
    """Train as ``config`` says (see ``training.config``), writing the run folder ``run_dir``.
    Returns the best validation record.

    A new run refuses a folder that already holds one unless ``overwrite``; ``resume``
    continues from its last checkpoint, with ``config`` (which may extend iters or epochs, or
    change the lr). on_iteration(iteration) is called after every step; returning True asks the
    run to stop as Ctrl-C does (write a checkpoint, raise KeyboardInterrupt). on_step(iteration,
    loss, images) is told each step's training loss and batch size (the experiments plot them).

    ``comm``: data-parallel training (a ``minifcn.distributed`` communicator; every rank calls
    fit alike): each rank trains on its slice of every batch and validates its share of the
    batches, and rank 0 alone logs and writes the run folder (docs/distributed.md)."""
    lead = comm is None or comm.rank == 0  # the process that logs and writes the run folder
    log = log if lead else _silent
    device = backend.check_device(config["device"])
    backend.manual_seed(config["seed"])
    shard = None if comm is None else (comm.rank, comm.size)
    error = None
    try:  # what every rank builds alike; data parallel, every rank goes on or none
        train_set, val_set = dataset(config, "train"), dataset(config, "val")
        config["n_class"] = train_set.n_class
        model = build_model(config).to(device)
        if comm is not None:  # statistics of the whole batch, as one process has them
            distributed.sync_batch_norm(model, comm)
        opt = make_optimizer(model, config)
        # loss sampling keeps a share p of the coarse cells; the paper keeps the effective batch
        # by taking 1/p times the images (--sampling-batch scaled, the default), or not (same)
        p = option(config, "loss_sampling")
        images_per_step = config["batch_size"]
        if p < 1 and option(config, "sampling_batch") == "scaled":
            images_per_step = math.ceil(config["batch_size"] / p)
        cell = final_stride(model) if p < 1 else None
        class_weights = (balanced_class_weights(train_set, train_set.n_class)
                         if option(config, "class_weights") == "balanced" else None)
        # an instance net (models/instances.py) learns from the instance maps too
        with_instances = hasattr(model, "instance_loss")
        if with_instances and not train_set.has_instances:
            raise ValueError(f"--model {config['model']} learns instances: --data "
                             f"{config['data']} has no instance maps (shapes, shapes-touching "
                             f"and VOC with SegmentationObject/ have them)")
        if with_instances and comm is not None:
            raise ValueError(f"--distributed: --model {config['model']}'s instance loss is not "
                             f"split over ranks yet; train it in one process")
        loader = Loader(train_set, images_per_step, shuffle=True, seed=config["seed"],
                        flip=config["flip"], crop=config.get("crop"), instances=with_instances,
                        shard=shard)
        # real images differ in size: each validation batch holds images of one size
        val_loader = Loader(val_set, config["val_batch_size"], shuffle=False, group_by_size=True,
                            shard=shard, shard_by="batches")
        check_data(config["data"], train_set, val_set)  # bad data now, not after an epoch
    except (OSError, ValueError) as e:
        if comm is None:
            raise
        error = e
    if comm is not None:
        distributed.agree(comm, error)
    per_epoch = len(loader)
    total = config["iters"] or config["epochs"] * per_epoch
    schedule = optim.make_schedule(config["lr_schedule"], total,
                                   warmup_iters=option(config, "warmup"))
    run = None

    def start():
        """The run folder, the starting weights and where the run stands: rank 0's work."""
        nonlocal run
        # only now: a run that cannot start leaves no files; locked until it ends, however
        # it ends (run.close below)
        run = open_run(run_dir, resume, overwrite, log)
        if getattr(train_set, "notice", None):
            log(train_set.notice)
        key = best_key(config)
        epoch, batch, iteration = 0, 0, 0  # the position of the next batch to train on
        if resume:
            epoch, batch, iteration, _ = restore(run, model, opt)
            if iteration > total:
                raise ValueError(f"--resume {run.dir}: the run has done {iteration} iterations, "
                                 f"more than the {total} its options now ask for")
            log(f"resumed {run.dir} at iteration {iteration} of {total} (epoch {epoch + 1}, "
                f"batch {batch})")
        else:
            if config.get("init_from"):
                load_weights_into(model, config["init_from"], log)
            elif option(config, "init") == "classifier":  # the paper's start: a classifier
                load_weights_into(model, shipped_classifier(config["width"]), log)
            run.write_config(config)  # a resumed run's, after its next checkpoint
        records = [r for r in run.records(required=(key,)) if r["iteration"] <= iteration]
        validated = records[-1]["iteration"] if records else 0  # the last validated iteration
        best = _kept_best(run, records, key, model, iteration, config, log) if resume else None
        # seconds of this run so far (training and validation; a resumed run goes on counting),
        # kept in every record: the experiments plot mean IU against minutes
        elapsed = records[-1].get("elapsed_s", 0.0) if records else 0.0
        return epoch, batch, iteration, best, validated, elapsed

    try:
        if comm is None:
            epoch, batch, iteration, best, validated, elapsed = start()
        else:  # rank 0 starts the run; every rank then takes its weights and random state
            epoch, batch, iteration, best, validated, elapsed = distributed.lead_does(comm, start)
            distributed.broadcast_state(comm, model, opt)
            allreduce = distributed.GradientAllReduce(model.parameters(), comm)
            log(f"data parallel: {comm.name}, {images_per_step // comm.size} images each of a "
                f"batch of {images_per_step}")
        clock = time.perf_counter() - elapsed

        def checkpoint():
            if lead:
                save_training_checkpoint(run.path(LAST), model, opt,
                                         position(epoch, batch, iteration, best, config))
                run.write_config(config)  # after: config.json never ahead of its checkpoint

        n_epochs = math.ceil(total / per_epoch)
        model.train()
        asked = False  # data parallel: a stop asked for on any rank, as of the last step
        # one bar for the whole run, its steps: it stays through the validations
        bar = progress(total, iteration, f"epoch {epoch + 1}/{n_epochs}", disable=not lead)
        with bar, StopFlag() as stop:  # Ctrl-C or SIGTERM: stop at the next iteration boundary
            def stopping():  # data parallel: every rank stops at the same step, on the shared flag
                return stop.requested if comm is None else asked

            while True:
                # validate at each epoch's end and at the very end, even when a stop came in the
                # last step or the run stopped before it validated (then the resumed run does)
                done = iteration >= total
                every = option(config, "val_every")  # also validate every N iterations (0: not)
                due = batch == 0 or (every and iteration % every == 0)
                if iteration > validated and (done or (due and not stopping())):
                    best = _end_of_epoch(model, val_loader, val_set, config, run, device, epoch,
                                         iteration, best, log, clock, comm)
                    validated = iteration
                    checkpoint()
                if done or stopping():
                    break
                bar.set_description(f"epoch {epoch + 1}/{n_epochs}")
                t0, seen = time.perf_counter(), 0
                for x, y, *instances in loader.epoch(epoch, start=batch):
                    opt.lr = config["lr"] * schedule(iteration)
                    # data parallel: random draws over the batch are one process's (backend.py)
                    backend.set_batch_part(None if comm is None else loader.batch_part(batch))
                    try:
                        if p < 1:
                            y = sample_loss_cells(y, p, cell, backend.rng())
                        x, y = backend.to_device(x, device), backend.to_device(y, device)
                        if comm is None:
                            loss = train_step(model, opt, x, y, config["loss_reduction"],
                                              class_weights,
                                              *(backend.to_device(i, device) for i in instances))
                        else:
                            loss, asked = parallel_train_step(model, opt, x, y, allreduce,
                                                              config["loss_reduction"],
                                                              class_weights, stop.requested)
                    except FloatingPointError as e:
                        last = (f"the last good checkpoint is {run.path(LAST)}"
                                if run is not None and run.path(LAST).exists()
                                else "no checkpoint was written yet")
                        raise FloatingPointError(
                            f"{e} at iteration {iteration + 1} (epoch {epoch + 1}); {last}. Lower "
                            f"--lr (a summed loss needs an lr about 1/pixels-per-batch of a mean "
                            f"one)") from None
                    finally:
                        backend.set_batch_part(None)
                    images = len(x) if comm is None else loader.batch_part(batch)[2]
                    iteration, batch, seen = iteration + 1, batch + 1, seen + images
                    if on_step is not None:
                        on_step(iteration, loss, images)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}",
                                    img_s=f"{seen / (time.perf_counter() - t0):.1f}")
                    if on_iteration is not None and on_iteration(iteration):
                        stop.request()
                    if stopping() or iteration >= total:
                        break
                    if option(config, "val_every") and iteration % config["val_every"] == 0:
                        break  # to validate (the outer loop), then on with this epoch
                    if config["checkpoint_every"] and iteration % config["checkpoint_every"] == 0:
                        checkpoint()
                if batch >= per_epoch:
                    epoch, batch = epoch + 1, 0
                checkpoint()  # before validating: a failure there loses no training
        if iteration < total:  # stopped early
            log(f"\nstopped at iteration {iteration}: checkpoint written to "
                f"{run and run.path(LAST)}; continue with: python -m {command_of(config)} "
                f"--resume {run and run.dir}")
            raise KeyboardInterrupt
        if lead:
            _report(run, best, log, time.perf_counter() - clock)
        return best
    finally:
        if run is not None:
            run.close()  # the folder's lock


def _kept_best(run, records, key, model, iteration, config, log):
    """The best record of a resumed run: the one checkpoint_best.npz holds, so that what the
    run reports (and what it compares the next validations with) is the file's.

    A kill between the best checkpoint and its record leaves the file ahead of metrics.jsonl
    (it is written first), and the resumed run validates that iteration again. A run folder
    of a minifcn that wrote them the other way round can have the file behind a record: when
    that record is of the iteration the run resumes at, the weights restored are the ones it
    scored, and the file is written again from them; else the file's record stands."""
    path, kept = run.path(BEST), None
    if path.is_file():
        try:
            kept = io.checkpoint.load_checkpoint_meta(path).get("best")
        except Exception as e:  # a damaged best checkpoint: the next validation replaces it
            log(f"resume: {path} cannot be read ({described(e)}); the next validation writes it "
                f"again")
        if not (isinstance(kept, dict) and isinstance(kept.get(key), (int, float))):
            kept = None
    named = max(records, key=lambda r: r[key], default=None)
    if named is None or (kept is not None and not named[key] > kept[key]):
        return kept
    held = f"iteration {kept['iteration']}" if kept else "no weights"
    if named["iteration"] == iteration:
        save_training_checkpoint(path, model, None,
                                 position(named["epoch"], 0, iteration, named, config))
        log(f"resume: {path} held {held}, behind metrics.jsonl's best (iteration {iteration}); "
            f"written again from {run.path(LAST)}, which holds that iteration")
        return named
    log(f"resume: {path} holds {held}, behind metrics.jsonl's best (iteration "
        f"{named['iteration']}, whose weights are gone); the run counts from the file's")
    return kept


def _silent(*args, **kwargs):
    """The log of every rank but rank 0."""


def _end_of_epoch(model, val_loader, val_set, config, run, device, epoch, iteration, best, log,
                  clock, comm=None):
    """Validate, log, append to metrics.jsonl, redraw the plots, keep the best checkpoint (data
    parallel: every rank validates its share, rank 0 does the rest)."""
    if comm is not None:  # the weights every rank validates must be one net's
        distributed.check_replicas(comm, model)
    validated = validate(model, val_loader, val_set.n_class, device, worst=4,
                         desc="validating", comm=comm)
    if validated is None:  # not rank 0
        return best
    s, val_loss, examples, worst = validated
    record = {"epoch": epoch, "iteration": iteration, "loss": val_loss,
              **{k: float(s[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")},
              "elapsed_s": round(time.perf_counter() - clock, 2)}
    key = best_key(config)
    if key == "top1":  # a classifier: one pixel per image, so pixel accuracy is top-1
        record["top1"] = record["pixel_acc"]
        log(f"epoch {epoch} iter {iteration}: val loss {val_loss:.4f}  top-1 accuracy "
            f"{record['top1']:.3f}  mean class accuracy {record['mean_acc']:.3f}")
    else:
        log(f"epoch {epoch} iter {iteration}: val loss {val_loss:.4f}  pixel acc "
            f"{record['pixel_acc']:.3f}  mean acc {record['mean_acc']:.3f}  mean IU "
            f"{record['mean_iu']:.3f}  f.w. IU {record['fw_iu']:.3f}")
    if best is None or record[key] > best[key]:
        # before the record that names it: a kill between the two leaves the file ahead of
        # metrics.jsonl, never behind (and the resumed run validates this iteration again)
        best = record
        save_training_checkpoint(run.path(BEST), model, None,
                                 position(epoch, 0, iteration, best, config))
    records = run.append_record(record, keep=iteration - 1)
    viz.plot_history(run.path("history.png"), records)
    grid = viz.save_classification_grid if key == "top1" else viz.save_prediction_grid
    grid(run.path("predictions.png"), *zip(*examples), class_names=val_set.class_names)
    names = val_set.class_names
    viz.save_figure(run.path("confusion.png"), viz.confusion_figure(s["confusion"], names))
    viz.save_figure(run.path("per_class_iu.png"), viz.per_class_iu_figure(s["per_class_iu"], names))
    if key != "top1" and worst:  # a classifier's 1x1 label maps make no picture
        viz.save_figure(run.path("worst.png"), viz.worst_images_figure(*zip(*worst), names))
    return best


def command_of(config):
    """The command that trains this config's model: pretrain for the classifier."""
    return "minifcn.pretrain" if config["model"] == "vgg16" else "minifcn.train"


def best_key(config):
    """What makes the best checkpoint: top-1 accuracy for the classifier, else mean IU."""
    return "top1" if config["model"] == "vgg16" else "mean_iu"


def _report(run, best, log, seconds):
    """The best validation, and how long the run took (training and validation; a resumed run
    counts its earlier sessions too, as the records' elapsed_s)."""
    if best is None:
        return
    minutes, secs = divmod(round(seconds), 60)
    log(f"\ntime: {minutes} min {secs:02d} s of training and validation")
    if "top1" in best:
        log(f"\nbest: epoch {best['epoch']} (iteration {best['iteration']}): top-1 accuracy "
            f"{best['top1']:.3f}, mean class accuracy {best['mean_acc']:.3f}")
        log(f"run folder: {run.dir}")
        return
    log(f"\nbest: epoch {best['epoch']} (iteration {best['iteration']}): mean IU "
        f"{best['mean_iu']:.3f}, pixel acc {best['pixel_acc']:.3f}, mean acc "
        f"{best['mean_acc']:.3f}, f.w. IU {best['fw_iu']:.3f}")
    log(f"run folder: {run.dir} ({', '.join(RUN_FILES)})")
