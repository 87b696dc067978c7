"""The oracle: run readers on a mutated copy and judge what they did.

For every case, every reader, four things must hold (the figure of
``python -m devtools.fuzz`` counts the cases that break each):

(a) no traceback: nothing escapes but the reader's own refusal (``UserError``,
    or what its contract names); a command exits 0, 1 or 2 with no
    ``Traceback`` on stderr. A reader still running after its time limit
    counts as *hung*;
(b) nothing executed: no canary marker appears (``devtools.fuzz.canary``), the
    environment is unchanged and its secret shows up in nothing a reader
    printed, raised or returned (a secret from a file outside the run showing
    up counts as *leaked*);
(c) no file changed: a snapshot of every file around the case (the copy, the
    folder beside it, the pristine source run) is the same afterwards, no
    entry changed, deleted or created;
(d) a clear refusal or a correct result: a refusal is one line that names the
    checkpoint or a file (else *unclear*); a result is checked by the
    reader's ``judge`` (the resume path: the arrays restored are exactly the
    files', a benign change resumes as if nothing happened, a change that must
    be refused is not resumed; else *wrong*).

No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.fuzz.canary import Canary
from devtools.fuzz.source import changes, snapshot
from trainer.errors import UserError

OK, REFUSED = "ok", "refused"
TRACEBACK, HUNG, UNCLEAR, WRONG = "traceback", "hung", "unclear", "wrong"
EXECUTED, LEAKED, CHANGED = "executed", "leaked", "changed"
# The failure categories, in the order the figure lists them.
CATEGORIES = (TRACEBACK, EXECUTED, CHANGED, HUNG, WRONG, UNCLEAR, LEAKED)

FILE_WORDS = (
    "checkpoint",
    "manifest",
    "config",
    "trainer_state",
    ".h5",
    "latest",
    "best",
    "resume",
    "run ",
)
MAX_MESSAGE = 1000  # characters: past this a refusal is no longer one clear line
PACKAGE = Path(__file__).resolve().parent.parent  # trainer/


class Hung(BaseException):
    """A reader ran past its time limit (a BaseException, so ``except Exception`` in the
    reader cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Hung` in the main thread once ``seconds`` have passed (SIGALRM)."""

    def expired(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


Judgement = tuple[str, str] | None  # (category, one line) when the result is not right


@dataclass(frozen=True)
class Reader:
    """One way the project reads a checkpoint, as the oracle calls it.

    ``call()`` returns anything; ``allowed`` are the exceptions that are a
    refusal under the reader's contract; ``judge(value, stdout, stderr)`` says
    what is wrong with a result (None: nothing); ``may_refuse=False`` makes a
    refusal wrong (a benign change); ``names_file``: a refusal must name the
    checkpoint or a file (False for helpers whose callers add the path).
    """

    name: str
    call: Callable[[], Any]
    allowed: tuple[type[BaseException], ...] = (UserError,)
    judge: Callable[[Any, str, str], Judgement] | None = None
    may_refuse: bool = True
    names_file: bool = True
    limit: float | None = None  # seconds; None: the session's limit


@dataclass
class Outcome:
    """What one reader did: ``kind`` is OK, REFUSED or a failure category."""

    reader: str
    kind: str
    detail: str = ""  # one line: the refusal, the error, or what was wrong
    where: str = ""  # for a traceback: the innermost frame in the project (file:line)
    text: str = ""  # what it printed, raised and returned, for the leak checks

    @property
    def failed(self) -> bool:
        return self.kind not in (OK, REFUSED)

    @property
    def signature(self) -> str:
        """The failure class, without the values: a traceback's exception type and place
        (whichever reader hit it), or the reader and the kind of what went wrong."""
        if self.kind == TRACEBACK:
            return f"traceback {self.detail.split(':', 1)[0]} at {self.where or '?'}"
        gist = self.detail.split(" = ")[0].split(": ")[0][:70]
        return f"{self.reader} {self.kind}" + (f": {gist}" if self.kind != HUNG else "")


@dataclass
class Verdict:
    """Everything the oracle found about one case."""

    outcomes: list[Outcome] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def failures(self) -> list[tuple[str, str, str, str]]:
        """(category, failure class, one line, reader) for everything wrong, in CATEGORIES
        order."""
        found = [(o.kind, o.signature, o.detail, o.reader) for o in self.outcomes if o.failed]
        found += [(EXECUTED, f"{EXECUTED}: {line}", line, "") for line in self.executed]
        for line in self.leaked:
            reader = line.split(":")[0]
            found.append((LEAKED, f"{reader} {LEAKED}", line, reader))
        for line in self.changed:
            what, path = line.split(" ", 1)
            found.append((CHANGED, f"{CHANGED}: {what} {Path(path).name}", line, ""))
        return sorted(found, key=lambda f: CATEGORIES.index(f[0]))

    @property
    def ok(self) -> bool:
        return not self.failures()

    def categories(self) -> set[str]:
        return {failure[0] for failure in self.failures()}


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def project_frame(error: BaseException) -> str:
    """The innermost frame of the traceback in the project (not the fuzzer): file:line name."""
    frames = traceback.extract_tb(error.__traceback__)
    fuzz = PACKAGE / "fuzz"
    for frame in reversed(frames):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(PACKAGE) and not path.is_relative_to(fuzz):
            return f"{path.relative_to(PACKAGE.parent)}:{frame.lineno} {frame.name}"
    if not frames:
        return ""
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}"


def unclear(message: str, names_file: bool) -> str | None:
    """What keeps ``message`` from being one clear line, or None."""
    if not message.strip():
        return "an empty message"
    if "\n" in message.strip():
        return "more than one line"
    if len(message) > MAX_MESSAGE:
        return f"{len(message)} characters"
    if names_file and not any(word in message.lower() for word in FILE_WORDS):
        return "names neither the checkpoint nor a file"
    if message.rstrip().endswith(":"):
        return "stops where its reason should start"
    return None


def run_reader(reader: Reader, limit: float) -> Outcome:
    """Call ``reader`` with its output captured and a time limit; classify what it did."""
    out, err = io.StringIO(), io.StringIO()
    value: Any = None
    try:
        with (
            time_limit(reader.limit or limit),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            value = reader.call()
            judgement = _judge(reader, value, out.getvalue(), err.getvalue())
    except Hung as error:
        return Outcome(reader.name, HUNG, str(error), text=out.getvalue() + err.getvalue())
    except KeyboardInterrupt:
        raise
    except reader.allowed as error:
        text = out.getvalue() + err.getvalue() + str(error)
        message = str(error)
        if not reader.may_refuse:
            detail = f"refused a benign change: {message[:300]}"
            return Outcome(reader.name, WRONG, detail, text=text)
        problem = unclear(message, reader.names_file)
        if problem:
            return Outcome(reader.name, UNCLEAR, f"{problem}: {message[:200]!r}", text=text)
        return Outcome(reader.name, REFUSED, message[:300], text=text)
    except BaseException as error:
        text = out.getvalue() + err.getvalue() + str(error)
        return Outcome(reader.name, TRACEBACK, first_line(error), project_frame(error), text)
    text = out.getvalue() + err.getvalue() + _text_of(value)
    if judgement:
        return Outcome(reader.name, judgement[0], judgement[1], text=text)
    return Outcome(reader.name, OK, text=text)


def _judge(reader: Reader, value: Any, out: str, err: str) -> Judgement:
    if reader.judge is None:
        return None
    try:
        return reader.judge(value, out, err)
    except Exception as error:  # the result could not even be checked: it is not right
        return WRONG, f"cannot check the result ({first_line(error)})"


def _text_of(value: Any) -> str:
    try:
        return repr(value)[: 1 << 20]
    except Exception:  # a value whose repr fails still was returned: nothing to search
        return ""


def check_case(
    readers: Sequence[Reader],
    canary: Canary,
    roots: Sequence[Path],
    limit: float,
) -> Verdict:
    """Run every reader on a case and apply (a)-(d) of the module docstring.

    ``roots``: every tree whose files must be unchanged afterwards.
    """
    canary.reset()
    environment = dict(os.environ)
    before = snapshot(*roots)
    verdict = Verdict(outcomes=[run_reader(reader, limit) for reader in readers])
    verdict.changed = changes(before, snapshot(*roots))
    verdict.executed = [f"canary marker {name}" for name in canary.fired()]
    if dict(os.environ) != environment:
        verdict.executed.append("the environment was changed")
        os.environ.clear()
        os.environ.update(environment)
    for outcome in verdict.outcomes:
        if canary.leaked(outcome.text):
            verdict.executed.append(f"{outcome.reader} showed a value of the environment")
        if canary.file_secret in outcome.text:
            verdict.leaked.append(f"{outcome.reader}: showed the content of a file outside the run")
    canary.reset()
    return verdict
