"""``python -m minifcn.train``: train an FCN, validating every epoch.

    python -m minifcn.train                        # FCN-8s, width 0.0625, on the embedded shapes
    python -m minifcn.train --model fcn32s --data digits --epochs 3
    python -m minifcn.train --data voc:/data/VOCdevkit --width 1 --batch-size 1 \\
        --init-from vgg16.pth --loss-reduction sum --lr 1e-10 --momentum 0.99   # the paper's
    python -m minifcn.train --resume runs/fcn8s-shapes-20261126-101500

Writes a run folder (--out): config.json, metrics.jsonl, checkpoint_last.npz,
checkpoint_best.npz, history.png (loss and mean IU), predictions.png (image | truth | prediction),
confusion.png, per_class_iu.png and worst.png (the 4 validation images of highest loss).
Ctrl-C stops after the current step with a checkpoint; --resume continues exactly. One process
at a time trains in a run folder (RUN/run.lock; a killed run's stale lock is taken over).

    mpiexec -n 4 python -m minifcn.train --distributed     # data parallel: docs/distributed.md

This module only parses options; the defaults live in minifcn/training/config.py and the loop
in minifcn/training/ (``fit``, which calls ``train_step`` on every batch).
"""
import argparse
import contextlib
import math
import os
import sys
import time
import traceback
from pathlib import Path

from . import backend, distributed
from .models.registry import MODELS
from .training import DEFAULTS, FROM_SCRATCH, REFERENCE, fit, resolve
from .training.config import FINE_TUNE, REAL_FINE_TUNE, resume_config
from .training import limits as L
from .training.limits import check_device_option
from .training.runs import new_run_dir, run_config

D, S, R = DEFAULTS, FROM_SCRATCH, REFERENCE  # the help texts quote them
F, RF = FINE_TUNE, REAL_FINE_TUNE


def _pad1(text):
    return text if text in ("auto", "full") else int(text)


