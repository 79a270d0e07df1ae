"""The fast path: ``rshell TARGET -c COMMAND`` with every option at its default.

It is the commonest invocation and the one whose cold start is measured
against ``ssh HOST true``; in exactly that form ``cli.entry`` runs it here
without importing click (about 15 ms of a 90 ms cold start).  A target
written as several hosts (a list, a range, a group) goes to the fleet from
here too, with the same defaults click's path passes.

Must not import click.
"""

from __future__ import annotations

from rshell.cli.common import one_shot, open_client
from rshell.errors import UsageError


def run_on_several(target: str, command: str) -> int:
    """``rshell TARGETS -c COMMAND`` for a list, a range or a group, every
    option at its default (``rshell.cli.commands`` passes the same ones)."""
    from rshell.fleet.targets import names_several

    if not names_several(target):
        return run_command(target, command)
    if not command.strip():
        raise UsageError("empty command")
    from rshell.cli.fleet import run_on_fleet
    from rshell.client.options import CONNECT_TIMEOUT

    return run_on_fleet(
        [target], hosts_files=(), inventory=None, parallel=None, command=command, lines=None,
        gather=False, out_dir=None, as_json=False, fail_fast=False, quiet=False, timeout=None,
        connect={"port": None, "identity": None, "known_hosts": None,
                 "strict_host_keys": False, "accept_new": False,
                 "connect_timeout": CONNECT_TIMEOUT, "tls": True, "auth": True})


def run_command(target: str, command: str) -> int:
    """``rshell TARGET -c COMMAND`` with every option at its default."""
    if not command.strip():
        raise UsageError("empty command")
    with open_client(target) as conn:
        return one_shot(conn, command, as_json=False, quiet=False, timeout=None)
