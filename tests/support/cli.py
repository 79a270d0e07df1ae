"""The real ``rshell`` command line, as a user runs it: captured (``cli``),
or on a pseudo-terminal (``terminal``); and what a failure must look like to
that user (``one_line_error``).

Every run gets the test's ``RSHELL_HOME`` and a bounded timeout.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pexpect

BIN = Path(sys.executable).parent
RSHELL = str(BIN / "rshell")
RSHELL_SERVER = str(BIN / "rshell-server")

#: Flags every client invocation gets, to match servers.SERVER_MODE.
CLIENT_MODE: list[str] = []


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment with ``RSHELL_HOME=home`` (and ``extra``)."""
    env = dict(os.environ, RSHELL_HOME=str(home), PYTHONUNBUFFERED="1", **extra)
    env.pop("PYTHONWARNINGS", None)
    return env


def cli(
    home: Path, *args: str | bytes, input: bytes | None = None,
    env: dict[str, str] | None = None, timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``rshell`` entry point and capture everything.  ``env``
    adds variables; arguments may be bytes (argv need not be UTF-8)."""
    return subprocess.run(
        [RSHELL, *CLIENT_MODE, *args], input=input, capture_output=True,
        env=base_env(home, **(env or {})), timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def one_line_error(stderr: bytes | str, prog: str = "rshell", *, warnings: bool = False) -> str:
    """The single ``prog:`` line a user sees for a failure, with no traceback
    (blank lines aside; ``warnings=True`` sets ``WARNING`` lines aside too)."""
    text = stderr if isinstance(stderr, str) else stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines()
             if ln.strip() and not (warnings and "WARNING" in ln)]
    assert len(lines) == 1, text
    assert lines[0].startswith(f"{prog}:"), text
    return lines[0]


def terminal(home: Path, *args: str, timeout: float = 10, width: int = 250) -> pexpect.spawn:
    """The real ``rshell`` on a pseudo-terminal, as a user at a keyboard runs
    it (text mode).  Close it when done: the ``terminals`` fixture does."""
    return pexpect.spawn(RSHELL, [*CLIENT_MODE, *args], env=base_env(home), timeout=timeout,
                         encoding="utf-8", dimensions=(24, width))


def read_line(fd: int, timeout: float) -> bytes:
    """One line from ``fd`` within ``timeout`` (what came, short of a line,
    if none did: the test then fails on it)."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return data
        chunk = os.read(fd, 1)
        if not chunk:
            return data
        data += chunk
    return data
