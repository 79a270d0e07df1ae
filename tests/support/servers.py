"""Servers for the tests, both on 127.0.0.1 port 0 with the test's own keys:

- ``ServerProcess``: the real ``rshell-server`` subprocess, for tests about
  the process (signals, exit codes, its log, SIGKILL, leaks it would hold);
- ``InProcessServer``: the same daemon (``Daemon`` and its listener, with
  settings assembled by rshell-server's own code from the same flags) in
  this process, for tests about the wire and the protocol, where a process
  adds nothing but its start-up.

Both answer ``address``, ``port``, ``home``, ``fingerprint``, ``tls``,
``log`` and ``wait_for_log``, and pin their host key in ``home/known_hosts``
as a user would have on first contact.
"""

from __future__ import annotations

import inspect
import logging
import re
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rshell
from tests.support.cli import CLIENT_MODE, RSHELL_SERVER

#: Flags every test server gets: the secure default (TLS 1.3 + key auth) needs
#: none.  The server's first start generates the host key, the user's key pair
#: and authorized_keys in the test's RSHELL_HOME, which the client shares.
SERVER_MODE: list[str] = []

#: (A quote ends them too: the lines may be JSON, --log-format json.)
_LISTEN = re.compile(r"listening on ([^\s\"]+)")
_HOST_KEY = re.compile(r"host key fingerprint ([^\s\"]+)")


class LogLines:
    """A server's log, line by line, with a bounded wait for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._ended = False
        self._cond = threading.Condition()

    def add(self, line: str) -> None:
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
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
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    break
                self._cond.wait(left)
        raise AssertionError(f"no log line matching {rx.pattern!r}; log:\n" + self.log)

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def pin(self, home: Path, address: str, fingerprint: str) -> None:
        """Pin the host key as a user would have on first contact, so that
        tests see no "pinned new host key" notice unless they ask for one."""
        with open(home / "known_hosts", "a") as f:
            f.write(f"{address} {fingerprint}\n")


class ServerProcess(LogLines):
    """A running ``rshell-server``; its stderr is collected line by line."""

    def __init__(
        self, home: Path, args: list[str], env: dict[str, str], launcher: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.home = home
        self.tls = "--no-tls" not in args
        self.proc = subprocess.Popen(
            [*launcher, RSHELL_SERVER, *args], env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.fingerprint = self.wait_for_log(_HOST_KEY, timeout=20).group(1)
        self.address = self.wait_for_log(_LISTEN, timeout=20).group(1)
        self.port = int(self.address.rsplit(":", 1)[1])
        if self.tls:
            self.pin(home, self.address, self.fingerprint)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.add(line.rstrip("\n"))
        self.end()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop in time; log:\n" + self.log) from None


class _Collect(logging.Handler):
    def __init__(self, lines: LogLines) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(
            "%(asctime)s rshell-server %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.add(self.format(record))


class InProcessServer(LogLines):
    """rshell-server's daemon in this process, from rshell-server's flags.

    The settings come from rshell-server's own option parser and its own
    ``_settings`` (so a first start provisions the same keys in ``home``),
    the ``Daemon`` and its listener are the real ones (their accept loops
    polling faster), and ``stop`` is the graceful stop SIGTERM would have run
    (which ends with ``sweep.kill_own``: what still carries a marker of this
    process).  Not here: signals, the process's
    log writer, ``--ssh-bind``.  The log holds every in-process server's lines
    while this one runs (they share the ``rshell.server`` logger).
    """

    def __init__(self, home: Path, *flags: str) -> None:
        from rshell.cli.server import server_command
        from rshell.paths import rshell_home
        from rshell.server import main
        from rshell.server.listener import Daemon

        super().__init__()
        assert rshell_home() == home, "RSHELL_HOME must be the server's home (the home fixture)"
        self.home = home
        opts = server_command.make_context(
            "rshell-server", ["--bind", "127.0.0.1:0", *SERVER_MODE, *flags]).params
        assert not opts["ssh_binds"], "--ssh-bind needs a ServerProcess"
        self.tls = not opts["no_tls"]
        self._grace: float = opts["shutdown_grace"]
        self._logger = logging.getLogger("rshell.server")
        self._handler = _Collect(self)
        self._level = self._logger.level
        self._logger.addHandler(self._handler)
        self._logger.setLevel(logging.INFO)
        wanted = inspect.signature(main._settings).parameters
        self.settings, tls_context, _ = main._settings(
            **{name: value for name, value in opts.items() if name in wanted})
        self.daemon = Daemon(
            [_hostport(b) for b in opts["binds"]],
            self.settings, tls_context, max_connections=opts["max_connections"],
            max_unauthenticated=opts["max_unauthenticated"],
            penalties=main._penalties(opts["per_source_penalties"], opts["penalty_max"]))
        # Polling for a stop every 20 ms instead of 500 ms: a test's teardown
        # then waits milliseconds, not half a second.
        self.daemon.start(poll_interval=0.02)
        self.address = self.daemon.addresses[0]
        self.port = int(self.address.rsplit(":", 1)[1])
        self.fingerprint = self.wait_for_log(_HOST_KEY, timeout=0).group(1)
        if self.tls:
            self.pin(home, self.address, self.fingerprint)
        self._stopped = False

    def stop(self) -> None:
        """The graceful stop, as on SIGTERM: commands get the grace, then the sweeps."""
        from rshell.server import main

        if self._stopped:
            return
        self._stopped = True
        try:
            main._stop(self.daemon, self.settings, "SIGTERM", self._grace)
        finally:
            self._logger.removeHandler(self._handler)
            self._logger.setLevel(self._level)
            self.end()


def _hostport(text: str) -> tuple[str, int]:
    from rshell.paths import DEFAULT_PORT, parse_hostport

    return parse_hostport(text, DEFAULT_PORT, listen=True)


Server = ServerProcess | InProcessServer


def connect(srv: Server, **kwargs: Any) -> rshell.Connection:
    """``rshell.connect`` to a test server, in the same mode as the CLI helper."""
    kwargs.setdefault("tls", "--no-tls" not in CLIENT_MODE)
    return rshell.connect(srv.address, **kwargs)


__all__ = ["SERVER_MODE", "InProcessServer", "LogLines", "Server", "ServerProcess", "connect"]
