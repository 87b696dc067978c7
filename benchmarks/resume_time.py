"""Resume: time from process start to the first resumed training step, versus a fresh start.

    python -m benchmarks.resume_time                   # default model and a 10 M-parameter one
    python -m benchmarks.resume_time --quick           # a tiny model, 1 round: the harness only
                                                       # (its fresh sample: the base run's start)

Both sides are ``python train.py`` subprocesses with the same config (digits,
``trainer.epochs=2``); the resumed one adds ``+resume=RUN`` where RUN is a
fresh copy (copying not timed) of a run prepared once with
``trainer.epochs=1``, so it continues at the start of epoch 2. The time
measured runs from just before the process is started to the first progress
bar update after the loop's ``Epoch k/2`` line, i.e. the end of the first
training step of the process; the process is then killed. What a resume adds
on top of a fresh start: verifying the checkpoint (manifest and sizes first,
the sha256 of every file on a thread while TensorFlow imports), reading its
config, restoring weights and optimizer variables.

Ratio = resumed / fresh per round (ABBA order), median over rounds. Target: <= 1.10.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from benchmarks import common

TARGET = 1.10
MODEL_CASES = {
    "default": [],  # conf/model/cnn.yaml: 53 k parameters on digits
    "10M": ["model.dense_units=[3072,3072]"],  # 10.3 M parameters, a 124 MB checkpoint
    "1G": ["model.dense_units=[11264,8192]"],  # 96 M parameters, a 1.1 GiB checkpoint (issue 15)
    "tiny": ["model.filters=[8]", "model.dense_units=[16]"],
}


def measure_case(
    name: str, repeats: int, root: Path, data_dir: Path, quick: bool = False
) -> dict[str, Any]:
    """``repeats`` rounds of (fresh, resumed); ``quick``: the base run is the fresh sample."""
    base_overrides = [
        "dataset=digits",
        f"dataset.data_dir={data_dir}",
        *MODEL_CASES[name],
        # The progress bar marks the first step (common.after_epoch_line); its output is a
        # pipe, where trainer.verbose=auto would print one line per epoch instead.
        "trainer.verbose=1",
    ]
    case_root = root / name
    case_root.mkdir(parents=True)
    base = case_root / "base"
    base_run = common.time_to_output(
        common.train_command(
            [
                *base_overrides,
                "trainer.epochs=1",
                f"checkpoint.dir={base}",
                f"hydra.run.dir={case_root / 'hydra-base'}",
            ]
        ),
        common.after_epoch_line(1),
        cwd=case_root,
        kill=False,
    )
    fresh: list[float] = [base_run.marker_seconds] if quick else []
    resumed: list[float] = []
    for round_index in range(repeats):
        for side in common.alternate(round_index, "fresh", "resumed"):
            if quick and side == "fresh":
                continue
            run_dir = case_root / f"{side}-{round_index}"
            overrides = [
                *base_overrides,
                "trainer.epochs=2",
                f"checkpoint.dir={run_dir}",
                f"hydra.run.dir={case_root / f'hydra-{side}-{round_index}'}",
            ]
            if side == "resumed":
                shutil.copytree(base, run_dir)
                overrides.append(f"+resume={run_dir}")
            result = common.time_to_output(
                common.train_command(overrides),
                common.after_epoch_line(2 if side == "resumed" else 1),
                cwd=case_root,
            )
            (fresh if side == "fresh" else resumed).append(result.marker_seconds)
    ratios = common.paired_ratios(resumed, fresh)
    return {
        "case": name,
        "fresh_to_first_step_s": common.summary(fresh),
        "resumed_to_first_step_s": common.summary(resumed),
        "ratio": common.summary(ratios),
        "target": f"<= {TARGET}",
        "met": common.median(ratios) <= TARGET,
        "checkpoint_mb": round(_checkpoint_bytes(base) / 2**20, 2),
    }


def _checkpoint_bytes(run_dir: Path) -> int:
    steps = sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("step-"))
    return sum(f.stat().st_size for f in steps[-1].iterdir()) if steps else 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.argument_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--models", default="default,10M", help="comma-separated: default, 10M, 1G")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    if args.quick:
        models, args.repeats = ["tiny"], 1
    report = common.Report("resume_time", "python -m benchmarks.resume_time", args.repeats)
    common.prepare_datasets(args.data_dir, ["digits"])
    with common.workdir(args.workdir) as root:
        for name in models:
            report.cases.append(measure_case(name, args.repeats, root, args.data_dir, args.quick))
            print(f"{name}: ratio {report.cases[-1]['ratio']}", flush=True)
    report.notes.append("ratio = resumed / fresh, process start to the end of its first step")
    report.print(
        [
            ("case", "model"),
            ("checkpoint_mb", "ckpt MB"),
            ("fresh_to_first_step_s.median", "fresh s"),
            ("resumed_to_first_step_s.median", "resumed s"),
            ("ratio.median", "ratio"),
            ("ratio.min", "min"),
            ("ratio.max", "max"),
            ("met", f"<={TARGET}"),
        ]
    )
    report.save(args.json)
    return report.to_dict()


if __name__ == "__main__":
    main()
