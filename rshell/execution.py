"""Starting one command in its own session and process group, and ending it.

The child runs ``SHELL -c COMMAND`` with stdout and stderr on pipes and stdin
either on a pipe or on /dev/null.  It is a session and group leader
(``setsid``), so it has no controlling terminal and one ``killpg`` reaches
everything it started that stayed in its group.

Reaping follows invoke's rule: read output until EOF, *then* reap.  The
leader's exit is watched through a pidfd and observed with ``WNOWAIT``, so
the leader stays a zombie (and its process-group id cannot be reused) until
``reap`` is called; signalling the group is therefore always safe before that.

Knows nothing of frames or sockets.  Must not import rshell.protocol.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import time

#: Linux F_SETPIPE_SZ: bigger pipes mean fewer wake-ups per megabyte.
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20


class StartError(Exception):
    """The command could not be started; the message is the short reason."""


class Child:
    """One running command: its pid, pipes, pidfd, and how it ended."""

    __slots__ = (
        "pid", "proc", "stdin", "stdout", "stderr", "pidfd", "started",
        "exit_code", "signal", "_exited", "_reaped",
    )

    def __init__(
        self,
        command: str,
        *,
        shell: str = "/bin/sh",
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        stdin: bool = False,
    ) -> None:
        try:
            self.proc = subprocess.Popen(
                [shell, "-c", command],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
                bufsize=0,
            )
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise StartError(f"cannot start: {exc.strerror or exc}{where}") from None
        except ValueError as exc:  # NUL bytes, unencodable text in argv, env or cwd
            raise StartError(f"cannot start: {exc}") from None
        self.started = time.monotonic()
        self.pid = self.proc.pid
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout: int | None = self.proc.stdout.fileno()
        self.stderr: int | None = self.proc.stderr.fileno()
        self.stdin: int | None = self.proc.stdin.fileno() if self.proc.stdin else None
        for fd in (self.stdout, self.stderr):
            os.set_blocking(fd, False)
            try:
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # over /proc/sys/fs/pipe-max-size: the default still works
        if self.stdin is not None:
            os.set_blocking(self.stdin, False)
        self.pidfd = os.pidfd_open(self.pid)
        self.exit_code: int | None = None
        self.signal: int | None = None
        self._exited = False
        self._reaped = False

    @property
    def exited(self) -> bool:
        """True once the leader has exited (it may still be an unreaped zombie)."""
        if not self._exited:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None and info.si_pid:
                self._exited = True
                if info.si_code == os.CLD_EXITED:
                    self.exit_code = info.si_status
                else:
                    self.signal = info.si_status
        return self._exited

    def signal_group(self, signum: int) -> None:
        """Send a signal to the whole process group (safe until reaped)."""
        if self._reaped:
            return
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            pass  # only reached if the group id was somehow reused by another user

    def close_stdin(self) -> None:
        if self.stdin is not None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.stdin = None

    def close_output(self, fd: int) -> None:
        """Close our end of stdout or stderr (at EOF, or when we give up on it)."""
        if fd == self.stdout:
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.stdout = None
        elif fd == self.stderr:
            assert self.proc.stderr is not None
            self.proc.stderr.close()
            self.stderr = None

    def write_stdin(self, data: memoryview) -> int:
        """Write what the pipe takes now; -1 if the command closed its stdin."""
        assert self.stdin is not None
        try:
            return os.write(self.stdin, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return -1
            raise

    def terminate(self, grace: float) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds, then reap.

        Blocking: used when the session is going away and has nothing else
        to do; the running session uses ``signal_group`` and its own deadlines.
        """
        self.signal_group(signal.SIGTERM)
        if not self._wait_exit(grace):
            self.signal_group(signal.SIGKILL)
            self._wait_exit(None)
        # Leader gone; stragglers in the group get no second chance.
        self.signal_group(signal.SIGKILL)
        self.reap()

    def _wait_exit(self, timeout: float | None) -> bool:
        import select

        if self.exited:
            return True
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        poller.poll(None if timeout is None else int(timeout * 1000))
        return self.exited

    def reap(self) -> None:
        """Collect the leader's status, release every descriptor. Idempotent."""
        if self._reaped:
            return
        if not self.exited:
            self._wait_exit(None)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self._reaped = True
        self.proc.returncode = -self.signal if self.signal else (self.exit_code or 0)
        self.close_stdin()
        for fd in (self.stdout, self.stderr):
            if fd is not None:
                self.close_output(fd)
        os.close(self.pidfd)
