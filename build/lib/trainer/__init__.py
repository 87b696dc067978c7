"""A Hydra-configured Keras trainer with a checkpoint manager that never loses a run.

Importing this package is cheap: it does not import TensorFlow. The modules
that build or train (``build_run`` in ``build``, ``data``, ``models``,
``optimizers``, ``schedules``, ``loop``, ``reporting``, ``distribute``,
``checkpoint.state``, ``checkpoint.checkpointer``) import it; the config, the
registries, the start-up plumbing, the rest of ``checkpoint`` and the tools
that only read files never do.
"""

from checkpoints.version import __version__

__all__ = ["__version__"]
