"""The one evaluation of a model on (image, label) batches: the loop's and the tools'.

:class:`Evaluation` is what ``TrainingLoop.evaluate`` runs for ``val_*`` and
the run's test figures, and what ``python -m trainer evaluate`` runs on a
checkpoint, so the two agree by construction:

- ``loss``: a Keras ``Mean`` of the per-batch sparse categorical
  cross-entropy on logits (so every batch, the short last one too, weighs the
  same); under a ``tf.distribute`` strategy the mean over examples instead
  (each replica adds its examples' losses, as TensorFlow's custom-training guide does);
- ``accuracy``: Keras' ``SparseCategoricalAccuracy`` (argmax of the logits).

The step is a ``tf.function``, XLA-compiled with ``jit_compile`` (the run's
``trainer.jit_compile``). Logits are float32 whatever the model's head
computes in. :meth:`Evaluation.logits` gives the logits and labels of every
example (single device), for what the tools derive beyond loss and accuracy.
"""

from __future__ import annotations

import contextlib
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from trainer.training.distribute import distribute_dataset


class Evaluation:
    """Loss and accuracy of ``model`` on datasets of batches; see the module docstring.

    ``strategy``: the ``tf.distribute`` strategy the model was built under, or
    None for the single-device path.
    """

    def __init__(
        self,
        model: Any,
        *,
        strategy: tf.distribute.Strategy | None = None,
        jit_compile: bool = False,
    ) -> None:
        self.model, self.strategy, self.jit_compile = model, strategy, jit_compile
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.per_example_loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.loss = keras.metrics.Mean(name="loss")
            self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self._distributed: dict[int, tuple[Any, Any]] = {}  # see _batches
        self._step = self._make_step()
        self._logits_step = None  # compiled when first asked for

    def _logits(self, images) -> tf.Tensor:
        # float32 even if a builder's head is not (a no-op when it is).
        return tf.cast(self.model(images, training=False), tf.float32)

    def _single_device_step(self, images, labels) -> None:
        logits = self._logits(images)
        self.loss.update_state(self.loss_fn(labels, logits))
        self.accuracy.update_state(labels, logits)

    def _replica_step(self, images, labels) -> None:
        logits = self._logits(images)
        self.loss.update_state(self.per_example_loss_fn(labels, logits))
        self.accuracy.update_state(labels, logits)

    def _make_step(self):
        if self.strategy is None:
            return tf.function(self._single_device_step, jit_compile=self.jit_compile)
        compiled = tf.function(self._replica_step, jit_compile=self.jit_compile)

        @tf.function
        def step(images, labels):
            self.strategy.run(compiled, args=(images, labels))

        return step

    def _batches(self, dataset):
        """``dataset``, split across the replicas under a strategy.

        Split once per dataset (kept alive here, so its id stays its own): a
        split is a new pipeline, which would fill its in-memory cache again.
        """
        if self.strategy is None:
            return dataset
        if id(dataset) not in self._distributed:
            self._distributed[id(dataset)] = (dataset, distribute_dataset(self.strategy, dataset))
        return self._distributed[id(dataset)][1]

    def evaluate(self, dataset) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` of the model on the batches of ``dataset``."""
        self.loss.reset_state()
        self.accuracy.reset_state()
        for images, labels in self._batches(dataset):
            self._step(images, labels)
        return {"loss": float(self.loss.result()), "accuracy": float(self.accuracy.result())}

    def logits(self, batches) -> tuple[np.ndarray, np.ndarray | None]:
        """The float32 logits of every example of ``batches`` (single device), in order, and
        their labels (None when the batches are images only).

        The same forward pass as :meth:`evaluate` (``training=False``, same
        compilation), so the argmax of these logits is what its accuracy counted.
        """
        if self.strategy is not None:
            raise ValueError("Evaluation.logits runs on one device; build it without a strategy")
        if self._logits_step is None:
            self._logits_step = tf.function(self._logits, jit_compile=self.jit_compile)
        logits, labels = [], []
        for batch in batches:
            images, batch_labels = batch if isinstance(batch, tuple) else (batch, None)
            logits.append(self._logits_step(images).numpy())
            if batch_labels is not None:
                labels.append(np.asarray(batch_labels))
        if not logits:
            return np.zeros((0, 0), np.float32), None
        return np.concatenate(logits), (np.concatenate(labels) if labels else None)
