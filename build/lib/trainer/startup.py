"""Start-up plumbing every entry point shares: a quiet TensorFlow, the user's modules, Hydra.

- :func:`import_tensorflow`: TensorFlow and Keras imported with their start-up
  logs silenced (train.py and the tools that need Keras);
- :func:`import_user_modules`: the modules ``imports`` names, so their registry
  decorators run;
- :func:`hydra_overrides`, :func:`compose_config`: the command line of a Hydra
  job, and the config ``python train.py OVERRIDES`` would compose (for tools).

Importing this module is cheap: TensorFlow and Hydra are imported by the
functions that need them.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from trainer.errors import UserError

# TensorFlow's C++ logging: errors only. Must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow() -> tuple[Any, Any]:
    """Import TensorFlow and Keras quietly; return ``(tf, keras)``."""
    with quiet_stderr():
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()  # device start-up logs land here, not on the console
    # Hydra's job logging shows INFO from every library; TFDS logs each file it reads
    # and warns about folders it is about to report missing (we say it in one line).
    for name in ("absl", "tensorflow", "tensorflow_datasets", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return tf, keras


class quiet_stderr:
    """Silence the C++ logs TensorFlow writes to fd 2 before its logging is set up.

    ``TF_CPP_MIN_LOG_LEVEL`` does not reach the lines absl prints before
    ``InitializeLog`` (oneDNN notices, missing CUDA drivers), so the file
    descriptor is pointed at a temporary file while TensorFlow starts; if the
    import fails, what it wrote is replayed so nothing is lost.
    """

    def __enter__(self) -> None:
        import tempfile

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._capture = tempfile.TemporaryFile()
        os.dup2(self._capture.fileno(), 2)

    def __exit__(self, kind, error, traceback) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if kind is not None:
            self._capture.seek(0)
            sys.stderr.write(self._capture.read().decode(errors="replace"))
        self._capture.close()


def import_user_modules(modules: Sequence[str]) -> None:
    """Import the modules ``imports`` names, so their registry decorators run.

    The working directory is searched first, as ``python -m`` would.
    """
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise UserError(f"imports: cannot import {name!r}: {error}") from None


def hydra_overrides() -> list[str]:
    """The command-line overrides of this Hydra job (empty outside Hydra), without those
    :func:`add_resumed_group_choices` implied: the user's own."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if o not in _IMPLIED_CHOICES]


def compose_config(overrides: Sequence[str]):
    """The config ``python train.py OVERRIDES`` would train with (Hydra's compose API).

    Bad overrides (unknown group option, misspelt key) raise a one-line UserError.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from trainer.config import register_schemas
    from trainer.help import CONF_DIR

    register_schemas()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(hydra_message(error)) from None


# The group choices add_resumed_group_choices put on this process' command line.
_IMPLIED_CHOICES: list[str] = []

# Config groups whose keys a resumed run may override (trainer.runs.resume, rule 5):
# with one option per group for the others, only these can lack the keys of the run's option.
RESUMED_GROUPS = ("dataset",)


def resumed_group_choices(args: Sequence[str]) -> list[str]:
    """The group choices a ``+resume=RUN`` command line needs for Hydra to compose it.

    ``python train.py +resume=RUN dataset.path=NEW`` overrides a key of the run's
    dataset option (``folder``) that the default option (``digits``) lacks, so Hydra
    would refuse it before the resume is planned. For each group of
    :data:`RESUMED_GROUPS` whose keys ``args`` override without choosing its
    option, this is the option the checkpoint's config names (``dataset=folder``),
    when ``conf/`` has it. Empty when nothing is missing, or when the resume path
    cannot be read: the resume itself then says what is wrong, in one line.
    """
    resume = [a.split("=", 1)[1] for a in args if a.startswith(("+resume=", "resume="))]
    keys = {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")}
    groups = [
        g for g in RESUMED_GROUPS if g not in keys and any(k.startswith(f"{g}.") for k in keys)
    ]
    if len(resume) != 1 or not groups:
        return []
    from checkpoints.listing import resolve_resume_path
    from trainer.config.saved import read_checkpoint_config
    from trainer.help import CONF_DIR

    try:
        checkpoint = resolve_resume_path(resume[0].strip("'\""), lambda _: None, hashes=False)
        saved = read_checkpoint_config(checkpoint)
    except (UserError, ValueError, OSError):
        return []
    choices = []
    for group in groups:
        option = str((saved.get(group) or {}).get("name"))
        if (CONF_DIR / group / f"{option}.yaml").is_file():
            choices.append(f"{group}={option}")
    return choices


def add_resumed_group_choices(argv: list[str]) -> None:
    """Put :func:`resumed_group_choices` of ``argv[1:]`` on the command line ``argv`` for
    Hydra, as implied rather than typed: :func:`hydra_overrides` leaves them out, so the
    resume compares with its checkpoint only what the user typed (``dataset=folder``
    would compare every key of the folder option's defaults)."""
    choices = resumed_group_choices(argv[1:])
    argv[1:1] = choices
    _IMPLIED_CHOICES.extend(choices)


def hydra_message(error: Exception) -> str:
    """Hydra's error in one line: its message lines, without OmegaConf's key dump."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = [
        line
        for line in lines
        if not line.startswith(("full_key:", "object_type", "reference_type", "value:"))
    ]
    return " ".join(kept[:3]) or type(error).__name__
