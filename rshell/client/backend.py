"""What a client backend implements, and the few pieces both backends share.

``Connection`` (client.api) is the contract users see: ``run``, ``stream``,
``check``, ``Result``, ``cd`` bookkeeping and error reasons live there once.
A backend (client.native for rshell's protocol, ssh.client for any sshd)
does only I/O: it opens and authenticates (deciding host keys through
client.hostkeys), then for each ``Request`` yields output chunks as the
consumer takes them and returns a ``Finish``; it delivers the signals a
``Wakeup`` holds, stops a command its consumer left early, and closes.

Must not import anything above layer 0 but client.stdin, nor click,
paramiko or cryptography.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Protocol

from rshell.client.stdin import Pump
from rshell.errors import UsageError

if TYPE_CHECKING:
    from rshell.transfer.receive import Receiver
    from rshell.transfer.send import Sender

#: Which stream a chunk of output came from: the local descriptor it goes to.
STDOUT, STDERR = 1, 2
#: (STDOUT or STDERR, data): data is valid only until the next chunk is asked for.
Chunk = tuple[int, bytes | memoryview]
#: A command left early gets SIGTERM, and SIGKILL this long after (the server's
#: own kill grace); then its end is awaited at most ``STOP_WAIT`` more.
STOP_GRACE = 1.0
STOP_WAIT = 5.0


# Plain classes with slots, not dataclasses or NamedTuples: cheapest to define
# on a cold start, as cheap to build per command.


class Pty:
    """A terminal for a command: ``TERM`` and the window in cells."""

    __slots__ = ("term", "cols", "rows")

    def __init__(self, term: str, cols: int, rows: int) -> None:
        self.term, self.cols, self.rows = term, cols, rows


class Request:
    """One command as a backend runs it.  ``cwd`` is the caller's (relative
    ones against the session's); ``session_cwd`` is where the session is, for
    a backend whose server keeps no session (SSH); ``pty``: on a terminal,
    output merged into STDOUT (an empty command: the login shell)."""

    __slots__ = ("command", "cwd", "session_cwd", "env", "timeout", "stdin", "pty")

    def __init__(self, command: str, cwd: str | None, session_cwd: str,
                 env: dict[str, str] | None, timeout: float | None,
                 stdin: Pump | None, pty: Pty | None = None) -> None:
        self.command, self.cwd, self.session_cwd = command, cwd, session_cwd
        self.env, self.timeout, self.stdin, self.pty = env, timeout, stdin, pty


class Finish:
    """How a command ended, as the backend learnt it.  ``error`` is the reason
    the server (or the backend's own deadline) stopped or refused it, before
    the contract adds the silent-failure rule; ``cwd`` is the session's
    directory now (None: unchanged); ``duration`` None: the contract times it."""

    __slots__ = ("exit_code", "signal", "error", "cwd", "duration")

    def __init__(self, exit_code: int | None, signal: int | None = None,
                 error: str | None = None, cwd: str | None = None,
                 duration: float | None = None) -> None:
        self.exit_code, self.signal, self.error = exit_code, signal, error
        self.cwd, self.duration = cwd, duration


class Tally:
    """A copy as the backend saw it: files and bytes the server counted, and
    the files that failed there (path, reason)."""

    __slots__ = ("files", "size", "failures")

    def __init__(self) -> None:
        self.files = self.size = 0
        self.failures: list[tuple[str, str]] = []


class Backend(Protocol):
    """The I/O primitives under ``Connection``; attributes as it documents them."""

    host: str
    port: int
    address: str
    user: str
    server: str
    home: str
    host_fingerprint: str | None

    @property
    def closed(self) -> bool: ...

    @property
    def terminals(self) -> bool:
        """Whether the server can run a command on a terminal (``Request.pty``)."""
        ...

    def execute(self, request: Request, wake: Wakeup) -> Generator[Chunk, None, Finish]:
        """Run ``request``: chunks as they arrive, then the Finish.  Signals
        posted to ``wake`` while it runs go to the command.  While
        ``wake.deadline`` is set and has passed, a wait with nothing to
        deliver ends in an empty chunk (the only empty chunk ever yielded).

        Left early (the generator closed at a chunk, or an exception other
        than RshellError raised inside it: a KeyboardInterrupt from a signal
        handler), it stops the command before it ends: SIGTERM, SIGKILL
        after ``STOP_GRACE``, the rest of its output read away; the backend
        is then ready for the next command.  If the end cannot be seen within
        ``STOP_WAIT`` (or the connection fails meanwhile), the connection is
        closed instead, which ends the command on the server too."""
        ...

    def put(self, sender: Sender, remote: str, *, recursive: bool, preserve: bool,
            many: bool) -> Tally:
        """Send ``sender``'s entries to ``remote`` (relative: to the home).
        CopyFailed if the server refuses the copy as a whole."""
        ...

    def get(self, paths: list[str], receiver: Receiver, *, recursive: bool,
            preserve: bool) -> Tally:
        """Feed ``paths`` (relative: to the home) into ``receiver`` (open)."""
        ...

    def close(self) -> None: ...


class Wakeup:
    """Signals and window sizes for the running command, and a pipe that
    wakes the backend's loop: ``post`` and ``resize`` are safe from any
    thread and from a signal handler (they only store and write one byte);
    ``notify`` just wakes (paramiko's thread)."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signals: deque[int] = deque()
        # The latest size only; a deque's append and popleft are atomic, so a
        # resize from a signal handler or another thread is never lost between
        # the read and the clearing of a plain attribute.
        self._size: deque[tuple[int, int]] = deque(maxlen=1)
        #: Set by a consumer that drives ``execute`` itself and must get control
        #: back at this time (client.terminal's reads): a backend that is still
        #: waiting for the command then yields an empty chunk.
        self.deadline: float | None = None

    def post(self, signum: int) -> None:
        self._signals.append(signum)
        self.notify()

    def resize(self, cols: int, rows: int) -> None:
        """The terminal's new size; only the latest one counts."""
        self._size.append((cols, rows))
        self.notify()

    @property
    def pending(self) -> bool:
        """Whether a signal or a size waits (no system call: asked per keystroke)."""
        return bool(self._signals) or bool(self._size)

    def take_size(self) -> tuple[int, int] | None:
        """The size posted since the last call, if any."""
        try:
            return self._size.popleft()
        except IndexError:
            return None

    def notify(self) -> None:
        try:
            os.write(self._w, b"\0")
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed

    def take(self) -> list[int]:
        """Drain the pipe; the signals posted since the last call."""
        try:
            while os.read(self.fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        taken: list[int] = []
        while self._signals:
            taken.append(self._signals.popleft())
        return taken

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            os.close(self._w)
            self.fd = self._w = -1


def check_env(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """Refuse locally what a server would refuse by dropping the connection."""
    if env is None:
        return None
    checked = dict(env)
    for name, value in checked.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UsageError(f"env must map str to str, not {name!r}: {value!r}")
        if not name or "=" in name or "\0" in name + value:
            raise UsageError(f"invalid environment variable {name!r}")
    return checked
