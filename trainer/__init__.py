"""A Hydra-configured Keras trainer with a checkpoint manager that never loses a run.

Importing this package is cheap: it does not import TensorFlow. Modules that
need TensorFlow (data, models, optimizers, schedules, loop, checkpoint) import
it themselves.
"""

__version__ = "0.1.0"
