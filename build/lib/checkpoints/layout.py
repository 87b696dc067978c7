"""The names of what a run directory and a checkpoint directory hold, defined once.

Every module that reads or writes a checkpoint (the manager, the state
files, the tools, the tests) takes its file names from here::

    <run>/                     a run directory
        config.yaml            the run's resolved config
        metrics.csv            one row per epoch
        steps.csv              one row per logged step (logger=csv)
        summary.json           the run's results, written when it ends
        tensorboard/           TensorBoard event files
        latest, best           pointers: one line, the name of a checkpoint
        .lock                  the lock of the run's one writer (checkpoints.lock)
        .lock-holder.json      who holds it: pid, host, since when
        step-00000450/         a checkpoint
            manifest.json      format and project version, step, epoch, metrics,
                               learning rate, size and sha256 of every other file
            model.weights.h5   plain Keras: model.load_weights()
            optimizer.h5       the optimizer's variables by index
            trainer_state.json data position, RNG states, callback states
            config.yaml        model, optimizer and schedule config side by side

No TensorFlow here: the tools that only read JSON and YAML import it.
"""

from __future__ import annotations

import numbers
import re

FORMAT_VERSION = 1
CHECKPOINT_PREFIX = "step-"
# The largest optimizer step anything read from a run may claim: far beyond any
# real run (a million steps a day for 2,700 years), small enough for every counter.
MAX_GLOBAL_STEP = 10**12

MANIFEST = "manifest.json"
MODEL_FILE = "model.weights.h5"
OPTIMIZER_FILE = "optimizer.h5"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.yaml"
STATE_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, CONFIG_FILE)
H5_FILES = (MODEL_FILE, OPTIMIZER_FILE)
# Only with trainer.early_stopping.restore_best_weights: the best epoch's weights, in the
# layout of MODEL_FILE (plain Keras loads it); checked as the files above when present.
BEST_WEIGHTS_FILE = "early_stopping_best.weights.h5"
CHECKED_H5_FILES = (*H5_FILES, BEST_WEIGHTS_FILE)

POINTERS = ("latest", "best")
RUN_CONFIG = "config.yaml"
METRICS_CSV = "metrics.csv"
SUMMARY = "summary.json"
TENSORBOARD_DIR = "tensorboard"
STEPS_CSV = "steps.csv"  # logger=csv: one row per logged step
# What a run writes at its top level: a fresh run refuses a directory holding any.
RUN_FILES = (RUN_CONFIG, METRICS_CSV, SUMMARY, TENSORBOARD_DIR, STEPS_CSV, *POINTERS)
RUN_LOCK = ".lock"
RUN_LOCK_HOLDER = ".lock-holder.json"

_NAME = re.compile(r"^step-\d{8,}$")


def checkpoint_name(global_step: int) -> str:
    """The directory name of the checkpoint at ``global_step`` (0 to MAX_GLOBAL_STEP).

    >>> checkpoint_name(450)
    'step-00000450'

    Any other step is a ValueError: ``step--0000036`` would be a directory that
    no listing recognises as a checkpoint.
    """
    is_integer = isinstance(global_step, numbers.Integral) and not isinstance(global_step, bool)
    if not (is_integer and 0 <= global_step <= MAX_GLOBAL_STEP):
        raise ValueError(
            f"a checkpoint's global step must be an integer in [0, {MAX_GLOBAL_STEP}], "
            f"got {global_step!r}"
        )
    return f"{CHECKPOINT_PREFIX}{int(global_step):08d}"


def is_checkpoint_name(name: str) -> bool:
    """Whether ``name`` is a checkpoint directory's name (a step of 8 digits or more).

    >>> is_checkpoint_name("step-00000450"), is_checkpoint_name("step--0000036")
    (True, False)
    """
    return bool(_NAME.match(name))
