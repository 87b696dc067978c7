"""The command-line tools: ``python -m trainer <command>`` (one module per command).

This package holds the command table ``trainer.__main__`` dispatches from. What
the commands share lives in modules named for it: ``finding`` (runs and
checkpoints on disk), ``output`` (tables, JSON, new output files), ``plots``
(matplotlib figures), ``arguments`` (options several commands take), and
``keras_file`` (a plain Keras model file read as data, for ``rescue``); a
checkpoint's model is rebuilt by ``trainer.build``. No command imports another.
(Composing a config and importing Keras quietly are ``trainer.startup``'s.)
Importing this package is cheap: no TensorFlow, no Hydra, no NumPy; commands
import those when they need them.

Exit status, for every command (``trainer.exits``): 0 when all is well, 1 when
the thing checked is bad (``verify`` found a corrupt checkpoint) or the machine
refused a write (a full disk: ``StorageError``), 2 for bad input (a path that
does not exist, a directory that holds no checkpoint, an unknown name, an
output that exists), with one line ``error: ...`` on stderr.
"""

from __future__ import annotations

import argparse

from trainer.errors import UserError

# The command modules, in the order ``--help`` lists them. Each defines
# NAME, HELP, DESCRIPTION, add_arguments(parser) and run(args) -> exit status.
COMMAND_MODULES = (
    "list_runs",
    "inspect_checkpoint",
    "verify_checkpoints",
    "compare",
    "export",
    "rescue",
    "plot_schedule",
    "evaluate",
    "predict",
)


class ToolParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``error: ...`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see: {self.prog} --help)")
