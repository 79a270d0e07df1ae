"""Writing command output to local files descriptors, and the --json record.

Shared by one-shot, batch and prompt modes so they print identically.
Must not import click.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from rshell.client.screen import visible
from rshell.result import Result

Writer = Callable[[bytes | memoryview], None]


def fd_writer(fd: int) -> Writer:
    """A callback that writes every chunk at once to ``fd`` (no buffering, so
    output appears live)."""

    def write(data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    return write


def result_json(result: Result) -> str:
    """One ``--json`` line; undecodable bytes are escaped, never fatal.

    ASCII-only JSON: every character outside it is a \\u escape, so the line
    is valid whatever the terminal's encoding and whatever the command held
    (a surrogate standing for an undecodable byte included).
    """
    return json.dumps(
        {
            "host": result.host,
            "command": result.command,
            "exit_code": result.exit_code,
            "signal": result.signal,
            "stdout": result.stdout.decode("utf-8", "backslashreplace"),
            "stderr": result.stderr.decode("utf-8", "backslashreplace"),
            "error": result.error,
            "duration_s": round(result.duration, 6),
        },
    )


def write_json_line(result: Result) -> None:
    """Print one ``--json`` object, flushed (a consumer may be reading live)."""
    sys.stdout.write(result_json(result) + "\n")
    sys.stdout.flush()


def report_error(result: Result, quiet: bool = False) -> None:
    """Say ``command error`` on stderr, one line, when the result carries one
    (the server's words: shown, never obeyed)."""
    if result.error and not quiet:
        sys.stderr.write(f"rshell: command error: {visible(result.error)}\n")
        sys.stderr.flush()
