"""Start-up: the commands that should answer at once, against ``python -c pass``.

    python -m benchmarks.startup                       # 10 rounds
    python -m benchmarks.startup --quick               # 1 round: the harness only
    python -m benchmarks.startup --run-dir checkpoints/<date>/<time>   # list/verify a real run

Each round runs every command once, in an order that rotates from round to
round: ``python -c pass`` (the interpreter alone), ``python train.py --cfg job``,
``python train.py --help``, ``python -m trainer --help``, ``python -m trainer
list RUN`` and ``python -m trainer verify RUN``. RUN is ``--run-dir`` or a run
of three checkpoints written here with ``checkpoints`` in the format
and sizes of the default model (what ``list``/``verify`` read and hash; no
TensorFlow involved). A command whose module does not exist yet is reported
as missing, not failed.

Target: median wall time < 1 s each. Also reported: CPU time (user + system
of the process: less sensitive to a busy machine than wall time) and the
ratio of each to ``python -c pass`` in the same round.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks import common

TARGET_SECONDS = 1.0


def commands(run_dir: Path) -> dict[str, list[str]]:
    python, train = common.PYTHON, str(common.TRAIN_PY)
    return {
        "python -c pass": [python, "-c", "pass"],
        "train.py --cfg job": [python, train, "--cfg", "job"],
        "train.py --help": [python, train, "--help"],
        "trainer --help": [python, "-m", "trainer", "--help"],
        "trainer list RUN": [python, "-m", "trainer", "list", str(run_dir)],
        "trainer verify RUN": [python, "-m", "trainer", "verify", str(run_dir)],
    }


def make_run(run_dir: Path) -> Path:
    """A run directory with three checkpoints of the default model's sizes (no TensorFlow)."""
    import h5py
    import numpy as np

    from checkpoints import (
        checkpoint_name,
        commit_checkpoint,
        staging_dir,
        write_text_atomically,
    )

    # Sizes of a default digits run's files (conf/model/cnn.yaml, Adam), as HDF5 files
    # that verify checks like real ones: one float32 dataset of that size each.
    sizes = {"model.weights.h5": 236_000, "optimizer.h5": 440_000}
    run_dir.mkdir(parents=True, exist_ok=True)
    for epoch, step in enumerate((41, 82, 123), start=1):
        staging = staging_dir(run_dir, step)
        for name, size in sizes.items():
            values = np.frombuffer(os.urandom(size), np.float32)
            with h5py.File(staging / name, "w") as handle:
                if name == "optimizer.h5":
                    handle["0"], handle["1"] = np.int64(step), values
                else:
                    handle["layers/dense/vars/0"] = values
        (staging / "trainer_state.json").write_bytes(b" " * 2_000)
        (staging / "config.yaml").write_text("model:\n  name: cnn\n")
        commit_checkpoint(
            staging,
            run_dir / checkpoint_name(step),
            {
                "global_step": step,
                "epoch": epoch,
                "metrics": {"val_accuracy": 0.9 + epoch / 100},
                "learning_rate": 1e-3,
                "monitor": "val_accuracy",
            },
        )
    write_text_atomically(run_dir / "latest", checkpoint_name(123) + "\n")
    write_text_atomically(run_dir / "best", checkpoint_name(123) + "\n")
    return run_dir


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.argument_parser(__doc__.splitlines()[0], repeats=10)
    parser.add_argument("--run-dir", type=Path, help="a real run to list and verify")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    report = common.Report("startup", "python -m benchmarks.startup", args.repeats)
    missing = []
    if not (common.REPO / "trainer" / "__main__.py").exists():
        missing.append("trainer/__main__.py")
    with common.workdir(args.workdir) as root:
        run_dir = args.run_dir.resolve() if args.run_dir else make_run(root / "run")
        todo = commands(run_dir)
        if missing:
            todo = {k: v for k, v in todo.items() if not k.startswith("trainer ")}
            report.notes.append(f"not measured, missing: {', '.join(missing)}")
        names = list(todo)
        results: dict[str, list[common.ProcessResult]] = {name: [] for name in names}
        for round_index in range(args.repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(
                    common.run_process(todo[name], cwd=root, log=root / "output.log")
                )
    baseline_wall = [r.wall_seconds for r in results["python -c pass"]]
    baseline_cpu = [r.cpu_seconds for r in results["python -c pass"]]
    for name in names:
        failed = [r for r in results[name] if r.returncode != 0]
        wall = [r.wall_seconds for r in results[name]]
        cpu = [r.cpu_seconds for r in results[name]]
        case = {
            "case": name,
            "command": " ".join(todo[name][1:]).replace(str(common.REPO) + "/", ""),
            "wall_s": common.summary(wall),
            "cpu_s": common.summary(cpu),
            "wall_ratio_to_python": common.summary(common.paired_ratios(wall, baseline_wall)),
            "cpu_ratio_to_python": common.summary(common.paired_ratios(cpu, baseline_cpu)),
            "peak_rss_mb": common.summary([r.peak_rss_mb for r in results[name]]),
            "exit_codes": sorted({r.returncode for r in results[name]}),
        }
        if name != "python -c pass":
            case["target"] = f"< {TARGET_SECONDS} s"
            case["met"] = not failed and common.median(wall) < TARGET_SECONDS
        if failed:
            report.notes.append(f"{name} exited {failed[0].returncode}: {failed[0].output[-300:]}")
        report.cases.append(case)
    report.notes.append("ratio = command / `python -c pass` in the same round")
    report.print(
        [
            ("case", "command"),
            ("wall_s.median", "wall s"),
            ("wall_s.max", "max"),
            ("cpu_s.median", "cpu s"),
            ("wall_ratio_to_python.median", "wall/python"),
            ("cpu_ratio_to_python.median", "cpu/python"),
            ("met", f"<{TARGET_SECONDS:g}s"),
        ]
    )
    report.save(args.json)
    return report.to_dict()


if __name__ == "__main__":
    main()
