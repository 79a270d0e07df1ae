"""Batch mode: one command per line over one connection, ``cd`` persisting.

Must not import click.
"""

from __future__ import annotations

from collections.abc import Iterable

from rshell.cli.output import fd_writer, report_error, write_json_line
from rshell.client.api import Connection


def commands(lines: Iterable[str]) -> Iterable[str]:
    """The commands in a batch: blank lines and ``#`` comments are skipped."""
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield text


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
