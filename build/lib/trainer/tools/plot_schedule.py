"""``trainer plot-schedule [OVERRIDES]``: the learning rate per step of one or more schedules.

Each curve is the schedule a training run would use: the config is composed
from ``conf/`` with Hydra's compose API and the overrides (as ``train.py``
would), resolved for the run's steps per epoch and length
(``trainer.build.run_schedule``, as training does) and built through the
registry (``build_schedule``), so the plot shows exactly the rates the optimizer gets.
``--compare`` draws several variants on the same axes; ``--checkpoint`` draws
the schedule a checkpoint was saved with (as it resumes) and marks where it
stopped. Writes a PNG (matplotlib, Agg backend), step on the x-axis, epochs on
a secondary axis on top.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from trainer.errors import UserError
from trainer.exits import OK
from trainer.runs.remote_run import location
from trainer.tools.arguments import add_import_argument
from trainer.tools.finding import valid_checkpoint
from trainer.tools.output import print_json
from trainer.tools.plots import add_force_argument, figure_output, pyplot, save_figure

NAME = "plot-schedule"
HELP = "plot the learning rate per step of schedules (PNG, PDF, SVG...)"
DESCRIPTION = """\
Plot the learning rate per optimizer step of the schedule that train.py
would use with these Hydra overrides, into a PNG. Steps per epoch come from
--steps-per-epoch, a checkpoint, or else the dataset's info, as training
computes them (digits prepares offline; a catalog dataset must already be
prepared: no download is started).

examples:
  python -m trainer plot-schedule schedule=one_cycle trainer.epochs=30 --steps-per-epoch 100
  python -m trainer plot-schedule trainer.epochs=20 --out lr.png \\
      --compare schedule=cosine schedule=one_cycle "schedule=step schedule.every_epochs=5"
  python -m trainer plot-schedule --checkpoint runs/<run>/step-00000450

Overrides before --compare apply to every variant; each --compare item (one
argument, several overrides separated by spaces) is one curve."""

DEFAULT_OUT = "lr_schedule.png"
MAX_POINTS = 5_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", metavar="OVERRIDE", nargs="*", help="Hydra overrides, as for train.py"
    )
    parser.add_argument(
        "--compare",
        metavar="OVERRIDES",
        nargs="+",
        default=[],
        help="one curve per item, each composed with the common overrides",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="also draw this checkpoint's schedule and where it stopped",
    )
    parser.add_argument(
        "--steps-per-epoch", type=int, metavar="N", help="optimizer steps per epoch"
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="FILE",
        help=f"the plot to write: .png, .pdf, .svg... (default {DEFAULT_OUT})",
    )
    add_force_argument(parser, "--out")
    parser.add_argument("--log", action="store_true", help="logarithmic learning-rate axis")
    add_import_argument(parser, "schedule")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(extra_overrides=True)  # __main__ passes leftover KEY=VALUE words here


def _steps_per_epoch_of(cfg) -> int:
    """The dataset's steps per epoch, as training computes them (never downloads)."""
    from trainer.data.pipeline import load_data

    dataset = dict(cfg.dataset)
    dataset["download"] = False
    try:
        return load_data(dataset, seed=cfg.seed).info.steps_per_epoch
    except UserError as error:
        raise UserError(f"{error}; or give --steps-per-epoch N") from None


def learning_rates(schedule, total_steps: int):
    """``schedule(step)`` for steps 0..total_steps, as a NumPy array."""
    import numpy as np
    from keras import ops

    steps = np.arange(total_steps + 1, dtype=np.int64)
    try:
        values = np.asarray(
            ops.convert_to_numpy(schedule(ops.convert_to_tensor(steps))), dtype=float
        )
        if values.shape == steps.shape:
            return steps, values
    except Exception:  # a schedule written for scalar steps only
        pass
    return steps, np.array([float(ops.convert_to_numpy(schedule(int(s)))) for s in steps])


