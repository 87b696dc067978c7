"""How a training process uses Python's cyclic garbage collector (the standard ``gc`` module).

Start-up (Hydra, TensorFlow, Keras, the dataset's and the model's traced
functions) creates some 400,000 objects that live to the end of the process.
Python's full collections walk every object of the oldest generation, and one
runs each time that generation has grown by a quarter, so start-up pays about
eight of them, each over more objects than the last; and the interpreter
walks them all once more as it exits. Measured on the MNIST-sized benchmark
(2 epochs, ``BENCHMARKS.md``, "Whole run", a loaded 2-core machine): the
eight took 7.9 s, all of them before the first training step, and the exit
about 7 s, of some 160 s. The training loop itself triggers none. So:

- :func:`pause_collection`, first thing in ``train.py``: no collection during
  start-up;
- :func:`startup_objects_frozen`, around the training loop: one collection
  frees what start-up left, then ``gc.freeze`` (CPython's mechanism for this:
  the objects alive now go to a permanent generation that collections skip)
  and collections resume; on the way out the objects are unfrozen, so that
  what a finished run leaves (its model, in a sweep whose jobs share one
  process) is collected as usual;
- :func:`skip_collection_at_exit`, when the command has finished: the
  interpreter's last collection finds nothing to walk.

None of this changes what is computed or written: objects are still freed
when their last reference goes (reference counting is untouched), and every
file a run writes is closed, flushed and fsynced by its owner before the exit
(``RunCheckpointer.close``, ``RunReporter.close``, the summary), so nothing
waits for a collection to be finalised.

TensorFlow-free; importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_paused = False  # by pause_collection, until the training loop starts


def pause_collection() -> None:
    """Stop cyclic collections until :func:`startup_objects_frozen` starts (start-up's
    objects are long-lived: walking them again and again frees next to nothing)."""
    global _paused
    _paused = _paused or gc.isenabled()
    gc.disable()


@contextlib.contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Inside the block, every object alive when it starts is in the permanent
    generation (``gc.freeze``), the garbage start-up left collected first (so it is
    freed, not kept), and collections paused by :func:`pause_collection` run again;
    on the way out, whatever happened, the objects are unfrozen."""
    global _paused
    gc.collect()
    gc.freeze()
    if _paused:
        _paused = False
        gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()


def skip_collection_at_exit() -> None:
    """Freeze everything and stop collecting: the process is about to exit, and the
    operating system reclaims its memory at once; the interpreter's own collection at
    exit would walk every object first."""
    gc.disable()
    gc.freeze()
