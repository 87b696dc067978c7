"""Shared test helpers: quiet TensorFlow, run train.py as a user would, a prepared digits copy."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# ----------------------------------------------------------------- the slow marker, enforced
# `pytest -m "not slow"` is the fast inner loop; it holds only if every test that starts
# train.py (directly, through run_train, a module fixture or fault injection) is marked
# slow. Rather than trust each file to remember, every process started during a test
# that is not marked slow is checked here, and a train.py among them fails the test.
_current_test = {"slow": True, "id": ""}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the test's fixtures: module fixtures that train count for the test that starts
    them."""
    _current_test.update(slow=item.get_closest_marker("slow") is not None, id=item.nodeid)


def _starts_train_py(args: object) -> bool:
    words = [args] if isinstance(args, str | os.PathLike) else list(args or [])
    return any(str(word).endswith("train.py") for word in words)


_popen_init = subprocess.Popen.__init__


def _popen_init_checking_slow(self, args, *rest, **kwargs):  # type: ignore[no-untyped-def]
    if _starts_train_py(args) and not _current_test["slow"]:
        pytest.fail(
            f"{_current_test['id']} starts train.py: mark it @pytest.mark.slow", pytrace=False
        )
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _popen_init_checking_slow

REPO = Path(__file__).resolve().parent.parent

# The schedules the product promises by name (conf/schedule/<name>.yaml).
SCHEDULE_NAMES = (
    "constant",
    "cosine",
    "cosine_restarts",
    "exponential",
    "inverse_time",
    "piecewise",
    "polynomial",
    "linear",
    "step",
    "one_cycle",
)


def run_train(
    *args: str, cwd: Path, timeout: float = 300, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` in ``cwd`` and return the finished process.

    ``check``: fail the test with train.py's output when it exits non-zero.
    """
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    process = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and process.returncode != 0:
        pytest.fail(
            f"train.py {' '.join(args)} exited {process.returncode}\n"
            f"--- stdout\n{process.stdout[-4000:]}\n--- stderr\n{process.stderr[-4000:]}"
        )
    return process


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """A TFDS data_dir with the digits dataset prepared once for the whole session."""
    path = tmp_path_factory.mktemp("tfds")
    from trainer.data.pipeline import load_data

    load_data(
        {
            "name": "digits",
            "data_dir": str(path),
            "batch_size": 32,
            "validation_split": 0.1,
            "shuffle_buffer": None,
            "cache": True,
            "download": False,
        },
        seed=0,
    )
    return path


def tiny_args(digits_dir: Path, checkpoint_dir: Path, *extra: str) -> list[str]:
    """Overrides for a short, small run on the prepared digits copy."""
    return [
        f"dataset.data_dir={digits_dir}",
        f"checkpoint.dir={checkpoint_dir}",
        "model.filters=[8]",
        "model.dense_units=[16]",
        "trainer.epochs=2",
        "hydra.run.dir=" + str(checkpoint_dir.parent / "hydra"),
        *extra,
    ]


def small_digits_cfg(digits_dir, *overrides: str):
    """The composed config of a small, deterministic digits run for in-process tests: a
    tiny CNN, 2 epochs of 11 steps (batch 128 of the 1293 training digits), then
    ``overrides``."""
    from trainer.startup import compose_config

    return compose_config(
        [
            f"dataset.data_dir={digits_dir}",
            "dataset.batch_size=128",  # 11 steps per epoch of the 1293 training digits
            "model.filters=[4]",
            "model.dense_units=[8]",
            "trainer.epochs=2",
            "trainer.deterministic=true",
            *overrides,
        ]
    )


def sigkill_while_training(args: Sequence[str], run_dir: Path, cwd: Path) -> None:
    """Start ``train.py ARGS`` and SIGKILL it right after it writes its first new checkpoint
    of ``run_dir`` (inside training: no handler runs, nothing is saved on the way out)."""
    from devtools import fault_injection

    process = fault_injection.start_train(list(args), cwd)
    killed = fault_injection.kill_while_training(process, run_dir, random.Random(0), 0.0)
    process.communicate()
    assert killed, "the run ended before it could be killed"
    assert process.returncode == -signal.SIGKILL


def resumed_mid_epoch(resumed: subprocess.CompletedProcess) -> tuple[int, int]:
    """The (step, batch) a resumed train.py says it continued from; the batch is inside an
    epoch (> 0), so the resume skipped part of one and trained the rest."""
    found = re.search(r"Resuming from \S+: step (\d+), epoch \d+, batch (\d+)", resumed.stdout)
    assert found, resumed.stdout[-2000:]
    step, batch = int(found[1]), int(found[2])
    assert batch > 0, found[0]
    return step, batch


def assert_same_final_weights(run_dir: Path | str, reference: Path | str) -> None:
    """The newest checkpoints of two runs hold the same arrays, bit for bit."""
    from devtools import fault_injection

    ours = fault_injection.final_weights(run_dir)
    theirs = fault_injection.final_weights(reference)
    assert ours.keys() == theirs.keys()
    assert [key for key in ours if not np.array_equal(ours[key], theirs[key])] == []
