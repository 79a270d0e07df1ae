"""Shared fixtures: a real rshell-server subprocess on a loopback port, and the
real CLI entry points, each with its own temporary ``RSHELL_HOME``.

Every test talks to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import rshell

BIN = Path(sys.executable).parent
RSHELL = str(BIN / "rshell")
RSHELL_SERVER = str(BIN / "rshell-server")
_LISTEN = re.compile(r"listening on (\S+)")
_HOST_KEY = re.compile(r"host key fingerprint (\S+)")


class ServerProcess:
    """A running ``rshell-server``; its stderr is collected line by line."""

    def __init__(
        self, home: Path, args: list[str], env: dict[str, str], launcher: Sequence[str] = ()
    ) -> None:
        self.home = home
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [*launcher, RSHELL_SERVER, *args], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.fingerprint = self.wait_for_log(_HOST_KEY, timeout=20).group(1)
        match = self.wait_for_log(_LISTEN, timeout=20)
        self.address = match.group(1)
        self.port = int(self.address.rsplit(":", 1)[1])
        if "--no-tls" not in args:
            # Pin the host key as a user would have on first contact, so that
            # tests see no "pinned new host key" notice unless they ask for one.
            with open(home / "known_hosts", "a") as f:
                f.write(f"{self.address} {self.fingerprint}\n")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<eof>")
            self._cond.notify_all()

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 10) -> re.Match[str]:
        """Block until a log line matches; fail with the log if it never does."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    found = rx.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                if "<eof>" in self.lines:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        raise AssertionError(f"no log line matching {rx.pattern!r}; log:\n" + self.log)

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop in time; log:\n" + self.log) from None


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private RSHELL_HOME for this test, for both the server and the client."""
    path = tmp_path / "rshell-home"
    path.mkdir()
    monkeypatch.setenv("RSHELL_HOME", str(path))
    return path


def base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, RSHELL_HOME=str(home), PYTHONUNBUFFERED="1")
    env.pop("PYTHONWARNINGS", None)
    return env


@pytest.fixture
def start_server(home: Path) -> Iterator[object]:
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
def server(start_server: object) -> ServerProcess:
    return start_server()  # type: ignore[operator, no-any-return]


#: Flags every test server gets: the secure default (TLS 1.3 + key auth) needs
#: none.  The server's first start generates the host key, the user's key pair
#: and authorized_keys in the test's RSHELL_HOME, which the client shares.
SERVER_MODE: list[str] = []
#: Flags every client invocation gets, to match SERVER_MODE.
CLIENT_MODE: list[str] = []


def cli(
    home: Path, *args: str, input: bytes | None = None, timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``rshell`` entry point and capture everything."""
    return subprocess.run(
        [RSHELL, *CLIENT_MODE, *args], input=input, capture_output=True,
        env=base_env(home), timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def connect(srv: ServerProcess, **kwargs: Any) -> rshell.Connection:
    """``rshell.connect`` to a test server, in the same mode as the CLI helper."""
    kwargs.setdefault("tls", "--no-tls" not in CLIENT_MODE)
    return rshell.connect(srv.address, **kwargs)
