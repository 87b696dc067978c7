"""A run written before the rebuild (``tests/data/before_rebuild``) still lists, verifies and
resumes bitwise: moving the checkpoint manager into its own package changed no byte it reads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from checkpoints import checkpoint_arrays, latest_valid_checkpoint, verify
from tests.conftest import REPO, run_train

BEFORE = Path(__file__).parent / "data" / "before_rebuild"


def test_the_old_checkpoints_verify_and_list():
    old = (BEFORE / "run" / "step-00000014", BEFORE / "uninterrupted" / "step-00000022")
    for checkpoint in old:
        checked = verify(checkpoint)
        assert checked.valid and checked.problems == [], checked.problems
    listed = subprocess.run(
        [sys.executable, "-m", "trainer", "list", str(BEFORE / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "step-00000014" in listed and " ok" in listed


@pytest.mark.slow
def test_an_old_mid_epoch_checkpoint_resumes_bitwise(digits_dir, tmp_path):
    shutil.copytree(BEFORE, tmp_path / "before")
    run = tmp_path / "before" / "run"
    run_train(f"+resume={run}", f"dataset.data_dir={digits_dir}", cwd=tmp_path)
    resumed = latest_valid_checkpoint(run)
    assert resumed is not None and resumed.path.name == "step-00000022"
    expected = checkpoint_arrays(BEFORE / "uninterrupted" / "step-00000022")
    got = checkpoint_arrays(resumed.path)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and np.array_equal(got[key], value), key
