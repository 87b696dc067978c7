"""``python -m trainer <command>`` end to end, on real checkpoints of a real (tiny) sweep.

One module-scoped sweep of two runs (cosine, one_cycle) made by train.py is
shared by every test; tests that damage files work on a copy. Commands that
need no TensorFlow run in a subprocess, as a user runs them (and we check that
they never import it); those that build models run in-process through
``trainer.__main__.main`` to save TensorFlow's start-up, except where a
separate process is the point (resuming a rescued checkpoint with train.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_train
from trainer.__main__ import main

LIGHT_COMMANDS = ("list", "inspect", "verify", "compare")


@pytest.fixture(scope="module")
def sweep(digits_dir, tmp_path_factory):
    """A 2-job sweep (cosine, one_cycle), 2 epochs each: its root and its two run dirs."""
    work = tmp_path_factory.mktemp("tools")
    run_train(
        "-m",
        f"dataset.data_dir={digits_dir}",
        "model.filters=[8]",
        "model.dense_units=[16]",
        "trainer.epochs=2",
        "schedule=cosine,one_cycle",
        f"hydra.sweep.dir={work / 'checkpoints' / 'sweep'}",  # each job's run: its job dir
        cwd=work,
    )
    root = work / "checkpoints"
    runs = sorted(p.parent for p in root.rglob("latest"))  # the sweep dir has a summary too
    assert len(runs) == 2
    return root, runs


def tool(
    *args: str, cwd: Path | None = None, importtime: bool = False
) -> subprocess.CompletedProcess:
    """``python -m trainer ARGS`` in a fresh process."""
    command = [
        sys.executable,
        *(["-X", "importtime"] if importtime else []),
        "-m",
        "trainer",
        *args,
    ]
    return subprocess.run(
        command,
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def tool_in_process(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(process_or_err, status: int | None = None) -> str:
    err = process_or_err if isinstance(process_or_err, str) else process_or_err.stderr
    if status is not None:
        assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def assert_png(path: Path, width: int, height: int) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(str(path))
    assert image.shape[:2] == (height, width)
    assert float(np.asarray(image[..., :3]).var()) > 0.001  # not a blank canvas


# --------------------------------------------------------------------------- dispatcher


def test_help_lists_every_command_and_each_has_help(capsys):
    process = tool("--help")
    assert process.returncode == 0
    for name in ("list", "inspect", "verify", "compare", "export", "rescue", "plot-schedule"):
        assert name in process.stdout
        status, out, _ = tool_in_process(capsys, name, "--help")
        assert status == 0 and "usage:" in out and "example" in out


@pytest.mark.slow
def test_light_commands_never_import_tensorflow(sweep):
    root, runs = sweep
    checkpoint = sorted(runs[0].glob("step-*"))[-1]
    for args in (("list", root), ("inspect", checkpoint), ("verify", root), ("compare", root)):
        process = tool(*map(str, args), importtime=True)
        assert process.returncode == 0, process.stderr
        imported = {
            line.split("|")[-1].strip().split(".")[0]
            for line in process.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert not imported & {"tensorflow", "keras", "tensorflow_datasets", "matplotlib", "hydra"}


# --------------------------------------------------------------------------- list, inspect, verify


@pytest.mark.slow
def test_list_shows_each_checkpoint_with_pointers_and_validity(sweep):
    root, runs = sweep
    process = tool("list", str(root))
    assert process.returncode == 0, process.stderr
    for run_dir in runs:
        assert str(run_dir) in process.stdout
    assert "step-00000041" in process.stdout and "step-00000082" in process.stdout
    assert "latest" in process.stdout and "val_accuracy" in process.stdout

    listing = json.loads(tool("list", str(runs[0]), "--json").stdout)
    (run,) = listing["runs"]
    assert run["latest"] == "step-00000082"
    assert [c["step"] for c in run["checkpoints"]] == [41, 82]
    for entry in run["checkpoints"]:
        manifest = json.loads((Path(entry["path"]) / "manifest.json").read_text())
        assert entry["valid"] and entry["problems"] == []
        assert entry["monitor_value"] == manifest["metrics"]["val_accuracy"]
        assert entry["learning_rate"] == manifest["learning_rate"]
        assert entry["written_at"] == manifest["written_at"]
    assert "latest" in run["checkpoints"][1]["pointers"]
    assert run["best"] in {"step-00000041", "step-00000082"}


@pytest.mark.slow
def test_inspect_shows_manifest_config_and_variables(sweep):
    _, runs = sweep
    checkpoint = runs[0] / "step-00000041"
    process = tool("inspect", str(checkpoint))
    assert process.returncode == 0, process.stderr
    for text in (
        "step 41",
        "model:",
        "optimizer:",
        "resolved_schedule:",
        "conv0/0",
        "(3, 3, 1, 8)",
    ):
        assert text in process.stdout

    info = json.loads(tool("inspect", str(checkpoint), "--json").stdout)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert info["valid"] and info["manifest"]["global_step"] == 41
    assert info["manifest"]["learning_rate"] == manifest["learning_rate"]
    assert info["config"]["model"]["filters"] == [8]
    assert info["config"]["resolved_schedule"]["name"] in ("cosine", "one_cycle")
    shapes = {v["name"]: tuple(v["shape"]) for v in info["model_variables"]}
    assert shapes["conv0/0"] == (3, 3, 1, 8) and shapes["logits/0"] == (16, 10)
    # conv 3*3*1*8+8, dense 128*16+16, logits 16*10+10
    assert info["parameters"] == 80 + 2064 + 170
    assert info["optimizer_variables"][0]["name"].endswith("iteration")
    assert len(info["optimizer_variables"]) == 1 + 2 * 6  # step + two Adam slots per weight


def test_inspect_shows_every_saved_section_augment_precision_and_ema_included(tmp_path, capsys):
    # A checkpoint written in-process as training writes one (tests/test_hostile_checkpoints.py).
    from trainer.build import build_run
    from trainer.config import SAVED_SECTIONS
    from trainer.data.pipeline import DataInfo
    from trainer.startup import compose_config, import_tensorflow
    from trainer.training.checkpointer import RunCheckpointer
    from trainer.training.state import LoopState

    chosen = ["augment=basic", "trainer.precision=mixed_bfloat16", "optimizer.ema=true"]
    cfg = compose_config(
        ["model.filters=[4]", "model.dense_units=[8]", *chosen, f"checkpoint.dir={tmp_path}"]
    )
    info = DataInfo("digits", (8, 8, 1), 10, 1294, 143, 360, 32, 41)
    import_tensorflow()
    run = build_run(cfg, info)
    checkpointer = RunCheckpointer(tmp_path, cfg, run, info, report=lambda _: None)
    checkpointer.save(LoopState(), {"val_accuracy": 0.5})
    checkpointer.close()
    status, out, _ = tool_in_process(capsys, "inspect", tmp_path)
    assert status == 0
    headings = [line[:-1] for line in out.splitlines() if re.fullmatch(r"[a-z_]+:", line)]
    assert headings == [*SAVED_SECTIONS, "resolved_schedule"]
    assert "augment" in headings and "paths" not in headings  # paths: never from a checkpoint
    for text in ("name: basic", "flip: horizontal", "precision: mixed_bfloat16", "ema: true"):
        assert f"\n  {text}\n" in out
    status, out, _ = tool_in_process(capsys, "inspect", tmp_path, "--json")
    config = json.loads(out)["config"]
    assert list(config) == ["seed", *SAVED_SECTIONS, "resolved_schedule"]
    assert config["augment"]["name"] == "basic" and config["optimizer"]["ema"] is True
    assert config["trainer"]["precision"] == "mixed_bfloat16"
    assert config["dataset"]["name"] == "digits"


@pytest.mark.slow
def test_verify_finds_corruption_and_says_what_a_resume_would_use(sweep, tmp_path):
    _, runs = sweep
    run_dir = tmp_path / "run"
    shutil.copytree(runs[0], run_dir)
    process = tool("verify", str(run_dir))
    assert process.returncode == 0 and "2 ok" in process.stdout

    weights = run_dir / "step-00000082" / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    process = tool("verify", str(run_dir))
    assert process.returncode == 1
    assert "BAD  step-00000082: model.weights.h5: sha256 does not match" in process.stdout
    assert "would use step-00000041" in process.stdout
    report = json.loads(tool("verify", str(run_dir), "--json").stdout)
    assert report["ok"] is False and report["bad"] == 1
    assert tool("verify", str(run_dir / "step-00000082")).returncode == 1
    assert tool("verify", str(run_dir / "step-00000041")).returncode == 0

    listing = tool("list", str(run_dir))  # list describes, verify judges
    assert listing.returncode == 0 and "BAD: model.weights.h5" in listing.stdout
    inspected = tool("inspect", str(run_dir / "step-00000082"))
    assert inspected.returncode == 1 and "DOES NOT VERIFY" in inspected.stdout

    (run_dir / "step-00000082" / "manifest.json").write_text("{not json")
    (run_dir / "best").write_text("step-00000099\n")
    process = tool("verify", str(run_dir))
    assert process.returncode == 1
    assert "manifest.json is not valid JSON" in process.stdout
    assert "pointer 'best' names step-00000099, which does not exist" in process.stdout


@pytest.mark.parametrize("command", ["list", "inspect", "verify", "compare", "export", "rescue"])
def test_bad_paths_give_one_error_line_and_status_2(command, tmp_path):
    extra = {"export": ["out.keras"], "rescue": ["out", "--schedule", "cosine"]}.get(command, [])
    missing = tool(command, str(tmp_path / "nowhere"), *extra, cwd=tmp_path)
    assert "does not exist" in assert_one_error_line(missing, missing.returncode)
    if command == "rescue":
        (tmp_path / "notes.keras").write_text("not a model")
        process = tool(command, str(tmp_path / "notes.keras"), *extra, cwd=tmp_path)
        assert "neither a .keras file" in assert_one_error_line(process, process.returncode)
        return
    empty = tmp_path / "empty"
    empty.mkdir()
    process = tool(command, str(empty), *extra, cwd=tmp_path)
    assert_one_error_line(process, process.returncode)
    (tmp_path / "file.txt").write_text("x")
    process = tool(command, str(tmp_path / "file.txt"), *extra, cwd=tmp_path)
    assert_one_error_line(process, process.returncode)


def test_usage_errors_give_one_line(tmp_path):
    for args in (["frobnicate"], [], ["list"], ["verify", ".", "--bogus"], ["export", "a"]):
        process = tool(*args, cwd=tmp_path)
        assert_one_error_line(process, process.returncode)
    process = tool("plot-schedule", "schedule=cosnie", "--steps-per-epoch", "3", cwd=tmp_path)
    assert "cosnie" in assert_one_error_line(process, process.returncode)


# --------------------------------------------------------------------------- compare


@pytest.mark.slow
def test_compare_sorts_runs_by_the_monitored_metric(sweep, tmp_path):
    root, runs = sweep
    process = tool("compare", str(root), "--plot", str(tmp_path / "runs.png"), "--json")
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout)
    bests = [json.loads((r / "summary.json").read_text())["best"] for r in runs]
    assert [r["best"] for r in report["runs"]] == sorted(bests, reverse=True)
    assert {r["hyperparameters"]["schedule.name"] for r in report["runs"]} == {
        "cosine",
        "one_cycle",
    }
    assert "schedule.pct_start" in report["keys"]  # varies: one_cycle has it, cosine does not
    assert "checkpoint.dir" not in report["keys"]
    assert_png(tmp_path / "runs.png", 1200, 450)

    text = tool("compare", *map(str, runs)).stdout
    assert "best val_accuracy" in text and "one_cycle" in text and "cosine" in text


# --------------------------------------------------------------------------- export


def _checkpoint_model(checkpoint_dir: Path):
    import trainer.models.keras_builtin  # noqa: F401
    from checkpoints import verify
    from checkpoints.restore import restore_state
    from trainer.config.saved import read_checkpoint_config
    from trainer.models.registry import build_model

    checkpoint = verify(checkpoint_dir)
    config = read_checkpoint_config(checkpoint)
    manifest = checkpoint.manifest
    model = build_model(config["model"], tuple(manifest["input_shape"]), manifest["num_classes"])
    restore_state(checkpoint, model, None)
    return model


@pytest.mark.slow
def test_export_keras_and_savedmodel_predict_like_the_checkpoint(sweep, tmp_path, capsys):
    import keras
    import tensorflow as tf

    _, runs = sweep
    checkpoint = runs[1] / "step-00000082"
    images = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    expected = np.asarray(_checkpoint_model(checkpoint)(images, training=False))

    status, out, _ = tool_in_process(capsys, "export", checkpoint, tmp_path / "model.keras")
    assert status == 0 and "Not compiled" in out
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)

    status, out, _ = tool_in_process(
        capsys, "export", runs[1], tmp_path / "compiled.keras", "--compile", "--json"
    )
    assert status == 0 and json.loads(out)["compiled"]["optimizer"] == "adam"
    compiled = keras.saving.load_model(tmp_path / "compiled.keras", safe_mode=True)
    assert isinstance(compiled.optimizer, keras.optimizers.Adam)
    assert int(compiled.optimizer.iterations) == 82  # the checkpoint's step and moments
    assert "moments from the checkpoint" in json.loads(out)["compiled"]["state"]
    np.testing.assert_allclose(compiled.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)

    status, _, _ = tool_in_process(
        capsys, "export", checkpoint, "--format", "savedmodel", tmp_path / "serving"
    )
    assert status == 0
    served = tf.saved_model.load(str(tmp_path / "serving"))
    outputs = served.serve(tf.constant(images))
    np.testing.assert_allclose(np.asarray(outputs), expected, rtol=1e-5, atol=1e-6)

    status, _, err = tool_in_process(capsys, "export", checkpoint, tmp_path / "model.keras")
    assert "already exists" in assert_one_error_line(err, status)  # never overwritten


def _onnx_logits(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": images})
    return logits


def _litert_logits(path: Path, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    (logits,) = runner(image=images).values()
    return logits


def assert_same_predictions(logits: np.ndarray, expected: np.ndarray) -> None:
    assert logits.shape == expected.shape
    np.testing.assert_array_equal(logits.argmax(axis=-1), expected.argmax(axis=-1))
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_export_onnx_and_litert_predict_like_the_checkpoint(sweep, tmp_path, capsys):
    _, runs = sweep
    checkpoint = runs[1] / "step-00000082"
    images = np.random.default_rng(1).random((16, 8, 8, 1), dtype=np.float32)
    expected = np.asarray(_checkpoint_model(checkpoint)(images, training=False))

    # The suffix chooses the format; any batch size, input named "image".
    status, out, _ = tool_in_process(capsys, "export", checkpoint, tmp_path / "m.onnx", "--json")
    assert status == 0
    assert json.loads(out)["format"] == "onnx" and json.loads(out)["input"] == "image"
    assert_same_predictions(_onnx_logits(tmp_path / "m.onnx", images), expected)
    assert_same_predictions(_onnx_logits(tmp_path / "m.onnx", images[:1]), expected[:1])

    status, out, _ = tool_in_process(
        capsys, "export", checkpoint, "--format", "litert", tmp_path / "m.tflite"
    )
    assert status == 0 and "ai_edge_litert" in out
    assert_same_predictions(_litert_logits(tmp_path / "m.tflite", images), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.tflite"]  # no temporaries


@pytest.mark.slow
def test_export_onnx_without_its_package_names_the_extra_and_writes_nothing(
    sweep, tmp_path, capsys, monkeypatch
):
    _, runs = sweep
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # `import tf2onnx` fails, as uninstalled
    status, out, err = tool_in_process(
        capsys, "export", runs[0] / "step-00000082", tmp_path / "model.onnx"
    )
    line = assert_one_error_line(err, status)
    assert "'tf2onnx'" in line and 'pip install "keras-hydra-trainer[export]"' in line
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_refuses_an_existing_out_and_a_suffix_the_format_does_not_write(
    sweep, tmp_path, capsys
):
    _, runs = sweep
    checkpoint = runs[0] / "step-00000082"
    for name in ("model.onnx", "model.tflite"):
        (tmp_path / name).write_text("precious")
        status, _, err = tool_in_process(capsys, "export", checkpoint, tmp_path / name)
        assert "already exists" in assert_one_error_line(err, status)
        assert (tmp_path / name).read_text() == "precious"
    for export_format, suffix in (("onnx", ".onnx"), ("litert", ".tflite"), ("keras", ".keras")):
        status, _, err = tool_in_process(
            capsys, "export", checkpoint, "--format", export_format, tmp_path / "model.bin"
        )
        assert f"OUT must end in {suffix}" in assert_one_error_line(err, status)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.tflite"]


@pytest.mark.parametrize(
    ("out", "given", "chosen"),
    [
        ("m.keras", None, "keras"),
        ("m.onnx", None, "onnx"),
        ("M.ONNX", None, "onnx"),
        ("m.tflite", None, "litert"),
        ("serving/1", None, "savedmodel"),
        ("m.onnx", "savedmodel", "savedmodel"),  # a folder may have any name
        ("m.tflite", "litert", "litert"),
    ],
)
def test_export_format_follows_the_suffix_unless_given(out, given, chosen):
    from trainer.tools.export import choose_format

    assert choose_format(given, Path(out), out).name == chosen


def test_export_format_refuses_a_suffix_it_does_not_write():
    from trainer.errors import UserError
    from trainer.tools.export import choose_format

    for given, out in (("onnx", "m.tflite"), ("litert", "m.onnx"), ("keras", "serving")):
        with pytest.raises(UserError, match=f"--format {given} writes a"):
            choose_format(given, Path(out), out)


def test_write_new_output_publishes_whole_results_and_never_replaces(tmp_path):
    from trainer.errors import UserError
    from trainer.tools.output import write_new_output

    def write_file(path: Path) -> None:
        assert path.parent == tmp_path and path.name.startswith(".") and path.suffix == ".onnx"
        path.write_bytes(b"model")

    write_new_output(tmp_path / "a.onnx", ".onnx", write_file)
    assert (tmp_path / "a.onnx").read_bytes() == b"model"

    def write_folder(path: Path) -> None:
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"graph")

    write_new_output(tmp_path / "serving", "", write_folder)
    assert (tmp_path / "serving" / "saved_model.pb").read_bytes() == b"graph"
    assert (tmp_path / "serving" / "variables").is_dir()

    def fail_halfway(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_new_output(tmp_path / "b.onnx", ".onnx", fail_halfway)

    # Something appears at OUT while the model is written (another process): it stays.
    def their_file_first(path: Path) -> None:
        (tmp_path / "c.onnx").write_text("theirs")
        write_file(path)

    def their_folder_first(path: Path) -> None:
        (tmp_path / "d").mkdir()
        write_folder(path)

    with pytest.raises(UserError, match="already exists"):
        write_new_output(tmp_path / "c.onnx", ".onnx", their_file_first)
    with pytest.raises(UserError, match="already exists"):
        write_new_output(tmp_path / "d", "", their_folder_first)
    assert (tmp_path / "c.onnx").read_text() == "theirs" and list((tmp_path / "d").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "c.onnx", "d", "serving"]


# --------------------------------------------------------------------------- rescue


def _halving():
    """A custom schedule class plain Keras has never heard of (not registered anywhere)."""
    import keras

    class Halving(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, lr=0.01, period=10):
            self.lr, self.period = lr, period

        def __call__(self, step):
            halvings = keras.ops.floor(keras.ops.cast(step, "float32") / self.period)
            return self.lr * keras.ops.power(0.5, halvings)

        def get_config(self):
            return {"lr": self.lr, "period": self.period}

    return Halving


def _plain_keras_model(schedule):
    """A digits classifier built, trained 4 steps and saved the way plain Keras users do."""
    import keras
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    digits = load_digits()
    images = (digits.images[:64, :, :, None] / 16.0).astype("float32")
    model.fit(images, digits.target[:64], batch_size=16, epochs=1, verbose=0)
    return model, images


@pytest.mark.slow
def test_rescue_custom_schedule_checkpoint_resumes_with_train_py(digits_dir, tmp_path, capsys):
    import keras

    from checkpoints import verify

    model, images = _plain_keras_model(_halving()(0.01, 10))
    source = tmp_path / "custom.keras"
    model.save(source)
    model.save(tmp_path / "custom.h5")
    with pytest.raises(Exception, match="could not be deserialized"):
        keras.saving.load_model(source)  # the failure this project was born from

    out = tmp_path / "rescued"
    status, text, err = tool_in_process(
        capsys,
        "rescue",
        source,
        out,
        "--schedule",
        "cosine",
        "--set",
        f"dataset.data_dir={digits_dir}",
        "--set",
        "trainer.epochs=2",
    )
    assert status == 0, err
    assert "Halving" in text and "never run" in text and "softmax" in text
    checkpoint = verify(out / "step-00000004")
    assert checkpoint.valid
    manifest = checkpoint.manifest
    assert manifest["global_step"] == 4 and manifest["batches_done"] == 4
    assert manifest["learning_rate"] == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * 4 / 82)))

    # Same predictions (the output softmax became logits), same optimizer moments.
    rescued = _checkpoint_model(checkpoint.path)
    probabilities = keras.ops.softmax(rescued(images[:8], training=False))
    np.testing.assert_allclose(probabilities, model.predict(images[:8], verbose=0), atol=1e-6)
    import h5py

    with h5py.File(checkpoint.path / "optimizer.h5") as handle:
        saved = [handle[str(i)][()] for i in range(len(handle))]
    assert len(saved) == len(model.optimizer.variables)
    for ours, theirs in zip(saved, model.optimizer.variables, strict=True):
        np.testing.assert_allclose(ours, np.asarray(theirs))

    # train.py continues the rescued run from step 4 to the end of epoch 2.
    process = run_train(
        f"+resume={out}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=tmp_path,
    )
    assert "Resuming from" in process.stdout and "step 4, epoch 1, batch 4" in process.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 82 and summary["epochs_completed"] == 2
    assert summary["test_accuracy"] > 0.5

    # The legacy .h5 file of the same model rescues to the same weights.
    status, _, err = tool_in_process(
        capsys,
        "rescue",
        tmp_path / "custom.h5",
        tmp_path / "from_h5",
        "--schedule",
        "one_cycle",
        "--set",
        f"dataset.data_dir={digits_dir}",
        "--set",
        "trainer.epochs=2",
        "--json",
    )
    assert status == 0, err
    from_h5 = _checkpoint_model(tmp_path / "from_h5" / "step-00000004")
    for a, b in zip(from_h5.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_rescue_builtin_schedule_and_refusals(digits_dir, tmp_path, capsys):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=100)
    model, _ = _plain_keras_model(schedule)
    model.save(tmp_path / "builtin.keras")
    keras.saving.load_model(tmp_path / "builtin.keras")  # built-in schedules do load
    common = ["--set", f"dataset.data_dir={digits_dir}", "--set", "trainer.epochs=2"]
    status, out, err = tool_in_process(
        capsys,
        "rescue",
        tmp_path / "builtin.keras",
        tmp_path / "a",
        "--schedule",
        "linear",
        *common,
        "--json",
    )
    assert status == 0, err
    result = json.loads(out)
    assert result["learning_rate"] == 0.01 and result["global_step"] == 4
    assert "initial_learning_rate" in result["learning_rate_source"]

    refusals = {
        "unknown schedule": (["--schedule", "nope"], "unknown schedule 'nope'"),
        "run too short": (
            ["--schedule", "cosine", "--set", "trainer.max_steps=3"],
            "nothing would",
        ),
    }
    for name, (args, message) in refusals.items():
        out_dir = tmp_path / name.replace(" ", "_")
        status, _, err = tool_in_process(
            capsys, "rescue", tmp_path / "builtin.keras", out_dir, *common, *args
        )
        assert message in assert_one_error_line(err, status), name
        assert not out_dir.exists()

    status, _, err = tool_in_process(
        capsys,
        "rescue",
        tmp_path / "builtin.keras",
        tmp_path / "a",
        "--schedule",
        "cosine",
        *common,
    )
    assert "already exists" in assert_one_error_line(err, status)

    # A rate driven by a LearningRateScheduler callback (not saved by Keras at all):
    # a Sequential model ending in a Softmax layer, the optimizer at a fixed rate.
    sequential = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
            keras.layers.Softmax(),
        ]
    )
    sequential.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((32, 8, 8, 1), dtype=np.float32)
    halve = keras.callbacks.LearningRateScheduler(lambda epoch, rate: rate * 0.5)
    sequential.fit(images, np.arange(32) % 10, batch_size=16, verbose=0, callbacks=[halve])
    sequential.save(tmp_path / "callback.keras")
    status, out, err = tool_in_process(
        capsys,
        "rescue",
        tmp_path / "callback.keras",
        tmp_path / "d",
        "--schedule",
        "cosine",
        "--set",
        "optimizer.learning_rate=0.01",
        *common,
        "--json",
    )
    assert status == 0, err
    result = json.loads(out)
    assert result["global_step"] == 2 and result["optimizer_moments"].startswith("restored")
    assert "removed" in result["softmax_removed"]
    logits = _checkpoint_model(tmp_path / "d" / "step-00000002")(images, training=False)
    np.testing.assert_allclose(
        keras.ops.softmax(logits), sequential.predict(images, verbose=0), atol=1e-6
    )

    # A model for other images than the dataset's is refused, naming both shapes.
    inputs = keras.Input((28, 28, 1))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(
        tmp_path / "mnist.keras"
    )
    status, _, err = tool_in_process(
        capsys, "rescue", tmp_path / "mnist.keras", tmp_path / "c", "--schedule", "cosine", *common
    )
    assert "(28, 28, 1)" in assert_one_error_line(err, status)
    assert not (tmp_path / "c").exists()

    # A Lambda layer carries Python bytecode: refused before Keras sees the config.
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10)(
        keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Flatten()(inputs))
    )
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    status, _, err = tool_in_process(
        capsys, "rescue", tmp_path / "lambda.keras", tmp_path / "b", "--schedule", "cosine", *common
    )
    assert "keras.layers.Lambda" in assert_one_error_line(err, status)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"module": "keras.layers", "class_name": "Lambda", "config": {}}, "keras.layers.Lambda"),
        ({"module": "my_package.layers", "class_name": "Dense", "config": {}}, "my_package"),
        ({"module": "keras.layers", "class_name": "Dense", "registered_name": "pkg>Dense"}, "pkg"),
        ({"module": "builtins", "class_name": "function", "config": "eval"}, "function"),
        ({"class_name": "Dense", "config": {"activation": "pkg>fn"}}, "activation 'pkg>fn'"),
        ({"class_name": "Dense", "config": {"name": "${oc.env:HOME}"}}, "interpolation"),
        ({"class_name": "Dense", "config": {"_target_": "os.system"}}, "_target_"),
    ],
)
def test_rescued_model_config_allows_only_keras_built_ins(layer, message):
    from trainer.errors import UserError
    from trainer.models.keras_builtin import check_keras_config

    config = {"module": "keras", "class_name": "Functional", "config": {"layers": [layer]}}
    with pytest.raises(UserError, match=re.escape(message)):
        check_keras_config(config)


# --------------------------------------------------------------------------- plot-schedule


@pytest.mark.slow
def test_plot_schedule_one_several_and_a_checkpoint(sweep, digits_dir, tmp_path, capsys):
    png = tmp_path / "one.png"
    status, out, err = tool_in_process(
        capsys,
        "plot-schedule",
        "schedule=one_cycle",
        "trainer.epochs=3",
        "--steps-per-epoch",
        "10",
        "--out",
        png,
        "--json",
    )
    assert status == 0, err
    (curve,) = json.loads(out)["curves"]
    assert curve["total_steps"] == 30 and curve["resolved"]["total_steps"] == 30
    assert curve["lr_start"] == pytest.approx(1e-3 / 25, rel=1e-5)
    assert curve["lr_max"] == pytest.approx(1e-3, rel=1e-5)
    assert_png(png, 1000, 500)

    png = tmp_path / "compare.png"
    status, out, err = tool_in_process(
        capsys,
        "plot-schedule",
        "trainer.epochs=4",
        f"dataset.data_dir={digits_dir}",
        "--out",
        png,
        "--json",
        "--compare",
        "schedule=cosine",
        "schedule=step schedule.every_epochs=1",
    )
    assert status == 0, err
    curves = json.loads(out)["curves"]
    assert [c["label"] for c in curves] == [
        "schedule=cosine",
        "schedule=step schedule.every_epochs=1",
    ]
    assert all(c["steps_per_epoch"] == 41 and c["total_steps"] == 164 for c in curves)
    assert curves[0]["lr_end"] == pytest.approx(0.0, abs=1e-9)
    assert curves[1]["lr_end"] == pytest.approx(1e-3 * 0.1**4, rel=1e-5)
    assert_png(png, 1000, 500)

    _, runs = sweep
    checkpoint = runs[1] / "step-00000041"
    png = tmp_path / "checkpoint.png"
    status, out, err = tool_in_process(
        capsys, "plot-schedule", "--checkpoint", checkpoint, "--out", png, "--json"
    )
    assert status == 0, err
    report = json.loads(out)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    assert report["stopped_at"]["step"] == 41
    assert report["stopped_at"]["schedule_value"] == pytest.approx(
        manifest["learning_rate"], rel=1e-5
    )
    assert_png(png, 1000, 500)
