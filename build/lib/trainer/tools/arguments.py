"""Options several commands share: ``--import MODULE`` and ``--top-k K``."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_TOP_K = 5


def add_import_argument(parser: Any, what: str) -> None:
    """``--import MODULE`` (repeatable): modules that register the user's own ``what``."""
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help=f"a module that registers your own {what} (as imports=[...] in training)",
    )


def add_top_k_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--top-k",
        type=top_k_value,
        default=DEFAULT_TOP_K,
        metavar="K",
        help=f"how many best classes count (default {DEFAULT_TOP_K}; at most the class count)",
    )


def top_k_value(text: str) -> int:
    """``--top-k``'s value: an integer >= 1 (anything else is a one-line usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value
