"""What every benchmark shares: running processes and timing them, statistics, reports.

The rule every benchmark follows: the machine is shared and noisy and its
absolute times drift, so each one measures ours and the reference *back to
back in one invocation*, alternating which goes first (ABBA), and reports the
RATIO of each adjacent pair and the median of those ratios over ``--repeats``
rounds. Absolute figures are printed too, for orientation only.

Processes are timed with ``os.wait4``, which gives the wall time we measure
and the child's own CPU time (user + system) and peak resident set size
(``ru_maxrss``): the peak of that one process, not of the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TRAIN_PY = REPO / "train.py"
DEFAULT_DATA_DIR = Path(tempfile.gettempdir()) / "khtrainer-benchmarks" / "tfds"


# --------------------------------------------------------------------------- processes


@dataclass
class ProcessResult:
    """One child process: how long it ran, its CPU time and its peak RSS."""

    argv: list[str]
    returncode: int
    wall_seconds: float
    cpu_seconds: float  # user + system of the child itself
    peak_rss_mb: float  # ru_maxrss of the child (Linux reports KiB)
    marker_seconds: float | None = None  # wall time until the awaited output appeared
    output: str = ""  # the tail of stdout+stderr, for error messages

    def check(self) -> ProcessResult:
        if self.returncode != 0:
            raise RuntimeError(
                f"{' '.join(self.argv)} exited {self.returncode}\n{self.output[-3000:]}"
            )
        return self


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every measured process: quiet TensorFlow, the repo importable.

    The repository root goes on ``PYTHONPATH`` so that ``imports=[benchmarks.synthetic_mnist]``
    works from any working directory; ours and the reference get the same environment.
    """
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["HYDRA_FULL_ERROR"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.update(extra or {})
    return env


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    log: Path | None = None,
    timeout: float = 1800,
    env: Mapping[str, str] | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion; stdout and stderr go to ``log`` (or are discarded)."""
    argv = [str(a) for a in argv]
    sink = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    try:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env or child_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        status, usage = _wait(process, started, timeout)
        wall = time.perf_counter() - started
    finally:
        if log:
            sink.close()
    output = log.read_text(errors="replace")[-6000:] if log else ""
    return ProcessResult(
        argv, status, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output=output
    )


def time_to_output(
    argv: Sequence[str],
    marker: Callable[[bytes], bool],
    *,
    cwd: Path,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    kill: bool = True,
) -> ProcessResult:
    """Start ``argv``, read its output until ``marker(all_output_so_far)`` is true, then kill it.

    ``marker_seconds`` is the wall time from just before the process was
    started to the moment the output that satisfied ``marker`` was read.
    The process is killed with SIGKILL (no clean-up handlers: they are not
    part of what is measured), or with ``kill=False`` left to finish (its
    output is then read to the end); stdout and stderr are merged.
    """
    argv = [str(a) for a in argv]
    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = b""
    seen = None
    fd = process.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:  # the process ended without the marker
            break
        output += chunk
        if seen is None and marker(output):
            seen = time.perf_counter() - started
            if kill:
                os.killpg(process.pid, signal.SIGKILL)
                break
        if time.perf_counter() - started > timeout:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.stdout.close()
    status, usage = _wait(process, started, timeout)
    wall = time.perf_counter() - started
    text = output.decode(errors="replace")[-6000:]
    if not kill and status != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {status}\n{text[-3000:]}")
    if seen is None:
        raise RuntimeError(
            f"{' '.join(argv)} never printed what was awaited (exit {status})\n{text[-3000:]}"
        )
    return ProcessResult(
        argv, 0, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, seen, text
    )


def _wait(process: subprocess.Popen, started: float, timeout: float):
    """``os.wait4`` the child (its own rusage); kill its process group past ``timeout``."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage
        if time.perf_counter() - started > timeout:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.005)


# --------------------------------------------------------------------------- train.py


def train_command(overrides: Iterable[str]) -> list[str]:
    return [PYTHON, str(TRAIN_PY), *overrides]


