"""The compiled train step: ``steps_per_execution`` optimizer steps per call.

A ``tf.function`` over the batch iterator runs ``steps_per_execution`` optimizer
steps per call (one step and no loop when it is 1, as ``fit`` does), each
XLA-compiled with ``trainer.jit_compile``; the loop over the iterator and the
augmentation are not (XLA has no kernel for the image transforms'
``ImageProjectiveTransformV3``). A call returns what the progress bar shows
(loss, accuracy, learning rate) and the stop signal (``trainer.training.signals``)
in one tensor: one transfer per call.

On one device the step is Keras' "training loop from scratch" step; under a
``tf.distribute`` strategy each replica runs its part of the global batch with
``strategy.run`` (TensorFlow's "Custom training with tf.distribute.Strategy"
guide, see :meth:`TrainStep._replica_train_step`). The single-device step is
the same with or without strategies in the code base, so a deterministic run and
its resumed copy stay bitwise equal.

Under a mixed dtype policy (``trainer.precision``) the logits and the loss are
float32 whatever the model's head computes in, and the loss is scaled with
``optimizer.scale_loss`` (the identity unless the optimizer is a
``LossScaleOptimizer``, whose ``apply_gradients`` unscales).

Augmentation (``trainer.data.augment``) with one-hot or mixed labels trains on
``CategoricalCrossentropy`` (with ``trainer.label_smoothing``); on one device the
input pipeline augments (``TrainingLoop.augment_in_pipeline``), under a strategy
the top of each replica's step does, with a seed of each replica's own.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from trainer.build import BuiltRun
from trainer.training.signals import any_replica


class TrainStep:
    """The compiled train step of ``run``'s model and optimizer, and its running metrics.

    ``step(iterator, count, position, stop_signal)`` trains on the next ``count``
    batches of ``iterator`` (``count`` <= ``steps_per_execution``), the first of which
    is batch ``position`` of the run (the augmentation's seeds); ``stop_signal`` is this
    process' signal number (0: none). It returns ``[loss, accuracy, lr, signal]``:
    the running metrics, the learning rate after the call, and the signal agreed by
    every replica (``trainer.training.signals.any_replica``; on one device, the one given).
    ``augment_in_pipeline``: on one device, the batches come augmented (the step does
    not augment them); under a strategy the step always augments.
    """

    def __init__(
        self,
        run: BuiltRun,
        strategy: tf.distribute.Strategy | None = None,
        *,
        steps_per_execution: int = 1,
        jit_compile: bool = False,
        label_smoothing: float = 0.0,
        augment_in_pipeline: bool = True,
    ) -> None:
        self.model, self.optimizer, self.augmentation = run.model, run.optimizer, run.augmentation
        self.strategy = strategy
        self.steps_per_execution = steps_per_execution
        self.jit_compile = jit_compile
        self.label_smoothing = label_smoothing
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.per_example_loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )
        soft = self._use_soft_labels()
        self.train_loss_fn, self.per_example_train_loss_fn = self.loss_fn, self.per_example_loss_fn
        if soft:  # one-hot or mixed labels (trainer.data.augment); evaluation keeps the sparse loss
            self.train_loss_fn = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=label_smoothing
            )
            self.per_example_train_loss_fn = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=label_smoothing, reduction=None
            )
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.train_loss = keras.metrics.Mean(name="loss")
            # On mixed labels: the argmax of the mixed label (Keras' CategoricalAccuracy).
            accuracy = "CategoricalAccuracy" if soft else "SparseCategoricalAccuracy"
            self.train_accuracy = getattr(keras.metrics, accuracy)(name="accuracy")
        self.compiled = self._make_train_function(augment_in_pipeline)

    def __call__(self, iterator, count, position, stop_signal) -> tf.Tensor:
        return self.compiled(iterator, count, position, stop_signal)

    def _use_soft_labels(self) -> bool:
        """Whether the training batches carry one-hot (maybe mixed) labels."""
        soft = self.augmentation is not None and self.augmentation.soft_labels
        if self.label_smoothing and not soft:
            raise ValueError(
                "label_smoothing needs one-hot labels: build the run with "
                "trainer.build.build_run, whose augmentation makes them"
            )
        return soft

    def logits(self, images, training: bool):
        """The model's logits, float32 even if a builder's head is not (a no-op when it is)."""
        return tf.cast(self.model(images, training=training), tf.float32)

    def _regularization_loss(self):
        return tf.cast(tf.add_n(self.model.losses), tf.float32)

    def _train_step(self, images, labels) -> None:
        with tf.GradientTape() as tape:
            logits = self.logits(images, training=True)
            loss = self.train_loss_fn(labels, logits)
            if self.model.losses:
                loss = loss + self._regularization_loss()
            scaled_loss = self.optimizer.scale_loss(loss)  # see the module docstring
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        self.train_loss.update_state(loss)
        self.train_accuracy.update_state(labels, logits)

    def _replica_train_step(self, images, labels) -> None:
        """One replica's part of a step on the global batch (under a strategy).

        Each replica divides its examples' summed loss by the number of examples
        in the whole global batch (``tf.nn.compute_average_loss``), so the
        gradients the optimizer sums over the replicas are those of the global
        batch's mean loss: the update one device makes on the whole batch. The
        count is summed over the replicas rather than taken from
        ``dataset.batch_size``, so the short last batch of an epoch is averaged
        over the examples it has, as on one device. The loss metric is the mean
        over examples (on one device: the mean of batch means).
        """
        global_count = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.shape(labels)[0]
        )
        with tf.GradientTape() as tape:
            logits = self.logits(images, training=True)
            per_example_loss = self.per_example_train_loss_fn(labels, logits)
            loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_count)
            if self.model.losses:
                loss = loss + tf.nn.scale_regularization_loss(self._regularization_loss())
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        self.train_loss.update_state(per_example_loss)
        self.train_accuracy.update_state(labels, logits)

    def _replica_augmented(self, images, labels, position):
        """One replica's part of the global batch ``position``, augmented with a seed of its
        own (position ``position * replicas + replica``); MixUp and CutMix mix within it."""
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        return self.augmentation(images, labels, position * context.num_replicas_in_sync + replica)

    def _make_train_function(self, augment_in_pipeline: bool):
        # The step itself may be XLA-compiled; the loop over the iterator may not, nor the
        # augmentation (XLA has no kernel for the image transforms' ImageProjectiveTransformV3).
        augment = self.augmentation  # (images, labels, position) -> (images, labels), or None
        if self.strategy is None:
            step = tf.function(self._train_step, jit_compile=self.jit_compile)
            if augment_in_pipeline:
                augment = None  # in the input pipeline instead (TrainingLoop._batches_from_here)
        else:
            step = self._on_replicas(self._replica_train_step)
            if augment is not None:
                augment = self._on_replicas(self._replica_augmented, jit=False)

        def train_batch(iterator, position):
            images, labels = next(iterator)
            if augment is not None:  # trainer.data.augment: training batches only, in the step
                images, labels = augment(images, labels, position)
            step(images, labels)

        @tf.function
        def train_steps(iterator, count, position, stop_signal):
            # position: the index in the run of the call's first batch (augmentation seeds)
            if self.steps_per_execution == 1:  # one step, no loop (as fit does)
                train_batch(iterator, position)
            else:
                for offset in tf.range(tf.cast(count, tf.int64)):
                    train_batch(iterator, position + offset)
            # What the progress bar shows, computed here: one transfer per call instead
            # of a dozen eager ops (the schedule alone is most of them); then the stop
            # signal, agreed by every replica under a strategy (trainer.training.signals).
            return tf.stack(
                [
                    tf.cast(self.train_loss.result(), tf.float32),
                    tf.cast(self.train_accuracy.result(), tf.float32),
                    tf.cast(self.optimizer.learning_rate, tf.float32),
                    stop_signal
                    if self.strategy is None
                    else any_replica(self.strategy, stop_signal),
                ]
            )

        return train_steps

    def _on_replicas(self, replica_step, jit: bool | None = None):
        """``replica_step`` run by ``strategy.run`` on each replica's part of a batch
        (XLA-compiled as ``trainer.jit_compile`` says, unless ``jit`` is given)."""
        jit = self.jit_compile if jit is None else jit
        compiled = tf.function(replica_step, jit_compile=jit)

        def step(*args):
            return self.strategy.run(compiled, args=args)

        return step
