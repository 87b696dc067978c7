"""Stop on a signal: save a checkpoint at the next step boundary, then stop.

SIGINT, SIGTERM and the preemption signals of a cluster
(``trainer.runs.cluster.PREEMPTION_SIGNALS``) do not kill a run: the training
loop saves a checkpoint after the step it is in, then raises ``StopRequested``
(``trainer.errors``), which exits with ``128 + signal`` once the checkpoint is
committed. A second signal aborts at once, as the signal's default action.

Under a ``tf.distribute`` strategy every worker must stop after the same step
(the save's collectives need all of them), so the compiled step all-reduces the
signal numbers of the replicas (:func:`any_replica`) and every worker stops
with the first one that had a signal as the call started.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import tensorflow as tf

from trainer.errors import StopRequested
from trainer.runs.cluster import PREEMPTION_SIGNALS

# Signals that make the loop save a checkpoint at the next step boundary, then stop.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *PREEMPTION_SIGNALS)
_SIGNAL_SLOTS = max(STOP_SIGNALS) + 1  # signal numbers 0 (none) .. the largest one taken


def any_replica(strategy: tf.distribute.Strategy, signum):
    """The largest signal number ``signum`` (0: none) of all replicas, of every worker:
    an all-reduce in the step. tf.distribute reduces by SUM or MEAN only, so each
    replica's number becomes a one-hot vector and the numbers present are those
    whose sum is positive."""
    numbers = tf.range(_SIGNAL_SLOTS, dtype=tf.float32)
    per_replica = strategy.run(
        lambda: tf.one_hot(tf.cast(signum, tf.int32), _SIGNAL_SLOTS, dtype=tf.float32)
    )
    present = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return tf.reduce_max(tf.where(present > 0, numbers, tf.zeros_like(numbers)))


class StopOnSignal:
    """The loop's handler of :data:`STOP_SIGNALS`, installed for the ``with`` block (the
    handlers before it are put back after it, whatever happened).

    ``received``: the signal that came (None: none yet), what the compiled step is given
    (:meth:`asked`) and what :meth:`stop_requested` names.
    """

    def __init__(self, strategy: tf.distribute.Strategy | None = None) -> None:
        self.strategy = strategy
        self.received: int | None = None
        self._previous_handlers: dict[int, Any] = {}  # the signals' handlers before the block

    def __enter__(self) -> StopOnSignal:
        self._previous_handlers = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)

    def asked(self) -> tf.Tensor:
        """This process' signal number for the compiled step (0.0: none)."""
        return tf.constant(float(self.received or 0))

    def agreed_stop(self, agreed: int) -> bool:
        """Whether to save and stop after this call.

        On one device: when a signal came. Under a strategy: when any worker had one
        as the call started (``agreed``, the largest signal number of all of them), so
        every worker saves and stops after the same step; the save's collectives
        need all of them, and a worker whose signal came during the call stops
        after the next one, with the others.
        """
        if self.strategy is None:
            return self.received is not None
        if agreed and self.received is None:
            self.received = agreed  # another worker's: stop with it
        return bool(agreed)

    def stop_requested(self) -> StopRequested:
        """The error that ends the run once its checkpoint is saved."""
        return StopRequested(
            self.received, previous_handler=self._previous_handlers.get(self.received)
        )

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.received is not None:  # a second signal: abort at once
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.received = signum
        print(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint at the next step "
            "boundary, then stopping (send it again to abort at once)",
            file=sys.stderr,
            flush=True,
        )
