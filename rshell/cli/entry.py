"""Entry point of ``rshell``: the click-free fast path, or click's full command line.

Must not import click at module level: ``rshell HOST -c COMMAND`` (exactly
that form) never loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from rshell.cli.common import SUBCOMMANDS, guarded, sane_descriptors


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``rshell``: the fast path, or click's full command line."""
    sane_descriptors()
    args = list(sys.argv[1:] if argv is None else argv)
    # One plain target only: a list, a range or a @group is a fleet (click's path).
    if len(args) == 3 and args[1] == "-c" and not args[0].startswith(("-", "@", "[")) \
            and args[0] not in SUBCOMMANDS and "," not in args[0] and "[" not in args[0]:
        target, command = args[0], args[2]
        from rshell.cli.oneshot import run_command

        guarded(lambda: run_command(target, command), "rshell")
    from rshell.cli.commands import main as full

    full(args)
