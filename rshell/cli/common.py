"""What both halves of the client command line share, click-free: opening a
client with the CLI's options, the one-shot run, the error policy (one line,
exit codes), terminal questions and Ctrl-C forwarding.

``rshell HOST -c COMMAND`` (cli.oneshot) and click's full command line
(cli.commands) both run through these functions, so the fast path cannot drift
from the full one (tests/test_cli.py checks the defaults too).

Must not import click.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from rshell.client.options import CONNECT_TIMEOUT
from rshell.client.screen import visible
from rshell.errors import EXIT_CONNECTION, HostKeyError, RshellError, UsageError

if TYPE_CHECKING:
    from rshell.client.api import Connection

#: First words that name a subcommand rather than a host.
SUBCOMMANDS = frozenset({"keygen", "fingerprint", "copy-id", "cp", "hosts"})


def open_client(
    target: str, *, port: int | None = None, identity: str | None = None,
    known_hosts: str | None = None, strict_host_keys: bool = False, accept_new: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT, tls: bool = True, auth: bool = True,
) -> Connection:
    """A connection as the command line opens it: questions only on a terminal."""
    from rshell.client.api import connect

    if "@" in target and not target.startswith("ssh://"):
        raise UsageError(
            f"{target}: user@ applies only to ssh:// targets (ssh://{target}); an rshell "
            "server runs commands as the account it runs as (it has no other accounts yet)"
        )
    return connect(
        target, port=port, identity=identity, passphrase=ask_passphrase,
        known_hosts=known_hosts, strict_host_keys=strict_host_keys, accept_new=accept_new,
        ask=ask_host if on_terminal() else None, connect_timeout=connect_timeout,
        tls=tls, auth=auth, on_warning=warn,
    )


def guarded(run: Callable[[], int | None], prog: str) -> NoReturn:
    """Run with rshell's error policy: one line on stderr, no traceback, and the
    exit status the error class names."""
    try:
        rv = run()
    except RshellError as exc:
        fail(str(exc), exc.exit_code, prog)
    except KeyboardInterrupt:  # said as click says it on the full path
        try:
            sys.stderr.write("\n")
        except (OSError, ValueError, AttributeError):
            pass
        fail("aborted", 130, prog)
    except BrokenPipeError:
        sys.exit(141)
    except OSError as exc:  # a local file or device: not a crash, one line
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}", EXIT_CONNECTION, prog)
    except UnicodeError as exc:
        fail(f"cannot decode or encode text: {exc}", EXIT_CONNECTION, prog)
    sys.exit(rv if isinstance(rv, int) else 0)


def fail(message: str, code: int, prog: str = "rshell") -> NoReturn:
    """Say ``prog: message`` on stderr and exit with ``code``.  One line, always,
    and inert: the message may quote a server (``visible``)."""
    line = visible(message)
    try:
        sys.stderr.write(f"{prog.split()[0]}: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # no stderr to write to: the exit status still says it
    sys.exit(code)


def sane_descriptors() -> None:
    """Open /dev/null on a closed 0, 1 or 2, as ssh does: otherwise the next
    pipe or socket we open would take that number, and writing "to stderr"
    would write into it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one


def on_terminal() -> bool:
    """Whether someone can be asked: stdin is a terminal and a controlling one
    is there to ask on.  A closed stdin (``<&-``, which Python leaves as
    ``sys.stdin = None``) is not a terminal, even inside one."""
    if sys.stdin is None:
        return False
    try:
        with open("/dev/tty"):
            return sys.stdin.isatty()
    except (OSError, ValueError):
        return False


def ask_passphrase(prompt: str) -> str | None:
    """Ask on the controlling terminal, as ssh does; None when there is none.

    Never from stdin: that is the command's data (``... | rshell h -c cat``),
    and getpass would fall back to it, echoing and eating it.
    """
    import getpass

    try:
        with open("/dev/tty", "r+b", buffering=0):
            pass
    except OSError:
        return None
    try:
        return getpass.getpass(prompt)
    except (EOFError, OSError):
        return None


def ask_host(address: str, fingerprint: str) -> bool:
    """Ask on the terminal, as OpenSSH does: ``yes``, ``no``, or the fingerprint
    itself pasted from a trusted source (exactly it: yes; another: refused,
    saying so)."""
    sys.stderr.write(
        f"The authenticity of host '{visible(address)}' can't be established.\n"
        f"Its host key fingerprint is {visible(fingerprint)}.\n"
    )
    question = b"Are you sure you want to continue connecting (yes/no/[fingerprint])? "
    while True:
        try:
            # Binary and unbuffered: a terminal is not seekable, so "r+" text fails.
            with open("/dev/tty", "rb+", buffering=0) as tty:
                tty.write(question)
                answer = tty.readline().decode(errors="replace").strip()
        except OSError:
            return False
        if answer == fingerprint:
            return True
        if answer.lower() in ("yes", "no"):
            return answer.lower() == "yes"
        if answer.partition(":")[0].upper() in ("SHA256", "MD5"):
            raise HostKeyError(
                f"the fingerprint you gave ({answer}) is not the host key of {address} "
                f"({fingerprint}); not connecting"
            )
        question = b"Please type 'yes', 'no' or the fingerprint: "


