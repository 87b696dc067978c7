"""``python -m trainer <command>`` (or ``trainer <command>``): the checkpoint and run tools.

A thin dispatcher: each command lives in its own module of ``trainer.tools``
and imports what it needs (TensorFlow only where a model is built).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from trainer import __version__
from trainer.errors import StorageError, UserError
from trainer.exits import BAD_INPUT, report
from trainer.tools import COMMAND_MODULES, ToolParser

EPILOG = """\
exit status: 0 ok, 1 the thing checked is bad (e.g. verify found corruption) or
the machine refused a write (disk full, read-only), 2 bad input (one line
'error: ...' on stderr).
Run 'python -m trainer <command> --help' for the options of a command."""


def build_parser() -> ToolParser:
    parser = ToolParser(
        prog="trainer",
        description="Tools for the runs and checkpoints of keras-hydra-trainer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", parser_class=ToolParser)
    commands.required = True
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(f"trainer.tools.{module_name}")
        sub = commands.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line), run the command, return its exit status."""
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Hydra overrides after an option (`plot-schedule --out a.png schedule=cosine`)
            # are left over by argparse; commands that take overrides get them.
            if not getattr(args, "extra_overrides", False) or any(w.startswith("-") for w in extra):
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            args.overrides.extend(extra)
        return int(args.handler(args) or 0)
    except (UserError, StorageError) as error:
        return report(error)
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `trainer list ... | head` closed the pipe: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as git and the shell report it


if __name__ == "__main__":
    sys.exit(main())
