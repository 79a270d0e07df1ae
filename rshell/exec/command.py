"""One running command: output into a sink, stdin, signals, limits, stop, reap.

``Command`` starts the child a ``Launch`` describes, registers its pipes and
pidfd on the driver's ``Loop``, reads output straight into buffers the
``Sink`` delivers (with room for the sink's header in front, so the native
wire frames it in place: no copy), and stops reading while the sink holds
``HIGH_WATER`` bytes, so a slow client blocks the command instead of growing
the server.  Deadlines and the output limit stop it (SIGTERM, the grace,
SIGKILL); once output reached EOF and the leader exited, stragglers of a
stopped command are killed and the leader reaped *before* the ``Outcome``
exists (PROTOCOL.md 7.6), so no client hears "over" while any of it runs.

A command on a terminal is recorded when the server has a record
directory (exec/cast.py): its sink is wrapped to write the output to the
recording, and window changes (and, with ``record_input``, what the client
types) go there too; ``recording`` names the file.

The driver calls ``sync`` and ``check`` once per loop turn and ``finish``
until it returns the Outcome.  Must not import rshell.protocol, sockets or
paramiko.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from rshell.exec.cast import Cast, Recorded
from rshell.exec.child import Child
from rshell.exec.loop import READ, WRITE, Loop
from rshell.exec.policy import Launch, Limits
from rshell.exec.record import Outcome
from rshell.exec.terminal import eof_char, size
from rshell.result import timed_out

STDOUT, STDERR = 1, 2
#: Biggest single read from a pipe that filled up.
CHUNK = 1 << 20
#: Stop reading the child's output while this much waits in the sink.
HIGH_WATER = 4 * CHUNK
#: Chunks read from one pipe per wake-up before looking at the others again.
_DRAIN_ROUNDS = 4
_DEFAULT_PIPE_SIZE = 65536
_SMALL_READ = _DEFAULT_PIPE_SIZE
#: A terminal hands out at most 4 KiB a read.  While its reads come back
#: this big, it is read again and again, each read sent at once, up to
#: ``_TTY_ROUNDS`` reads per wake-up; a smaller read (a keystroke's echo)
#: ends the turn without a read that would find nothing.
_TTY_FULL = 1024
_TTY_ROUNDS = 64
#: A terminal's read buffer: what one read can bring, so that a slow client's
#: queue of small chunks does not hold a 64 KiB buffer each.
_TTY_READ = 4096

#: Signals a client may deliver to its command.
ALLOWED_SIGNALS = frozenset({
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGCONT, signal.SIGSTOP, signal.SIGTSTP,
    signal.SIGPIPE,  # the client's stdout went away (``rshell h -c yes | head``)
})


class Sink(Protocol):
    """Where a command's output goes (the native stream, an SSH channel)."""

    #: Bytes the engine leaves free before each chunk, for the sink's header.
    headroom: int

    @property
    def queued(self) -> int:
        """Bytes accepted and not yet handed to the kernel."""

    def output(self, kind: int, buf: bytearray, n: int) -> bool:
        """Deliver ``buf[headroom:headroom + n]`` as ``kind`` (STDOUT or STDERR);
        True if the buffer was handed over whole and may be reused."""


