"""The checkpoint fuzzer (``devtools.fuzz``): its oracle proven on readers that misbehave on
purpose, then hypothesis cases of every kind on a real checkpoint.

The oracle tests need neither TensorFlow nor a training run. The fuzz tests
share one session (a tiny ``train.py`` run, TensorFlow imported once for the
resume path) and draw a few derandomized cases per kind of file, so CI sees
the same cases every time; ``python -m devtools.fuzz --cases N`` draws many more.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, example, given, settings

from checkpoints import commit_checkpoint, verify
from checkpoints.layout import CONFIG_FILE, MANIFEST, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE
from devtools.fuzz.canary import SECRET_ENV, Canary
from devtools.fuzz.documents import (
    JSON_PAYLOADS,
    YAML_PAYLOADS,
    EditDocument,
    LieInManifest,
    RawText,
    ReformatDocument,
)
from devtools.fuzz.files import ExtraFile, Nothing, ReplaceFile, WritePointer
from devtools.fuzz.h5 import EditH5, RawH5, Repack
from devtools.fuzz.mutations import Context, NotApplicable
from devtools.fuzz.oracle import (
    EXECUTED,
    HUNG,
    OK,
    REFUSED,
    TRACEBACK,
    UNCLEAR,
    WRONG,
    Reader,
    check_case,
    run_reader,
)
from devtools.fuzz.readers import judge_command
from devtools.fuzz.resume import Restored, judge_resume, malformed_loop_state
from devtools.fuzz.session import Case, CaseResult, Tally
from devtools.fuzz.source import CaseDirs, rehash_manifest, snapshot
from devtools.fuzz.strategies import cases
from tests.conftest import REPO
from trainer.errors import UserError

FIGURE = re.compile(r"^(\d+) cases, (\d+) tracebacks, (\d+) executed, (\d+) files changed")


@pytest.fixture
def canary(tmp_path):
    armed = Canary.create(tmp_path / "canary")
    armed.install()
    yield armed
    armed.uninstall()


def fake_dirs(root: Path) -> CaseDirs:
    """A case tree of plain files (no checkpoint): enough for the oracle's own tests."""
    run = root / "run"
    for checkpoint in ("step-00000001", "step-00000002"):
        (run / checkpoint).mkdir(parents=True)
        (run / checkpoint / "config.yaml").write_text("model: {name: cnn}\n")
    (root / "outside").mkdir()
    return CaseDirs(root, run, run / "step-00000002", run / "step-00000001", root / "outside")


# --------------------------------------------------------------------------- (a) tracebacks


def test_an_escaping_exception_is_a_traceback_with_its_place():
    outcome = run_reader(Reader("boom", lambda: {}["missing"]), limit=5)
    assert outcome.kind == TRACEBACK
    assert outcome.detail.startswith("KeyError")
    assert "test_fuzz.py" in outcome.where


def test_the_exceptions_a_reader_may_raise_are_refusals_not_tracebacks():
    def refuse():
        raise ValueError("manifest.json is not valid JSON")

    assert run_reader(Reader("r", refuse, allowed=(ValueError,)), limit=5).kind == REFUSED
    assert run_reader(Reader("r", refuse, allowed=(UserError,)), limit=5).kind == TRACEBACK


def test_a_command_must_exit_0_1_or_2_without_a_traceback_and_end_with_one_error_line():
    assert judge_command(0, "listed\n", "") is None
    assert judge_command(2, "", "error: checkpoint /x does not verify\n") is None
    assert judge_command(3, "", "")[0] == TRACEBACK
    assert judge_command(1, "", "Traceback (most recent call last):\n")[0] == TRACEBACK
    assert judge_command(2, "", "error: one\nerror: two\n")[0] == UNCLEAR
    assert judge_command(2, "", "error: something went wrong\n")[0] == UNCLEAR


