"""An interactive command on a remote terminal, as an object (``Connection.terminal``).

The command runs through the same ``Connection`` exchange as ``run`` (one
contract, both backends), driven by a thread of this object: what ``write``
sends goes through a local pipe the backend's loop watches, so a keystroke
leaves at once; output waits in a bounded queue for ``read``, and while
nobody reads, the backend stops reading and the server stops the command's
output (back-pressure end to end).  ``wait`` returns the ``Result``, with
whatever output ``read`` did not take as its stdout.

Must not import click, paramiko, cryptography or the server side.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Generator, Mapping
from typing import Protocol

from rshell.client.backend import STOP_GRACE, STOP_WAIT, Chunk, Finish, Pty
from rshell.client.stdin import Pump, StdinSource
from rshell.errors import CommandTimeout, RshellError, UsageError
from rshell.result import Result


class Connection(Protocol):
    """What a Terminal needs of its client.api.Connection (not imported: it
    imports this module)."""

    def resize(self, cols: int, rows: int) -> None: ...

    def send_signal(self, signum: int) -> None: ...

    def close(self) -> None: ...

    def _exchange(self, command: str, stdin: StdinSource, cwd: str | None,
                  env: Mapping[str, str] | None, timeout: float | None,
                  pty: Pty | None = None) -> Generator[Chunk, None, Finish]: ...

    def _result(self, command: str, finish: Finish, out: bytes, err: bytes, seen: int,
                started: float) -> Result: ...

#: Output chunks held for ``read`` before the remote command is held back.
_QUEUED = 64
_END = b""


class _Finished(Exception):  # noqa: N818  # a generator's return value, carried
    def __init__(self, finish: Finish) -> None:
        self.finish = finish


def _chunks(events: Generator[Chunk, None, Finish]) -> Generator[Chunk, None, None]:
    finish = yield from events
    raise _Finished(finish)


class _Keys(Pump):
    """What ``write`` sends: a pipe the backend's loop watches; ``asked`` is
    set when the backend first reads it, which it does once the command is
    under way."""

    def __init__(self) -> None:
        r, self.writer = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r, False)
        self.fd: int | None = r
        self._r = r
        self.asked = threading.Event()

    def read(self, n: int) -> bytes | None:
        self.asked.set()
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
    ``resize``, ``close``, ``wait``; a context manager that closes.

    Attributes: ``command``, ``result`` (None until the command ended)."""

    def __init__(self, conn: Connection, command: str, pty: Pty, cwd: str | None,
                 env: Mapping[str, str] | None, timeout: float | None) -> None:
        self.command = command
        self.result: Result | None = None
        self._conn = conn
        self._out: queue.Queue[bytes] = queue.Queue(_QUEUED)
        self._rest = bytearray()  # taken from the queue, not yet returned by read
        self._eof = False
        self._closing = threading.Event()
        self._error: BaseException | None = None
        self._started = time.monotonic()
        self._keys = _Keys()
        self._w = self._keys.writer
        events = conn._exchange(command, self._keys, cwd, env, timeout, pty)
        self._thread = threading.Thread(target=self._pump, args=(events,), daemon=True,
                                        name="rshell terminal")
        self._thread.start()
        # The command is under way once its backend first asks for input (it
        # does so right after the start request): a refusal of the start (a
        # closed connection, a server without terminals) is raised here.
        self._keys.asked.wait()
        if self._error is not None and not isinstance(self._error, StopIteration):
            self._thread.join()
            self._raise_error()

    # ---- input ------------------------------------------------------------------------

    def write(self, data: bytes | str) -> None:
        """Send keystrokes (``str`` as UTF-8): ``"\\x03"`` is Ctrl-C, ``"\\r"`` Enter."""
        if isinstance(data, str):
            data = data.encode()
        if self._w < 0:
            raise UsageError("the terminal's input is closed")
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._w, view)
            except (BrokenPipeError, OSError):
                return  # the command is over (or closing): nobody reads any more
            view = view[n:]

    def resize(self, cols: int, rows: int) -> None:
        """The window is this size now: the remote foreground gets SIGWINCH."""
        self._conn.resize(cols, rows)

    def close_input(self) -> None:
        """End of input: the remote terminal reads its EOF character (^D)."""
        self._close_input()

    # ---- output -----------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> bytes:
        """Output as it arrives (what is there, at least one byte); ``b""``
        once the command ended and everything was read.  CommandTimeout if
        nothing came within ``timeout`` seconds."""
        if self._rest:
            data, self._rest = bytes(self._rest), bytearray()
            return data
        if self._eof:
            return b""
        try:
            data = self._out.get(timeout=timeout)
        except queue.Empty:
            raise CommandTimeout(f"no output from {self.command or 'the shell'!r} "
                                 f"within {timeout}s") from None
        if data is _END:
            self._eof = True
            self._raise_error()
        return data

    def read_until(self, marker: bytes | str, timeout: float | None = None) -> bytes:
        """Output up to and including ``marker``; CommandTimeout (with what
        came so far kept for the next read) if it does not come in time, and
        RshellError if the command ends first."""
        if isinstance(marker, str):
            marker = marker.encode()
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = bytearray()
        while True:
            at = seen.find(marker)
            if at >= 0:
                end = at + len(marker)
                self._rest[:0] = seen[end:]
                return bytes(seen[:end])
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                data = self.read(timeout=left)
            except CommandTimeout:
                self._rest[:0] = seen
                raise CommandTimeout(f"{marker!r} did not come within {timeout}s; "
                                     f"last output: {bytes(seen[-200:])!r}") from None
            if not data:
                raise RshellError(f"the command ended before {marker!r}; "
                                  f"last output: {bytes(seen[-200:])!r}")
            seen += data

    # ---- the end ----------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Result:
        """The Result once the command ended; output not yet read is its stdout.
        CommandTimeout if it still runs after ``timeout`` seconds."""
        if self._thread is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise CommandTimeout(f"{self.command or 'the shell'!r} still runs")
                self._collect(min(left, 0.1) if left is not None else 0.1)
        self._raise_error()
        assert self.result is not None
        if self._rest or not self._out.empty():
            self._collect(0)
        return self.result

    def close(self) -> Result | None:
        """Hang up, as a terminal closing does: SIGHUP, then SIGKILL if the
        command outlives the grace; the Result, or None if it could not be
        had (the connection is then closed, which ends the command anyway)."""
        if self._thread is None or not self._thread.is_alive():
            self._close_input()
            return self.result
        self._closing.set()
        self._conn.send_signal(signal.SIGHUP)
        self._close_input()
        self._thread.join(STOP_GRACE)
        if self._thread.is_alive():
            self._conn.send_signal(signal.SIGKILL)
            self._thread.join(STOP_WAIT)
        if self._thread.is_alive():
            self._conn.close()
            self._thread.join(STOP_WAIT)
        return self.result

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the thread -------------------------------------------------------------------

    def _pump(self, events: Generator[Chunk, None, Finish]) -> None:
        seen = 0
        try:
            for _, chunk in _chunks(events):
                data = bytes(chunk)
                seen += len(data)
                while data and not self._closing.is_set():
                    try:
                        self._out.put(data, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except _Finished as end:
            self._done(end.finish, seen)
        except BaseException as exc:  # noqa: BLE001  # handed to the reader
            self._error = exc
        finally:
            self._keys.asked.set()  # over before it asked (refused): the caller goes on
            self._keys.close_all()
            self._put_end()

    def _done(self, finish: Finish, seen: int) -> None:
        self.result = self._conn._result(self.command, finish, b"", b"", seen, self._started)

    def _put_end(self) -> None:
        while True:
            try:
                self._out.put(_END, timeout=0.1)
                return
            except queue.Full:
                if self._closing.is_set():
                    self._drop_queued()
                # else: wait for the reader

    def _drop_queued(self) -> None:
        try:
            while True:
                self._out.get_nowait()
        except queue.Empty:
            pass

    def _collect(self, timeout: float) -> None:
        """Move queued output into the Result's stdout (for ``wait``)."""
        try:
            data = self._out.get(timeout=timeout) if timeout else self._out.get_nowait()
        except queue.Empty:
            return
        while True:
            if data is _END:
                self._eof = True
            else:
                self._rest += data
            try:
                data = self._out.get_nowait()
            except queue.Empty:
                break
        if self._eof and self.result is not None:
            out, self._rest = bytes(self._rest), bytearray()
            self.result = Result(
                command=self.result.command, exit_code=self.result.exit_code,
                signal=self.result.signal, stdout=self.result.stdout + out, stderr=b"",
                host=self.result.host, error=self.result.error,
                duration=self.result.duration,
            )

    def _close_input(self) -> None:
        self._keys.close_writer()
        self._w = -1

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, RshellError):
                raise error
            raise RshellError(f"terminal failed: {error}") from error
