"""The training loop: epochs, validation, callbacks, checkpoints at step boundaries.

Why a loop of our own instead of ``model.fit``: a checkpoint must capture the
exact position inside an epoch (epoch, batches done) and a resumed run must
see the same batches from there on, checkpoints must land on step boundaries
given in steps or epochs, and SIGTERM must save before exiting. ``fit``'s
callbacks cannot restart an epoch mid-way on the same batches, so the loop
follows Keras' "training loop from scratch" guide: a compiled step that runs
``steps_per_execution`` optimizer steps per call (``trainer.training.step``),
Keras metrics, Keras' progress bar. A stop signal saves at the next step
boundary, then stops (``trainer.training.signals``).

Under a ``tf.distribute`` strategy (``trainer.strategy``, see
``trainer.training.distribute``) the same loop runs each step on the replicas'
parts of the global batch; without one, the single-device step is unchanged,
so a deterministic run and its resumed copy stay bitwise equal. With
``optimizer.ema`` and ``trainer.evaluate_with_ema``, :meth:`TrainingLoop.evaluate`
uses the moving average of the weights (``trainer.optim.optimizers.averaged_weights``)
and puts the trained weights back afterwards, bit for bit.

Training batches are augmented (``trainer.data.augment``), each seeded by its position
in the run, outside the XLA-compiled step: on one device in the input pipeline
(a parallel ``map``, as a Keras user feeds ``fit``), so that the next batch is
augmented while the model trains on this one (BENCHMARKS.md 1b: at the top of the
step it was on the step's critical path, the one difference from ``fit``'s step
found); under a strategy at the top of each replica's step, with a seed of each
replica's own. Evaluation never augments, and its loss is never smoothed.

Callback state (early stopping, reduce-on-plateau, best metric, the state of
users' callbacks) lives in ``trainer.training.state.LoopState``, which is saved with every
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
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import keras
import tensorflow as tf

from trainer.build import BuiltRun
from trainer.optim.optimizers import averaged_weights, step_counter
from trainer.training.callbacks import callback_states, restore_callback_states
from trainer.training.distribute import distribute_dataset
from trainer.training.evaluation import Evaluation
from trainer.training.plateau import (
    EarlyStopping,
    ReduceOnPlateau,
    early_stopping_from_config,
    reduce_on_plateau_from_config,
)
from trainer.training.signals import StopOnSignal
from trainer.training.state import LoopState
from trainer.training.step import TrainStep


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
        self.augmentation = run.augmentation
        self.train_step = TrainStep(
            run,
            strategy,
            steps_per_execution=settings.steps_per_execution,
            jit_compile=settings.jit_compile,
            label_smoothing=settings.label_smoothing,
            augment_in_pipeline=self.augment_in_pipeline,
        )
        # The running metrics of the epoch, updated by the step.
        self.train_loss, self.train_accuracy = (
            self.train_step.train_loss,
            self.train_step.train_accuracy,
        )
        self.signals = StopOnSignal(strategy)
        # The evaluation `python -m trainer evaluate` runs too (trainer.training.evaluation).
        self.evaluation = Evaluation(
            self.model, strategy=strategy, jit_compile=settings.jit_compile
        )

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
        with self.signals:  # SIGTERM & co. save at the next step boundary, then stop
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
            shown = self.train_step(
                iterator, tf.constant(count), tf.constant(position, tf.int64), self.signals.asked()
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
            if self.signals.agreed_stop(int(agreed)):
                self._save(values)
                raise self.signals.stop_requested()
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