def test_a_reader_past_its_time_limit_is_hung_even_when_blocked_in_a_system_call(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    blocked = run_reader(Reader("fifo", fifo.read_text), limit=0.5)
    swallowing = run_reader(Reader("sleep", lambda: _sleep_swallowing_exceptions(10)), limit=0.5)
    assert (blocked.kind, swallowing.kind) == (HUNG, HUNG)
    assert time.monotonic() - started < 5


def _sleep_swallowing_exceptions(seconds: float) -> None:
    with contextlib.suppress(Exception):  # a reader's broad except must not hide a hang
        time.sleep(seconds)


# --------------------------------------------------------------------------- (b) executed


def test_every_tripwire_of_the_canary_is_caught_and_a_safe_reader_trips_none(tmp_path, canary):
    import yaml
    from omegaconf import OmegaConf

    ctx = Context(fake_dirs(tmp_path / "case"), canary)
    python_tag = ctx.fill(YAML_PAYLOADS[0].text)
    executing = {
        "os.system": lambda: os.system(canary.command("shell")),
        "unsafe yaml": lambda: yaml.unsafe_load(f"x: {python_tag}"),
        "import": lambda: __import__("fuzz_canary_module"),
        "resolver": lambda: OmegaConf.to_container(
            OmegaConf.create({"a": "${fuzz_canary:x}"}), resolve=True
        ),
        "oc.env": lambda: OmegaConf.create({"a": f"${{oc.env:{SECRET_ENV}}}"}).a,
        "environment": lambda: os.environ.__setitem__("FUZZ_SET_BY_READER", "1"),
    }
    for name, call in executing.items():
        verdict = check_case([Reader(name, call, allowed=())], canary, [tmp_path / "case"], 5)
        assert EXECUTED in verdict.categories(), name
    assert "FUZZ_SET_BY_READER" not in os.environ  # the oracle puts the environment back
    safe = Reader("safe yaml", lambda: yaml.safe_load(f"x: {python_tag}"), (yaml.YAMLError,))
    verdict = check_case([safe], canary, [tmp_path / "case"], 5)
    assert verdict.executed == [] and verdict.outcomes[0].kind == UNCLEAR  # refused, no file named


def test_no_mutation_writes_through_a_link_an_earlier_one_made(tmp_path, canary):
    from devtools.fuzz.documents import ReplaceDocument
    from devtools.fuzz.h5 import RawH5

    dirs = fake_dirs(tmp_path)
    ctx = Context(dirs, canary)
    ReplaceFile(CONFIG_FILE, "symlink_other").apply(ctx)  # newest config.yaml -> older's
    before = (dirs.older / CONFIG_FILE).read_bytes()
    for mutation in (
        RawText(CONFIG_FILE, "truncate"),
        EditDocument(CONFIG_FILE, "set", 0, 1),
        ReplaceDocument(CONFIG_FILE, {}),
        RawH5(CONFIG_FILE, "zero"),
    ):
        with pytest.raises(NotApplicable):
            mutation.apply(ctx)
    assert (dirs.older / CONFIG_FILE).read_bytes() == before


def test_every_payload_fills_in_the_canary(tmp_path, canary):
    ctx = Context(fake_dirs(tmp_path), canary)
    filled = [ctx.fill(payload.text) for payload in YAML_PAYLOADS + JSON_PAYLOADS]
    assert all("{command}" not in text and "{module}" not in text for text in filled)
    assert any(str(canary.markers) in text for text in filled)


def test_a_reader_that_shows_a_secret_it_read_is_caught(tmp_path, canary):
    (tmp_path / "outside.txt").write_text(canary.file_secret)
    shows_file = Reader("cat", lambda: print((tmp_path / "outside.txt").read_text()), allowed=())
    shows_env = Reader("env", lambda: f"value {os.environ[SECRET_ENV]}", allowed=())
    verdict = check_case([shows_file, shows_env], canary, [tmp_path], 5)
    assert verdict.leaked and verdict.executed


# --------------------------------------------------------------------------- (c) files changed


def test_a_reader_that_writes_deletes_creates_or_touches_a_file_is_caught(tmp_path, canary):
    dirs = fake_dirs(tmp_path / "case")
    config = dirs.newest / "config.yaml"
    os.mkfifo(dirs.outside / "fifo")  # a snapshot never opens it (that would block)
    writers = {
        "append": lambda: config.open("a").write("x"),
        "touch": lambda: os.utime(config),
        "delete": lambda: (dirs.older / "config.yaml").unlink(),
        "create": lambda: (dirs.outside / "new").write_text("x"),
    }
    for name, call in writers.items():
        verdict = check_case([Reader(name, call, allowed=())], canary, [dirs.root], 5)
        assert verdict.changed, name
    reading = Reader("read", config.read_text, allowed=())
    assert check_case([reading], canary, [dirs.root], 5).changed == []


# --------------------------------------------------------------------------- (d) refusals, results


def test_a_refusal_is_one_line_naming_the_checkpoint_or_a_file():
    def refusing(message: str) -> str:
        def call():
            raise UserError(message)

        return run_reader(Reader("r", call), limit=5).kind

    assert refusing("checkpoint /x: config.yaml is not valid YAML") == REFUSED
    assert refusing("config.yaml is not valid\nsee line 3") == UNCLEAR
    assert refusing("something went wrong") == UNCLEAR
    assert refusing("checkpoint " + "x" * 5000) == UNCLEAR
    assert refusing("checkpoint /x does not fit: Example error message for object <A>:") == UNCLEAR


def test_a_refusal_of_a_benign_change_is_wrong():
    def refuse():
        raise UserError("checkpoint /x does not verify")

    assert run_reader(Reader("resume", refuse, may_refuse=False), limit=5).kind == WRONG


def _restored(checkpoint: Path, weight: float = 1.0, **loop) -> Restored:
    state = {"epoch": 2, "batches_done": 0, "epochs_completed": 2, "best": 0.5}
    state |= {"epochs_without_improvement": 0, "epochs_since_lr_cut": 0, "lr_scale": 1.0}
    state |= {"stopped_early": False, "history": [], **loop}
    return Restored(
        checkpoint=checkpoint,
        model={"layers/dense/vars/0": np.full((2, 2), weight, np.float32)},
        optimizer=[np.int64(82)],
        rng=[np.array([1, 2])],
        loop=SimpleNamespace(**state),
        config_yaml="",
    )


def test_the_resume_judge_holds_each_expectation(tmp_path):
    dirs = fake_dirs(tmp_path)
    reference = _restored(dirs.newest)
    assert judge_resume(_restored(dirs.newest), "benign", dirs, reference) is None
    assert judge_resume(_restored(dirs.newest, 2.0), "benign", dirs, reference)[0] == WRONG
    assert judge_resume(_restored(dirs.older), "benign", dirs, reference)[0] == WRONG
    assert judge_resume(_restored(dirs.newest), "refuse", dirs, reference)[0] == WRONG


@pytest.mark.parametrize(
    "field, value",
    [("epoch", "3"), ("batches_done", -1), ("best", float("nan")), ("lr_scale", 0.0),
     ("stopped_early", "no"), ("history", {"a": 1}), ("epochs_completed", True)],
)  # fmt: skip
def test_a_resume_with_a_malformed_loop_state_is_wrong(tmp_path, field, value):
    assert malformed_loop_state(_restored(tmp_path).loop) is None
    assert field in malformed_loop_state(_restored(tmp_path, **{field: value}).loop)


# --------------------------------------------------------------------------- the attacker


def test_the_attackers_rehash_makes_a_changed_checkpoint_verify_again(tmp_path):
    staging = tmp_path / ".staging"
    staging.mkdir()
    for name in ("config.yaml", "trainer_state.json"):
        (staging / name).write_text("{}\n")
    checkpoint = tmp_path / "step-00000001"
    commit_checkpoint(staging, checkpoint, {"global_step": 1})
    (checkpoint / "config.yaml").write_text("model: {name: evil}\n")
    os.remove(checkpoint / "trainer_state.json")
    os.mkfifo(checkpoint / "trainer_state.json")  # not re-hashed, and never opened
    assert not verify(checkpoint).valid
    assert rehash_manifest(checkpoint)
    assert verify(checkpoint).problems == ["trainer_state.json: is not a regular file (a FIFO)"]
    (checkpoint / "manifest.json").write_text("[]")
    assert not rehash_manifest(checkpoint)


def test_the_command_draws_the_same_cases_for_a_seed_and_prints_the_figure(capsys):
    from devtools.fuzz.__main__ import fuzz
    from devtools.fuzz.oracle import Verdict

    class Recorder:
        def __init__(self):
            self.cases = []

        def run(self, case):
            self.cases.append(case)
            return CaseResult(len(self.cases), repr(case), Verdict())

    first, second, other = Recorder(), Recorder(), Recorder()
    tally = fuzz(first, 12, 7, 4)
    fuzz(second, 12, 7, 4)
    fuzz(other, 12, 8, 4)
    assert first.cases == second.cases != other.cases
    assert len({case.kind for case in first.cases}) >= 3  # drawn from every kind
    assert tally.figure() == "12 cases, 0 tracebacks, 0 executed, 0 files changed"
    assert "case 12/12" in capsys.readouterr().out


def test_the_figure_counts_cases_per_category_and_names_the_others():
    from devtools.fuzz.oracle import Outcome, Verdict

    tally = Tally()
    broken = Verdict([Outcome("a", TRACEBACK, "KeyError: x"), Outcome("b", HUNG)], ["marker x"])
    tally.add(CaseResult(1, "one", broken))
    tally.add(CaseResult(2, "two", Verdict([Outcome("a", OK)], changed=["changed /x"])))
    assert tally.figure() == "2 cases, 1 tracebacks, 1 executed, 1 files changed, 1 hung"
    assert not tally.ok and len(tally.classes) == 4
    assert tally.classes["traceback KeyError at ?"].readers == {"a"}


def test_the_fuzzer_imports_no_tensorflow():
    modules = "source, canary, mutations, documents, files, h5, strategies, oracle, readers"
    modules += ", resume, session"
    code = (
        f"import sys; from devtools.fuzz import {modules}; import devtools.fuzz.__main__; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# --------------------------------------------------------------------------- fuzzing a real run

FUZZ = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,  # stop at the first hole: CI time
)


def examples(*cases):
    """``@example(case=...)`` for each case: the holes found so far, one per failure class,
    tried before any drawn case (``python -m devtools.fuzz`` lists the classes)."""

    def decorate(test):
        for case in reversed(cases):
            test = example(case=case)(test)
        return test

    return decorate


def one(kind: str, *mutations) -> Case:
    return Case(kind, tuple(mutations))


OUTSIDE_DATA = ("external_storage", "virtual", "external_link")


@pytest.fixture(scope="session")
def fuzz_session(digits_dir, tmp_path_factory):
    """A real checkpoint (a tiny train.py run) and the resume path, for every fuzz test."""
    from devtools.fuzz.session import FuzzSession
    from devtools.fuzz.source import train_source_run

    work = tmp_path_factory.mktemp("fuzz")
    source = train_source_run(work, digits_dir)
    session = FuzzSession(source, work)  # the command's time limits: far past any real read
    yield session
    session.close()


def fuzz_case(session, case) -> None:
    """Run ``case``; fail with every failure the oracle found."""
    try:
        result = session.run(case)
    except NotApplicable:
        assume(False)
        return
    failures = "\n".join(f"  {signature} [{reader}]: {detail}" for _, signature, detail, reader
                         in result.verdict.failures())  # fmt: skip
    assert result.verdict.ok, f"{result.description}\n{failures}"


@pytest.mark.slow
@FUZZ
@examples(
    one("benign", ReformatDocument(MANIFEST, 2), ReformatDocument(STATE_FILE, 3)),
    one("benign", ReformatDocument(CONFIG_FILE, 0), Repack(MODEL_FILE, 2)),
    one("benign", Repack(OPTIMIZER_FILE, 2), ExtraFile("notes.txt")),
    one("benign", EditH5(MODEL_FILE, "external_link", where="older")),  # not the one resumed
)
@given(case=cases("benign"))
def test_benign_changes_resume_exactly_as_the_pristine_checkpoint(fuzz_session, case):
    fuzz_case(fuzz_session, case)


@pytest.mark.slow
@FUZZ
@examples(one("manifest", LieInManifest("x" * 300)))  # OSError in verify: name too long
@given(case=cases("manifest"))
def test_manifest_mutations_are_refused_or_resumed_correctly(fuzz_session, case):
    fuzz_case(fuzz_session, case)


@pytest.mark.slow
@FUZZ
@examples(
    one("state", EditDocument(STATE_FILE, "set", "loop", None)),  # TypeError in LoopState
    one("state", EditDocument(STATE_FILE, "set", "loop.epoch", "2")),  # TypeError describe_resume
    one("state", EditDocument(STATE_FILE, "retype", "loop.best", "list")),  # resumed with it
    one("state", EditDocument(STATE_FILE, "set", "rng.0.state", [[1], [2, 3]])),  # ValueError
)
@given(case=cases("state"))
def test_trainer_state_mutations_are_refused_or_resumed_correctly(fuzz_session, case):
    fuzz_case(fuzz_session, case)


@pytest.mark.slow
@FUZZ
@examples(
    one("config", EditDocument(CONFIG_FILE, "set", "checkpoint.root", YAML_PAYLOADS[10])),  # ran
    one("config", EditDocument(CONFIG_FILE, "set", "seed", "${oc.env:FUZZ_CANARY_SECRET}")),
    one("config", RawText(CONFIG_FILE, "recursive_anchor")),  # RecursionError
    one("config", EditDocument(CONFIG_FILE, "delete", "model.name")),  # ConfigKeyError
    one("config", EditDocument(CONFIG_FILE, "set", "dataset.name", {})),  # TypeError
    one("config", EditDocument(CONFIG_FILE, "add", "model.filters", {"": ""})),  # TypeError
    one("config", EditDocument(CONFIG_FILE, "set", "model.filters.0", 0)),  # names no file
    one("config", RawText(CONFIG_FILE, "billion_laughs", 5)),  # hangs
    # The saved schedule cannot be built: the refusal names the checkpoint (2,000-case run).
    one("config", EditDocument(CONFIG_FILE, "retype", "resolved_schedule.decay_steps", "list")),
)
@given(case=cases("config"))
def test_config_mutations_are_refused_or_resumed_correctly(fuzz_session, case):
    fuzz_case(fuzz_session, case)


@pytest.mark.slow
@FUZZ
@examples(
    *(one("h5", EditH5(OPTIMIZER_FILE, op, 1)) for op in OUTSIDE_DATA),  # resumed from
    one("h5", EditH5(OPTIMIZER_FILE, "rename", 1)),  # KeyError
    one("h5", EditH5(OPTIMIZER_FILE, "group", 1)),  # AttributeError
    one("h5", EditH5(OPTIMIZER_FILE, "soft_link_loop", 1)),  # RuntimeError
    one("h5", RawH5(MODEL_FILE, "zero")),  # OSError from Keras' load_weights
    one("h5", RawH5(OPTIMIZER_FILE, "text")),  # OSError from h5py
    one("h5", EditH5(MODEL_FILE, "external_storage", 1)),  # refused, but the reason is cut off
)  # fmt: skip
@given(case=cases("h5"))
def test_hdf5_mutations_are_refused_or_resumed_correctly(fuzz_session, case):
    fuzz_case(fuzz_session, case)


@pytest.mark.slow
@FUZZ
@examples(
    one("filesystem", ReplaceFile(CONFIG_FILE, "symlink_loop")),  # OSError ELOOP
    one("filesystem", ReplaceFile(CONFIG_FILE, "fifo")),  # hangs: read_checkpoint_config
    one("filesystem", ReplaceFile(OPTIMIZER_FILE, "fifo")),  # hangs: inspect
)
@given(case=cases("filesystem"))
def test_file_system_mutations_are_refused_or_resumed_correctly(fuzz_session, case):
    fuzz_case(fuzz_session, case)


@pytest.mark.slow
@FUZZ
@examples(
    one("pointer", WritePointer("latest", b"\xff")),  # UnicodeDecodeError in read_pointer
    one("pointer", WritePointer("best", b"step-" + b"9" * 300)),  # OSError in verify
    one("pointer", WritePointer("best", replacement="symlink_secret")),  # verify shows it
    one("pointer", WritePointer("latest", replacement="fifo")),  # hangs: list, verify
)
@given(case=cases("pointer"))
def test_pointer_mutations_leave_the_tools_and_the_resume_sound(fuzz_session, case):
    fuzz_case(fuzz_session, case)


@pytest.mark.slow
@settings(FUZZ, max_examples=20)
@given(case=cases())
def test_every_mutation_changes_the_copy(fuzz_session, case):
    """No mutation is a silent no-op: what the readers are judged on really differs."""
    from devtools.fuzz.source import copy_case

    session = fuzz_session
    session.count += 1
    dirs = copy_case(session.source, session.work / "changes" / f"case-{session.count}")
    before = _contents(dirs.root)
    try:
        session.apply(case, Context(dirs, session.canary))
    except NotApplicable:
        assume(False)
    if not all(isinstance(m, Nothing) for m in case.mutations):
        assert _contents(dirs.root) != before, case


def _contents(root: Path) -> dict:
    """A snapshot without times: what a mutation changed, not merely when it wrote."""
    return {path: (kind, size, content) for path, (kind, size, _, content) in
            snapshot(root).items()}  # fmt: skip


@pytest.mark.slow
def test_the_command_fuzzes_a_given_run_and_ends_with_the_figure(fuzz_session, tmp_path, capsys):
    from devtools.fuzz.__main__ import main

    source = str(fuzz_session.source.run_dir)
    status = main(["--cases", "3", "--source", source, "--work-dir", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = FIGURE.match(last)
    assert match and match.group(1) == "3", last
    failed = any(int(n) for n in match.groups()[1:]) or "," in last.split("files changed")[1]
    assert status == (1 if failed else 0)
    assert "FUZZ_CANARY_SECRET" in os.environ  # the session's canary is armed again
