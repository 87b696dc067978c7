"""Memory: peak RSS of a train.py run versus the plain ``model.fit`` script, same data/model/epochs.

    python -m benchmarks.memory                        # digits (15 epochs) and MNIST-sized (2)
    python -m benchmarks.memory --quick                # a tiny run, 1 round: the harness only

The same pair of processes as ``benchmarks.throughput`` (train.py with its
default config and checkpoints every epoch, versus
``benchmarks/plain_keras_fit.py`` on the same composed config), each run to
the end: training, validation, test evaluation. The peak resident set size of
each process is its own ``ru_maxrss`` (``os.wait4``). Ratio = ours / fit per
round (ABBA order), median over rounds. Target: <= 1.1.
"""

from __future__ import annotations

from typing import Any

from benchmarks import common, throughput

TARGET = 1.1
EPOCHS = {"digits": 15, "mnist": 2, "mnist_tiny": 2}  # digits: conf/trainer/default.yaml


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = common.argument_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument(
        "--datasets", default="digits,mnist", help="comma-separated: digits, mnist, mnist_tiny"
    )
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",")
    extra: list[str] = []
    epochs = dict(EPOCHS)
    if args.quick:
        datasets, args.repeats, extra = ["mnist_tiny"], 1, throughput.QUICK_MODEL
    report = common.Report("memory", "python -m benchmarks.memory", args.repeats)
    common.prepare_datasets(
        args.data_dir, [d for name in datasets for d in throughput.DATASETS[name]["data"]]
    )
    with common.workdir(args.workdir) as root:
        for dataset in datasets:
            case = throughput.measure_case(
                dataset, epochs[dataset], 1, False, args.repeats, root, args.data_dir, extra
            )
            case["target"] = f"<= {TARGET}"
            case["met"] = case["rss_ratio"]["median"] <= TARGET
            report.cases.append(case)
            print(f"{dataset}: rss ratio {case['rss_ratio']}", flush=True)
    report.notes.append("ratio = peak RSS of train.py / peak RSS of the model.fit script")
    report.print(
        [
            ("case", "case"),
            ("epochs", "epochs"),
            ("ours_peak_rss_mb.median", "ours MiB"),
            ("reference_peak_rss_mb.median", "fit MiB"),
            ("rss_ratio.median", "ratio"),
            ("rss_ratio.min", "min"),
            ("rss_ratio.max", "max"),
            ("met", f"<={TARGET}"),
        ]
    )
    report.save(args.json)
    return report.to_dict()


if __name__ == "__main__":
    main()