def parser():
    p = argparse.ArgumentParser(prog="python -m minifcn.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--model", choices=list(MODELS), help=f"default {D['model']}; the encoder-decoders "
      "(segnet, segnet-basic, deconvnet, unet) are docs/encoder_decoders.md")
    a("--width", type=float, help=f"channel multiplier: 1.0 = VGG16, default {D['width']} "
                             f"(4-8-16-32-32, fc 256); at most {L.MAX_WIDTH:g}")
    a("--data", help=f"shapes | digits | voc:ROOT | folder:ROOT (default {D['data']})")
    a("--size", type=int, help=f"image size of the synthetic sets (default {D['size']}; at most "
                               f"{L.MAX_SIZE})")
    a("--n-train", type=int, help=f"number of synthetic training images (default {D['n_train']};"
                                  f" at most {L.MAX_IMAGES})")
    a("--n-val", type=int, help=f"number of synthetic validation images (at most "
                                f"{L.MAX_IMAGES})")
    a("--pad1", type=_pad1, help="conv1_1 padding; 'auto': the smallest whose crops cover the "
                                "input; 'full': the smallest at which the coarse scores reach "
                                "every pixel at full strength (padding.full_cover_pad1) "
                                f"(default {S['pad1']} on the synthetic sets, {R['pad1']} on "
                                f"real data; at most {L.MAX_PAD1})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, help=f"default {S['epochs']} from scratch, "
                                               f"{F['epochs']} from the classifier on the "
                                               f"synthetic sets, {R['epochs']} on real data "
                                               "from other weights")
    g.add_argument("--iters", type=int, help="train this many iterations instead of --epochs "
                                             f"(default {RF['iters']} on real data from the "
                                             "shipped classifier)")
    a("--batch-size", type=int, help=f"default {D['batch_size']} (1 = the paper's, any image "
                                     f"size; at most {L.MAX_BATCH})")
    a("--crop", type=int, help="random square crop for batching images of different sizes (at "
                               f"most {L.MAX_SIZE})")
    a("--lr", type=float, help=f"base learning rate for a mean loss (default {S['lr']}; on real "
                              f"data {RF['lr']} from the shipped classifier, {R['lr']} from "
                              "other weights)")
    a("--lr-schedule", choices=["constant", "step", "poly"], help=f"default {D['lr_schedule']}")
    a("--warmup", type=int, help=f"iterations of linear lr warm-up (default {S['warmup']}; on "
                                  f"real data {RF['warmup']} from the shipped classifier, "
                                  f"{R['warmup']} from other weights)")
    a("--momentum", type=float, help=f"default {D['momentum']} (the reference heavy recipe: 0.99)")
    a("--weight-decay", type=float, help=f"default {D['weight_decay']}")
    a("--loss-reduction", choices=["mean", "sum"], help="mean over pixels (default) or the paper's sum")
    a("--no-flip", dest="flip", action="store_const", const=False, help="no random flips")
    a("--dropout", type=float, help=f"dropout after fc6 and fc7 (default {S['dropout']}: the "
                                    f"small nets underfit; {R['dropout']}, the reference's, on "
                                    "real data from other weights)")
    a("--conv1-lr-mult", type=float, help="lr multiplier of conv1_1's weight (default 1/64^2; 1 "
                                          "on real data from other weights; see "
                                          "optim.first_layer_lr_mult)")
    a("--init", choices=["classifier", "scratch"], help="where the weights start without "
                                                        "--init-from: 'classifier' (default), "
                                                        "the shipped classifier convolutionalised"
                                                        " (python -m minifcn.pretrain made it; "
                                                        "its --width only), or 'scratch' (He's "
                                                        "init, the from-scratch recipe)")
    a("--init-from", help="weights to start from: a minifcn checkpoint/.npz (staged training: "
                          "16s from 32s, 8s from 16s), a PyTorch VGG16/FCN file (.pth, either "
                          "format) or a Caffe .caffemodel (docs/weights.md)")
    a("--loss-sampling", type=float, metavar="P", help="keep the loss of each cell of the net's "
                                                         "final coarse grid with probability P "
                                                         "(the paper's patch sampling; default 1;"
                                                         f" at least {L.MIN_LOSS_SAMPLING})")
    a("--sampling-batch", choices=["scaled", "same"], help="with --loss-sampling P < 1: 'scaled' "
                                                           "(default, the paper's) takes 1/P "
                                                           "times the images per step, 'same' "
                                                           "keeps --batch-size")
    a("--freeze-trunk", action="store_const", const=True, help="only the score layers learn "
                                                                "(the paper's FCN-32s-fixed)")
    a("--class-weights", choices=["none", "balanced"], help="'balanced' weighs each pixel by "
                                                            "the inverse frequency of its class "
                                                            "(default none, as the paper)")
    a("--learn-upsampling", choices=["fixed", "intermediate", "all"],
      help="which upsampling layers learn (default fixed: all bilinear, as the reference code)")
    a("--val-batch-size", type=int, help=f"validation batch (default {D['val_batch_size']}, at "
                                         f"most {L.MAX_BATCH}; "
                                         "images of different sizes go in separate batches)")
    a("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint, "
                                         "with the config it was made with (a config.json that "
                                         "disagrees is refused); "
                                         "--iters/--epochs extend it, and --lr, --momentum, "
                                         "--weight-decay, --lr-schedule, --warmup, --device, "
                                         "--checkpoint-every, --val-batch-size, --val-every "
                                         "may change")
    a("--device", choices=["cpu", "cuda", "auto"], help="default auto (the GPU if CuPy finds one)")
    a("--seed", type=int, help="seed of initialisation, data order and dropout, 0 .. 2**32 - 1 "
                               f"(default {D['seed']})")
    a("--checkpoint-every", type=int, help="also checkpoint every N iterations (default 0: "
                                           "only at each epoch's end)")
    a("--val-every", type=int, help="also validate every N iterations (default 0: only at "
                                    "each epoch's end and at the end)")
    a("--distributed", action="store_const", const=True,
      help="data-parallel training over the processes of `mpiexec -n N` (MPI, or NCCL on GPUs; "
           "pip install -e \".[mpi]\"): --batch-size is the whole batch, split evenly over "
           "them; rank 0 prints and writes the run folder (docs/distributed.md)")
    a("--out", help="run folder (default runs/MODEL-DATA-TIME, made unique)")
    a("--overwrite", action="store_true", help="start a new run in an --out that already holds "
                                               "one, replacing its run files")
    return p


def given_options(args):
    return {k: v for k, v in vars(args).items() if v is not None and
            k not in ("resume", "out", "overwrite", "save_weights", "distributed")}


def make_config(args, defaults=DEFAULTS):
    given = given_options(args)
    config = {**defaults, **given}
    if "iters" in given:
        config["epochs"] = None
    return resolve(config)


