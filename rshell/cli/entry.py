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
    if len(args) == 3 and args[1] == "-c" and not args[0].startswith("-") \
            and args[0] not in SUBCOMMANDS:
        target, command = args[0], args[2]
        from rshell.cli.oneshot import run_command, run_on_several

        if target.startswith("@") or "," in target or "[" in target.lstrip("["):
            # A list, a range or a group (or [v6]:port, which run_on_several
            # hands back): a fleet, also without click.
            guarded(lambda: run_on_several(target, command), "rshell")
        guarded(lambda: run_command(target, command), "rshell")
    from rshell.cli.commands import main as full

    full(args)
