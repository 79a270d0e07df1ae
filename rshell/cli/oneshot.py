"""The fast path: ``rshell TARGET -c COMMAND`` with every option at its default.

It is the commonest invocation and the one whose cold start is measured
against ``ssh HOST true``; in exactly that form ``cli.entry`` runs it here
without importing click (about 15 ms of a 90 ms cold start).

Must not import click.
"""

from __future__ import annotations

from rshell.cli.common import one_shot, open_client
from rshell.errors import UsageError


def run_command(target: str, command: str) -> int:
    """``rshell TARGET -c COMMAND`` with every option at its default."""
    if not command.strip():
        raise UsageError("empty command")
    with open_client(target) as conn:
        return one_shot(conn, command, as_json=False, quiet=False, timeout=None)
