"""Helpers for test_parity.py: one server with both listeners, the key's
authorized_keys options, a paramiko client for what OpenSSH cannot send (an
RFC 4254 ``signal`` request) or does not report (``exit-signal``), and a
snapshot of a server process's descriptors, threads and children.

Linux only (/proc), like the server's process handling.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from rshell.ssh import _paramiko as door
from tests.conftest import ServerProcess

SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
#: Seconds any single client-side wait may take before the test gives up.
WAIT = 15.0


def start_both(
    start_server: Callable[..., ServerProcess], account: Path, *flags: str
) -> ServerProcess:
    """A server with the native and the SSH listener on 127.0.0.1, whose
    account home is ``account`` (so where a command runs is known, whatever
    the tester's HOME); the SSH port as ``ssh_port``."""
    account.mkdir(exist_ok=True)
    srv = start_server("--ssh-bind", "127.0.0.1:0", "--home", str(account), *flags)
    srv.ssh_port = int(srv.wait_for_log(r"ssh listening on \S+:(\d+)").group(1))  # type: ignore[attr-defined]
    return srv


def set_key_options(srv: ServerProcess, options: str) -> None:
    """Give the tester's key (the only line of authorized_keys) ``options``."""
    path = srv.home / "server" / "authorized_keys"
    key = (srv.home / "id_ed25519.pub").read_text().strip()
    path.write_text(f"{options} {key}\n")


def make_stranger(path: Path) -> Path:
    """A fresh Ed25519 key pair that authorized_keys does not hold."""
    assert SSH_KEYGEN is not None
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


# ---- paramiko as an SSH client --------------------------------------------------------


@contextmanager
def paramiko_client(srv: ServerProcess) -> Iterator[paramiko.SSHClient]:
    """An authenticated paramiko client to the SSH listener, with the tester's key."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            "127.0.0.1", port=srv.ssh_port, username="tester",  # type: ignore[attr-defined]
            key_filename=str(srv.home / "id_ed25519"), look_for_keys=False,
            allow_agent=False, timeout=WAIT, banner_timeout=WAIT, auth_timeout=WAIT,
        )
        yield client
    finally:
        client.close()


def send_signal_request(chan: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9: ``signal`` with a signal name (``USR1``), no reply wanted,
    through rshell's own door to paramiko's private API."""
    door.channel_request(chan, "signal", name)


def read_until(chan: paramiko.Channel, wanted: bytes, got: bytearray) -> None:
    """Append the channel's stdout to ``got`` until it holds ``wanted`` (or EOF)."""
    chan.settimeout(WAIT)
    while wanted not in got:
        data = chan.recv(65536)
        if not data:
            return
        got += data


def read_to_eof(chan: paramiko.Channel, got: bytearray) -> None:
    chan.settimeout(WAIT)
    while True:
        data = chan.recv(65536)
        if not data:
            return
        got += data


# ---- the server process as /proc sees it ----------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every child of ``pid``, zombies included."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = _stat(int(name))
            if info is not None and info[1] == pid:
                found.append((int(name), info[0]))
    return found


def session_processes(server_pid: int) -> list[int]:
    """Live processes started for any session of the server ``server_pid``,
    wherever they were reparented: they carry its session marker
    (``RSHELL_SESSION=<server pid>:<n>``, exec/sweep.py) in their environment."""
    prefix = f"\0RSHELL_SESSION={server_pid}:".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        info = _stat(int(name))
        if info is None or info[0] == "Z":
            continue
        try:
            environ = b"\0" + Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if prefix in environ:
            found.append(int(name))
    return found


@dataclass(frozen=True)
class Usage:
    fds: int
    threads: int
    children: tuple[tuple[int, str], ...]
    descendants: tuple[int, ...]


def usage(pid: int) -> Usage:
    return Usage(
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=len(os.listdir(f"/proc/{pid}/task")),
        children=tuple(children(pid)),
        descendants=tuple(session_processes(pid)),
    )


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, or VmHWM: the peak), in KiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match, f"no {field} for {pid}"
    return int(match.group(1))
