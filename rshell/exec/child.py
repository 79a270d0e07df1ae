"""Starting one command in its own session and process group, and ending it.

The child runs ``SHELL -c COMMAND`` with stdout and stderr on pipes and stdin
either on a pipe or on /dev/null.  It is a session and group leader
(``setsid``), so it has no controlling terminal and one ``killpg`` reaches
everything it started that stayed in its group.  On a terminal
(exec.terminal) it runs with the pty's slave as stdin, stdout, stderr and
controlling terminal instead; our ends are the master (read as stdout) and
a duplicate of it (written as stdin), and there is no separate stderr.

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

from rshell.exec.sweep import stat_fields
from rshell.exec.terminal import Pty, child_setup, login_shell, open_pty, resize

#: Linux F_SETPIPE_SZ: bigger pipes mean fewer wake-ups per megabyte.
_F_SETPIPE_SZ = 1031
_PIPE_SIZE = 1 << 20


class StartError(Exception):
    """The command could not be started; the message is the short reason."""


#: Signals the server ignores or handles that a command must start with at
#: their default action (an ignored signal stays ignored across exec).
_DEFAULT_SIGNALS = tuple(
    getattr(signal, name) for name in (
        "SIGPIPE", "SIGXFSZ", "SIGINT", "SIGQUIT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2",
        "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGCHLD",
    ) if hasattr(signal, name)
)


_ON_TERMINAL = child_setup(_DEFAULT_SIGNALS)


class Child:
    """One running command: its pid, pipes, pidfd, and how it ended.

    A command in the server's own working directory is started with
    ``posix_spawn`` (vfork+exec in glibc, no Python in between), the fastest
    way Python has; elsewhere ``Popen(cwd=...)``, since ``posix_spawn`` has no
    chdir action before Python 3.13.  Either way the pipes are ours, every
    other descriptor is close-on-exec, signals start at their defaults and
    the command leads a new session.
    """

    __slots__ = (
        "pid", "proc", "stdin", "stdout", "stderr", "pidfd", "started", "on_terminal",
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
        pty: Pty | None = None,
        login: bool = False,
    ) -> None:
        """``pty``: on a terminal of that kind and size; ``login``: the
        account's login shell on it instead of ``SHELL -c COMMAND``."""
        self.proc: subprocess.Popen[bytes] | None = None
        self.on_terminal = pty is not None
        ours: list[int] = []  # our ends, closed on any failure below
        theirs: list[int] = []  # the child's ends, closed once it has them
        try:
            if pty is not None:
                master, slave = open_pty(pty)
                ours.append(master)
                theirs.append(slave)
                in_w = os.dup(master)  # its own number: epoll keys on it apart from reads
                ours.append(in_w)
                out_r, err_r = master, None
            else:
                out_r, out_w = os.pipe()
                ours.append(out_r)
                theirs.append(out_w)
                err_r, err_w = os.pipe()
                ours.append(err_r)
                theirs.append(err_w)
                in_r = in_w = -1
                if stdin:
                    in_r, in_w = os.pipe()
                    ours.append(in_w)
                    theirs.append(in_r)
        except OSError as exc:  # EMFILE/ENFILE: this command, not the session, fails
            _close(ours + theirs)
            raise StartError(f"cannot start: {exc.strerror or exc}") from None
        try:
            if pty is not None:
                self.pid = self._spawn_on_terminal(command, shell, cwd, env, slave, login)
            else:
                self.pid = self._spawn(command, shell, cwd, env, in_r, out_w, err_w)
        except BaseException:
            _close(ours)
            raise
        finally:
            _close(theirs)
        self.started = time.monotonic()
        self.stdout: int | None = out_r
        self.stderr: int | None = err_r
        self.stdin: int | None = in_w if stdin or pty is not None else None
        try:
            for fd in ours:
                os.set_blocking(fd, False)
            self.pidfd = os.pidfd_open(self.pid)
        except OSError as exc:
            # Started but cannot be watched: end it now rather than leave it
            # running unreaped, and fail this command only.
            self._abandon(ours)
            raise StartError(f"cannot start: {exc.strerror or exc}") from None
        self.exit_code: int | None = None
        self.signal: int | None = None
        self._exited = False
        self._reaped = False

    def _abandon(self, fds: list[int]) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)  # it leads its own group (setsid)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.proc is not None:  # so that Popen never waits for it again
            self.proc.returncode = -signal.SIGKILL
        _close(fds)

    def _spawn(
        self, command: str, shell: str, cwd: str | None, env: dict[str, str] | None,
        stdin: int, stdout: int, stderr: int,
    ) -> int:
        argv = [shell, "-c", command]
        try:
            if cwd is None or cwd == os.getcwd():
                actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
                    (os.POSIX_SPAWN_DUP2, stdin, 0) if stdin >= 0
                    else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, stdout, 1),
                    (os.POSIX_SPAWN_DUP2, stderr, 2),
                ]
                return os.posix_spawn(
                    shell, argv, os.environ if env is None else env, file_actions=actions,
                    setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=(),
                )
            self.proc = subprocess.Popen(
                argv, stdin=stdin if stdin >= 0 else subprocess.DEVNULL, stdout=stdout,
                stderr=stderr, cwd=cwd, env=env, start_new_session=True,
            )
            return self.proc.pid
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise StartError(f"cannot start: {exc.strerror or exc}{where}") from None
        except ValueError as exc:  # NUL bytes, unencodable text in argv, env or cwd
            raise StartError(f"cannot start: {exc}") from None

    def _spawn_on_terminal(
        self, command: str, shell: str, cwd: str | None, env: dict[str, str] | None,
        slave: int, login: bool,
    ) -> int:
        """Popen, since the slave must become the controlling terminal after
        setsid (TIOCSCTTY in the child: the one step posix_spawn cannot do)."""
        if login:
            shell, argv0 = login_shell(shell)
            argv = [argv0]
        else:
            argv = [shell, "-c", command]
        try:
            self.proc = subprocess.Popen(
                argv, executable=shell, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                env=env, start_new_session=True, preexec_fn=_ON_TERMINAL,
            )
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise StartError(f"cannot start: {exc.strerror or exc}{where}") from None
        except (ValueError, subprocess.SubprocessError) as exc:
            raise StartError(f"cannot start: {exc}") from None
        return self.proc.pid

    @property
    def master(self) -> int | None:
        """The pty's master, while it is open (a command on a terminal only)."""
        return self.stdout if self.on_terminal else None

    def resize(self, cols: int, rows: int) -> None:
        """A new window size for a command on a terminal (no-op otherwise)."""
        master = self.master
        if master is not None:
            try:
                resize(master, cols, rows)
            except OSError:
                pass  # the terminal is closing: nobody is left to redraw

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
        """Send a signal to the whole process group (safe until reaped).  On a
        terminal, to every group of its session: an interactive shell puts
        each job in a group of its own, and a hang-up reaches them all."""
        if self._reaped:
            return
        groups = _session_groups(self.pid) if self.on_terminal else [self.pid]
        for group in groups:
            try:
                os.killpg(group, signum)
            except ProcessLookupError:
                pass
            except PermissionError:
                pass  # only reached if the group id was somehow reused by another user

    @staticmethod
    def widen(fd: int) -> None:
        """Grow a pipe that filled up, for fewer wake-ups per megabyte (done
        only then: most commands write far less than the default 64 KiB)."""
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # over /proc/sys/fs/pipe-max-size: the default still works

    def close_stdin(self) -> None:
        if self.stdin is not None:
            os.close(self.stdin)
            self.stdin = None

    def close_output(self, fd: int) -> None:
        """Close our end of stdout or stderr (at EOF, or when we give up on it)."""
        if fd == self.stdout:
            self.stdout = None
        elif fd == self.stderr:
            self.stderr = None
        else:
            return
        os.close(fd)

    def write_stdin(self, data: memoryview) -> int:
        """Write what the pipe takes now; -1 if the command closed its stdin."""
        assert self.stdin is not None
        try:
            return os.write(self.stdin, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF, errno.EIO):  # EIO: a pty hung up
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
        if self.proc is not None:  # so that Popen never tries to reap it again
            self.proc.returncode = -self.signal if self.signal else (self.exit_code or 0)
        self.close_stdin()
        for fd in (self.stdout, self.stderr):
            if fd is not None:
                self.close_output(fd)
        os.close(self.pidfd)


def _session_groups(sid: int) -> list[int]:
    """The process groups of session ``sid`` (its leader's first), from /proc."""
    groups = {sid: None}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = stat_fields(name)
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == sid:  # fields 5 and 6: the group and the session
            groups[int(fields[2])] = None
    return list(groups)


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
