"""The ``rshell-server`` command line: its flags, parsed by click, handed to
rshell.server.main.  The one module of rshell.cli that imports rshell.server."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from rshell.cli.commands import CONTEXT, invoke, version_option


@click.command(context_settings=CONTEXT)
@click.option("--bind", "binds", multiple=True, metavar="HOST:PORT",
              help="Address to listen on, repeatable [127.0.0.1:7722]; IPv6 as [::1]:7722.")
@click.option("--ssh-bind", "ssh_binds", multiple=True, metavar="HOST:PORT",
              help="Also serve SSH-2 (OpenSSH clients) here, repeatable.")
@click.option("--state-dir", metavar="DIR",
              help="Host key and authorized_keys [$RSHELL_HOME/server].")
@click.option("--authorized-keys", metavar="FILE", help="[STATE_DIR/authorized_keys]")
@click.option("--no-tls", is_flag=True, help="Serve plain TCP (insecure, loud warning).")
@click.option("--no-auth", is_flag=True, help="Run commands for anyone who connects (insecure).")
@click.option("--allow-unauthenticated-remote", is_flag=True,
              help="Permit --no-auth on a non-loopback address.")
@click.option("--timeout", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Default per-command time limit in seconds (0 = none).")
@click.option("--max-output", type=click.IntRange(0), default=0, show_default=True,
              help="Output bytes per command (0 = unlimited).")
@click.option("--max-connections", type=click.IntRange(1), default=100, show_default=True,
              help="Simultaneous connections; beyond, 'server busy'.")
@click.option("--max-unauthenticated", type=click.IntRange(1), default=64, show_default=True,
              help="Connections still authenticating; beyond, the oldest idle one is cut off.")
@click.option("--per-source-penalties", type=click.Choice(["yes", "no"]), default="yes",
              show_default=True,
              help="Refuse, for a growing time, a source whose handshakes keep failing.")
@click.option("--penalty-max", type=click.FloatRange(0, min_open=True), default=600.0,
              show_default=True, help="Longest a penalized source is refused, in seconds.")
@click.option("--idle-timeout", type=click.FloatRange(0), default=3600.0, show_default=True,
              help="Close a session idle this long between commands (0 = never).")
@click.option("--max-commands", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Commands per connection before it must reconnect.")
@click.option("--max-sessions", type=click.IntRange(1), default=10, show_default=True,
              help="Concurrent channels per SSH connection (sshd's MaxSessions).")
@click.option("--auth-timeout", type=click.FloatRange(0, min_open=True), default=10.0,
              show_default=True, help="Seconds to complete the handshake.")
@click.option("--shutdown-grace", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds running commands get to finish on SIGTERM.")
@click.option("--shell", default="/bin/sh", show_default=True)
@click.option("--home", metavar="DIR",
              help="Sessions start here, as HOME [the account's, from the password database].")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--audit-log", metavar="FILE", help="Append one JSON line per event.")
@click.option("--record-dir", metavar="DIR",
              help="Record every terminal session here as an asciicast v2 file (0600).")
@click.option("--record-input", is_flag=True,
              help="Record what clients type too (sensitive: passwords typed at prompts).")
@click.option("--strict-modes", type=click.Choice(["yes", "no"]), default="yes",
              show_default=True,
              help="Refuse files other accounts could write (as sshd); 'no' is insecure.")
@version_option("--version")
def server_command(**opts: Any) -> int:
    """Serve rshell commands: run them, stream their output, report their status."""
    from rshell.server.main import run_server

    return run_server(**opts)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``rshell-server``."""
    args = list(sys.argv[1:] if argv is None else argv)
    invoke(server_command, args, "rshell-server")
