"""An interactive command on a remote terminal, as an object (``Connection.terminal``).

The command runs through the same ``Connection`` exchange as ``run`` (one
contract, both backends), driven by whichever thread calls in, under a
lock: ``read`` resumes the exchange until output comes or its timeout
passes (the backend gives control back at ``Wakeup.deadline``), and
``write``, ``resize`` and ``close_input`` resume it for an instant so that
what they did leaves at once.  Keystrokes go through a local pipe the
backend's loop watches, so a ``write`` from another thread while one reads
is sent by the reading thread.  No thread of its own: a keystroke and its
echo cost no hand-off between threads.  While nobody reads, nobody drives
the exchange, and the server holds the command's output back (back-pressure
end to end).  ``wait`` returns the ``Result``, with whatever output ``read``
did not take as its stdout.

Must not import click, paramiko, cryptography or the server side.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Generator, Mapping
from typing import Protocol

from rshell.client.backend import STOP_GRACE, Chunk, Finish, Pty, Wakeup
from rshell.client.stdin import Pump, StdinSource
from rshell.errors import CommandTimeout, RshellError, UsageError
from rshell.result import Result

#: Output gathered by one turn of the exchange before the caller gets it.
_ENOUGH = 1 << 16


class Connection(Protocol):
    """What a Terminal needs of its client.api.Connection (not imported: it
    imports this module)."""

    _wake: Wakeup

    def resize(self, cols: int, rows: int) -> None: ...

    def send_signal(self, signum: int) -> None: ...

    def _exchange(self, command: str, stdin: StdinSource, cwd: str | None,
                  env: Mapping[str, str] | None, timeout: float | None,
                  pty: Pty | None = None) -> Generator[Chunk, None, Finish]: ...

    def _result(self, command: str, finish: Finish, out: bytes, err: bytes, seen: int,
                started: float) -> Result: ...


class _Keys(Pump):
    """What ``write`` sends: a pipe the backend's loop watches."""

    def __init__(self) -> None:
        r, self.writer = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self.fd: int | None = r
        self._r = r

    def read(self, n: int) -> bytes | None:
        try:
            return os.read(self._r, n) or None
        except BlockingIOError:
            return b""

    def close_writer(self) -> None:
        if self.writer >= 0:
            os.close(self.writer)
            self.writer = -1

    def close_all(self) -> None:
        self.close_writer()
        if self._r >= 0:
            os.close(self._r)
            self._r = -1
            self.fd = None


