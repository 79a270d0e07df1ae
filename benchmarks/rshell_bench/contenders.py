"""rshell's side of every mode: its servers and clients, and the rig that
sets them up and tears them down.

Owns: ``rshell-server`` processes on 127.0.0.1 (``ServerProcess``), finding
the installed console scripts and the interpreter they run under, the
in-process API client (its TLS checked), the stream sample through it, and
``Rig``: a temporary ``RSHELL_HOME``, the environment every child gets, the
servers started (stopped by an ``ExitStack``, each exit status recorded),
host-key pinning, and the servers' log tails for a failure message.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .core import LOOPBACK, BenchError
from .plans import Mode
from .procs import run_cli, stop_process

LISTEN = re.compile(r"(?<!ssh )listening on (\S+)")
SSH_LISTEN = re.compile(r"ssh listening on (\S+)")


class ServerProcess:
    """``rshell-server --bind 127.0.0.1:0`` with its log in a file.

    The log goes to a file, not a pipe we drain: a reader thread would compete
    for the GIL with the client being measured, and an undrained pipe would
    block the server once it fills with per-command log lines.
    """

    def __init__(self, exe: Path, flags: tuple[str, ...], env: dict[str, str], log: Path):
        self.log_path = log
        self.argv = [str(exe), "--bind", f"{LOOPBACK}:0", *flags]
        with open(log, "wb") as sink:
            self.proc = subprocess.Popen(
                self.argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=sink,
            )
        self.address = self.wait_listening(LISTEN, "listening on", 20.0)

    def wait_listening(self, pattern: re.Pattern[str], what: str, timeout: float) -> str:
        """The address of the first log line matching ``pattern``; 127.0.0.1 only."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.search(self.log_path.read_text(errors="replace"))
            if found:
                address = found.group(1)
                if address.rsplit(":", 1)[0] != LOOPBACK:
                    self.stop()
                    raise BenchError(f"server says '{what} {address}', not on {LOOPBACK}")
                return address
            if self.proc.poll() is not None:
                raise BenchError(
                    f"rshell-server exited with status {self.proc.returncode} before "
                    f"'{what}':\n{self.log_tail()}")
            time.sleep(0.02)
        self.stop()
        raise BenchError(f"rshell-server did not say '{what}' in {timeout:g}s:\n"
                         f"{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def stop(self) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL if that takes over 15 s."""
        return stop_process(self.proc, 15.0)


def tool(bin_dir: Path, name: str) -> Path:
    """An rshell console script next to the interpreter (the venv), or on PATH."""
    path = bin_dir / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} not found in {bin_dir} nor on PATH; is rshell installed?")
    return Path(found)


def script_interpreter(script: Path) -> str:
    """The interpreter a console script runs under (its shebang), for a fair
    ``python -c pass`` baseline; this interpreter if that cannot be read."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and Path(parts[0]).name.startswith("python") and os.access(parts[0], os.X_OK):
            return parts[0]
    return sys.executable



# ---- the rshell side --------------------------------------------------------------------


def rshell_connect() -> Callable[..., Any]:
    """``rshell.connect``; through ``rshell.client`` if the package's lazy export is
    unreachable (a stale editable install can leave ``rshell`` a namespace package)."""
    import rshell

    try:
        connect: Callable[..., Any] = rshell.connect
    except AttributeError:
        from rshell.client import connect
    return connect


def probe_tls(address: str) -> dict[str, str]:
    """Does the server answer a TLS 1.3 handshake?  Checked before anything else so
    that a server that does not speak TLS yet fails with this message, not a
    protocol error three layers down."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # identity is the client's business; this probes TLS
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        with socket.create_connection((host, int(port)), timeout=5) as raw, \
                ctx.wrap_socket(raw) as tls:
            cipher = tls.cipher()
            return {"version": str(tls.version()), "cipher": cipher[0] if cipher else "?"}
    except (ssl.SSLError, OSError) as exc:
        raise BenchError(
            f"rshell-server (default flags) at {address} does not answer a TLS 1.3 "
            f"handshake ({type(exc).__name__}: {exc}); server-side TLS is not implemented "
            "yet? Use --mode plain meanwhile.") from None


def open_connection(address: str, mode: Mode) -> tuple[Any, dict[str, str]]:
    """One API connection; in TLS mode, proof that it really is TLS (best effort)."""
    connect = rshell_connect()
    try:
        conn = connect(address, tls=mode.client_tls, connect_timeout=15.0)
    except Exception as exc:
        raise BenchError(
            f"rshell.connect({address!r}, tls={mode.client_tls}) failed: "
            f"{type(exc).__name__}: {exc}"
            + ("; client-side TLS or authentication not implemented yet?"
               if mode.client_tls else "")) from None
    info: dict[str, str] = {}
    sock = getattr(getattr(conn, "_stream", None), "sock", None)  # private: best effort
    if mode.client_tls and sock is not None:
        if not isinstance(sock, ssl.SSLSocket):
            conn.close()
            raise BenchError("rshell.connect(tls=True) returned a plain-TCP connection: "
                             "client-side TLS is not implemented yet")
        cipher = sock.cipher()
        info = {"version": str(sock.version()), "cipher": cipher[0] if cipher else "?"}
    return conn, info



