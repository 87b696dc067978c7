"""A fuzz session: one source run, the canary, the resume path, and a case at a time.

:class:`FuzzSession` is made once (it trains nothing itself: give it a
``SourceRun``); :meth:`FuzzSession.run` takes a :class:`Case`, applies its
mutations to a fresh copy (file mutations, then the attacker's re-hash, then
manifest mutations), runs every reader through the oracle and returns a
:class:`CaseResult`. :class:`Tally` adds results up into the command's figure.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from devtools.fuzz.canary import Canary
from devtools.fuzz.mutations import Context, Mutation, NotApplicable
from devtools.fuzz.oracle import CATEGORIES, Hung, Verdict, check_case, first_line, time_limit
from devtools.fuzz.source import SourceRun, copy_case, rehash_manifest

READER_SECONDS = 5.0  # every reader answers a 70 KiB checkpoint in milliseconds
MUTATION_SECONDS = 30.0
RESUME_SECONDS = 15.0  # builds a model and restores it (well under a second)


@dataclass(frozen=True)
class Case:
    """What one case does to its copy, and how the resume is asked for."""

    kind: str
    mutations: tuple[Mutation, ...]
    rehash: bool = True  # the attacker re-hashes the manifest after the file mutations
    resume_via: str = "checkpoint"  # resume names the checkpoint, or its run directory

    def expect(self) -> str:
        """What the resume must do: benign, refuse or either (``Mutation.expect``)."""
        expectations = {m.expect() for m in self.mutations if m.touches_newest()}
        if "refuse" in expectations:
            return "refuse"
        return "benign" if expectations <= {"benign"} else "either"


EXPECTED = {
    "benign": "must resume exactly",
    "refuse": "must be refused",
    "either": "refused or resumed exactly",
}


@dataclass
class CaseResult:
    number: int
    description: str
    verdict: Verdict
    kept: Path | None = None  # the case's directory, kept for a look when it failed


class FuzzSession:
    """Runs cases against copies of ``source``; ``work`` holds the copies and the canary.

    ``keep_failures``: leave the directory of each failed case in place; ``strict``:
    an error of the fuzzer's own while mutating is raised (tests), else the case is
    skipped and the error counted in ``mutation_errors`` (the command).
    """

    def __init__(
        self,
        source: SourceRun,
        work: Path,
        *,
        reader_seconds: float = READER_SECONDS,
        resume_seconds: float = RESUME_SECONDS,
        keep_failures: bool = False,
        strict: bool = True,
    ) -> None:
        from devtools.fuzz.resume import ResumePath, differs_from_files

        self.source, self.work = source, Path(work)
        self.reader_seconds, self.resume_seconds = reader_seconds, resume_seconds
        self.keep_failures, self.strict = keep_failures, strict
        self.mutation_errors: Counter = Counter()
        self.canary = Canary.create(self.work / "canary")
        self.canary.install()
        self.resume_path = ResumePath(source, self.work / "scratch")
        self.count = 0
        # The reference: the pristine newest checkpoint resumed, restoring exactly its files.
        pristine = copy_case(source, self.work / "reference")
        with contextlib.redirect_stdout(io.StringIO()):  # "Resuming from ...": not news here
            self.reference = self.resume_path.resume(pristine.newest)
        problem = differs_from_files(self.reference)
        if problem:
            raise RuntimeError(f"the pristine checkpoint does not resume exactly: {problem}")

    def close(self) -> None:
        self.canary.uninstall()

    def run(self, case: Case) -> CaseResult:
        """Apply ``case`` to a fresh copy and judge every reader; NotApplicable if one of its
        mutations has nothing to change (the copy is removed)."""
        from devtools.fuzz.readers import tf_free_readers

        self.count += 1
        dirs = copy_case(self.source, self.work / "cases" / f"case-{self.count:05d}")
        try:
            description = self.apply(case, Context(dirs, self.canary))
        except Exception as error:
            shutil.rmtree(dirs.root, ignore_errors=True)
            if isinstance(error, NotApplicable) or self.strict:
                raise
            self.mutation_errors[first_line(error)] += 1
            raise NotApplicable(f"the fuzzer failed to mutate: {first_line(error)}") from None
        target = dirs.newest if case.resume_via == "checkpoint" else dirs.run_dir
        readers = tf_free_readers(dirs, target)
        readers.append(
            self.resume_path.reader(
                dirs, target, case.expect(), self.reference, self.resume_seconds
            )
        )
        verdict = check_case(
            readers, self.canary, [dirs.root, self.source.root], self.reader_seconds
        )
        kept = None
        if verdict.ok or not self.keep_failures:
            shutil.rmtree(dirs.root, ignore_errors=True)
        else:
            kept = dirs.root
        return CaseResult(self.count, description, verdict, kept)

    @staticmethod
    def apply(case: Case, ctx: Context) -> str:
        """Mutate ``ctx``'s copy as ``case`` says; a one-line description of what was done.

        A mutation that blocks (h5py opening a FIFO an earlier one made) gives up after
        MUTATION_SECONDS: NotApplicable, as if there were nothing to change.
        """
        try:
            with time_limit(MUTATION_SECONDS):
                done = [m.apply(ctx) for m in case.mutations if m.phase == "file"]
                if case.rehash:
                    for checkpoint in (ctx.dirs.newest, ctx.dirs.older):
                        rehash_manifest(checkpoint)
                done += [m.apply(ctx) for m in case.mutations if m.phase == "manifest"]
        except Hung:
            raise NotApplicable("a mutation blocked") from None
        rehashed = "re-hashed" if case.rehash else "not re-hashed"
        return (
            f"[{case.kind}] {'; '.join(done)} ({rehashed}; resume via {case.resume_via}, "
            f"{EXPECTED[case.expect()]})"
        )


@dataclass
class FailureClass:
    """Every case that failed one way, and the readers that did."""

    readers: set[str] = field(default_factory=set)
    examples: list[str] = field(default_factory=list)


@dataclass
class Tally:
    """Cases per failure category, and the failure classes with their cases."""

    cases: int = 0
    per_category: Counter = field(default_factory=Counter)
    classes: dict[str, FailureClass] = field(default_factory=dict)  # by signature
    failed: list[CaseResult] = field(default_factory=list)

    def add(self, result: CaseResult) -> None:
        self.cases += 1
        failures = result.verdict.failures()
        for category in {failure[0] for failure in failures}:
            self.per_category[category] += 1
        for _, signature, detail, reader in failures:
            found = self.classes.setdefault(signature, FailureClass())
            if reader:
                found.readers.add(reader)
            example = f"case {result.number}: {result.description} -> {detail}"
            if not found.examples or found.examples[-1] != example:
                found.examples.append(example)
        if failures:
            self.failed.append(result)

    def figure(self) -> str:
        """``N cases, T tracebacks, E executed, F files changed`` (and the rest, when any)."""
        counts = self.per_category
        text = (
            f"{self.cases} cases, {counts['traceback']} tracebacks, {counts['executed']} "
            f"executed, {counts['changed']} files changed"
        )
        for category in CATEGORIES[3:]:
            if counts[category]:
                text += f", {counts[category]} {_WORDS[category]}"
        return text

    @property
    def ok(self) -> bool:
        return not self.failed


_WORDS = {
    "hung": "hung",
    "wrong": "wrong results",
    "unclear": "unclear refusals",
    "leaked": "leaked",
}
