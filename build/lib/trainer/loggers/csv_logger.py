"""``logger=csv``: per-step metrics in ``<run>/steps.csv``.

One row per logged step (``trainer.log_every_n_steps``): ``step`` and the values the
loop logs (``loss``, ``accuracy``, ``lr``), appended as the run goes and by a resumed
run, which starts after the last step the file holds (``trainer.loggers``: each step
once). ``metrics.csv``, one row per epoch, is the run's own record that the tools read;
every run writes it, whatever loggers are selected (``trainer.training.reporting``).

No TensorFlow here.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

from checkpoints.layout import STEPS_CSV
from trainer.errors import storage_errors
from trainer.loggers.base import Logger, StepPoint, TrackedRun

STEP = "step"
TAIL_BYTES = 64 * 1024  # far more than one row: where the last row is looked for


class CsvLogger(Logger):
    """Appends per-step rows to one CSV file; see the module docstring."""

    name = "csv"

    def __init__(self, settings: Mapping[str, Any], run: TrackedRun) -> None:
        self.path = run.run_dir / STEPS_CSV
        self.writing = f"write {self.path.name} in {self.path.parent}"
        with storage_errors(self.writing):
            self._drop_torn_row()
        self.columns = self._header()

    def _drop_torn_row(self) -> None:
        """A row a kill cut short (no line end) is cut off: rows appended after it would
        be glued to it. Nothing else in the file changes."""
        if not self.path.is_file():
            return
        with open(self.path, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            handle.seek(start)
            tail = handle.read()
            if tail and not tail.endswith(b"\n"):
                handle.truncate(start + tail.rfind(b"\n") + 1)

    def _header(self) -> list[str] | None:
        if not self.path.is_file():
            return None
        with open(self.path, newline="") as handle:
            return next(csv.reader(handle), None)

    def last_logged_step(self) -> int | None:
        """The step of the file's last complete row (None: no row)."""
        if not self.path.is_file():
            return None
        with open(self.path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines(keepends=True)
        for line in reversed(lines):
            cells = next(csv.reader(io.StringIO(line)), [])
            if cells and cells[0].isdigit():
                return int(cells[0])
        return None

    def log_steps(self, points: Sequence[StepPoint]) -> None:
        with storage_errors(self.writing), open(self.path, "a", newline="") as handle:
            if self.columns is None:
                self.columns = [STEP, *points[0][1]]
                csv.writer(handle).writerow(self.columns)
            writer = csv.DictWriter(handle, self.columns, extrasaction="ignore")
            for step, values in points:
                writer.writerow({STEP: step, **values})