def check_device(config):
    """SystemExit in one line if the run's --device cannot be had (cuda without a GPU): said
    before a run folder is made, not as a traceback from inside the run."""
    try:
        check_device_option(config["device"])
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def main(argv=None, make_parser=parser, defaults=DEFAULTS, check=None, after=None):
    """The command: parse, build the config over ``defaults``, make or reopen the run folder,
    ``fit``. ``python -m minifcn.pretrain`` calls it with its own parser and defaults, a
    ``check(config)`` of a new run's options and ``after(args, run_dir)`` for a finished run.
    With --distributed every rank runs this; rank 0 alone reads and writes the run folder."""
    job = distributed.launched()  # (size, rank) when an MPI launcher started this process
    follower = job is not None and job[1] > 0
    with _quiet(follower):  # a bad option: every rank says the same; rank 0 alone prints it
        args = make_parser().parse_args(argv)
    comm = _communicator(args, job)
    if comm is not None and comm.rank > 0:
        sys.stdout = open(os.devnull, "w")  # only rank 0 prints (errors still go to stderr)

    def setup():
        created = False
        if args.resume:
            if args.out or args.overwrite:
                raise SystemExit("error: --resume continues a run in its own folder: drop --out "
                                 "and --overwrite")
            run_dir, given = Path(args.resume), given_options(args)
            try:  # the checkpoint's config, which config.json must not contradict
                config = run_config(run_dir, given)
            except (OSError, ValueError) as e:
                raise SystemExit(f"error: {e}") from None
            config, changed = resume_config(config, given, run_dir)
            for key, (old, new) in changed.items():
                print(f"resume: --{key.replace('_', '-')} {old} -> {new}")
            check_device(config)
        else:
            config = make_config(args, defaults)
            if check is not None:
                check(config)
            check_device(config)
            if defaults is DEFAULTS and args.init is None and config["init"] == "scratch":
                print(f"note: no classifier ships at --width {config['width']:g}: training from "
                      f"scratch (--init scratch says so; --init-from FILE starts from weights)")
            if args.out is not None and not args.out.strip():
                raise SystemExit("error: --out is empty; give a folder for the run")
            run_dir = Path(args.out) if args.out else None
        if comm is not None:
            _check_split(config, comm.size)
        if not args.resume:
            try:
                if run_dir is None:  # a fresh folder, never one of another run started this second
                    name = f"{config['model']}-{config['data'].split(':')[0]}"
                    run_dir = new_run_dir(f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
                    created = True
                elif not run_dir.exists():
                    run_dir.mkdir(parents=True)
                    created = True
            except OSError as e:
                raise SystemExit(f"error: cannot create the run folder: {e}") from None
        print(f"run folder: {run_dir}")
        return config, run_dir, created

    if comm is None:
        config, run_dir, created = setup()
    else:  # rank 0 reads the options and the run folder; every rank takes its config
        config, run_dir, created = distributed.lead_does(comm, setup)
        created = created and comm.rank == 0
        if config["device"] != "cpu" and backend.gpu_available():  # one GPU per rank: NCCL
            comm = distributed.NCCLCommunicator(comm.comm)
    try:
        fit(config, run_dir, resume=bool(args.resume), overwrite=args.overwrite, comm=comm)
        if after is not None:
            after(args, run_dir)
    except KeyboardInterrupt:
        return 130
    except (FloatingPointError, OSError, ValueError) as e:
        if comm is None or distributed.every_rank(e):
            if comm is None or comm.rank == 0:
                print(f"error: {e}", file=sys.stderr)
            return 1
        # this rank's alone (its data, its disk): the others would wait for it, so end them
        print(f"error: rank {comm.rank}: {e}", file=sys.stderr)
        comm.abort(1)
    except Exception as e:
        if comm is None or comm.size == 1:
            raise
        if type(e).__module__.startswith("mpi4py"):  # MPI itself failed: one line says it
            print(f"error: rank {comm.rank}: MPI: {e}", file=sys.stderr)
        else:  # a bug: its traceback, then the others must not wait for this rank
            traceback.print_exc()
        comm.abort(1)
    finally:
        if created and not any(run_dir.iterdir()):  # a run that could not start leaves nothing
            run_dir.rmdir()
    return 0


@contextlib.contextmanager
def _quiet(quiet):
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), \
            contextlib.redirect_stdout(null):
        yield


def _communicator(args, job):
    """The MPI communicator for --distributed (None without it); a one-line SystemExit for
    --distributed without mpi4py, or several MPI ranks without --distributed."""
    quiet_exit = job is not None and job[1] > 0  # the same error on every rank: rank 0 says it
    if getattr(args, "distributed", False):
        try:
            return distributed.MPICommunicator()
        except (ImportError, ValueError) as e:
            raise SystemExit(2 if quiet_exit else f"error: --distributed: {e}") from None
    if job is not None and job[0] > 1:
        how = ("add --distributed to train on all of them as one run"
               if hasattr(args, "distributed") else "it trains in one process: run it without "
               "mpiexec")
        raise SystemExit(2 if quiet_exit else
                         f"error: this process is one of {job[0]} MPI processes (started by "
                         f"mpiexec), each of which would train the whole run alone: {how}")
    return None


def _check_split(config, ranks):
    """--batch-size is the whole batch: each rank takes an equal share of it."""
    images = config["batch_size"]
    p = config.get("loss_sampling") or 1.0
    if p < 1 and config.get("sampling_batch", "scaled") == "scaled":
        images = math.ceil(images / p)
        if images % ranks:
            raise SystemExit(f"error: --batch-size {config['batch_size']} with --loss-sampling "
                             f"{p:g} takes {images} images a step, which do not split evenly "
                             f"over {ranks} ranks")
    if images % ranks:
        raise SystemExit(f"error: --batch-size {images} does not split evenly over {ranks} ranks "
                         f"(--distributed: the batch is the whole one, shared by the ranks); "
                         f"give a multiple of {ranks}")


if __name__ == "__main__":
    sys.exit(main())
