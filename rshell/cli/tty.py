"""A command on a remote terminal from the command line: ``rshell -t`` and the prompt.

The local terminal goes raw for the command's time and comes back as it
was on every way out (terminal.local); keystrokes go to the remote
terminal as they are typed, escapes read out on the way (terminal.escape);
output is written as it comes; window changes follow.  Ctrl-C, Ctrl-Z and
Ctrl-\\ are keystrokes like any other: the remote terminal makes them
signals, for its foreground job.

Must not import click.
"""

from __future__ import annotations

import os
import sys

from rshell.cli.output import fd_writer
from rshell.client.api import Connection
from rshell.client.stdin import StdinSource
from rshell.result import Result
from rshell.terminal.escape import Escapes, KeyboardPump
from rshell.terminal.local import RawTerminal, window_size


def terminal_fd() -> int | None:
    """The local terminal to size from: stdin's, else stdout's; None if neither."""
    for fd in (0, 1):
        try:
            if os.isatty(fd):
                return fd
        except OSError:
            continue
    return None


def run_on_terminal(conn: Connection, command: str, *, escape: int | None,
                    timeout: float | None, ctrl_c_window: float | None = None) -> Result:
    """``command`` (empty: the login shell) on a remote terminal, the local one
    raw meanwhile.  Keystrokes are read from stdin when it is a terminal;
    otherwise (``-tt`` with a pipe) stdin is the command's input as it is,
    with no escapes.  ``ctrl_c_window``: the prompt's give-up rule."""
    sized = terminal_fd()
    size = window_size(sized) if sized is not None else None
    keyboard = sys.stdin is not None and os.isatty(0)
    stdin: StdinSource
    if keyboard:
        stdin = KeyboardPump(0, Escapes(escape), _say, conn.address, ctrl_c_window)
    else:
        stdin = None if sys.stdin is None else sys.stdin.buffer
    # Raw only for a keyboard (as ssh): with stdin a pipe (-tt), the local
    # terminal keeps its Ctrl-C for rshell itself; its size is still followed.
    with RawTerminal(0 if keyboard else None, on_resize=conn.resize, size_fd=sized):
        return conn.run(command, stdin=stdin, timeout=timeout, pty=True, size=size,
                        on_stdout=fd_writer(1))


def _say(text: str) -> None:
    """Local words while the terminal is raw (lines end in \\r\\n)."""
    os.write(2, text.encode())
