"""Training throughput: train.py's loop versus ``model.fit`` on the same pipeline and model.

    python -m benchmarks.throughput                    # digits (spe 1/8, jit off/on), MNIST-sized
    python -m benchmarks.throughput --datasets digits --steps-per-execution 1 --jit off
    python -m benchmarks.throughput --mode in-process  # only the low-noise variant
    python -m benchmarks.throughput --quick            # seconds: checks the harness only
    python -m benchmarks.throughput --datasets shapes --steps-per-execution 1 \
        --workloads resnet,resnet_bf16 --mode in-process   # a ResNet, augmentation, bfloat16

Ours is ``python train.py`` itself, run as a subprocess with the overrides of
the case: its per-epoch ``epoch_seconds`` column of ``metrics.csv`` (the
training steps of an epoch, before validation and checkpointing) is what is
timed, so the whole product is measured: the compiled steps, the progress bar,
the TensorBoard scalars, the learning-rate read-out. The reference is
``benchmarks/plain_keras_fit.py``, a plain Keras script that builds the same
model, optimizer and schedule from the same composed config and calls
``model.fit`` on ``trainer.data.pipeline.load_data(...).train_epoch(0)``, timed from
its first ``on_train_batch_begin`` to its last ``on_train_batch_end``.

Examples/s of a run = train examples / median of its epoch times, the first
epoch excluded (tracing, compiling, filling the cache). Ratio = ours /
reference per round, median over rounds. Target: >= 1.0. Each run's peak RSS
is recorded too (see ``benchmarks.memory``).

``--mode in-process`` (part of the default ``both``) also runs
``benchmarks/alternating_epochs.py``: our ``TrainingLoop`` and ``model.fit`` on
one model in one process, one epoch each in turn, so that both see the same
machine load: on a shared machine its ratio is far steadier; its ratio is the
median over ``--rounds`` pairs of epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmarks import common

TARGET = 1.0

# The datasets: the overrides that select them, and how many epochs to run.
DATASETS = {
    # rounds: in-process pairs of epochs. A digits epoch takes 0.2 s, in which the
    # machine's load swings single ratios by +-20%: 40 pairs make the median steady.
    "digits": {
        "overrides": ["dataset=digits"],
        "epochs": 12,
        "rounds": 40,
        "data": ["digits"],
        "jit": "off,on",
    },
    "mnist": {  # MNIST-sized: 28x28x1, 60k examples, made up in benchmarks/synthetic_mnist.py
        "overrides": [
            "dataset=mnist",
            "dataset.name=synthetic_mnist",
            "imports=[benchmarks.synthetic_mnist]",
        ],
        "epochs": 3,
        "rounds": 6,
        "data": ["synthetic_mnist"],
        # XLA makes this CNN about 5x slower on a CPU (for fit too): an hour per jit case.
        "jit": "off",
    },
    "mnist_tiny": {
        "overrides": [
            "dataset=mnist",
            "dataset.name=synthetic_mnist_tiny",
            "imports=[benchmarks.synthetic_mnist]",
        ],
        "epochs": 2,
        "rounds": 6,
        "data": ["synthetic_mnist_tiny"],
        "jit": "off",
    },
    # Your own images: 3 classes x 400 coloured shapes, 32x32 RGB (devtools/image_folder.py),
    # written under the data directory on first use.
    "shapes": {
        "overrides": ["dataset=folder", "dataset.test_split=0.1"],
        "epochs": 3,
        "rounds": 8,
        "data": [],
        "jit": "off",
    },
}
QUICK_MODEL = ["model.filters=[8]", "model.dense_units=[16]"]
# What is trained: the default CNN, or a real workload (a ResNet with augmentation and
# mixed precision). Workloads other than `default` run in-process only: the fit script
# of the process mode has no augmentation.
WORKLOADS = {
    "default": [],
    "resnet_plain": ["model=resnet"],  # no augmentation: what the other two add
    "resnet": ["model=resnet", "augment=basic"],
    "resnet_bf16": ["model=resnet", "augment=basic", "trainer.precision=mixed_bfloat16"],
}


def shapes_dir(data_dir: Path) -> Path:
    """The generated image folder of the ``shapes`` dataset, written once."""
    from devtools.image_folder import make_image_folder

    folder = Path(data_dir) / "shapes-3x400-32px"
    if not folder.is_dir():
        make_image_folder(folder.with_suffix(".tmp"), classes=3, per_class=400, size=(32, 32))
        folder.with_suffix(".tmp").rename(folder)
    return folder


def case_overrides(dataset: str, epochs: int, spe: int, jit: bool, data_dir: Path) -> list[str]:
    folder = [f"dataset.path={shapes_dir(data_dir)}"] if dataset == "shapes" else []
    return [
        *DATASETS[dataset]["overrides"],
        *folder,
        f"dataset.data_dir={data_dir}",
        f"trainer.epochs={epochs}",
        f"trainer.steps_per_execution={spe}",
        f"trainer.jit_compile={str(jit).lower()}",
    ]


def run_ours(overrides: list[str], where: Path) -> dict[str, Any]:
    """train.py with ``overrides``: its steady-state epoch time and its process figures."""
    run_dir = where / "checkpoints"
    process = common.run_process(
        common.train_command(
            [*overrides, f"checkpoint.dir={run_dir}", f"hydra.run.dir={where / 'hydra'}"]
        ),
        cwd=where,
        log=where / "train.log",
    ).check()
    epochs = [row["epoch_seconds"] for row in common.read_metrics_csv(run_dir)]
    return {"epoch_seconds": epochs, "process": process}


def run_on_config(
    module: str, config: dict[str, Any], where: Path, *args: Any
) -> tuple[dict[str, Any], common.ProcessResult]:
    """``python -m <module> --config CONFIG [args] --out OUT`` in ``where``: what it wrote to
    OUT (JSON or YAML) and its process figures; its output goes to ``<module>.log``."""
    (where / "config.yaml").write_text(yaml.safe_dump(config))
    process = common.run_process(
        [
            *(common.PYTHON, "-m", module, "--config", where / "config.yaml", *args),
            *("--out", where / "times.yaml"),
        ],
        cwd=where,
        log=where / f"{module.rsplit('.', 1)[-1]}.log",
    ).check()
    return yaml.safe_load((where / "times.yaml").read_text()), process


def run_reference(config: dict[str, Any], where: Path, checkpoints: bool = False) -> dict[str, Any]:
    """plain_keras_fit.py on ``config``: its epoch times and its process figures;
    ``checkpoints``: with a ``ModelCheckpoint`` every epoch (into ``where/checkpoints``)."""
    args = ("--checkpoint-dir", where / "checkpoints") if checkpoints else ()
    times, process = run_on_config("benchmarks.plain_keras_fit", config, where, *args)
    return {**times, "process": process}


def steady_epoch_seconds(epoch_seconds: list[float]) -> float:
    """The median epoch time once tracing and the first pass are over (epochs 2..)."""
    steady = epoch_seconds[1:] or epoch_seconds
    return common.median(steady)


def measure_case(
    dataset: str,
    epochs: int,
    spe: int,
    jit: bool,
    repeats: int,
    root: Path,
    data_dir: Path,
    extra: list[str] = (),
    reference_checkpoints: bool = False,
) -> dict[str, Any]:
    """Ours and the reference, ``repeats`` rounds back to back (ABBA), on one setting.

    ``reference_checkpoints``: a third side each round, the fit script saving a
    checkpoint every epoch as ours does by default (``ModelCheckpoint``), so the
    whole-run ratio is given both ways: against fit as it comes and against fit
    that also keeps checkpoints (sides rotated from round to round)."""
    overrides = [*case_overrides(dataset, epochs, spe, jit, data_dir), *extra]
    name = f"{dataset}-spe{spe}-jit{int(jit)}"
    config = common.composed_config(overrides, root)
    ours: list[dict[str, Any]] = []
    reference: list[dict[str, Any]] = []
    checkpointed: list[dict[str, Any]] = []
    sides = ["ours", "reference", *(["reference_checkpoints"] if reference_checkpoints else [])]
    for round_index in range(repeats):
        for side in common.alternate(round_index, *sides):
            where = root / name / f"{round_index}-{side}"
            where.mkdir(parents=True)
            if side == "ours":
                ours.append(run_ours(overrides, where))
            elif side == "reference":
                reference.append(run_reference(config, where))
            else:
                checkpointed.append(run_reference(config, where, checkpoints=True))
    examples = reference[0]["train_examples"]
    ours_rate = [examples / steady_epoch_seconds(r["epoch_seconds"]) for r in ours]
    reference_rate = [examples / steady_epoch_seconds(r["epoch_seconds"]) for r in reference]
    ratios = common.paired_ratios(ours_rate, reference_rate)
    ours_rss = [r["process"].peak_rss_mb for r in ours]
    reference_rss = [r["process"].peak_rss_mb for r in reference]
    ours_wall = [r["process"].wall_seconds for r in ours]
    reference_wall = [r["process"].wall_seconds for r in reference]
    ours_cpu = [r["process"].cpu_seconds for r in ours]
    reference_cpu = [r["process"].cpu_seconds for r in reference]
    with_checkpoints = {}
    if checkpointed:
        checkpointed_wall = [r["process"].wall_seconds for r in checkpointed]
        checkpointed_cpu = [r["process"].cpu_seconds for r in checkpointed]
        with_checkpoints = {
            "reference_checkpoints_wall_s": common.summary(checkpointed_wall),
            "whole_run_ratio_vs_checkpoints": common.summary(
                common.paired_ratios(checkpointed_wall, ours_wall)
            ),
            "whole_run_cpu_ratio_vs_checkpoints": common.summary(
                common.paired_ratios(checkpointed_cpu, ours_cpu)
            ),
        }
    return {
        "case": name,
        "mode": "process",
        "dataset": dataset,
        "steps_per_execution": spe,
        "jit_compile": jit,
        "epochs": epochs,
        "train_examples": examples,
        "ours_examples_per_s": common.summary(ours_rate),
        "reference_examples_per_s": common.summary(reference_rate),
        "ratio": common.summary(ratios),
        "target": f">= {TARGET}",
        "met": common.median(ratios) >= TARGET,
        "ours_peak_rss_mb": common.summary(ours_rss),
        "reference_peak_rss_mb": common.summary(reference_rss),
        "rss_ratio": common.summary(common.paired_ratios(ours_rss, reference_rss)),
        "ours_wall_s": common.summary(ours_wall),
        "reference_wall_s": common.summary(reference_wall),
        # The whole process, start-up, validation, test and (ours) checkpoints included.
        "whole_run_ratio": common.summary(common.paired_ratios(reference_wall, ours_wall)),
        # The same in CPU time (user + system of each process): less swayed by the load.
        "ours_cpu_s": common.summary(ours_cpu),
        "reference_cpu_s": common.summary(reference_cpu),
        "whole_run_cpu_ratio": common.summary(common.paired_ratios(reference_cpu, ours_cpu)),
        **with_checkpoints,
    }


def measure_case_in_process(
    dataset: str,
    spe: int,
    jit: bool,
    rounds: int,
    root: Path,
    data_dir: Path,
    extra: list[str] = (),
    workload: str = "default",
) -> dict[str, Any]:
    """Ours and fit alternating epoch by epoch in one process (``alternating_epochs.py``),
    training ``workload`` (:data:`WORKLOADS`)."""
    overrides = [*case_overrides(dataset, 1, spe, jit, data_dir), *extra, *WORKLOADS[workload]]
    name = f"{dataset}-spe{spe}-jit{int(jit)}" + ("" if workload == "default" else f"-{workload}")
    where = root / f"{name}-in-process"
    where.mkdir(parents=True)
    config = common.composed_config(overrides, root)
    times, _ = run_on_config("benchmarks.alternating_epochs", config, where, "--rounds", rounds)
    examples = times["train_examples"]
    ours_rate = [examples / s for s in times["ours_epoch_seconds"]]
    fit_rate = [examples / s for s in times["fit_epoch_seconds"]]
    ratios = common.paired_ratios(ours_rate, fit_rate)
    return {
        "case": name,
        "mode": "in-process",
        "dataset": dataset,
        "workload": workload,
        "steps_per_execution": spe,
        "jit_compile": jit,
        "rounds": rounds,
        "train_examples": examples,
        "ours_examples_per_s": common.summary(ours_rate),
        "reference_examples_per_s": common.summary(fit_rate),
        "ratio": common.summary(ratios),
        "target": f">= {TARGET}",
        "met": common.median(ratios) >= TARGET,
    }


COLUMNS = [
    ("mode", "mode"),
    ("case", "case"),
    ("ours_examples_per_s.median", "ours ex/s"),
    ("reference_examples_per_s.median", "fit ex/s"),
    ("ratio.median", "ratio"),
    ("ratio.min", "min"),
    ("ratio.max", "max"),
    ("met", f">={TARGET}"),
    ("whole_run_ratio.median", "whole run"),
    ("whole_run_cpu_ratio.median", "CPU"),
    ("whole_run_ratio_vs_checkpoints.median", "vs fit+ckpt"),
    ("whole_run_cpu_ratio_vs_checkpoints.median", "CPU"),
]


def _progress(case: dict[str, Any]) -> None:
    print(f"{case['case']} ({case['mode']}): ratio {case['ratio']}", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.argument_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument(
        "--datasets",
        default="digits,mnist",
        help="comma-separated: digits, mnist, mnist_tiny, shapes",
    )
    parser.add_argument("--steps-per-execution", default="1,8", help="comma-separated")
    parser.add_argument(
        "--jit", help="comma-separated: off, on (default: off,on on digits, off on MNIST-sized)"
    )
    parser.add_argument("--epochs", type=int, help="override the per-dataset epoch count")
    parser.add_argument(
        "--workloads",
        default="default",
        help="comma-separated: " + ", ".join(WORKLOADS) + " (not default: in-process only)",
    )
    parser.add_argument(
        "--mode",
        choices=("process", "in-process", "both"),
        help="process: train.py vs the fit script, whole runs (faithful); in-process: "
        "TrainingLoop and fit alternating epochs in one process (less noise); default both "
        "(--quick: in-process; benchmarks.memory --quick runs the process pair)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="in-process: epochs of each, after one discarded (default: 40 on digits, 6 on "
        "MNIST-sized)",
    )
    parser.add_argument(
        "--fit-checkpoints",
        action="store_true",
        help="process mode: also run the fit script with a ModelCheckpoint every epoch "
        "(ours saves one every epoch by default) and give the whole-run ratio against it",
    )
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",")
    spes = [int(s) for s in args.steps_per_execution.split(",")]

    def jits(dataset: str) -> list[bool]:
        return [j == "on" for j in (args.jit or DATASETS[dataset]["jit"]).split(",")]

    extra: list[str] = []
    if args.quick:
        datasets, spes, args.jit, args.repeats, extra = ["digits"], [1], "off", 1, QUICK_MODEL
        args.epochs, args.rounds = args.epochs or 2, 1
        args.mode = args.mode or "in-process"
    args.mode = args.mode or "both"
    report = common.Report("throughput", "python -m benchmarks.throughput", args.repeats)
    common.prepare_datasets(args.data_dir, [d for name in datasets for d in DATASETS[name]["data"]])
    with common.workdir(args.workdir) as root:
        cases = [(d, spe, jit) for d in datasets for spe in spes for jit in jits(d)]
        workloads = args.workloads.split(",")
        for dataset, spe, jit in cases:
            epochs = args.epochs or DATASETS[dataset]["epochs"]
            for workload in [w for w in workloads if w != "default"]:
                rounds = args.rounds or DATASETS[dataset]["rounds"]
                report.cases.append(
                    measure_case_in_process(
                        dataset, spe, jit, rounds, root, args.data_dir, [], workload
                    )
                )
                _progress(report.cases[-1])
            if "default" not in workloads:
                continue
            if args.mode in ("process", "both"):
                report.cases.append(
                    measure_case(
                        dataset,
                        epochs,
                        spe,
                        jit,
                        args.repeats,
                        root,
                        args.data_dir,
                        extra,
                        reference_checkpoints=args.fit_checkpoints,
                    )
                )
                _progress(report.cases[-1])
            if args.mode in ("in-process", "both"):
                rounds = args.rounds or DATASETS[dataset]["rounds"]
                report.cases.append(
                    measure_case_in_process(dataset, spe, jit, rounds, root, args.data_dir, extra)
                )
                _progress(report.cases[-1])
    report.notes.append(
        "ratio = ours / model.fit examples per second, steady state (first epoch excluded)"
    )
    if args.mode != "in-process":
        report.notes.append(f"process: median of {args.repeats} pairs of runs")
        report.notes.append(
            "whole run = fit script's wall time / train.py's (start-up, validation, test "
            "and checkpoints included): >= 1 means train.py finished sooner"
        )
    if args.mode != "process":
        rounds = args.rounds or ", ".join(f"{DATASETS[d]['rounds']} ({d})" for d in datasets)
        report.notes.append(f"in-process: median of {rounds} pairs of alternating epochs")
    report.print(COLUMNS)
    report.save(args.json)
    return report.to_dict()


if __name__ == "__main__":
    main()
