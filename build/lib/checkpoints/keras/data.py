"""``EpochData``: a ``model.fit`` dataset whose every epoch has the same batches again.

A ``tf.data`` pipeline that reshuffles each epoch (``shuffle(..., seed=S)``) gives
its *n*-th order on its *n*-th iteration in the process: a script started again at
epoch 3 would train epoch 3 on epoch 0's order. So the order must be a function of
the epoch alone (DESIGN.md contract 12), and the user says how::

    def epoch_data(epoch):                    # epoch: a scalar int64 tensor
        return (tf.data.Dataset.from_tensor_slices((x, y))
                .shuffle(len(x), seed=seed + epoch).batch(32))

    model.fit(checkpoint.dataset(epoch_data), epochs=10, callbacks=[checkpoint])

``make_epoch`` is traced once; each iteration of the dataset (one per epoch: ``fit``
makes a new iterator for every epoch) runs it again with the epoch that
:meth:`EpochData.set_epoch` set last, read from a variable when the iteration
starts. Every epoch must have the same, known number of batches (a
``tf.data.experimental.assert_cardinality`` checks it), so that ``fit`` knows the
epoch's length from the start and a resumed epoch can be continued at its batch.

Cost: none while training. Resuming mid-epoch reads the batches before the
checkpoint's position through the pipeline again (not trained on: see
``checkpoints.keras.internals.skip_batches``); a pipeline that looks examples up
by index after shuffling makes that read cheap.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from checkpoints.errors import UserError


class EpochData:
    """The dataset ``fit`` iterates (``.dataset``) and the epoch it gives (``set_epoch``)."""

    def __init__(self, make_epoch: Callable[[tf.Tensor], tf.data.Dataset]) -> None:
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
        first = make_epoch(tf.constant(0, tf.int64))
        if not isinstance(first, tf.data.Dataset):
            raise UserError(
                f"checkpoint.dataset(make_epoch): make_epoch(epoch) must return a "
                f"tf.data.Dataset, got {type(first).__name__}"
            )
        self.batches_per_epoch = int(first.cardinality())
        if self.batches_per_epoch <= 0:
            kind = {-1: "infinite", -2: "unknown"}.get(self.batches_per_epoch, "empty")
            raise UserError(
                "checkpoint.dataset(make_epoch): an epoch's dataset must have a known, "
                f"finite number of batches to be resumed at a batch; this one's is {kind} "
                "(no .repeat(), no .filter(); or tf.data.experimental.assert_cardinality)"
            )
        self.dataset = (
            tf.data.Dataset.range(1)
            .flat_map(lambda _: make_epoch(self._epoch.read_value()))
            .apply(tf.data.experimental.assert_cardinality(self.batches_per_epoch))
        )

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration gives (set before ``fit`` starts the epoch)."""
        self._epoch.assign(int(epoch))
