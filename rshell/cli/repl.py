"""The interactive prompt: readline editing, persistent history, Ctrl-C to the
remote command.

Must not import click.
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from rshell.cli.output import Writer, fd_writer, report_error
from rshell.client.api import Connection
from rshell.client.screen import visible
from rshell.errors import RemoteProtocolError
from rshell.result import Result

EXIT_WORDS = frozenset({"exit", "quit", "logout"})
HISTORY_LIMIT = 10000


def prompt_for(conn: Connection) -> str:
    """``user@host:cwd$ ``; the user and directories are the server's words,
    so every field is ``visible`` (a directory's name may hold escapes)."""
    home, cwd = conn.home, conn.cwd
    if home not in ("", "/") and (cwd == home or cwd.startswith(home + "/")):
        cwd = "~" + cwd[len(home) :]
    return f"{visible(conn.user)}@{visible(conn.host)}:{visible(cwd)}$ "


def interactive(
    conn: Connection,
    history: Path,
    timeout: float | None = None,
    reconnect: Callable[[], Connection] | None = None,
) -> int:
    """Read, run, print until exit/quit/Ctrl-D; return the last command's status.

    A session the server closed for idleness while the user sat at the prompt
    is reopened (``reconnect``) and the command sent again: it never ran.
    """
    import readline

    history.parent.mkdir(parents=True, exist_ok=True)
    try:
        readline.read_history_file(history)
    except (FileNotFoundError, OSError):
        pass
    readline.set_history_length(HISTORY_LIMIT)
    # Ctrl-C at the prompt drops the line, whatever the parent left us: an
    # ignored SIGINT is inherited across exec (a script's ``cmd &``, a
    # launcher), and Python then never raises KeyboardInterrupt.  A prompt
    # is interactive, as an interactive shell takes SIGINT back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out, err = fd_writer(1), fd_writer(2)
    status = 0
    while True:
        try:
            line = input(prompt_for(conn))
        except EOFError:
            sys.stdout.write("\n")
            break
        except KeyboardInterrupt:
            sys.stdout.write("^C\n")  # like bash: drop the line, new prompt
            continue
        command = line.strip()
        if not command:
            continue
        try:
            _remember(readline, history)
            leave = _exit_status(command, status)
            if leave is not None:
                status = leave
                break
            conn, result = _run_or_reconnect(conn, command, timeout, out, err, reconnect)
        except KeyboardInterrupt:  # in the instant before the command was sent
            sys.stdout.write("^C\n")
            continue
        report_error(result)
        status = result.exit_status
    _trim(history, HISTORY_LIMIT)
    return status


def _run_or_reconnect(
    conn: Connection, command: str, timeout: float | None, out: Writer, err: Writer,
    reconnect: Callable[[], Connection] | None,
) -> tuple[Connection, Result]:
    """Run ``command``; a session the server closed as idle is reopened in the
    same directory and the command sent again (it never ran)."""
    try:
        return conn, _run_interruptible(conn, command, timeout, out, err)
    except RemoteProtocolError as exc:
        if exc.code != "idle-timeout" or reconnect is None:
            raise
    sys.stderr.write("rshell: the session was idle too long; reconnecting\n")
    cwd = conn.cwd
    conn.close()
    conn = reconnect()
    if cwd != conn.cwd:
        conn.run(f"cd {shlex.quote(cwd)}")
    return conn, _run_interruptible(conn, command, timeout, out, err)


def _exit_status(command: str, last: int) -> int | None:
    """``exit``, ``quit``, ``exit N``: the status to leave with, else None."""
    words = command.split()
    if words[0] not in EXIT_WORDS or len(words) > 2:
        return None
    if len(words) == 1:
        return last
    return int(words[1]) & 0xFF if words[1].isdigit() else None


def _trim(history: Path, limit: int) -> None:
    """Keep the file's last ``limit`` lines, so it cannot grow forever."""
    try:
        lines = history.read_text(errors="surrogateescape").splitlines(keepends=True)
        if len(lines) > limit:
            history.write_text("".join(lines[-limit:]), errors="surrogateescape")
    except OSError:
        pass


def _remember(readline: object, history: Path) -> None:
    """Append the line just entered now, so history survives a crash."""
    try:
        if not history.exists():
            history.touch(mode=0o600)
        readline.append_history_file(1, history)  # type: ignore[attr-defined]
    except OSError:
        pass


def _run_interruptible(
    conn: Connection, command: str, timeout: float | None, out: Writer, err: Writer
) -> Result:
    def forward(signum: int, frame: FrameType | None) -> None:
        conn.send_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGINT, forward)
    try:
        return conn.run(command, timeout=timeout, on_stdout=out, on_stderr=err)
    finally:
        signal.signal(signal.SIGINT, previous)

