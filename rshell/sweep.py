"""Finding processes that escaped a command's process group, by their marker.

Every command runs with ``RSHELL_SESSION=<server pid>:<session>`` in its
environment.  A command that daemonizes (forks, ``setsid``) leaves its group,
so ``killpg`` cannot reach it; its environment still carries the marker.
When a session ends, the server kills what carries that session's marker;
when a server starts, it kills what carries the marker of a server process
that no longer exists (one that was SIGKILLed mid-command).  A process that
scrubs its environment escapes this net too: that is documented.

Must not import anything above layer 0.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Collection, Iterator

MARKER = "RSHELL_SESSION"
_PREFIX = MARKER.encode() + b"="


def _marked() -> Iterator[tuple[int, str]]:
    """(pid, marker value) of this user's processes that carry a marker."""
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue  # gone, or another user's
        start = env.find(_PREFIX)
        if start < 0 or (start > 0 and env[start - 1] != 0):
            continue
        end = env.find(b"\0", start)
        yield int(name), env[start + len(_PREFIX) : end if end >= 0 else None].decode(
            "ascii", "replace"
        )


def kill_session(marker: str, groups: Collection[int] = ()) -> list[int]:
    """SIGKILL every process carrying exactly this marker; return the pids of
    those that had left ``groups`` (the session's command groups, whose
    members were already being killed and so are no news)."""
    escaped = []
    for pid, value in _marked():
        if value != marker:
            continue
        try:
            group = os.getpgid(pid)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        if group not in groups:
            escaped.append(pid)
    return escaped


def kill_orphans() -> list[int]:
    """SIGKILL what previous, now dead, server processes left behind."""
    killed = []
    for pid, value in _marked():
        owner = value.split(":", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
    return killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
