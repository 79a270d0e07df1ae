"""Batch mode: one command at a time over one connection, ``cd`` persisting.

A command is what a shell would read as one: it may span lines (quotes,
a backslash, a trailing ``|``/``&&``/``||``, here-documents, ``if``/``for``/
``while``/``case``/``{ }``/``( )`` and function bodies; shellwords.CommandReader).

Must not import click.
"""

from __future__ import annotations

from collections.abc import Iterable

from rshell.cli.output import fd_writer, report_error, write_json_line
from rshell.client.api import Connection
from rshell.shellwords import CommandReader


def commands(lines: Iterable[str]) -> Iterable[str]:
    """The complete commands in a batch; blank lines and comments alone are skipped."""
    reader = CommandReader()
    for line in lines:
        command = reader.add(line)
        if command is not None and _says_something(command):
            yield command
    rest = reader.flush()  # unfinished at the end: the shell says what is wrong
    if rest is not None and _says_something(rest):
        yield rest


def _says_something(command: str) -> bool:
    return any(s and not s.startswith("#") for s in (ln.strip() for ln in command.splitlines()))


def run_batch(
    conn: Connection,
    lines: Iterable[str],
    *,
    fail_fast: bool = False,
    as_json: bool = False,
    quiet: bool = False,
    timeout: float | None = None,
) -> int:
    """Run every command in order; the status is the last non-zero one (or the
    first failure's with ``fail_fast``)."""
    status = 0
    out, err = fd_writer(1), fd_writer(2)
    for command in commands(lines):
        if as_json:
            result = conn.run(command, timeout=timeout)
            write_json_line(result)
        else:
            result = conn.run(command, timeout=timeout, on_stdout=out, on_stderr=err)
            report_error(result, quiet)
        if not result.ok:
            status = result.exit_status
            if fail_fast:
                break
    return status
