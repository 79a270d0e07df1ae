"""Pseudo-terminals for commands: what a client asked for, opening one, sizing it.

A command on a terminal is one more kind of child (exec.child): its stdin and
stdout are the pty's master, it leads a session with the pty's slave as its
controlling terminal, and stdout and stderr arrive merged, as on any
terminal.  This module owns the pty itself: ``Pty`` (the request, checked
here once for both listeners), opening and sizing one, the character that
means end-of-file on it, and the account's login shell for a terminal that
asked for no command.

Must not import rshell.protocol, sockets or paramiko.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass

#: The largest window either wire may describe (a u16 on the native wire).
MAX_SIDE = 0xFFFF
#: TERM values are names of terminfo entries: short, printable, no path tricks.
MAX_TERM = 64
_WINSIZE = struct.Struct("HHHH")


@dataclass(frozen=True)
class Pty:
    """A terminal as a client asked for it: ``TERM`` and the window in cells."""

    term: str = "xterm"
    cols: int = 80
    rows: int = 24

    def problem(self) -> str | None:
        """Why this request cannot be honoured, or None.  An empty ``term`` is
        a terminal of unknown type (ssh with TERM unset): granted, as sshd
        does, with TERM left unset."""
        if len(self.term) > MAX_TERM or not all(
            c.isascii() and (c.isalnum() or c in "-_.+") for c in self.term
        ):
            return f"invalid TERM {self.term[:MAX_TERM]!r}"
        if not (0 <= self.cols <= MAX_SIDE and 0 <= self.rows <= MAX_SIDE):
            return f"invalid window size {self.cols}x{self.rows}"
        return None


def open_pty(pty: Pty) -> tuple[int, int]:
    """A new pty sized as asked: (master, slave), both close-on-exec."""
    master, slave = os.openpty()
    try:
        resize(master, pty.cols, pty.rows)
    except OSError:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def resize(master: int, cols: int, rows: int) -> None:
    """Set the window size; the kernel sends SIGWINCH to the foreground group
    when it changed (a zero side means unknown: left as it was, as sshd)."""
    if cols <= 0 or rows <= 0:
        return
    fcntl.ioctl(master, termios.TIOCSWINSZ, _WINSIZE.pack(min(rows, MAX_SIDE),
                                                          min(cols, MAX_SIDE), 0, 0))


def size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on ``fd``."""
    rows, cols, _, _ = _WINSIZE.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return cols, rows


def eof_char(master: int) -> bytes:
    """The byte that ends input on this terminal now (VEOF, ^D by default): what
    the client's end of stdin becomes, since a pty cannot be half-closed."""
    try:
        char = termios.tcgetattr(master)[6][termios.VEOF]
    except termios.error:
        return b"\x04"
    return char if isinstance(char, bytes) and char else b"\x04"


def child_setup(default_signals: tuple[int, ...]) -> Callable[[], None]:
    """What the child runs after setsid, before exec (Popen's preexec_fn):
    only system calls, no locks, no imports (it runs in a fork of a threaded
    process)."""

    def setup() -> None:
        # Signals start at their defaults, as posix_spawn's setsigdef does for
        # other commands: one the server inherited as ignored (SIGQUIT, say,
        # under a non-interactive launcher) would stay ignored across exec,
        # and ^\\ would do nothing.
        for signum in default_signals:
            signal.signal(signum, signal.SIG_DFL)
        # fd 0 (the pty's slave) becomes the controlling terminal, so the line
        # discipline's ^C, ^Z and ^\\ reach the foreground group and /dev/tty
        # opens (login_tty's TIOCSCTTY).
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return setup


def login_shell(fallback: str) -> tuple[str, str]:
    """The account's shell from the password database and the argv[0] that
    makes it a login shell (``-bash``), as sshd starts a terminal that asked
    for no command; ``fallback`` (the server's ``--shell``) without an entry."""
    import pwd

    try:
        shell = pwd.getpwuid(os.getuid()).pw_shell or fallback
    except KeyError:
        shell = fallback
    return shell, "-" + os.path.basename(shell)
