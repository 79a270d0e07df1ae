"""The Python SSH clients rshell is measured against, both to the private
sshd (openssh.py): paramiko and asyncssh, each at its defaults (algorithms,
window sizes), with the throwaway key and the host key pinned.  A missing
client raises BenchError saying so, and mode all fails that peer only.

Also what the SSH figures share: paramiko's ``true`` and stream samples, and
the tally of exit statuses a server lost (mode ssh).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from .core import BenchError, MiB

#: The client's read size for stream output (channel.recv returns what is buffered).
SSH_RECV = MiB


# ---- paramiko ---------------------------------------------------------------------------


def import_paramiko() -> ModuleType:
    try:
        import paramiko
    except ImportError:
        raise BenchError("paramiko is not importable here (pip install -e '.[bench]')") from None
    module: ModuleType = paramiko
    return module


def ssh_client(address: str, key_file: Path, what: str, *, host_key: Path | None = None,
               known_hosts: Path | None = None) -> Any:
    """A paramiko SSHClient, key authentication with the throwaway key, the
    server's host key pinned (from its key file, or a known_hosts file),
    TCP_NODELAY on its socket."""
    paramiko = import_paramiko()
    host, port = address.rsplit(":", 1)
    client = paramiko.SSHClient()
    if host_key is not None:
        client.get_host_keys().add(f"[{host}]:{port}", "ssh-ed25519",
                                   paramiko.Ed25519Key(filename=str(host_key)))
    if known_hosts is not None:
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host, int(port), username=getpass.getuser(),
                       pkey=paramiko.Ed25519Key(filename=str(key_file)), allow_agent=False,
                       look_for_keys=False, timeout=30, banner_timeout=30, auth_timeout=30)
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise BenchError(f"paramiko cannot log in to {what} at {address}: "
                         f"{type(exc).__name__}: {exc}") from None
    transport = client.get_transport()
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def ssh_transport_info(client: Any) -> dict[str, str]:
    """What was negotiated (server to client direction), to compare like with like."""
    t = client.get_transport()
    return {"server_version": t.remote_version, "host_key": t.host_key_type,
            "cipher": t.remote_cipher, "mac": t.remote_mac,
            "compression": t.remote_compression}


def ssh_exec(client: Any, command: str, sink: Callable[[bytes], Any] | None = None,
             close_stdin: bool = True) -> int:
    """One command on its own channel: open_session, exec_command, EOF on its
    stdin (as ``ssh -n`` and rshell's own SSH client send), stdout and stderr
    read to EOF (stdout into ``sink``), recv_exit_status; the status."""
    channel = client.get_transport().open_session(timeout=30)
    try:
        channel.settimeout(120)
        channel.exec_command(command)
        if close_stdin:
            channel.shutdown_write()
        recv = channel.recv
        while data := recv(SSH_RECV):
            if sink is not None:
                sink(data)
        while channel.recv_stderr(SSH_RECV):
            pass
        status: int = channel.recv_exit_status()
    except TimeoutError:
        raise BenchError(f"ssh: {command!r} gave no output nor EOF in 120 s") from None
    finally:
        channel.close()
    return status



def paramiko_true(client: Any, check: Callable[[int], None]) -> Callable[[], None]:
    """One ``true`` on its own channel; its exit status to ``check``."""
    return lambda: check(ssh_exec(client, "true"))


def exit_zero(label: str) -> Callable[[int], None]:
    def check(status: int) -> None:
        if status != 0:
            raise BenchError(f"{label}: 'true' exited {status}")
    return check


def paramiko_stream(client: Any, label: str, check: Callable[[int, str], None] | None = None,
                    ) -> Callable[[int, str], float]:
    """Seconds for ``command``'s output through paramiko, read with recv(1 MiB):
    every byte must come, and exit status 0 (or what ``check`` accepts)."""
    def stream(size: int, command: str) -> float:
        got = 0

        def count(data: bytes) -> None:
            nonlocal got
            got += len(data)
        start = time.perf_counter()
        status = ssh_exec(client, command, count)
        elapsed = time.perf_counter() - start
        if got != size or (check is None and status != 0):
            raise BenchError(f"{label}: exit {status}, {got} of {size} bytes")
        if check is not None:
            check(status, command)
        return elapsed
    return stream


class ExitTally:
    """Commands per server, and those whose output came complete but whose exit
    status never did (paramiko's -1): a server fault that is counted and
    reported in a note, not fatal, so that it does not hide every figure.  Any
    other wrong status or byte count stops the mode."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {"sshd": [0, 0], "rshell": [0, 0]}

    def check(self, name: str, status: int, what: str) -> None:
        self.counts[name][1] += 1
        if status == -1:
            self.counts[name][0] += 1
        elif status != 0:
            raise BenchError(f"ssh: {what} on {name} exited {status}")

    def record(self, result: dict[str, Any]) -> None:
        result["lost_exit_status"] = {k: {"lost": lost, "commands": n}
                                      for k, (lost, n) in self.counts.items()}
        for name, (lost, n) in self.counts.items():
            if lost:
                result.setdefault("notes", []).append(
                    f"{name}: {lost} of {n} commands ended without an exit status (output "
                    "complete; their times are in the figure): a server fault, see its log")



# ---- asyncssh ---------------------------------------------------------------------------


def import_asyncssh() -> ModuleType:
    try:
        import asyncssh
    except ImportError as exc:
        raise BenchError(f"asyncssh is not importable here ({exc}); install the bench "
                         "extra: pip install -e '.[bench]'") from None
    return asyncssh


async def asyncssh_connect(address: str, key_file: Path, known_hosts: Path) -> Any:
    """An asyncssh client connection with the throwaway key and the pinned host
    key only: no ~/.ssh/config, no agent; asyncssh's default algorithms."""
    asyncssh = import_asyncssh()
    host, port = address.rsplit(":", 1)
    return await asyncssh.connect(
        host, int(port), username=getpass.getuser(), client_keys=[str(key_file)],
        known_hosts=str(known_hosts), agent_path=None, config=[], connect_timeout=30)


@cache
def _counting_session() -> type:
    """An ``SSHClientSession`` that counts stdout bytes and keeps the exit
    status: asyncssh's lowest-overhead way to consume output (a callback per
    packet, as rshell's ``on_stdout``), built once asyncssh is imported."""
    asyncssh = import_asyncssh()

    class CountingSession(asyncssh.SSHClientSession):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.got = 0
            self.status: int | None = None

        def data_received(self, data: bytes, datatype: Any) -> None:
            if datatype is None:
                self.got += len(data)

        def exit_status_received(self, status: int) -> None:
            self.status = status

    return CountingSession


def asyncssh_info(conn: Any) -> dict[str, str]:
    get = conn.get_extra_info
    return {"server_version": str(get("server_version")), "cipher": str(get("recv_cipher")),
            "mac": str(get("recv_mac")), "compression": str(get("recv_compression"))}


class AsyncsshPeer:
    """One asyncssh connection to sshd, on an event loop of its own that runs
    only while one of its samples is taken (so it costs nothing in between)."""

    def __init__(self, address: str, key_file: Path, known_hosts: Path) -> None:
        self.asyncssh = import_asyncssh()
        self.loop = asyncio.new_event_loop()
        try:
            self.conn = self.loop.run_until_complete(
                asyncssh_connect(address, key_file, known_hosts))
        except (OSError, self.asyncssh.Error) as exc:
            self.loop.close()
            raise BenchError(f"asyncssh cannot log in to sshd at {address}: "
                             f"{type(exc).__name__}: {exc}") from None
        self.info = asyncssh_info(self.conn)

    def roundtrip(self, k: int) -> float:
        """ms per ``conn.run("true")``: one exec channel per command, as the API
        is meant to be used; the mean over ``k`` in a row."""
        async def batch() -> float:
            start = time.perf_counter()
            for _ in range(k):
                result = await self.conn.run("true")
                if result.exit_status != 0:
                    raise BenchError(f"asyncssh: 'true' exited {result.exit_status}")
            return (time.perf_counter() - start) / k * 1e3
        return self.loop.run_until_complete(batch())

    def stream(self, size: int, command: str, **options: Any) -> float:
        """Seconds for ``command``'s output, counted as it arrives (stdin closed);
        ``options``: more for ``create_session`` (a terminal's, say)."""
        async def one() -> float:
            start = time.perf_counter()
            chan, session = await self.conn.create_session(_counting_session(), command,
                                                            encoding=None, **options)
            chan.write_eof()
            await chan.wait_closed()
            elapsed = time.perf_counter() - start
            if session.got != size or session.status != 0:
                what = "pty cat" if options.get("term_type") else "stream"
                raise BenchError(f"asyncssh {what}: exit {session.status}, "
                                 f"{session.got} of {size} bytes")
            return elapsed
        return self.loop.run_until_complete(one())

    def close(self) -> None:
        self.conn.close()
        self.loop.run_until_complete(self.conn.wait_closed())
        self.loop.close()