class Terminal:
    """A command on a remote terminal: ``write``, ``read``, ``read_until``,
    ``resize``, ``close_input``, ``close``, ``wait``; a context manager that
    closes.  Attributes: ``command``, ``result`` (None until it ended)."""

    def __init__(self, conn: Connection, command: str, pty: Pty, cwd: str | None,
                 env: Mapping[str, str] | None, timeout: float | None) -> None:
        self.command = command
        self.result: Result | None = None
        self._conn = conn
        self._rest = bytearray()  # output taken from the exchange, not yet read
        self._seen = 0
        self._lock = threading.RLock()
        self._started = time.monotonic()
        self._keys = _Keys()
        self._events: Generator[Chunk, None, Finish] | None = None
        try:
            self._events = conn._exchange(command, self._keys, cwd, env, timeout, pty)
            # The start request goes out now: a refusal of the start (a closed
            # connection, a server without terminals) is raised here.
            self._drive(0.0)
        except BaseException:
            self._keys.close_all()
            raise

    # ---- input ------------------------------------------------------------------------

    def write(self, data: bytes | str) -> None:
        """Send keystrokes (``str`` as UTF-8): ``"\\x03"`` is Ctrl-C, ``"\\r"`` Enter."""
        if isinstance(data, str):
            data = data.encode()
        if self._keys.writer < 0:
            raise UsageError("the terminal's input is closed")
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._keys.writer, view)
            except OSError:
                return  # the command is over: nobody reads any more
            view = view[n:]
            if view:
                self._nudge()  # a full pipe: let the exchange take some
        self._nudge()

    def resize(self, cols: int, rows: int) -> None:
        """The window is this size now: the remote foreground gets SIGWINCH."""
        self._conn.resize(cols, rows)
        self._nudge()

    def close_input(self) -> None:
        """End of input: the remote terminal reads its EOF character (^D)."""
        self._keys.close_writer()
        self._nudge()

    # ---- output -----------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> bytes:
        """Output as it arrives (what is there, at least one byte); ``b""``
        once the command ended and everything was read.  CommandTimeout if
        nothing came within ``timeout`` seconds."""
        with self._lock:
            if not self._rest and self.result is None:
                self._drive(timeout)
                if not self._rest and self.result is None:
                    raise CommandTimeout(f"no output from {self.command or 'the shell'!r} "
                                         f"within {timeout}s")
            data, self._rest = bytes(self._rest), bytearray()
            return data

    def read_until(self, marker: bytes | str, timeout: float | None = None) -> bytes:
        """Output up to and including ``marker``; CommandTimeout (with what
        came so far kept for the next read) if it does not come in time, and
        RshellError if the command ends first."""
        if isinstance(marker, str):
            marker = marker.encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                at = self._rest.find(marker)
                if at >= 0:
                    end = at + len(marker)
                    data = bytes(self._rest[:end])
                    del self._rest[:end]
                    return data
                if self.result is not None:
                    raise RshellError(f"the command ended before {marker!r}; "
                                      f"last output: {bytes(self._rest[-200:])!r}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise CommandTimeout(f"{marker!r} did not come within {timeout}s; "
                                         f"last output: {bytes(self._rest[-200:])!r}")
                self._drive(left)

    # ---- the end ----------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Result:
        """The Result once the command ended; output not yet read is its stdout.
        CommandTimeout if it still runs after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.result is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise CommandTimeout(f"{self.command or 'the shell'!r} still runs")
                self._drive(left)
            result, out = self.result, bytes(self._rest)
            if out:
                self._rest = bytearray()
                self.result = result = Result(
                    command=result.command, exit_code=result.exit_code,
                    signal=result.signal, stdout=result.stdout + out, stderr=b"",
                    host=result.host, error=result.error, duration=result.duration,
                )
            return result

    def close(self) -> Result | None:
        """Hang up, as a terminal closing does: SIGHUP; a command that outlives
        the grace is stopped as any command left early is (SIGTERM, SIGKILL).
        The Result, or None if it was given up on."""
        with self._lock:
            if self.result is None and self._events is not None:
                self._conn.send_signal(signal.SIGHUP)
                self._keys.close_writer()
                deadline = time.monotonic() + STOP_GRACE
                while self.result is None and time.monotonic() < deadline:
                    self._drive(deadline - time.monotonic())
                if self.result is None:
                    self._events.close()  # client.backend's stop; the connection goes on
                    self._events = None
            self._keys.close_all()
            return self.result

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped while it runs: stop it (the generator's own close), as a
        # stream dropped unfinished is.
        events = getattr(self, "_events", None)
        if events is not None and self.result is None:
            try:
                events.close()
            except Exception:  # noqa: BLE001  # at interpreter exit, say: nothing to do
                pass

    # ---- driving the exchange ---------------------------------------------------------

    def _nudge(self) -> None:
        """Let what was just asked for leave now, if no other thread is in the
        exchange (one that is sends it itself: its loop watches the pipe)."""
        if self._lock.acquire(blocking=False):
            try:
                self._drive(0.0)
            finally:
                self._lock.release()

    def _drive(self, timeout: float | None) -> None:
        """Run the exchange until output comes, the command ends, or ``timeout``
        (None: no limit) passes; output joins ``_rest``."""
        events = self._events
        if events is None or self.result is not None:
            return
        wake = self._conn._wake
        wake.deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        try:
            while True:
                _, data = next(events)
                if not data:
                    return  # the deadline: the caller's turn
                self._rest += data
                self._seen += len(data)
                if len(self._rest) >= _ENOUGH:
                    return
                wake.deadline = time.monotonic()  # what is there already, then return
        except StopIteration as stop:
            self.result = self._conn._result(self.command, stop.value, b"", b"", self._seen,
                                             self._started)
            self._events = None
            self._keys.close_all()
        except BaseException:
            self._events = None  # the exchange is over: it stopped what it could
            self._keys.close_all()
            raise
        finally:
            wake.deadline = None
