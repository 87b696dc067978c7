"""How a training process uses Python's cyclic garbage collector (the standard ``gc`` module).

A training process holds some 400,000 objects that TensorFlow, Keras and the
built model create at start-up and keep to the end. Python's full (oldest
generation) collections walk all of them each time, and the interpreter walks
them once more as it exits. Measured on the MNIST-sized benchmark (2 epochs,
``BENCHMARKS.md``, "Whole run"): 8 full collections took 4.9 s during the run
and the collection at exit about 4 s (wall, on a loaded 2-core machine), out
of about 90 s. ``gc.freeze`` (CPython's own mechanism for exactly this: the
objects alive now are moved to a permanent generation that collections skip)
removes both costs:

- :func:`startup_objects_frozen`, around the training loop (once the run is
  built): collections inside it only walk what was created since; on the
  way out the objects are unfrozen, so that what a finished run leaves (its
  model, in a sweep that runs its jobs in one process) is collected as usual;
- :func:`skip_collection_at_exit`, when the command has finished: the
  interpreter's last collection finds nothing to walk.

Neither changes what is computed or written: objects are still freed when
their last reference goes (reference counting is untouched), and every file a
run writes is closed, flushed and fsynced by its owner before either is
called (``RunCheckpointer.close``, ``RunReporter.close``, the summary), so
nothing waits for a collector to be finalised. What a frozen object holds
stays allocated until exit: the start-up objects, which live that long anyway.

TensorFlow-free; importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Inside the block, every object alive when it starts is in the permanent
    generation (``gc.freeze``), the garbage start-up left collected first (so it is
    freed, not kept); on the way out, whatever happened, they are unfrozen."""
    gc.collect()
    gc.freeze()
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
