"""minifcn.training: the library behind ``python -m minifcn.train``, ``evaluate`` and ``predict``.

Read in this order:

    step.py    train_step (one batch: model -> loss -> backward -> SGD step), validate,
               predict_labels; parallel_train_step, its data-parallel twin (summed_loss)
    loop.py    fit: the epochs around train_step, with validation, checkpoints and Ctrl-C
    runs.py    the run folder, checkpoints, resume, the stop flag, the progress bar
    lock.py    one process at a time in a run folder (RUN/run.lock)
    build.py   what a config builds: model, optimiser, datasets; load_model, load_weights_into
    config.py  every default of a run (DEFAULTS, the from-scratch and reference recipes), resolve

The commands are thin: ``minifcn/train.py`` parses options into a config and calls ``fit``.
"""
from .build import build_model, dataset, load_model, load_weights_into, make_optimizer
from .config import DEFAULTS, FROM_SCRATCH, REFERENCE, resolve
from .loop import fit
from .runs import BEST, LAST, Run
from .step import (parallel_train_step, predict_labels, summed_loss, train_step, validate,
                   validate_instances)

__all__ = ["train_step", "parallel_train_step", "summed_loss", "validate", "validate_instances",
           "predict_labels", "fit", "build_model", "make_optimizer", "dataset", "load_model",
           "load_weights_into", "DEFAULTS", "FROM_SCRATCH", "REFERENCE", "resolve", "Run", "LAST",
           "BEST"]