def composed_config(overrides: Sequence[str], cwd: Path) -> dict[str, Any]:
    """The config train.py composes from ``overrides``, resolved, as plain data.

    Asked of train.py itself (``--cfg job --resolve``), so the reference script
    trains exactly what our run trains.
    """
    import yaml

    process = subprocess.run(
        train_command([*overrides, "--cfg", "job", "--resolve"]),
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if process.returncode != 0:
        raise RuntimeError(f"train.py --cfg job failed:\n{process.stderr[-3000:]}")
    return yaml.safe_load(process.stdout)


def read_metrics_csv(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv`` (one per epoch), values as floats."""
    import csv

    with open(Path(run_dir) / "metrics.csv", newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


# Keras' progress bar draws "<bold> current/target<reset>" after each update.
PROGRESS_BAR = re.compile(rb"\x1b\[1m\s*\d+/\d+\x1b\[0m")


def after_epoch_line(epoch: int) -> Callable[[bytes], bool]:
    """A marker: the first progress-bar update after train.py's ``Epoch <epoch>/N`` line.

    The loop prints ``Epoch k/N`` before an epoch's first step and updates the
    bar after each call into the compiled steps: the first update is the end
    of the first training step (of that process).
    """
    heading = re.compile(rb"Epoch %d/\d+\r?\n" % epoch)

    def marker(output: bytes) -> bool:
        found = heading.search(output)
        return bool(found and PROGRESS_BAR.search(output, found.end()))

    return marker


# --------------------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def paired_ratios(ours: Sequence[float], reference: Sequence[float]) -> list[float]:
    """``ours[i] / reference[i]`` for each round (pairs measured back to back)."""
    return [o / r for o, r in zip(ours, reference, strict=True)]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and every value, rounded for the report."""
    return {
        "median": _round(median(values)),
        "min": _round(min(values)) if values else math.nan,
        "max": _round(max(values)) if values else math.nan,
        "values": [_round(v) for v in values],
    }


def _round(value: float) -> float:
    return float(f"{value:.4g}") if math.isfinite(value) else value


def alternate(round_index: int, *sides: Any) -> list[Any]:
    """ABBA order: which of the two goes first alternates from round to round; three or
    more sides are rotated (each goes first in turn)."""
    shift = round_index % len(sides)
    return [*sides[shift:], *sides[:shift]]


# --------------------------------------------------------------------------- reports


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    versions = {}
    for package in ("tensorflow", "keras", "tensorflow-datasets", "hydra-core", "h5py", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "describe", "--always", "--dirty"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class Report:
    """A benchmark's result: the cases measured, each with its ratio, and the machine."""

    benchmark: str
    command: str
    repeats: int
    cases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=machine)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def print(self, columns: Sequence[tuple[str, str]]) -> None:
        """A table of ``cases``: ``columns`` are (key, heading); nested keys as ``a.b``."""
        print(f"\n== {self.benchmark}  ({self.command}, --repeats {self.repeats})")
        rows = [[heading for _, heading in columns]]
        for case in self.cases:
            rows.append([_format(_lookup(case, key)) for key, _ in columns])
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        for row in rows:
            print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        for note in self.notes:
            print(f"note: {note}")

    def save(self, path: Path | None) -> None:
        if path:
            Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _lookup(case: Mapping[str, Any], key: str) -> Any:
    value: Any = case
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


def argument_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=f"rounds of (ours, reference); default {repeats}",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny version that checks the harness (seconds)"
    )
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument(
        "--workdir", type=Path, help="where runs write (default: a temporary directory, removed)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"TFDS data_dir, prepared on first use and reused (default {DEFAULT_DATA_DIR})",
    )
    return parser


class workdir:
    """``path`` (kept) or a temporary directory (removed at the end)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._temporary: str | None = None

    def __enter__(self) -> Path:
        if self.path:
            self.path.mkdir(parents=True, exist_ok=True)
            return self.path.resolve()
        self._temporary = tempfile.mkdtemp(prefix="khtrainer-bench-")
        return Path(self._temporary)

    def __exit__(self, *exc: object) -> None:
        if self._temporary:
            shutil.rmtree(self._temporary, ignore_errors=True)


def prepare_datasets(data_dir: Path, names: Iterable[str]) -> None:
    """Prepare the TFDS datasets ``names`` in ``data_dir`` in a child process (not timed).

    Preparing the 60k synthetic MNIST takes about half a minute, once.
    """
    folders = {"digits": "sklearn_digits"}  # TFDS names that differ from the config name
    names = [
        name
        for name in names
        if not (Path(data_dir) / folders.get(name, name) / "1.0.0" / "dataset_info.json").exists()
    ]
    if not names:
        return
    code = (
        "import sys, benchmarks.synthetic_mnist\n"
        "from trainer.data.pipeline import load_data\n"
        "for name in sys.argv[2:]:\n"
        "    load_data({'name': name, 'data_dir': sys.argv[1], 'batch_size': 32,\n"
        "               'validation_split': 0.0, 'shuffle_buffer': 0, 'cache': False,\n"
        "               'download': False}, seed=0)\n"
    )
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    run_process(
        [PYTHON, "-c", code, str(data_dir), *names], cwd=REPO, log=Path(data_dir) / "prepare.log"
    ).check()
