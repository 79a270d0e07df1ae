"""Writing command output to local files descriptors, the --json record, and
what the client says about a command's end.

Shared by one-shot, batch and prompt modes so they print identically.
Must not import click.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from collections.abc import Callable, Collection

from rshell.client.screen import visible
from rshell.result import Result, signal_name, silent_failure

Writer = Callable[[bytes | memoryview], None]

#: Signals taken as the user's own when nobody kept count (batch, the prompt):
#: the interrupt key and a reader that went away, as bash reports neither.
USER_SIGNALS = frozenset({signal.SIGINT, signal.SIGPIPE})


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
    """One ``--json`` line; undecodable bytes never fatal, never lost.

    ``stdout``/``stderr`` are text.  Output that is not UTF-8 is shown there
    with each bad byte as ``\\xNN`` (for the eye: the text ``\\xf4`` reads the
    same), and its exact bytes are given beside it, base64, in
    ``stdout_base64``/``stderr_base64``; those keys are present only then.
    ASCII-only JSON: every character outside it is a \\u escape, so the line
    is valid whatever the terminal's encoding and whatever the command held
    (a surrogate standing for an undecodable byte included).
    """
    record: dict[str, object] = {
        "host": result.host,
        "command": result.command,
        "exit_code": result.exit_code,
        "signal": result.signal,
    }
    for name, data in (("stdout", result.stdout), ("stderr", result.stderr)):
        try:
            record[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            record[name] = data.decode("utf-8", "backslashreplace")
            record[f"{name}_base64"] = base64.b64encode(data).decode("ascii")
    record["error"] = result.error
    record["duration_s"] = round(result.duration, 6)
    return json.dumps(record)


def write_json_line(result: Result) -> None:
    """Print one ``--json`` object, flushed (a consumer may be reading live)."""
    sys.stdout.write(result_json(result) + "\n")
    sys.stdout.flush()


def restates_status(result: Result) -> bool:
    """Whether ``result.error`` only puts the status into words (``exit status 1
    with no output``, ``command not found``: result.silent_failure's rule),
    rather than saying the server stopped, refused or could not start it."""
    return result.error is not None and \
        result.error == silent_failure(result.exit_code, result.signal, 0)


def report_error(result: Result, quiet: bool = False, *,
                 sent: Collection[int] | None = None) -> None:
    """One-shot and batch: a line on stderr only where the server stopped,
    refused or could not start the command (its words: shown, never
    obeyed), or a signal the user did not send (``sent``; unknown: the
    interrupt key and a closed pipe are the user's) killed it.  A plain
    non-zero exit says nothing: its status is the exit code, and the
    command's own words, if any, are on stderr already (``if rshell h
    test -f x`` stays quiet).  After the user's own Ctrl-C on a terminal,
    only a newline, so the shell's prompt starts on a line of its own."""
    if quiet:
        return
    line = error_line(result, sent)
    if line is None and result.signal == signal.SIGINT and _stderr_is_terminal():
        line = ""  # the terminal echoed ^C: end its line
    _say(line)


def error_line(result: Result, sent: Collection[int] | None = None) -> str | None:
    """What ``report_error`` says about ``result`` (None: nothing), for a
    caller that prints it its own way (a fleet, with the host in front)."""
    return _server_said(result) or _unexpected_signal(result, sent)


def report_status(result: Result, *, sent: Collection[int] | None = None) -> None:
    """The prompt: as ``report_error``, and a command that failed without a
    word (the user sees nothing else) shows a short status, ``[exit 1]``;
    one the user's Ctrl-C ended gets the newline after the echoed ``^C``."""
    line = _server_said(result) or _unexpected_signal(result, sent)
    if line is None and result.signal == signal.SIGINT:
        line = ""
    elif line is None and result.error is not None and result.exit_code not in (126, 127):
        line = f"[{_short(result)}]"  # 126/127: the shell has said why itself
    _say(line)


def _server_said(result: Result) -> str | None:
    if result.error is None or restates_status(result):
        return None
    return f"rshell: command error: {visible(result.error)}"


def _unexpected_signal(result: Result, sent: Collection[int] | None) -> str | None:
    """A silent command a signal ended that the user did not send (with
    output, the user saw it end: its status says the rest)."""
    if result.error is None or not result.signal or \
            result.signal in (USER_SIGNALS if sent is None else sent):
        return None
    return f"rshell: command error: {visible(result.error)}"


def _short(result: Result) -> str:
    if result.signal:
        return f"killed by {signal_name(result.signal)}"
    return f"exit {result.exit_status}"


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except ValueError:
        return False


def _say(line: str | None) -> None:
    if line is None:
        return
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
