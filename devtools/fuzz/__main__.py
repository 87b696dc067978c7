"""``python -m devtools.fuzz --cases N``: fuzz a real checkpoint; print the one-line figure.

Trains a tiny run (once), then draws N cases with hypothesis (seeded:
the same ``--seed`` draws the same cases), runs every reader on each mutated
copy and judges it (``devtools.fuzz.oracle``). Prints progress, the failure
classes with a case of each, and last ``N cases, T tracebacks, E executed,
F files changed`` (then hung, wrong results, unclear refusals and leaks, if
any). Exit status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from devtools.fuzz.session import READER_SECONDS, RESUME_SECONDS, FuzzSession, Tally
from devtools.fuzz.source import SourceRun, train_source_run


def fuzz(session: FuzzSession, cases: int, seed: int, progress_every: int) -> Tally:
    """Run ``cases`` cases drawn from every kind with hypothesis seeded by ``seed``."""
    from hypothesis import HealthCheck, Phase, Verbosity, assume, given, settings
    from hypothesis import seed as seeded

    from devtools.fuzz.mutations import NotApplicable
    from devtools.fuzz.strategies import cases as all_cases

    tally = Tally()
    started = time.monotonic()

    @seeded(seed)
    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(all_cases())
    def one(case) -> None:
        try:
            result = session.run(case)
        except NotApplicable:
            assume(False)  # nothing to change in this copy: hypothesis draws another case
            return
        tally.add(result)
        if tally.cases % progress_every == 0 or tally.cases == cases:
            elapsed = time.monotonic() - started
            print(f"case {tally.cases}/{cases} ({elapsed:.0f} s): {tally.figure()}", flush=True)

    one()
    return tally


def report(tally: Tally, show: int) -> None:
    """The failure classes, the most cases first, each with its readers and shortest case."""
    if not tally.classes:
        return
    print(f"\n{len(tally.classes)} failure classes:")
    ranked = sorted(tally.classes.items(), key=lambda item: -len(item[1].examples))
    for signature, found in ranked[:show]:
        readers = f" [{', '.join(sorted(found.readers))}]" if found.readers else ""
        print(f"  {len(found.examples)}x {signature}{readers}")
        print(f"      e.g. {min(found.examples, key=len)[:500]}")
    if len(ranked) > show:
        print(f"  ... and {len(ranked) - show} more classes (--show N lists more)")
    kept = [str(r.kept) for r in tally.failed if r.kept][:5]
    if kept:
        print("failed cases kept in: " + ", ".join(kept))


def existing_run(run_dir: Path) -> SourceRun:
    """A run directory given with ``--source``; SystemExit with one line if it cannot serve."""
    source = SourceRun(root=run_dir.resolve(), run_dir=run_dir.resolve())
    if len(source.checkpoints) < 2:
        raise SystemExit(f"error: --source {run_dir} must be a run directory with 2 checkpoints")
    return source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="where to work (kept: failed cases stay)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="TFDS data_dir (default: temp)")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="fuzz copies of this run directory (two checkpoints or more) instead of training one",
    )
    parser.add_argument("--show", type=int, default=20, help="failure classes to list")
    parser.add_argument("--reader-seconds", type=float, default=READER_SECONDS)
    parser.add_argument("--resume-seconds", type=float, default=RESUME_SECONDS)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = options.work_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if options.source is not None:
            source = existing_run(options.source)
        else:
            print("training the source run (python train.py, 2 tiny epochs)...", flush=True)
            source = train_source_run(work, options.data_dir)
        session = FuzzSession(
            source,
            work,
            reader_seconds=options.reader_seconds,
            resume_seconds=options.resume_seconds,
            keep_failures=options.work_dir is not None,
            strict=False,
        )
        try:
            tally = fuzz(session, options.cases, options.seed, max(1, options.cases // 20))
        finally:
            session.close()
        report(tally, options.show)
        for error, count in session.mutation_errors.most_common(5):
            print(f"skipped {count} case(s): the fuzzer could not mutate ({error})")
        print(f"\n{tally.cases} cases in {time.monotonic() - started:.0f} s (seed {options.seed})")
    print(tally.figure())
    return 0 if tally.ok else 1


if __name__ == "__main__":
    sys.exit(main())
