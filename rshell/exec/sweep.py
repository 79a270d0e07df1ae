"""Finding processes that escaped a command's process group, by their marker.

Every command runs with ``RSHELL_SESSION=<server pid>:<session>`` in its
environment.  A command that daemonizes (forks, ``setsid``) leaves its group,
so ``killpg`` cannot reach it; its environment still carries the marker.
When a session ends, the server kills what carries that session's marker;
when a server starts, it kills what carries the marker of a server process
that ran on the same state directory and no longer exists (one that was
SIGKILLed mid-command).  Only those: another server of the same user, on
another state directory (another instance, another test run on the host),
is alive or is that server's next start to judge, never this one's.  A
process that scrubs its environment escapes this net too: that is documented.

Must not import anything above layer 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Collection, Iterator, Mapping

MARKER = "RSHELL_SESSION"
log = logging.getLogger("rshell.server")
_PREFIX = MARKER.encode() + b"="


def _marked() -> Iterator[tuple[int, str]]:
    """(pid, marker value) of this user's processes that carry a marker."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            env = _environ(name)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone, or another user's; any other error (EMFILE) fails the scan
        start = env.find(_PREFIX)
        if start < 0 or (start > 0 and env[start - 1] != 0):
            continue
        end = env.find(b"\0", start)
        yield int(name), env[start + len(_PREFIX) : end if end >= 0 else None].decode(
            "ascii", "replace"
        )


def stat_fields(pid: int | str) -> list[bytes]:
    """/proc/PID/stat's fields after the command name (which is parenthesised
    and may hold spaces): index 0 is field 3 (the state), so field N is at
    N - 3.  OSError if the process is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2 :].split()


def _environ(pid: str) -> bytes:
    """The environment of ``pid``, waiting out an exec in progress.

    A process that is past exec's point of no return (its parent's Popen has
    already returned) but has not yet laid out its new stack reads as an empty
    environment for some microseconds (the kernel's env_end is still 0): read
    then, a marked process would pass for unmarked and escape the sweep.  An
    empty read is therefore checked against /proc/PID/stat's env_end (field
    50): 0 is that window, so read again; otherwise the environment really is
    empty (``env -i``), or there is no memory to hold one (a zombie, a
    kernel thread).
    """
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = f.read()
    for _ in range(1000):  # the window is microseconds; this bound is ~1 s of yields
        if env:
            return env
        fields = stat_fields(pid)
        # vsize 0 (field 23): no memory at all (a zombie, a kernel thread), not
        # an exec; env_end is field 50.
        mid_exec = fields[20] != b"0" and fields[47] == b"0"
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
        if not mid_exec:
            return env
        os.sched_yield()
    return env


def kill_session(marker: str, groups: Collection[int] = ()) -> list[int]:
    """SIGKILL every process carrying exactly this marker; return the pids of
    those that had left ``groups`` (the session's command groups, whose
    members were already being killed and so are no news)."""
    return kill_sessions({marker: groups}).get(marker, [])


def kill_sessions(wanted: Mapping[str, Collection[int]]) -> dict[str, list[int]]:
    """``kill_session`` for several markers in one pass over /proc."""
    escaped: dict[str, list[int]] = {}
    for pid, value in _marked():
        groups = wanted.get(value)
        if groups is None:
            continue
        try:
            group = os.getpgid(pid)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        if group not in groups:
            escaped.setdefault(value, []).append(pid)
    return escaped


Report = Callable[[list[int]], None]


class Sweeper:
    """The sweeps of every session of one server, in one thread.

    A sweep reads the environment of every process of the user, so its cost
    grows with the host's process count (about 6 µs a process here): done by
    each session as it ends, a server with many short connections would spend
    a core on it.  Sessions hand their marker over instead and return; the
    sessions that end while one scan runs are all served by the next.
    ``report`` is called, in the sweeper's thread, with the escaped pids.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[Collection[int], Report]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="rshell sweeper")
        self._thread.start()

    def submit(self, marker: str, groups: Collection[int], report: Report) -> None:
        with self._cond:
            if not self._closed and self._thread.is_alive():
                self._pending[marker] = (frozenset(groups), report)
                self._cond.notify()
                return
        _report(report, kill_session(marker, groups))  # closed: sweep here and now

    def close(self, timeout: float = 10.0) -> None:
        """Sweep what is pending, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the sweeper did not finish in %gs (a /proc read blocked?)", timeout)

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                batch, self._pending = self._pending, {}
            if not batch:
                return  # closed, nothing left
            try:
                escaped = kill_sessions({m: groups for m, (groups, _) in batch.items()})
            except Exception:  # EMFILE, say: the batch is not lost, it is tried again
                failures += 1
                log.exception("sweep failed (attempt %d); retrying", failures)
                with self._cond:
                    self._pending = {**batch, **self._pending}
                    if failures >= 5 and self._closed:
                        return  # give up only when stopping; the next start sweeps orphans
                    self._cond.wait(min(0.1 * failures, 2.0))
                continue
            failures = 0
            for marker, (_, report) in batch.items():
                if marker in escaped:
                    _report(report, escaped[marker])


def _report(report: Report, pids: list[int]) -> None:
    if not pids:
        return
    try:
        report(pids)
    except Exception:  # a report must not end the sweeper
        log.exception("reporting a sweep failed")


def kill_own() -> list[int]:
    """SIGKILL what this server's sessions left: for a stopping server, after
    its sessions ended or were given up on (a session that outlived the stop
    never asked for its sweep)."""
    prefix = f"{os.getpid()}:"
    return _kill_marked(lambda value: value.startswith(prefix))


def kill_orphans(registry: str) -> list[int]:
    """SIGKILL what the dead server processes of ``registry`` left behind, and
    enter this process there.

    ``registry`` is a directory of the server's state holding one file per
    server process started on that state, named by its pid and holding its
    start time (a pid alone is recycled, and the owner of a marker must not
    pass for alive because a stranger now has its pid).  A server that stops
    cleanly removes its file (``unregister``); one that was SIGKILLed leaves
    it, and the next start on the same state sweeps what carries its marker.
    """
    os.makedirs(registry, mode=0o700, exist_ok=True)
    dead: dict[str, str] = {}
    for name in os.listdir(registry):
        if not name.isdigit():
            continue
        path = os.path.join(registry, name)
        try:
            with open(path, encoding="ascii") as f:
                started = f.read().strip()
        except FileNotFoundError:
            continue  # a concurrent start on this state took it first
        if _start_time(int(name)) != started:
            dead[name] = path
    killed = _kill_marked(lambda value: value.split(":", 1)[0] in dead) if dead else []
    for path in dead.values():
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    me = os.getpid()
    tmp = os.path.join(registry, f".{me}.tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{_start_time(me)}\n")
    os.replace(tmp, os.path.join(registry, str(me)))
    return killed


def unregister(registry: str) -> None:
    """Remove this process from ``registry``: a clean stop left nothing to sweep."""
    try:
        os.unlink(os.path.join(registry, str(os.getpid())))
    except FileNotFoundError:
        pass


def _kill_marked(wanted: Callable[[str], bool]) -> list[int]:
    """SIGKILL every marked process whose marker value ``wanted`` accepts."""
    killed = []
    for pid, value in _marked():
        if not wanted(value):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


def _start_time(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks after boot (/proc/PID/stat field
    22): with the pid, a process's identity.  None once it is gone, or a
    zombie: a server killed and not yet reaped serves no session any more."""
    try:
        fields = stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == b"Z" else fields[19].decode()