def checked_run(conn: Any) -> Callable[[], None]:
    """``conn.run("true")`` that raises unless it exited 0."""
    run = conn.run

    def one() -> None:
        result = run("true")
        if result.exit_code != 0:
            raise BenchError(f"rshell: 'true' exited {result.exit_code}, error {result.error}")
    return one



def rshell_stream(conn: Any, **run: Any) -> Callable[[int, str], float]:
    """Seconds for ``command``'s output through ``conn``, counted by a callback;
    ``run``: more arguments for ``conn.run`` (a terminal's, say)."""
    what = "pty cat" if run.get("pty") else "stream"

    def stream(size: int, command: str) -> float:
        counted = 0

        def sink(chunk: bytes | memoryview) -> None:
            nonlocal counted
            counted += len(chunk)
        start = time.perf_counter()
        result = conn.run(command, on_stdout=sink, **run)
        elapsed = time.perf_counter() - start
        if result.exit_code != 0 or counted != size:
            raise BenchError(f"rshell {what}: exit {result.exit_code}, error {result.error}, "
                             f"{counted} of {size} bytes")
        return elapsed
    return stream




def login_shell() -> str:
    """The user's login shell: sshd runs every command with it."""
    return pwd.getpwuid(os.getuid()).pw_shell or "/bin/sh"


# ---- the rig ----------------------------------------------------------------------------


class Rig:
    """What a mode starts for rshell: a temporary ``RSHELL_HOME`` (also this
    process's while the mode runs, for the in-process client), the environment
    every child gets, servers and API connections; ``stack`` stops them all."""

    def __init__(self, workdir: Path, bin_dir: Path, stack: ExitStack) -> None:
        self.workdir, self.bin_dir, self.stack = workdir, bin_dir, stack
        self.home = workdir / "home"
        self.home.mkdir(mode=0o700)
        self.env = dict(os.environ, RSHELL_HOME=str(self.home), PYTHONUNBUFFERED="1",
                        PYTHONPYCACHEPREFIX=str(workdir / "pycache"))
        # Bytecode is cached (after the warm-up) as in an installed copy, even where
        # PYTHONDONTWRITEBYTECODE is set, and never written into the source tree.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        stack.callback(restore_env, "RSHELL_HOME", os.environ.get("RSHELL_HOME"))
        os.environ["RSHELL_HOME"] = str(self.home)  # the in-process client reads its keys here
        self.servers: dict[str, ServerProcess] = {}
        self.log_labels: dict[str, str] = {}
        self.conns: dict[str, Any] = {}
        self.sshd: Any = None  # a peers.SshdProcess, in modes ssh and all

    def tool(self, name: str) -> Path:
        return tool(self.bin_dir, name)

    def start_server(self, flags: tuple[str, ...], log: str) -> ServerProcess:
        return ServerProcess(self.tool("rshell-server"), flags, self.env, self.workdir / log)

    def add_server(self, name: str, flags: tuple[str, ...], log: str, record: dict[str, Any],
                   key: str, log_label: str) -> ServerProcess:
        """A server kept for the whole mode; its exit status goes to ``record[key]``."""
        server = self.start_server(flags, log)
        self.stack.callback(stop_into, record, key, server.stop)
        self.servers[name] = server
        self.log_labels[name] = log_label
        return server

    def connect(self, name: str, mode: Mode) -> dict[str, str]:
        """An API connection to server ``name``, closed by the stack; its TLS info."""
        conn, info = open_connection(self.servers[name].address, mode)
        self.stack.callback(conn.close)
        self.conns[name] = conn
        return info

    def pin(self, address: str) -> None:
        """A first non-interactive contact pins the host key, so that no client
        after it ever asks on a terminal."""
        run_cli([str(self.tool("rshell")), "--accept-new", address, "-c", "true"], self.env,
                "first contact (pinning the host key)")

    def logs(self) -> str:
        """The last lines of every server's log, for a failure message."""
        parts = [f"  {self.log_labels[name]} log (last lines):\n{s.log_tail()}"
                 for name, s in self.servers.items()]
        if self.sshd is not None:
            parts.append(f"  sshd log (last lines):\n{self.sshd.log_tail()}")
        return "\n".join(parts)


def stop_into(record: dict[str, Any], key: str, stop: Callable[[], int | None]) -> None:
    """Stop a process, keeping its exit status in its JSON record."""
    record[key] = stop()


def restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
