"""The interactive prompt: readline editing, persistent history, Ctrl-C to the
remote command.

A command is what a shell would read as one (shellwords.CommandReader, as
in a batch): a line that does not complete it gets the continuation prompt
``> ``, and the lines go together once it is complete; Ctrl-C there drops
them, Ctrl-D sends them as they are (the shell says what is missing).
History keeps the whole command as one entry.

On a local terminal (stdin and stdout both terminals, and no ``-T``), each
command runs on a remote terminal, as ``ssh -t`` runs one (cli.tty): the
keyboard is forwarded while it runs, so vim, top, less, python3 and
password prompts work, and output arrives as a terminal shows it (stdout
and stderr merged); the prompt comes back when it ends.  ``rshell -T HOST``
runs commands without one: their stdin is then never the terminal (a
program that reads it sees EOF) and stdout and stderr stay apart.

Either way Ctrl-C goes to the running command (a keystroke on a terminal,
SIGINT without one); three within two seconds give up on it (the one-shot's
rule, cli.common.forward_sigint; counted in the keystrokes on a terminal):
the client stops it on the server (SIGTERM, then SIGKILL; client.api) and
the prompt comes back on the same connection, or on a new one in the same
directory if the old one had to be closed.  On a terminal, ``~.`` after a
newline leaves (ssh's escapes, ``-e``).

Must not import click.
"""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rshell.cli.common import forward_sigint
from rshell.cli.output import Writer, fd_writer, report_status
from rshell.client.api import Connection
from rshell.client.screen import visible
from rshell.errors import RemoteProtocolError
from rshell.result import Result
from rshell.shellwords import CommandReader
from rshell.terminal.local import Hangup

EXIT_WORDS = frozenset({"exit", "quit", "logout"})
HISTORY_LIMIT = 10000
#: The continuation prompt, as sh's PS2.
CONTINUATION = "> "
#: The exit status of a command given up on (as one-shot's "aborted").
ABANDONED = 130


class _Abandoned(Exception):
    """Three Ctrl-C gave up on the running command; it was stopped."""


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
    terminal: bool = False,
    escape: int | None = ord("~"),
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
    readline.set_auto_history(False)  # one entry per command, not per line (_remember)
    # Ctrl-C at the prompt drops the line, whatever the parent left us: an
    # ignored SIGINT is inherited across exec (a script's ``cmd &``, a
    # launcher), and Python then never raises KeyboardInterrupt.  A prompt
    # is interactive, as an interactive shell takes SIGINT back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out, err = fd_writer(1), fd_writer(2)
    if terminal and not conn.terminals:
        sys.stderr.write(f"rshell: {visible(conn.address)} offers no terminals (its "
                         "rshell-server predates them): commands run without one\n")
    run = _on_terminal(escape) if terminal else _run_interruptible
    status = 0
    # The prompt of the connection in use now (a reconnect replaces it).
    for command in _commands(readline, history, lambda: prompt_for(conn)):  # noqa: B023
        try:
            leave = _exit_status(command, status)
            if leave is not None:
                status = leave
                break
            conn, result = _run_or_reconnect(conn, command, timeout, out, err, reconnect, run)
        except Hangup as exc:  # SIGTERM/SIGHUP while a command had the terminal
            status = 128 + exc.signum
            break
        except KeyboardInterrupt:  # in the instant before the command was sent
            sys.stdout.write("^C\n")
            continue
        except _Abandoned:
            sys.stdout.flush()
            sys.stderr.write("\nrshell: command abandoned (three Ctrl-C); "
                             "the server stopped it\n")
            status = ABANDONED
            continue
        report_status(result)
        status = result.exit_status
    _trim(history, HISTORY_LIMIT)
    return status


def _commands(readline: object, history: Path,
              conn_prompt: Callable[[], str]) -> Iterator[str]:
    """Complete commands as the user types them, each remembered whole;
    ends at Ctrl-D on an empty prompt."""
    reader = CommandReader()
    lines: list[str] = []
    while True:
        try:
            line = input(CONTINUATION if reader.pending else conn_prompt())
        except EOFError:
            sys.stdout.write("\n")
            if not reader.pending:
                return
            rest = reader.flush()  # unfinished: the shell says what is missing
            _remember(readline, history, "\n".join(lines))
            lines = []
            if rest is not None:
                yield rest
            continue
        except KeyboardInterrupt:
            sys.stdout.write("^C\n")  # like bash: drop the line(s), new prompt
            if reader.pending:
                _remember(readline, history, "\n".join(lines))
                reader.flush()
                lines = []
            continue
        for part in line.split("\n"):  # a recalled entry may hold several lines
            lines.append(part)
            command = reader.add(part)
            if command is None:
                if not reader.pending:
                    lines = []  # a blank line: nothing to remember
                continue
            _remember(readline, history, "\n".join(lines))
            lines = []
            if command.strip():
                yield command.strip()


Runner = Callable[[Connection, str, "float | None", Writer, Writer], Result]


def _run_or_reconnect(
    conn: Connection, command: str, timeout: float | None, out: Writer, err: Writer,
    reconnect: Callable[[], Connection] | None, run: Runner,
) -> tuple[Connection, Result]:
    """Run ``command``; a session the server closed as idle is reopened in the
    same directory and the command sent again (it never ran)."""
    if conn.closed and reconnect is not None:  # closed while giving up on a command
        conn = _reopen(conn, reconnect, "the connection was closed")
    try:
        return conn, run(conn, command, timeout, out, err)
    except RemoteProtocolError as exc:
        if exc.code != "idle-timeout" or reconnect is None:
            raise
    conn = _reopen(conn, reconnect, "the session was idle too long")
    return conn, run(conn, command, timeout, out, err)


def _reopen(conn: Connection, reconnect: Callable[[], Connection], why: str) -> Connection:
    """A new session in the old one's directory."""
    sys.stderr.write(f"rshell: {why}; reconnecting\n")
    cwd = conn.cwd
    conn.close()
    conn = reconnect()
    if cwd != conn.cwd:
        conn.run(f"cd {shlex.quote(cwd)}")
    return conn


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


def _remember(readline: Any, history: Path, entry: str) -> None:
    """One history entry for the command just entered (its lines together),
    appended to the file now, so history survives a crash."""
    if not entry.strip():
        return
    readline.add_history(entry)
    try:
        if not history.exists():
            history.touch(mode=0o600)
        readline.append_history_file(1, history)
    except OSError:
        pass


def _on_terminal(escape: int | None) -> Runner:
    """Commands on a remote terminal, the keyboard theirs while they run; the
    third Ctrl-C within the window gives up on one, as without a terminal."""
    from rshell.cli.common import ctrl_c_window
    from rshell.cli.tty import run_on_terminal

    def run(conn: Connection, command: str, timeout: float | None, out: Writer,
            err: Writer) -> Result:
        if not conn.terminals:  # an older server (said once, at the start)
            return _run_interruptible(conn, command, timeout, out, err)
        try:
            return run_on_terminal(conn, command, escape=escape, timeout=timeout,
                                   ctrl_c_window=ctrl_c_window())
        except KeyboardInterrupt:
            raise _Abandoned from None

    return run


def _run_interruptible(
    conn: Connection, command: str, timeout: float | None, out: Writer, err: Writer
) -> Result:
    """Ctrl-C to the command; the third within the window gives up on it:
    the KeyboardInterrupt has left ``run``, which stopped the command."""
    with forward_sigint(conn.send_signal):
        try:
            return conn.run(command, timeout=timeout, on_stdout=out, on_stderr=err)
        except KeyboardInterrupt:
            raise _Abandoned from None

