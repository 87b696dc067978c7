"""A Hydra-configured Keras trainer with a checkpoint manager that never loses a run.

It uses the checkpoint library (``checkpoints``) like any other library. Its
subpackages, one concern each: ``config`` (the closed schema), ``data``,
``models``, ``optim`` (optimizers and schedules), ``training`` (the loop and what
runs in it), ``runs`` (where a run lives, resume, sweeps, clusters), ``loggers``,
``tools`` (``python -m trainer``); ``train.train`` tells the story top to bottom.

Importing this package is cheap: it does not import TensorFlow. The modules
that build or train (``build``, ``data.pipeline``, ``models``, ``optim``,
``training``) import it; the config, the registries, the start-up plumbing and
the tools that only read files never do.
"""

from checkpoints.version import __version__

__all__ = ["__version__"]