def run(args: argparse.Namespace) -> int:
    if args.steps_per_epoch is not None and args.steps_per_epoch < 1:
        raise UserError(f"--steps-per-epoch must be >= 1, got {args.steps_per_epoch}")
    pyplot()  # fail now, not after TensorFlow's start-up, if matplotlib is missing
    out = figure_output(args.out, "--out", args.force)

    from trainer.config.saved import read_checkpoint_config
    from trainer.startup import compose_config, import_tensorflow, import_user_modules

    checkpoint = valid_checkpoint(args.checkpoint) if args.checkpoint else None
    saved = read_checkpoint_config(checkpoint) if checkpoint else None
    variants = []  # (label, composed config)
    items = args.compare or ([] if checkpoint and not args.overrides else [""])
    for item in items:
        overrides = list(args.overrides) + item.split()
        label = " ".join(item.split()) or " ".join(args.overrides)
        variants.append((label, compose_config(overrides)))
    import_user_modules(list(args.imports) + [m for _, c in variants for m in (c.imports or [])])

    import_tensorflow()
    from trainer.build import run_length, run_schedule
    from trainer.optim.resolve import build_schedule

    steps_per_epoch = args.steps_per_epoch or (
        int(checkpoint.manifest["steps_per_epoch"])
        if checkpoint and checkpoint.manifest.get("steps_per_epoch")
        else None
    )
    curves = []
    if checkpoint is not None:
        spe = int(checkpoint.manifest.get("steps_per_epoch") or steps_per_epoch or 1)
        total = max(run_length(saved["trainer"], spe), checkpoint.global_step)
        resolved = saved["resolved_schedule"]
        schedule = build_schedule(resolved, float(saved["optimizer"]["learning_rate"]))
        curves.append(_curve(f"{checkpoint.path.name} (as saved)", resolved, spe, total, schedule))
    for label, cfg in variants:
        spe = steps_per_epoch or _steps_per_epoch_of(cfg)
        total = run_length(cfg.trainer, spe)
        resolved = run_schedule(cfg, spe)
        schedule = build_schedule(resolved, cfg.optimizer.learning_rate)
        curves.append(_curve(label or resolved["name"], resolved, spe, total, schedule))
    if sum(c["total_steps"] for c in curves) > MAX_POINTS:
        raise UserError(f"more than {MAX_POINTS} steps to plot; use a shorter run")
    for curve in curves:
        curve["steps"], curve["values"] = learning_rates(
            curve.pop("schedule"), curve["total_steps"]
        )
        values = curve["values"]
        curve.update(
            lr_start=float(values[0]),
            lr_max=float(values.max()),
            lr_max_step=int(values.argmax()),
            lr_end=float(values[-1]),
        )
    stop = None
    if checkpoint is not None:
        manifest = checkpoint.manifest
        stop = {
            "checkpoint": location(checkpoint.path),
            "step": checkpoint.global_step,
            "epoch": manifest.get("epoch"),
            "learning_rate": manifest.get("learning_rate"),
            # The saved schedule at that step: equals learning_rate unless
            # reduce-on-plateau had scaled the rate down.
            "schedule_value": float(curves[0]["values"][checkpoint.global_step]),
        }
    draw(curves, stop, out, args.log, args.force)

    summary = [{k: v for k, v in c.items() if k not in ("steps", "values")} for c in curves]
    if args.json:
        print_json({"out": str(out), "curves": summary, "stopped_at": stop})
        return OK
    for curve in summary:
        print(
            f"{curve['label']}: {json.dumps(curve['resolved'])}, {curve['steps_per_epoch']} steps "
            f"per epoch, {curve['total_steps']} steps; lr {curve['lr_start']:.4g} at step 0, "
            f"max {curve['lr_max']:.4g} at step {curve['lr_max_step']}, "
            f"{curve['lr_end']:.4g} at step {curve['total_steps']}"
        )
    if stop:
        print(
            f"Checkpoint stopped at step {stop['step']} (epoch {stop['epoch']}), "
            f"lr {stop['learning_rate']}"
        )
    print(f"Plot: {out}")
    return OK


def _curve(label: str, resolved, steps_per_epoch: int, total: int, schedule) -> dict[str, Any]:
    return {
        "label": label,
        "resolved": dict(resolved),
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "schedule": schedule,
    }


def draw(
    curves: list[dict[str, Any]], stop: dict[str, Any] | None, out, log: bool, force: bool = False
) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(10, 5), dpi=100)
    for curve in curves:
        axes.plot(curve["steps"], curve["values"], label=curve["label"], linewidth=1.6)
    if stop is not None:
        axes.axvline(stop["step"], color="black", linestyle="--", linewidth=1)
        if isinstance(stop["learning_rate"], int | float):
            axes.plot([stop["step"]], [stop["learning_rate"]], "o", color="black")
        axes.annotate(
            f"stopped: step {stop['step']}, epoch {stop['epoch']}",
            xy=(stop["step"], axes.get_ylim()[1]),
            xytext=(4, -14),
            textcoords="offset points",
            fontsize="small",
        )
    spe = curves[0]["steps_per_epoch"]
    top = axes.secondary_xaxis("top", functions=(lambda s: s / spe, lambda e: e * spe))
    top.set_xlabel(f"epoch ({spe} steps per epoch)")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate")
    if log:
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    save_figure(plt, figure, out, "--out", force)
