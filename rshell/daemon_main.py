"""Starting and stopping the daemon process: flags to config, logging, signals.

Must not import click (cli.py parses the flags and calls ``run_server``).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rshell.errors import UsageError
from rshell.paths import DEFAULT_PORT, parse_hostport, rshell_home

log = logging.getLogger("rshell.server")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({
            "time": round(record.created, 3), "level": record.levelname.lower(),
            "message": record.getMessage(),
        })


def _setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s rshell-server %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"
        ))
    root = logging.getLogger("rshell")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(
    *, binds: tuple[str, ...], state_dir: str | None, authorized_keys: str | None,
    no_tls: bool, no_auth: bool, allow_unauthenticated_remote: bool, timeout: float,
    max_output: int, max_connections: int, auth_timeout: float, shutdown_grace: float,
    shell: str, log_format: str, audit_log: str | None,
) -> int:
    """Run until SIGTERM or SIGINT; return 0 after a clean shutdown."""
    from rshell.server import Daemon
    from rshell.service import ServerConfig

    _setup_logging(log_format)
    addresses = [parse_hostport(b, DEFAULT_PORT) for b in binds or ("127.0.0.1",)]
    if no_auth and not allow_unauthenticated_remote:
        remote = [h for h, _ in addresses if not _is_loopback(h)]
        if remote:
            raise UsageError(
                f"--no-auth on non-loopback address {remote[0]} refused; add "
                "--allow-unauthenticated-remote if you really mean it"
            )
    if not Path(shell).is_file():
        raise UsageError(f"--shell {shell}: no such file")
    state = Path(state_dir) if state_dir else rshell_home() / "server"
    del state, authorized_keys, audit_log, max_connections  # wired in by later work
    if no_tls:
        log.warning("TLS DISABLED (--no-tls): traffic, commands and output travel in clear")
    if no_auth:
        log.warning("AUTHENTICATION DISABLED (--no-auth): anyone who connects runs commands")
    config = ServerConfig(
        shell=shell, timeout=timeout, max_output=max_output, auth_timeout=auth_timeout,
    )
    try:
        daemon = Daemon(addresses, config)
    except OSError as exc:
        raise UsageError(f"cannot listen: {exc.strerror or exc}") from None
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    daemon.start()
    for address in daemon.addresses:
        log.info("listening on %s", address)
    while not stop.wait(3600):
        pass
    name = signal.Signals(received[0]).name if received else "signal"
    log.info("%s received: shutting down (grace %gs, %d session(s))",
             name, shutdown_grace, daemon.session_count)
    started = time.monotonic()
    daemon.stop(shutdown_grace)
    log.info("stopped in %.2fs", time.monotonic() - started)
    return 0


__all__: list[Any] = ["run_server"]