class Command:
    """The one running command of a driver; see the module docstring."""

    __slots__ = (
        "launch", "child", "loop", "sink", "limits", "deadline", "kill_at", "linger_at",
        "reason", "out_bytes", "err_bytes", "stdin_queue", "stdin_eof", "exit_seen", "big",
        "on_consumed", "unasked", "_spare", "cast",
    )

    def __init__(
        self, launch: Launch, loop: Loop, sink: Sink, limits: Limits,
        on_consumed: Callable[[int], None] | None = None,
    ) -> None:
        """Start the child (StartError if it cannot be); ``on_consumed(n)``
        hears of stdin the command took (written, or dropped: nobody reads it)."""
        self.child = Child(launch.command, shell=limits.shell, cwd=launch.cwd, env=launch.env,
                           stdin=launch.stdin, pty=launch.pty, login=launch.login)
        self.launch, self.loop, self.sink, self.limits = launch, loop, sink, limits
        self.on_consumed = on_consumed
        self.deadline = self.child.started + launch.timeout if launch.timeout else None
        self.kill_at: float | None = None
        self.linger_at: float | None = None
        self.reason: str | None = None
        self.out_bytes = self.err_bytes = 0
        self.stdin_queue: deque[memoryview] = deque()
        self.stdin_eof = False
        self.unasked = 0  # stdin bytes queued by the engine itself (a terminal's EOF)
        self.exit_seen = False  # the pidfd fired: only then is waitid worth a call
        self.big = False  # it filled a pipe: read it in big chunks
        self._spare: bytearray | None = None
        self.cast: Cast | None = None
        if launch.pty is not None and limits.record_dir is not None:
            self._record()
        loop.set(self.child.pidfd, READ, self._on_exit)
        if launch.pty is not None and not launch.stdin:
            self.end_stdin()  # nothing will be typed: the terminal reads end-of-file

    def _record(self) -> None:
        """Start the recording (exec/cast.py), the output going through it."""
        assert self.child.master is not None
        try:
            cols, rows = size(self.child.master)
        except OSError:
            cols = rows = 0
        self.cast = Cast.start(self.launch, self.limits, cols, rows)
        if self.cast is not None:
            self.sink = Recorded(self.sink, self.cast)

    @property
    def recording(self) -> str | None:
        """The recording's path, if this command is recorded."""
        return None if self.cast is None else self.cast.path

    # ---- the driver's calls -----------------------------------------------------

    def sync(self) -> None:
        """Interest in the pipes as the sink and the stdin queue allow."""
        child, loop = self.child, self.loop
        throttled = self.sink.queued >= HIGH_WATER
        if child.stdout is not None:
            loop.set(child.stdout, 0 if throttled else READ, self._on_stdout)
        if child.stderr is not None:
            loop.set(child.stderr, 0 if throttled else READ, self._on_stderr)
        if child.stdin is not None:
            loop.set(child.stdin, WRITE if self.stdin_queue else 0, self._on_stdin_writable)

    def next_deadline(self) -> float | None:
        pending = [t for t in (self.deadline, self.kill_at, self.linger_at) if t is not None]
        return min(pending) if pending else None

    def check(self, now: float) -> None:
        """Act on every deadline that has passed."""
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.stop(timed_out(self.launch.timeout))
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self.child.signal_group(signal.SIGKILL)
            if self.exit_seen:  # the leader is gone: whatever holds its pipes loses them
                self.linger_at = now
        if self.linger_at is not None and now >= self.linger_at:
            self._close_outputs()

    def signal(self, signum: int) -> None:
        """A client's signal, if it is one a client may send."""
        if signum in ALLOWED_SIGNALS:
            self.child.signal_group(signum)

    def resize(self, cols: int, rows: int) -> None:
        """The client's window changed (a command on a terminal only)."""
        self.child.resize(cols, rows)
        if self.cast is not None and self.child.master is not None:
            try:
                self.cast.resize(*size(self.child.master))  # as the terminal took it
            except OSError:
                pass  # the terminal is closing: nothing more to show

    def stop(self, reason: str) -> None:
        """Begin ending the command: SIGTERM now, SIGKILL after the grace."""
        if self.reason is None:
            self.reason = reason
        # Even when the leader has exited: what is left of its group (a
        # background job still writing) must stop too.  Safe until the reap,
        # since the zombie leader keeps the group id from being reused.
        if self.kill_at is None:
            self.child.signal_group(signal.SIGTERM)
            self.kill_at = time.monotonic() + self.limits.kill_grace

    @property
    def stopping(self) -> bool:
        return self.reason is not None

    def finish(self) -> Outcome | None:
        """The Outcome once output is over and the leader exited, else None."""
        child = self.child
        if child.stdout is not None or child.stderr is not None or not self.exit_seen:
            return None
        if self.reason is not None:  # PROTOCOL.md 7.6: no straggler outlives "over"
            child.signal_group(signal.SIGKILL)
        for fd in (child.pidfd, child.stdin):
            if fd is not None:
                self.loop.set(fd, 0, None)
        child.reap()
        self._spare = None
        if self.cast is not None:
            self.cast.close()
        return self._outcome()

    def abandon(self) -> Outcome:
        """The client is gone: end the group now (blocking, at most the grace)."""
        for fd in (self.child.pidfd, self.child.stdin, self.child.stdout, self.child.stderr):
            if fd is not None:
                self.loop.set(fd, 0, None)
        if self.reason is None:
            self.reason = "connection ended"
        if self.child.on_terminal:  # as a terminal's hang-up: SIGHUP first, then the rest
            self.child.signal_group(signal.SIGHUP)
        self.child.terminate(self.limits.kill_grace)
        if self.cast is not None:
            self.cast.close()
        return self._outcome()

    def _outcome(self) -> Outcome:
        child = self.child
        return Outcome(self.launch.text, child.exit_code, child.signal, self.reason,
                       self.out_bytes, self.err_bytes,
                       round(time.monotonic() - child.started, 6))

    # ---- stdin ------------------------------------------------------------------

    @property
    def stdin_open(self) -> bool:
        return self.child.stdin is not None and not self.stdin_eof

    @property
    def stdin_queued(self) -> int:
        return sum(len(v) for v in self.stdin_queue)

    def feed(self, data: bytes | memoryview) -> None:
        """Data for the command's stdin: written now as far as the pipe takes it."""
        if self.cast is not None and self.limits.record_input:
            self.cast.input(data)
        self._queue(data)

    def _queue(self, data: bytes | memoryview) -> None:
        if self.child.stdin is None:
            if self.on_consumed is not None:
                self.on_consumed(len(data))  # nobody reads it: don't stall the sender
            return
        queue = self.stdin_queue
        queue.append(memoryview(data))
        self._on_stdin_writable(WRITE)
        if queue and not isinstance(queue[-1].obj, bytes):
            # What the pipe did not take must outlive the receive buffer it is in.
            queue[-1] = memoryview(bytes(queue[-1]))

    def end_stdin(self) -> None:
        if self.child.on_terminal:
            # A pty cannot be half-closed: the end of input is what a user
            # would type for it, the terminal's EOF character (^D).
            if self.child.master is not None and not self.stdin_eof:
                self.stdin_eof = True
                char = eof_char(self.child.master)
                self.unasked += len(char)  # not the client's: never acknowledged
                self._queue(char)  # nor recorded as typed
            return
        self.stdin_eof = True
        if not self.stdin_queue:
            self._close_stdin()

    def _on_stdin_writable(self, mask: int) -> None:
        queue, child = self.stdin_queue, self.child
        written = 0
        while queue and child.stdin is not None:
            n = child.write_stdin(queue[0])
            if n < 0:  # the command closed its stdin: drop the rest, but count it taken
                written += sum(len(v) for v in queue)
                queue.clear()
                self._close_stdin()
                break
            written += n
            if n < len(queue[0]):
                queue[0] = queue[0][n:]
                break
            queue.popleft()
        if not queue and self.stdin_eof and not child.on_terminal:
            self._close_stdin()
        if self.unasked and written:
            ours = min(self.unasked, written)
            self.unasked -= ours
            written -= ours
        if written and self.on_consumed is not None:
            self.on_consumed(written)

    def _close_stdin(self) -> None:
        if self.child.stdin is not None:
            self.loop.set(self.child.stdin, 0, None)
            self.child.close_stdin()

    # ---- output -----------------------------------------------------------------

    def _on_stdout(self, mask: int) -> None:
        if self.child.stdout is not None:
            self._read_output(self.child.stdout, STDOUT)

    def _on_stderr(self, mask: int) -> None:
        if self.child.stderr is not None:
            self._read_output(self.child.stderr, STDERR)

    def _read_output(self, fd: int, kind: int) -> None:
        """Move what the pipe holds to the sink, a few chunks per wake-up."""
        sink, child = self.sink, self.child
        if child.on_terminal:
            self._read_terminal(fd, kind)
            return
        for _ in range(_DRAIN_ROUNDS):
            if sink.queued >= HIGH_WATER:
                return
            moved = self._pull(fd, kind)
            if moved < CHUNK or fd not in (child.stdout, child.stderr):
                return  # drained, or the pipe was closed (EOF, output limit)

    def _read_terminal(self, fd: int, kind: int) -> None:
        """sshd's way with a pty: each read sent at once, the next read while
        the peer takes it.  Joining reads into one chunk was slower (the
        second read mostly finds the line discipline not yet refilled), and
        so was a turn of the session's loop per read (its bookkeeping is
        the time in which the writer and the pty's worker wait)."""
        sink, child = self.sink, self.child
        for _ in range(_TTY_ROUNDS):
            if sink.queued >= HIGH_WATER or self._pull(fd, kind) < _TTY_FULL \
                    or fd != child.stdout:
                return

    def _pull(self, fd: int, kind: int) -> int:
        """One chunk from ``fd`` into the sink: bytes moved (0: none now or EOF)."""
        head = self.sink.headroom
        # Small first: most commands print little, and an idle session should
        # hold no megabyte; a pipe that fills gets the big buffer from then on.
        buf = self._spare or bytearray(head + (
            _TTY_READ if self.child.on_terminal else CHUNK if self.big else _SMALL_READ))
        self._spare = None
        try:
            n = os.readv(fd, [memoryview(buf)[head:]])
        except BlockingIOError:
            self._spare = buf
            return 0
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            n = 0  # a pty's master once no process holds the slave: its end of output
        if n == 0:
            self._spare = buf
            self._close_output(fd)
            return 0
        got = n
        if n == _DEFAULT_PIPE_SIZE and not self.big:
            Child.widen(fd)
            self.big = True
            got = CHUNK  # keep draining, now in big chunks
        limit = self.limits.max_output
        total = self.out_bytes + self.err_bytes + n
        if limit and total > limit:
            n -= total - limit
            self.stop("output limit exceeded")
            self._close_outputs()
        if n <= 0:
            return 0
        self._count(kind, n)
        if self.sink.output(kind, buf, n) and (len(buf) > head + _SMALL_READ) == self.big:
            self._spare = buf  # the kernel has it all: reuse the buffer
        return got

    def _count(self, kind: int, n: int) -> None:
        if kind == STDOUT:
            self.out_bytes += n
        else:
            self.err_bytes += n
        if self.linger_at is not None and self.reason is None:  # a stopped one gets no more
            self.linger_at = time.monotonic() + self.limits.linger

    def _close_output(self, fd: int) -> None:
        self.loop.set(fd, 0, None)
        self.child.close_output(fd)

    def _close_outputs(self) -> None:
        for fd in (self.child.stdout, self.child.stderr):
            if fd is not None:
                self._close_output(fd)

    def _on_exit(self, mask: int) -> None:
        child = self.child
        self.loop.set(child.pidfd, 0, None)
        self.exit_seen = child.exited
        if self.exit_seen and (child.stdout is not None or child.stderr is not None):
            self.linger_at = time.monotonic() + self.limits.linger
