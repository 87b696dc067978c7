"""trainer.training.gc_policy: what the collector skips during start-up, the loop and the exit, and
what it still frees."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref

import pytest

from trainer.training import gc_policy
from trainer.training.gc_policy import pause_collection, startup_objects_frozen


class Node:
    """A cyclic object: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _unfrozen(monkeypatch):
    monkeypatch.setattr(gc_policy, "_paused", False)
    yield
    gc.unfreeze()  # whatever a failing test left
    gc.enable()


def test_collection_paused_for_start_up_resumes_when_the_loop_starts():
    pause_collection()
    assert not gc.isenabled()
    with startup_objects_frozen():
        assert gc.isenabled()
    assert gc.isenabled()


def test_a_collector_the_caller_disabled_stays_disabled():
    gc.disable()  # not by pause_collection: someone else's choice
    with startup_objects_frozen():
        assert not gc.isenabled()


def test_objects_alive_at_entry_are_frozen_and_unfrozen_on_the_way_out():
    kept = Node()
    assert gc.get_freeze_count() == 0
    with startup_objects_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert not any(o is kept for o in gc.get_objects())  # skipped by every collection
    assert gc.get_freeze_count() == 0
    assert any(o is kept for o in gc.get_objects())


def test_garbage_left_before_the_block_is_freed_not_frozen():
    garbage = Node()
    dead = weakref.ref(garbage)
    del garbage
    with startup_objects_frozen():
        assert dead() is None


def test_garbage_made_inside_the_block_is_still_collected():
    with startup_objects_frozen():
        garbage = Node()
        dead = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert dead() is None


def test_an_error_inside_the_block_still_unfreezes():
    with pytest.raises(RuntimeError), startup_objects_frozen():
        raise RuntimeError("the loop failed")
    assert gc.get_freeze_count() == 0


EXITING = textwrap.dedent(
    """
    import sys
    from trainer.training.gc_policy import skip_collection_at_exit

    class Node:
        def __init__(self):
            self.me = self
        def __del__(self):
            print("collected at exit", flush=True)

    Node()  # cyclic garbage: only a collection finalises it
    with open(sys.argv[1], "w") as f:
        f.write("written and closed")
    if sys.argv[2] == "skip":
        skip_collection_at_exit()
    """
)


@pytest.mark.parametrize("skip", [False, True])
def test_exit_skips_the_last_collection_and_keeps_what_was_written(skip, tmp_path):
    out = tmp_path / "out.txt"
    process = subprocess.run(
        [sys.executable, "-c", EXITING, str(out), "skip" if skip else "keep"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Without the skip the interpreter's exit collection finalises the cycle: the
    # control shows the probe can see the difference.
    assert ("collected at exit" in process.stdout) is not skip
    assert out.read_text() == "written and closed"
