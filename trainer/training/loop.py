"""The training loop: compiled steps, epochs, validation, checkpoints at step boundaries.

Why a loop of our own instead of ``model.fit``: a checkpoint must capture the
exact position inside an epoch (epoch, batches done) and a resumed run must
see the same batches from there on, checkpoints must land on step boundaries
given in steps or epochs, and SIGTERM must save before exiting. ``fit``'s
callbacks cannot restart an epoch mid-way on the same batches, so the loop
follows Keras' "training loop from scratch" guide: a ``tf.function`` that runs
``steps_per_execution`` optimizer steps per call (XLA-compiled with
``trainer.jit_compile``), Keras metrics, Keras' progress bar.

Under a ``tf.distribute`` strategy (``trainer.strategy``, see
``trainer.training.distribute``) the same loop runs each step with ``strategy.run`` on
the replicas' parts of the global batch (TensorFlow's "Custom training with
tf.distribute.Strategy" guide); without one, the single-device step is
unchanged, so a deterministic run and its resumed copy stay bitwise equal.

Under a mixed dtype policy (``trainer.precision``) the logits and the loss are
float32 whatever the model's head computes in, and the loss is scaled with
``optimizer.scale_loss`` (the identity unless the optimizer is a
``LossScaleOptimizer``, whose ``apply_gradients`` unscales). With
``optimizer.ema`` and ``trainer.evaluate_with_ema``, :meth:`TrainingLoop.evaluate`
uses the moving average of the weights (``trainer.optim.optimizers.averaged_weights``)
and puts the trained weights back afterwards, bit for bit.

Training batches are augmented (``trainer.data.augment``), each seeded by its position
in the run, outside the XLA-compiled step: on one device in the input pipeline
(a parallel ``map``, as a Keras user feeds ``fit``), so that the next batch is
augmented while the model trains on this one (BENCHMARKS.md 1b: at the top of the
step it was on the step's critical path, the one difference from ``fit``'s step
found); under a strategy at
the top of each replica's step, with a seed of each replica's own. Evaluation
never augments, and its loss is never smoothed.

Callback state (early stopping, reduce-on-plateau, best metric, the state of
users' callbacks) lives in :class:`LoopState`, which is saved with every
checkpoint. Early stopping and reduce-on-plateau are ours, with Keras' options
and decisions (``trainer.training.plateau`` says why). Users' callbacks
(``trainer.training.callbacks``) are driven through a ``keras.callbacks.CallbackList``
as ``fit`` drives them: ``on_train_begin``/``end``, ``on_epoch_begin``/``end(epoch,
logs)``, ``on_test_begin``/``end`` around validation (no per-batch test hooks),
and ``on_train_batch_begin(first)``/``end(last, logs)`` once per call of the
compiled step, which runs ``steps_per_execution`` batches (``fit`` does the
same); ``model.stop_training = True`` ends the run after that call or epoch,
saved. Each hook is called once per event of the whole run, an interrupted and
resumed one included (an epoch resumed mid-way does not begin again), except
``on_train_begin``/``end``, once per process; a resumed run gives each callback
its saved state (``set_state``) after ``on_train_begin``. With no callback the
step loop makes no hook call at all. Under ``multi_worker`` every worker runs the
callbacks on the same (all-reduced) logs; one that sets ``stop_training`` must
decide the same on every worker, or the others wait in the next collective.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import keras
import tensorflow as tf

from trainer.build import BuiltRun
from trainer.errors import StopRequested
from trainer.optim.optimizers import averaged_weights, step_counter
from trainer.runs.cluster import PREEMPTION_SIGNALS
from trainer.training.callbacks import callback_states, restore_callback_states
from trainer.training.distribute import distribute_dataset
from trainer.training.evaluation import Evaluation
from trainer.training.plateau import (
    EarlyStopping,
    ReduceOnPlateau,
    early_stopping_from_config,
    reduce_on_plateau_from_config,
)

# Signals that make the loop save a checkpoint at the next step boundary, then stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *PREEMPTION_SIGNALS)
_SIGNAL_SLOTS = max(STOP_SIGNALS) + 1  # signal numbers 0 (none) .. the largest one taken


@dataclass
class LoopState:
    """Everything about the loop's progress that a resumed run needs besides the variables."""

    epoch: int = 0  # the epoch in progress (0-based)
    batches_done: int = 0  # batches of that epoch already trained on
    epochs_completed: int = 0
    best: float | None = None  # best value of checkpoint.monitor so far
    epochs_without_improvement: int = 0  # early stopping's counter (Keras' `wait`)
    early_stopping_best: float | None = None  # best value of early stopping's monitor
    early_stopping_best_epoch: int = 0
    epochs_since_lr_cut: int = 0  # reduce-on-plateau's counter (Keras' `wait`)
    plateau_best: float | None = None  # best value of reduce-on-plateau's monitor
    plateau_cooldown: int = 0  # epochs of cooldown left after a cut
    lr_scale: float = 1.0  # reduce-on-plateau's current factor on the schedule
    stopped_early: bool = False  # by early stopping or a callback's model.stop_training
    history: list[dict[str, float]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # users' get_state()s
    # The variables (totals, counts) of the epoch's running loss and accuracy, so an epoch
    # resumed mid-way reports (and its callbacks see) what the uninterrupted one does.
    epoch_metrics: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopState:
        """The state a checkpoint saved. One written before early stopping and
        reduce-on-plateau had monitors of their own shared ``best`` (checkpoint.monitor,
        Keras' rule with min_delta 0): both continue from it."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for own_best in ("early_stopping_best", "plateau_best"):
            known.setdefault(own_best, data.get("best"))
        return cls(**known)


@dataclass(frozen=True)
class LoopSettings:
    """How the loop runs: lengths from the built run, the rest from ``trainer.*`` and
    ``checkpoint.*`` (see :meth:`from_config`)."""

    epochs: int
    total_steps: int
    steps_per_epoch: int
    steps_per_execution: int = 1
    jit_compile: bool = False
    monitor: str = "val_accuracy"
    mode: str = "max"
    every_n_steps: int | None = None
    every_n_epochs: int | None = 1
    log_every_n_steps: int = 1
    early_stopping: EarlyStopping | None = None  # trainer.early_stopping; None: off
    reduce_on_plateau: ReduceOnPlateau | None = None  # trainer.reduce_on_plateau; None: off
    evaluate_with_ema: bool = True  # only with an optimizer that keeps an average
    label_smoothing: float = 0.0  # of the training loss (trainer.label_smoothing)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], run: BuiltRun) -> LoopSettings:
        """The settings of ``cfg``'s run, whose lengths ``run`` was built with."""
        built = {"early_stopping", "reduce_on_plateau"}  # sections, built below
        names = {f.name for f in fields(cls)} - built
        trainer_keys = {k: cfg["trainer"][k] for k in names if k in cfg["trainer"]}
        checkpoint_keys = {k: cfg["checkpoint"][k] for k in names if k in cfg["checkpoint"]}
        return cls(
            total_steps=run.total_steps,
            steps_per_epoch=run.steps_per_epoch,
            early_stopping=early_stopping_from_config(cfg["trainer"], cfg["checkpoint"]),
            reduce_on_plateau=reduce_on_plateau_from_config(cfg["trainer"], cfg["checkpoint"]),
            **trainer_keys,
            **checkpoint_keys,
        )


class TrainingLoop:
    """Trains the model of ``run`` with its optimizer on ``data`` from ``state`` on.

    ``save(state, logs)`` is called at every checkpoint boundary; it writes a
    checkpoint of the live objects and this state. ``strategy``: the
    ``tf.distribute`` strategy the run was built under, or None for the
    single-device path. ``callbacks``: (registered name, ``keras.callbacks.Callback``)
    pairs, driven as the module docstring says. With
    ``trainer.early_stopping.restore_best_weights``, ``best_weights`` are those a
    checkpoint saved (``get_weights()`` order), and ``save`` is also given the best
    epoch's weights (``best_weights=``); the run ends with them set, as Keras'
    ``on_train_end`` does, after its last checkpoint (which holds both).
    """

    # On one device the input pipeline augments (see the module docstring); False: the step
    # does, as under a strategy (``benchmarks.augment_cost`` compares the two).
    augment_in_pipeline = True

    def __init__(
        self,
        run: BuiltRun,
        data: Any,
        settings: LoopSettings,
        state: LoopState,
        reporter: Any,
        save: Callable[[LoopState, Mapping[str, float]], Any],
        strategy: tf.distribute.Strategy | None = None,
        callbacks: Sequence[tuple[str, Any]] = (),
        best_weights: list[Any] | None = None,
    ) -> None:
        self.model, self.optimizer, self.data = run.model, run.optimizer, data
        self.settings, self.state, self.reporter = settings, state, reporter
        self.save, self.learning_rate, self.lr_scale = save, run.learning_rate, run.lr_scale
        self.strategy = strategy
        self.best_weights = best_weights
        self.callback_names = [name for name, _ in callbacks]
        self.callbacks = [callback for _, callback in callbacks]
        # None without callbacks: the step loop then makes no hook call at all.
        self.hooks = (
            keras.callbacks.CallbackList(
                self.callbacks,
                model=self.model,
                epochs=settings.epochs,
                steps=settings.steps_per_epoch,
                verbose=0,
            )
            if self.callbacks
            else None
        )
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.per_example_loss_fn = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=None
        )
        self.augmentation = run.augmentation
        soft = self._use_soft_labels()
        self.train_loss_fn, self.per_example_train_loss_fn = self.loss_fn, self.per_example_loss_fn
        if soft:  # one-hot or mixed labels (trainer.data.augment); evaluation keeps the sparse loss
            smoothing = settings.label_smoothing
            self.train_loss_fn = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=smoothing
            )
            self.per_example_train_loss_fn = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=smoothing, reduction=None
            )
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.train_loss = keras.metrics.Mean(name="loss")
            # On mixed labels: the argmax of the mixed label (Keras' CategoricalAccuracy).
            accuracy = "CategoricalAccuracy" if soft else "SparseCategoricalAccuracy"
            self.train_accuracy = getattr(keras.metrics, accuracy)(name="accuracy")
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}  # the signals' handlers before run()
        self._train_steps = self._make_train_function()
        # The evaluation `python -m trainer evaluate` runs too (trainer.training.evaluation).
        self.evaluation = Evaluation(
            self.model, strategy=strategy, jit_compile=settings.jit_compile
        )

    def _use_soft_labels(self) -> bool:
        """Whether the training batches carry one-hot (maybe mixed) labels."""
        soft = self.augmentation is not None and self.augmentation.soft_labels
        if self.settings.label_smoothing and not soft:
            raise ValueError(
                "label_smoothing needs one-hot labels: build the run with "
                "trainer.build.build_run, whose augmentation makes them"
            )
        return soft

    # ------------------------------------------------------------------ compiled steps

    def _logits(self, images, training: bool):
        # float32 even if a builder's head is not (a no-op when it is).
        return tf.cast(self.model(images, training=training), tf.float32)

    def _regularization_loss(self):
        return tf.cast(tf.add_n(self.model.losses), tf.float32)

    def _train_step(self, images, labels) -> None:
        with tf.GradientTape() as tape:
            logits = self._logits(images, training=True)
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
            logits = self._logits(images, training=True)
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

    def _make_train_function(self):
        # The step itself may be XLA-compiled; the loop over the iterator may not, nor the
        # augmentation (XLA has no kernel for the image transforms' ImageProjectiveTransformV3).
        augment = self.augmentation  # (images, labels, position) -> (images, labels), or None
        if self.strategy is None:
            step = tf.function(self._train_step, jit_compile=self.settings.jit_compile)
            if self.augment_in_pipeline:
                augment = None  # in the input pipeline instead (_batches_from_here)
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
            if self.settings.steps_per_execution == 1:  # one step, no loop (as fit does)
                train_batch(iterator, position)
            else:
                for offset in tf.range(tf.cast(count, tf.int64)):
                    train_batch(iterator, position + offset)
            # What the progress bar shows, computed here: one transfer per call instead
            # of a dozen eager ops (the schedule alone is most of them); then the stop
            # signal, agreed by every replica under a strategy (see _agreed_stop).
            return tf.stack(
                [
                    tf.cast(self.train_loss.result(), tf.float32),
                    tf.cast(self.train_accuracy.result(), tf.float32),
                    tf.cast(self.optimizer.learning_rate, tf.float32),
                    stop_signal if self.strategy is None else self._any_replica(stop_signal),
                ]
            )

        return train_steps

    def _any_replica(self, signum):
        """The largest signal number ``signum`` (0: none) of all replicas, of every worker:
        an all-reduce in the step. tf.distribute reduces by SUM or MEAN only, so each
        replica's number becomes a one-hot vector and the numbers present are those
        whose sum is positive."""
        numbers = tf.range(_SIGNAL_SLOTS, dtype=tf.float32)
        per_replica = self.strategy.run(
            lambda: tf.one_hot(tf.cast(signum, tf.int32), _SIGNAL_SLOTS, dtype=tf.float32)
        )
        present = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return tf.reduce_max(tf.where(present > 0, numbers, tf.zeros_like(numbers)))

    def _on_replicas(self, replica_step, jit: bool | None = None):
        """``replica_step`` run by ``strategy.run`` on each replica's part of a batch
        (XLA-compiled as ``trainer.jit_compile`` says, unless ``jit`` is given)."""
        jit = self.settings.jit_compile if jit is None else jit
        compiled = tf.function(replica_step, jit_compile=jit)

        def step(*args):
            return self.strategy.run(compiled, args=args)

        return step

    def evaluate(self, dataset) -> dict[str, float]:
        """Loss and accuracy of the model on ``dataset``
        (``trainer.training.evaluation.Evaluation``):
        of its moving average of the weights with ``optimizer.ema`` and
        ``trainer.evaluate_with_ema`` (training is not changed)."""
        with self._evaluated_weights():
            return self.evaluation.evaluate(dataset)

    def _evaluated_weights(self):
        if not self.settings.evaluate_with_ema:
            return contextlib.nullcontext()
        return averaged_weights(self.optimizer, self.model.trainable_variables)

    # ------------------------------------------------------------------ the loop

    @property
    def global_step(self) -> int:
        """Batches trained on (``trainer.optim.optimizers.step_counter``)."""
        return int(step_counter(self.optimizer).numpy())

    def run(self) -> LoopState:
        """Train until ``epochs`` or ``total_steps`` is reached, or early stopping says stop."""
        settings, state = self.settings, self.state
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        self._previous_handlers = previous
        try:
            self._begin_callbacks()
            iterator = None  # one pipeline and iterator for all the epochs of this run
            while (
                state.epoch < settings.epochs
                and self.global_step < settings.total_steps
                and not state.stopped_early
            ):
                if iterator is None:
                    iterator = self._batches_from_here()
                self._run_epoch(iterator)
            self._restore_best_weights()
            if self.hooks is not None:
                self.hooks.on_train_end(dict(state.history[-1]) if state.history else None)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return state

    def _begin_callbacks(self) -> None:
        """``on_train_begin``, then the states a checkpoint saved (``set_state``), checked
        once as a save would (a state that cannot be saved fails before training)."""
        self.model.stop_training = False
        if self.hooks is None:
            return
        self.hooks.on_train_begin()
        restore_callback_states(self.callback_names, self.callbacks, self.state.callbacks)
        callback_states(self.callback_names, self.callbacks)

    def _restore_best_weights(self) -> None:
        stopping = self.settings.early_stopping
        if stopping is None or not stopping.restore_best_weights or self.best_weights is None:
            return
        self.model.set_weights(self.best_weights)
        epoch = self.state.early_stopping_best_epoch + 1
        print(f"Restoring the weights of epoch {epoch}, the best by {stopping.monitor}", flush=True)

    def _save(self, logs: Mapping[str, float]) -> None:
        """Checkpoint now (``save``), the users' callbacks' states and the epoch's running
        metrics taken first."""
        if self.callbacks:
            self.state.callbacks = callback_states(self.callback_names, self.callbacks)
        self.state.epoch_metrics = [float(v.numpy()) for v in self._metric_variables()]
        if self.best_weights is None:
            self.save(self.state, logs)
        else:
            self.save(self.state, logs, best_weights=self.best_weights)

    def _metric_variables(self) -> list[Any]:
        """The running metrics' variables; none under a strategy, whose per-replica
        variables cannot be assigned from outside a replica (those restart at a resume)."""
        if self.strategy is not None:
            return []
        return [*self.train_loss.variables, *self.train_accuracy.variables]

    def _start_epoch_metrics(self) -> None:
        """Reset the running metrics, or, in an epoch resumed mid-way, set them back to what
        they were when it was saved."""
        self.train_loss.reset_state()
        self.train_accuracy.reset_state()
        saved, variables = self.state.epoch_metrics, self._metric_variables()
        if self.state.batches_done > 0 and variables and len(saved) == len(variables):
            for variable, value in zip(variables, saved, strict=True):
                variable.assign(value)

    def _batches_from_here(self):
        """An iterator over the batches of every epoch left, from the current position on.

        Each epoch yields exactly ``steps_per_epoch`` batches (fewer for the first
        when resuming mid-epoch), so an epoch that trains all of its batches leaves
        the iterator at the next epoch's first one.
        """
        state = self.state
        batches = self.data.train_epochs(
            state.epoch, self.settings.epochs, skip_batches=state.batches_done
        )
        if self.strategy is not None:
            batches = distribute_dataset(self.strategy, batches)
        elif self.augmentation is not None and self.augment_in_pipeline:
            first = state.epoch * self.settings.steps_per_epoch + state.batches_done
            batches = self._augmented(batches, first)
        return iter(batches)

    def _augmented(self, batches: tf.data.Dataset, first: int) -> tf.data.Dataset:
        """``batches`` augmented in the pipeline, the i-th seeded by its position in the run
        ``first + i``: the same batches the step would make of them (every epoch has
        ``steps_per_epoch`` batches, so positions run on across epochs). In parallel and
        ahead of the step, which then does not wait for it (see the module docstring)."""
        augment = self.augmentation
        return batches.enumerate(start=first).map(
            lambda position, batch: augment(*batch, position),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    def _run_epoch(self, iterator) -> None:
        settings, state = self.settings, self.state
        self._start_epoch_metrics()
        self.reporter.start_epoch(state.epoch, settings.epochs, state.batches_done)
        hooks = self.hooks
        if hooks is not None and state.batches_done == 0:  # a resumed epoch began before
            hooks.on_epoch_begin(state.epoch)
        started = time.perf_counter()
        step = self.global_step  # then counted here: nothing else steps the optimizer
        while state.batches_done < settings.steps_per_epoch:
            if step >= settings.total_steps:
                break
            count = min(
                settings.steps_per_execution,
                settings.steps_per_epoch - state.batches_done,
                settings.total_steps - step,
                self._steps_to_next_step_checkpoint(step),
            )
            position = state.epoch * settings.steps_per_epoch + state.batches_done
            if hooks is not None:
                hooks.on_train_batch_begin(state.batches_done)
            asked = tf.constant(float(self._signal or 0))
            shown = self._train_steps(
                iterator, tf.constant(count), tf.constant(position, tf.int64), asked
            )
            loss, accuracy, lr, agreed = shown.numpy().tolist()
            state.batches_done += count
            step += count
            values = {"loss": loss, "accuracy": accuracy, "lr": lr}
            log_now = step % settings.log_every_n_steps < count
            self.reporter.step(state.batches_done, step, values, log_now)
            if hooks is not None:
                hooks.on_train_batch_end(state.batches_done - 1, dict(values))
                state.stopped_early = state.stopped_early or bool(self.model.stop_training)
            if settings.every_n_steps and step % settings.every_n_steps == 0:
                self._save(values)
            if self._agreed_stop(int(agreed)):
                self._stop(values)
            if state.stopped_early:  # a callback set model.stop_training: end the epoch here
                break
        self._end_epoch(time.perf_counter() - started)

    def _end_epoch(self, seconds: float) -> None:
        settings, state = self.settings, self.state
        logs = {
            "loss": float(self.train_loss.result()),
            "accuracy": float(self.train_accuracy.result()),
        }
        validation = self.data.validation()
        if validation is not None:
            if self.hooks is not None:
                self.hooks.on_test_begin()
            logs.update({f"val_{k}": v for k, v in self.evaluate(validation).items()})
            if self.hooks is not None:
                self.hooks.on_test_end({k[4:]: v for k, v in logs.items() if k[:4] == "val_"})
        logs["lr"] = self.learning_rate()
        logs["epoch_seconds"] = seconds
        epoch_finished = state.batches_done >= settings.steps_per_epoch
        self.reporter.end_epoch(state.epoch, self.global_step, logs)
        epoch = state.epoch  # the one that ran (0-based), as fit's hooks number them
        if epoch_finished:
            state.epoch += 1
            state.batches_done = 0
            state.epochs_completed = state.epoch
            self._update_callbacks(epoch, logs)
        if self.hooks is not None:
            self.hooks.on_epoch_end(epoch, dict(logs))
            state.stopped_early = state.stopped_early or bool(self.model.stop_training)
        state.history.append({"epoch": state.epoch, "step": self.global_step, **logs})
        at_end = (
            state.epoch >= settings.epochs
            or self.global_step >= settings.total_steps
            or state.stopped_early
        )
        every = settings.every_n_epochs
        if at_end or (epoch_finished and every and state.epoch % every == 0):
            self._save(logs)

    def _update_callbacks(self, epoch: int, logs: Mapping[str, float]) -> None:
        """The best value of ``checkpoint.monitor``, then reduce-on-plateau and early
        stopping (``trainer.training.plateau``: Keras' decisions) after epoch ``epoch``
        (0-based)."""
        settings, state = self.settings, self.state
        value = logs.get(settings.monitor)
        if value is not None and not math.isnan(value):
            sign = 1.0 if settings.mode == "max" else -1.0
            if state.best is None or sign * value > sign * state.best:
                state.best = value
        plateau = settings.reduce_on_plateau
        if plateau is not None and plateau.update(state, logs, logs["lr"]):
            self.lr_scale.assign(state.lr_scale)
            print(f"Reducing the learning rate: scale now {state.lr_scale:g}", flush=True)
        stopping = settings.early_stopping
        decision = "skip" if stopping is None else stopping.update(state, epoch, logs)
        # Keras keeps the weights of the best epoch, or of the first one watched.
        keep = decision == "best" or (decision != "skip" and self.best_weights is None)
        if keep and stopping.restore_best_weights:
            self.best_weights = self.model.get_weights()  # copies: a new list at each best
        if decision == "stop":
            print(
                f"Early stopping: {stopping.monitor} did not improve for "
                f"{state.epochs_without_improvement} epochs",
                flush=True,
            )

    def _steps_to_next_step_checkpoint(self, step: int) -> int:
        every = self.settings.every_n_steps
        return every - step % every if every else sys.maxsize

    # ------------------------------------------------------------------ signals

    def _agreed_stop(self, agreed: int) -> bool:
        """Whether to save and stop after this call.

        On one device: when a signal came. Under a strategy: when any worker had one
        as the call started (``agreed``, the largest signal number of all of them), so
        every worker saves and stops after the same step; the save's collectives
        need all of them, and a worker whose signal came during the call stops
        after the next one, with the others.
        """
        if self.strategy is None:
            return self._signal is not None
        if agreed and self._signal is None:
            self._signal = agreed  # another worker's: stop with it
        return bool(agreed)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._signal is not None:  # a second signal: abort at once
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self._signal = signum
        print(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint at the next step "
            "boundary, then stopping (send it again to abort at once)",
            file=sys.stderr,
            flush=True,
        )

    def _stop(self, values: Mapping[str, float]) -> None:
        self._save(values)
        raise StopRequested(
            self._signal, previous_handler=self._previous_handlers.get(self._signal)
        )