def ask_new_passphrase(tries: int = 3) -> str:
    """A new key's passphrase, asked on the terminal as ssh-keygen asks it:
    twice, the same both times; empty for none."""
    import getpass

    for _ in range(tries):
        first = getpass.getpass("Enter passphrase (empty for no passphrase): ")
        if getpass.getpass("Enter same passphrase again: ") == first:
            return first
        sys.stderr.write("Passphrases do not match.  Try again.\n")
    raise UsageError("passphrases do not match")


def version_line(prog: str) -> str:
    """``--version``: ours, and the Python and OpenSSL (TLS) we run on."""
    import platform
    import ssl
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("rshell")
    except PackageNotFoundError:
        ours = "(version unknown)"
    return f"{prog} {ours} (Python {platform.python_version()}, {ssl.OPENSSL_VERSION})"


def warn(message: str) -> None:
    sys.stderr.write(f"rshell: WARNING: {visible(message)}\n")
    sys.stderr.flush()


def one_shot(conn: Connection, command: str, *, as_json: bool, quiet: bool,
             timeout: float | None) -> int:
    from rshell.cli.output import fd_writer, report_error, write_json_line

    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    with forward_sigint(conn.send_signal) as forward:
        if as_json:
            result = conn.run(command, stdin=stdin, timeout=timeout)
            write_json_line(result)
        else:
            out = _pipe_safe(fd_writer(1), forward.send)
            result = conn.run(command, stdin=stdin, timeout=timeout,
                              on_stdout=out, on_stderr=fd_writer(2))
            report_error(result, quiet, sent=forward.sent)
    return int(result.exit_status)


def on_terminal_once(conn: Connection, command: str, *, escape: int | None, quiet: bool,
                     timeout: float | None) -> int:
    """``rshell -t``: ``command`` (empty: the login shell) on a remote terminal;
    the exit status is the remote one, 128+N if SIGTERM/SIGHUP (N) ended us."""
    from rshell.cli.output import report_error
    from rshell.cli.tty import run_on_terminal
    from rshell.terminal.local import Hangup

    try:
        result = run_on_terminal(conn, command, escape=escape, timeout=timeout)
    except Hangup as exc:
        return 128 + exc.signum
    report_error(result, quiet, sent={signal.SIGINT})
    return int(result.exit_status)


def _pipe_safe(write: Callable[[Any], None], send_signal: Callable[[int], None]) -> Any:
    """Once our stdout is gone (``| head``), tell the command, as a pipe would."""
    broken = False

    def write_or_signal(data: Any) -> None:
        nonlocal broken
        if broken:
            return
        try:
            write(data)
        except BrokenPipeError:
            broken = True
            send_signal(signal.SIGPIPE)

    return write_or_signal


#: Seconds within which three Ctrl-C give up on a command; ``RSHELL_CTRL_C_WINDOW``
#: widens it for a slow terminal (or a loaded test machine).
CTRL_C_WINDOW = 2.0


def ctrl_c_window() -> float:
    try:
        return max(0.0, float(os.environ.get("RSHELL_CTRL_C_WINDOW", CTRL_C_WINDOW)))
    except ValueError:
        return CTRL_C_WINDOW


class forward_sigint:
    """While running a command, Ctrl-C goes to the remote command, not to us;
    three presses within ``ctrl_c_window()`` seconds give up locally (the
    caller stops the command on the server), for a command that ignores SIGINT."""

    def __init__(self, send: Callable[[int], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._clock = clock
        self._window = ctrl_c_window()
        self._previous: Any = None
        self._presses: list[float] = []
        #: The signals the user sent (Ctrl-C; SIGPIPE for a reader gone), so
        #: that a command they ended is not reported as killed.
        self.sent: set[int] = set()

    def send(self, signum: int) -> None:
        self.sent.add(signum)
        self._send(signum)

    def __enter__(self) -> forward_sigint:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.press()

        self._previous = signal.signal(signal.SIGINT, handler)
        return self

    def press(self) -> None:
        """One Ctrl-C: forwarded, or the third within the window: KeyboardInterrupt."""
        now = self._clock()
        self._presses = [t for t in self._presses if now - t < self._window] + [now]
        if len(self._presses) >= 3:
            raise KeyboardInterrupt
        self.send(signal.SIGINT)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)
