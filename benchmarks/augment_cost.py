"""Augmentation cost: train-step time with ``augment=basic|strong`` as a ratio to ``none``,
with the augmentation in the ``tf.data`` pipeline or in the compiled train step.

    python -m benchmarks.augment_cost              # digits 8x8x1 and a 32x32x3 set, 3 rounds
    python -m benchmarks.augment_cost --quick      # 1 round, 2 epochs: the harness only

One process. Each case trains the default CNN (``conf/model/cnn.yaml``) with
``trainer.TrainingLoop`` for a few epochs on one dataset and takes the median
of the epochs' training time (``epoch_seconds``: the steps, not validation)
after the first (which traces the step). The cases:

- ``none``: no augmentation, the reference every ratio divides by;
- ``basic`` / ``strong`` in the ``pipeline``: ``trainer.data.augment.Augmentation``
  mapped over the batches of the ``tf.data`` pipeline (parallel, order kept,
  each batch seeded by its position), the step left without it: what the
  trainer does on one device;
- ``basic`` / ``strong`` ``in_step``: the same ``Augmentation`` called at the
  top of the compiled train step instead (``TrainingLoop.augment_in_pipeline``
  false: what a ``tf.distribute`` strategy's replicas do).

Each round measures every case once, in an order that rotates between rounds,
and divides each case's time by that round's ``none``; reported: the median
ratio over rounds (the machine is shared: absolute times drift), of the wall
time and of the process' CPU time over the epoch's steps (all threads, tf.data's
included: the work each placement costs, which other processes' load on the
machine changes far less than the wall time). Datasets:
``digits`` (the UCI digits, 8x8x1, 1293 training examples) and ``rgb32``: 1,024
random 32x32x3 images (CIFAR-10's shape) made in memory, where RandAugment's
colour operations do real work.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from benchmarks import common

PLACEMENTS = ("pipeline", "in_step")
PRESETS = ("basic", "strong")


def cases() -> list[tuple[str, str]]:
    """(preset, placement) of every case; ``none`` has no placement."""
    return [("none", "-")] + [(p, where) for p in PRESETS for where in PLACEMENTS]


class _Silent:
    """A reporter that keeps each epoch's training time: wall (the loop's own
    ``epoch_seconds``) and the process' CPU time (every thread: tf.data's included)."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.epoch_cpu_seconds: list[float] = []
        self._cpu_start = self._cpu_last = 0.0

    def start_epoch(self, *args: Any) -> None:
        self._cpu_start = self._cpu_last = time.process_time()

    def step(self, *args: Any) -> None:
        self._cpu_last = time.process_time()  # the last one: the end of the epoch's steps

    def end_epoch(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        self.epoch_seconds.append(logs["epoch_seconds"])
        self.epoch_cpu_seconds.append(self._cpu_last - self._cpu_start)


def _in_step_loop_class():
    from trainer.training.loop import TrainingLoop

    class InStepLoop(TrainingLoop):
        """The loop with the augmentation at the top of the train step instead of the
        pipeline (what the trainer did before BENCHMARKS.md 1b; what a strategy does)."""

        augment_in_pipeline = False

    return InStepLoop


def rgb32_data(seed: int, batch_size: int, examples: int = 2048):
    """A ``trainer.data.pipeline.Data`` of random 32x32x3 uint8 images, 10 classes, in memory."""
    import math

    import numpy as np
    import tensorflow as tf

    from trainer.data.pipeline import Data, DataInfo

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (examples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, examples).astype(np.int64)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
    info = DataInfo(
        name="rgb32",
        input_shape=(32, 32, 3),
        num_classes=10,
        train_examples=examples,
        validation_examples=0,
        test_examples=examples,
        batch_size=batch_size,
        steps_per_epoch=math.ceil(examples / batch_size),
    )
    return Data(info, train=train, validation=None, test=train, shuffle_buffer=examples, seed=seed)


def measure(cfg: Any, data: Any, preset: str, placement: str, epochs: int) -> tuple[float, float]:
    """Median training seconds per epoch (after the first) of one case: wall and CPU."""
    import dataclasses

    from trainer.build import build_run
    from trainer.startup import compose_config
    from trainer.training.loop import LoopSettings, TrainingLoop
    from trainer.training.state import LoopState

    case_cfg = copy.deepcopy(cfg)
    case_cfg.augment = compose_config([f"augment={preset}"]).augment
    case_cfg.trainer.epochs = epochs
    run = build_run(case_cfg, data.info)
    settings = dataclasses.replace(LoopSettings.from_config(case_cfg, run), every_n_epochs=None)
    loop_class = TrainingLoop if placement == "pipeline" else _in_step_loop_class()
    reporter = _Silent()
    loop_class(run, data, settings, LoopState(), reporter, lambda *_: None).run()
    return common.median(reporter.epoch_seconds[1:]), common.median(reporter.epoch_cpu_seconds[1:])


def main(argv: list[str] | None = None) -> int:
    parser = common.argument_parser(__doc__.split("\n\n")[0], repeats=3)
    options = parser.parse_args(argv)
    repeats = 1 if options.quick else options.repeats
    epochs = 2 if options.quick else 6
    common.prepare_datasets(options.data_dir, ["digits"])

    from trainer.data.pipeline import load_data
    from trainer.startup import compose_config, import_tensorflow

    import_tensorflow()
    cfg = compose_config([f"dataset.data_dir={options.data_dir}"])
    datasets = {
        "digits": load_data(cfg.dataset, seed=cfg.seed),
        "rgb32": rgb32_data(cfg.seed, cfg.dataset.batch_size, 256 if options.quick else 1024),
    }
    report = common.Report(
        "augment_cost",
        "python -m benchmarks.augment_cost" + (" --quick" if options.quick else ""),
        repeats,
    )
    for name, data in datasets.items():
        seconds: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in cases()}
        for round_index in range(repeats):
            order = cases()
            shift = round_index % len(order)
            for case in order[shift:] + order[:shift]:
                seconds[case].append(measure(cfg, data, *case, epochs))
                wall, cpu = seconds[case][-1]
                print(f"{name} round {round_index + 1}: {case} {wall:.3f} s, CPU {cpu:.3f} s")
        steps = data.info.steps_per_epoch
        none = seconds[("none", "-")]
        for case in cases():
            report.cases.append(
                {
                    "dataset": name,
                    "augment": case[0],
                    "where": case[1],
                    "ms_per_step": 1000 * common.median(w for w, _ in seconds[case]) / steps,
                    "ratio_to_none": common.summary(
                        [w / w0 for (w, _), (w0, _) in zip(seconds[case], none, strict=True)]
                    ),
                    "cpu_ratio_to_none": common.summary(
                        [c / c0 for (_, c), (_, c0) in zip(seconds[case], none, strict=True)]
                    ),
                }
            )
    report.notes.append(
        f"{epochs} epochs per case, the median epoch after the first; batch "
        f"{cfg.dataset.batch_size}, the default cnn; ratio: case / none in the same round"
    )
    report.print(
        [
            ("dataset", "dataset"),
            ("augment", "augment"),
            ("where", "where"),
            ("ms_per_step", "ms/step"),
            ("ratio_to_none.median", "wall x none"),
            ("ratio_to_none.min", "min"),
            ("ratio_to_none.max", "max"),
            ("cpu_ratio_to_none.median", "CPU x none"),
            ("cpu_ratio_to_none.min", "min"),
            ("cpu_ratio_to_none.max", "max"),
        ]
    )
    report.save(options.json)
    return 0


if __name__ == "__main__":
    started = time.time()
    code = main()
    print(f"({time.time() - started:.0f} s)")
    raise SystemExit(code)
