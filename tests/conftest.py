"""Shared fixtures: a real rshell-server subprocess on a loopback port, the
same daemon in this process where the process adds nothing, the real CLI on
a pseudo-terminal, and a private ``RSHELL_HOME`` for each test.

The helpers behind them live in tests/support/; the names other test files
import from here (``ServerProcess``, ``cli``, ``connect``, ``base_env``,
``RSHELL``, ...) are re-exported from there.  Every test talks to 127.0.0.1
only; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pexpect
import pytest
from hypothesis import HealthCheck, settings

from tests.support.cli import (
    BIN,
    CLIENT_MODE,
    RSHELL,
    RSHELL_SERVER,
    base_env,
    cli,
    one_line_error,
    terminal,
)
from tests.support.procs import kill_group, kill_pid, started_by_rshell
from tests.support.servers import SERVER_MODE, InProcessServer, ServerProcess, connect

# Property tests judge results, never speed: on a loaded machine (the suite
# "passes under load") hypothesis's own timing checks, a slow example or
# slow data generation, would fail a correct test.
settings.register_profile(
    "rshell", deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("rshell")

# The developer's ssh-agent must not decide a test: keys it holds would be
# offered (-i, agent, key files: as ssh).  A test that wants an agent starts
# its own (tests/test_agent.py) and names it in the client's environment.
os.environ.pop("SSH_AUTH_SOCK", None)

__all__ = [
    "BIN", "CLIENT_MODE", "RSHELL", "RSHELL_SERVER", "SERVER_MODE", "InProcessServer",
    "ServerProcess", "base_env", "cli", "connect", "one_line_error",
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private RSHELL_HOME for this test, for both the server and the client."""
    path = tmp_path / "rshell-home"
    path.mkdir()
    monkeypatch.setenv("RSHELL_HOME", str(path))
    return path


@pytest.fixture
def start_server(home: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server(*extra_args)`` -> ServerProcess on 127.0.0.1:0."""
    started: list[ServerProcess] = []

    def start(*args: str, bind: str = "127.0.0.1:0", launcher: Sequence[str] = ()) -> ServerProcess:
        srv = ServerProcess(home, ["--bind", bind, *SERVER_MODE, *args], base_env(home), launcher)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop(signal.SIGKILL if srv.proc.poll() is None else signal.SIGTERM)
        # Captured output is shown only for failing tests: the server's side of it.
        print(f"---- server {srv.address} log ----\n{srv.log}")


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()


@pytest.fixture
def start_in_process(home: Path) -> Iterator[Callable[..., InProcessServer]]:
    """Factory: ``start_in_process(*rshell_server_flags)`` -> the daemon in
    this process on 127.0.0.1:0; stopped gracefully at teardown."""
    started: list[InProcessServer] = []

    def start(*flags: str) -> InProcessServer:
        srv = InProcessServer(home, *flags)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
        print(f"---- in-process server {srv.address} log ----\n{srv.log}")


@pytest.fixture
def in_process_server(start_in_process: Callable[..., InProcessServer]) -> InProcessServer:
    return start_in_process()


@pytest.fixture
def terminals(home: Path) -> Iterator[Callable[..., pexpect.spawn]]:
    """Factory: ``terminals(*args, timeout=, width=)`` -> the real ``rshell``
    on a pseudo-terminal (support.cli.terminal); all closed at teardown."""
    children: list[pexpect.spawn] = []

    def spawn(*args: str, timeout: float = 10, width: int = 250) -> pexpect.spawn:
        child = terminal(home, *args, timeout=timeout, width=width)
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)


@pytest.fixture
def stray() -> Iterator[list[int]]:
    """Pids (or group ids) a failed test may leave running; killed afterwards,
    if they still carry a server's session marker."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if started_by_rshell(pid):
            kill_group(pid)
            kill_pid(pid)
