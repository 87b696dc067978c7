"""Smoke tests of benchmarks/: every benchmark's ``--quick`` run works and reports its ratios.

Correctness of the harness only: each one runs, exits 0 and writes a report
whose ratio fields are finite and positive. No timing is asserted: the
machine is shared and its times drift (BENCHMARKS.md has the figures). The
benchmarks that run processes are started side by side to keep this short;
the checkpoint benchmark runs in this process meanwhile.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import augment_cost, checkpoint_cost, checkpoint_io, common

PROCESS_BENCHMARKS = ("throughput", "memory", "resume_time", "startup", "augment_cost")


@pytest.fixture(scope="module")
def reports(tmp_path_factory, digits_dir) -> dict[str, dict]:
    """name -> the JSON report of ``python -m benchmarks.<name> --quick``."""
    root = tmp_path_factory.mktemp("benchmarks")
    import benchmarks.synthetic_mnist  # noqa: F401 (registers the dataset)
    from trainer.data.pipeline import load_data

    load_data(  # the MNIST-sized dataset's tiny variant, prepared beside digits
        {
            "name": "synthetic_mnist_tiny",
            "data_dir": str(digits_dir),
            "batch_size": 32,
            "validation_split": 0.0,
            "shuffle_buffer": 0,
            "cache": False,
            "download": False,
        },
        seed=0,
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    running = {}
    for name in PROCESS_BENCHMARKS:
        log = open(root / f"{name}.log", "wb")  # noqa: SIM115 (closed below)
        command = [
            sys.executable,
            "-m",
            f"benchmarks.{name}",
            "--quick",
            "--json",
            str(root / f"{name}.json"),
            "--workdir",
            str(root / name),
            "--data-dir",
            str(digits_dir),
        ]
        running[name] = (
            subprocess.Popen(
                command, cwd=common.REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            ),
            log,
        )
    found = {
        "checkpoint_cost": checkpoint_cost.main(
            ["--quick", "--workdir", str(root / "checkpoint_cost")]
        )
    }
    for name, (process, log) in running.items():
        try:
            process.wait(timeout=300)
        finally:
            log.close()
        output = (root / f"{name}.log").read_text(errors="replace")
        assert process.returncode == 0, f"benchmarks.{name} --quick failed:\n{output[-4000:]}"
        found[name] = json.loads((root / f"{name}.json").read_text())
    return found


def positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def assert_summary(summary: dict) -> None:
    assert positive(summary["median"]), summary
    assert all(positive(v) for v in summary["values"]), summary
    assert summary["min"] <= summary["median"] <= summary["max"]


@pytest.mark.slow  # the benchmarks' own train.py runs
def test_every_report_names_the_machine(reports):
    for name, report in reports.items():
        assert report["benchmark"] == name
        assert report["machine"]["versions"]["tensorflow"]
        assert report["machine"]["logical_cpus"] >= 1
        assert report["cases"], name


@pytest.mark.slow  # the benchmarks' own train.py runs
def test_throughput_reports_ours_the_reference_and_their_ratio(reports):
    (case,) = reports["throughput"]["cases"]  # --quick: the in-process mode
    assert (case["case"], case["mode"]) == ("digits-spe1-jit0", "in-process")
    for key in ("ours_examples_per_s", "reference_examples_per_s", "ratio"):
        assert_summary(case[key])
    assert case["ratio"]["values"][0] == pytest.approx(
        case["ours_examples_per_s"]["values"][0] / case["reference_examples_per_s"]["values"][0],
        rel=1e-2,
    )
    assert isinstance(case["met"], bool)


@pytest.mark.slow  # the benchmarks' own train.py runs
def test_memory_runs_the_process_pair_and_reports_peak_rss_of_both(reports):
    (case,) = reports["memory"]["cases"]
    assert (case["dataset"], case["mode"]) == ("mnist_tiny", "process")  # MNIST-sized code path
    for key in ("ours_examples_per_s", "reference_examples_per_s", "ratio"):
        assert_summary(case[key])  # the throughput of train.py vs the fit script
    for key in ("ours_peak_rss_mb", "reference_peak_rss_mb", "rss_ratio"):
        assert_summary(case[key])
    assert case["ours_peak_rss_mb"]["median"] > 100  # TensorFlow alone is bigger than that
    assert isinstance(case["met"], bool)


@pytest.mark.slow  # the benchmarks' own train.py runs
def test_resume_time_reports_fresh_and_resumed(reports):
    (case,) = reports["resume_time"]["cases"]
    for key in ("fresh_to_first_step_s", "resumed_to_first_step_s", "ratio"):
        assert_summary(case[key])
    assert case["checkpoint_mb"] > 0
    assert isinstance(case["met"], bool)


@pytest.mark.slow  # the benchmarks' own train.py runs
def test_startup_measures_every_command_against_python(reports):
    cases = {case["case"]: case for case in reports["startup"]["cases"]}
    assert "python -c pass" in cases and "train.py --cfg job" in cases
    assert "train.py --help" in cases
    for case in cases.values():
        assert case["exit_codes"] == [0], case
        for key in ("wall_s", "cpu_s", "wall_ratio_to_python"):
            assert_summary(case[key])
    assert cases["python -c pass"]["wall_ratio_to_python"]["median"] == 1.0


@pytest.mark.slow  # the benchmarks' own train.py runs
def test_checkpoint_cost_times_every_saver(reports):
    cases = {case["case"]: case for case in reports["checkpoint_cost"]["cases"]}
    assert set(cases) == set(checkpoint_cost.SAVERS)
    for case in cases.values():
        for key in ("blocked_s", "total_s", "blocked_ratio_to_tf_checkpoint_manager"):
            assert_summary(case[key])
    assert isinstance(cases["ours_async"]["met"], bool)


def test_checkpoint_io_times_every_saver_and_reader_against_the_disk(tmp_path):
    # In this process, no train.py: the tiny model's saves, restores and their ratios.
    report = checkpoint_io.main(["--quick", "--workdir", str(tmp_path)])
    cases = {case["case"]: case for case in report["cases"]}
    savers = {"disk_limit", "ours_sync", "ours_async", "tf_checkpoint_manager"}
    assert savers | {
        "read_bytes",
        "ours_restore",
        "ours_unverified_restore",
        "tf_restore",
        "read_bytes_cold",
        "ours_restore_cold",
        "ours_unverified_restore_cold",
        "tf_restore_cold",
        "orbax",
    } == set(cases)
    for name in savers:
        assert_summary(cases[name]["total_s"])
        assert_summary(cases[name]["total_ratio_to_disk_limit"])
    assert cases["disk_limit"]["total_ratio_to_disk_limit"]["median"] == 1
    for name in ("ours_restore", "ours_unverified_restore", "tf_restore", "tf_restore_cold"):
        assert_summary(cases[name]["total_ratio_to_read_bytes"])
    assert cases["read_bytes_cold"]["total_ratio_to_read_bytes"]["median"] == 1  # its own
    assert_summary(cases["ours_async"]["blocked_ratio_to_ours_sync"])
    assert cases["ours_async"]["peak_memory_in_states"]["min"] >= 0
    assert "skipped" in cases["orbax"] or positive(cases["orbax"]["total_s"]["median"])
    assert all(
        isinstance(cases[n]["met"], bool)
        for n in ("ours_sync", "ours_restore", "ours_restore_cold")
    )


def test_checkpoint_io_restores_only_leaves_the_saves_untimed(tmp_path):
    report = checkpoint_io.main(["--quick", "--cases", "restores", "--workdir", str(tmp_path)])
    cases = {case["case"] for case in report["cases"]}
    assert "ours_restore_cold" in cases and "read_bytes" in cases
    assert not cases & {"disk_limit", "ours_sync", "ours_async"}


def test_remote_checkpoint_times_our_upload_and_download_against_plain_s3fs(tmp_path):
    # In this process, against its own local S3 server: a 1 MiB checkpoint, one round.
    from benchmarks import remote_checkpoint

    report = remote_checkpoint.main(["--quick", "--workdir", str(tmp_path)]).to_dict()
    cases = {case["case"]: case for case in report["cases"]}
    assert set(cases) == {"save", "restore"}
    for case in cases.values():
        assert_summary(case["ours_s"])
        assert_summary(case["plain_s"])
        assert_summary(case["ratio"])
        assert isinstance(case["met"], bool)


@pytest.mark.slow  # the benchmarks' own training runs
def test_augment_cost_reports_every_case_as_a_ratio_to_none(reports):
    cases = {(c["dataset"], c["augment"], c["where"]): c for c in reports["augment_cost"]["cases"]}
    assert set(cases) == {(d, *case) for d in ("digits", "rgb32") for case in augment_cost.cases()}
    for case in cases.values():
        assert_summary(case["ratio_to_none"])
        assert_summary(case["cpu_ratio_to_none"])
        assert positive(case["ms_per_step"])
    assert all(
        cases[(d, "none", "-")]["ratio_to_none"]["median"] == 1.0 for d in ("digits", "rgb32")
    )


# --------------------------------------------------------------------------- the harness


def test_ratios_pair_rounds_and_order_alternates():
    assert common.paired_ratios([2.0, 3.0], [1.0, 6.0]) == [2.0, 0.5]
    assert common.alternate(0, "a", "b") == ["a", "b"]
    assert common.alternate(1, "a", "b") == ["b", "a"]
    assert [common.alternate(r, "a", "b", "c")[0] for r in range(3)] == ["a", "b", "c"]
    assert common.summary([3.0, 1.0, 2.0])["median"] == 2.0


def test_first_step_marker_waits_for_the_bar_after_the_epoch_line():
    marker = common.after_epoch_line(2)
    bar = b"\x1b[1m 1/41\x1b[0m \x1b[32m"
    assert not marker(b"Resuming from x\nEpoch 2/2\n")
    assert not marker(b"Epoch 1/2\n" + bar)  # the bar of another epoch
    assert marker(b"Resuming from x\nEpoch 2/2\n" + bar)


def test_process_figures_come_from_the_child(tmp_path):
    result = common.run_process(
        [sys.executable, "-c", "x = bytearray(200 << 20); print('ok')"],
        cwd=tmp_path,
        log=tmp_path / "log",
    ).check()
    assert result.peak_rss_mb >= 200
    assert result.wall_seconds > 0 and result.cpu_seconds >= 0
    assert "ok" in result.output


def test_whole_run_ratios_against_fit_with_and_without_checkpoints(tmp_path, monkeypatch):
    """measure_case's three sides, each process faked: the order rotates, and each whole-run
    ratio (wall and CPU) divides that side's figure by ours, round by round."""
    from benchmarks import throughput

    order = []
    figures = {"ours": (10.0, 8.0), "reference": (12.0, 9.0), "reference_checkpoints": (15.0, 12.0)}

    def finished(side: str, round_index: int) -> dict:
        wall, cpu = figures[side]
        order.append(side)
        process = common.ProcessResult([side], 0, wall * (round_index + 1), cpu, 100.0)
        return {"epoch_seconds": [2.0, 1.0], "train_examples": 100, "process": process}

    def ours(overrides, where):
        return finished("ours", int(where.name.split("-")[0]))

    def reference(config, where, checkpoints=False):
        side = "reference_checkpoints" if checkpoints else "reference"
        return finished(side, int(where.name.split("-")[0]))

    monkeypatch.setattr(throughput, "run_ours", ours)
    monkeypatch.setattr(throughput, "run_reference", reference)
    monkeypatch.setattr(common, "composed_config", lambda overrides, root: {})
    case = throughput.measure_case(
        "digits", 2, 1, False, 3, tmp_path, tmp_path, reference_checkpoints=True
    )
    assert [order[3 * r] for r in range(3)] == ["ours", "reference", "reference_checkpoints"]
    assert case["whole_run_ratio"]["values"] == [1.2] * 3
    assert case["whole_run_ratio_vs_checkpoints"]["values"] == [1.5] * 3
    assert case["whole_run_cpu_ratio"]["median"] == 1.125
    assert case["whole_run_cpu_ratio_vs_checkpoints"]["median"] == 1.5
    without = throughput.measure_case("digits", 2, 1, False, 1, tmp_path / "two", tmp_path)
    assert "whole_run_ratio_vs_checkpoints" not in without


@pytest.mark.slow  # no train.py, but a few fits of a small MLP
def test_fit_callback_compares_ours_with_keras_callbacks_against_the_disk(tmp_path):
    from benchmarks import fit_callback

    report = fit_callback.main(["--quick", "--workdir", str(tmp_path)]).to_dict()
    cases = {case["case"]: case for case in report["cases"]}
    assert set(cases) == {
        "ours_idle",
        "ours_sync",
        "ours_async",
        "model_checkpoint",
        "backup_and_restore",
    }
    for case in cases.values():
        assert case["steps_ratio_to_plain"]["median"] > 0
        assert math.isfinite(case["save_ratio_to_disk_limit"]["median"])
