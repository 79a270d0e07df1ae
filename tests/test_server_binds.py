"""Starting rshell-server: the addresses it listens on (several at once, IPv4
and IPv6), what its first start provisions, and clean refusal to start."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RSHELL_SERVER, ServerProcess, base_env, cli
from tests.support.cli import one_line_error
from tests.support.wire import free_port

StartServer = Callable[..., ServerProcess]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv4_and_ipv6_binds_both_serve(home: Path, start_server: StartServer) -> None:
    port6 = free_port(socket.AF_INET6, "::1")
    srv = start_server("--bind", f"[::1]:{port6}")
    srv.wait_for_log(re.escape(f"listening on [::1]:{port6}"))
    assert len(re.findall(r"listening on (\S+)", srv.log)) == 2
    with open(home / "known_hosts", "a") as f:
        f.write(f"[::1]:{port6} {srv.fingerprint}\n")
    v4 = cli(home, srv.address, "-c", "echo $RSHELL_CLIENT")
    v6 = cli(home, f"[::1]:{port6}", "-c", "echo $RSHELL_CLIENT")
    assert v4.returncode == 0 and v4.stdout.startswith(b"127.0.0.1:")
    assert v6.returncode == 0 and v6.stdout.startswith(b"[::1]:"), v6.stderr


def test_port_in_use_is_a_one_line_error(home: Path, server: ServerProcess) -> None:
    proc = subprocess.run(
        [RSHELL_SERVER, "--bind", server.address], env=base_env(home),
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_bind_address_is_usage_error(home: Path) -> None:
    proc = subprocess.run(
        [RSHELL_SERVER, "--bind", "127.0.0.1:notaport"], env=base_env(home),
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    assert "bad port" in proc.stderr and "Traceback" not in proc.stderr


def test_server_bad_state_dir_is_one_line(home: Path) -> None:
    """A state directory that cannot be created is a message, not a traceback."""
    proc = subprocess.run([RSHELL_SERVER, "--bind", "127.0.0.1:0", "--state-dir", "/proc/foo"],
                          capture_output=True, env=base_env(home), stdin=subprocess.DEVNULL,
                          timeout=30)
    assert proc.returncode != 0
    line = one_line_error(proc.stderr, "rshell-server")
    assert "/proc/foo" in line


def test_first_start_provisions_keys_once(home: Path, start_server: StartServer) -> None:
    """A fresh home gets a private host key, the user's key pair and an
    authorized_keys holding exactly that key, each logged once; a restart
    reuses them all."""
    first = start_server()
    host_key = home / "server" / "host_key"
    identity = home / "id_ed25519"
    authorized = home / "server" / "authorized_keys"
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    pub = Path(f"{identity}.pub").read_text().strip()
    assert authorized.read_text() == pub + "\n"
    first.wait_for_log(r"created .*authorized_keys")
    for pattern in (r"generated host key", r"generated your rshell key pair",
                    r"created .*authorized_keys"):
        hits = [ln for ln in first.log.splitlines() if re.search(pattern, ln)]
        assert len(hits) == 1, (pattern, first.log)
    assert first.stop() == 0
    identity_before = identity.read_bytes()

    second = start_server()
    assert second.fingerprint == first.fingerprint
    assert identity.read_bytes() == identity_before
    assert authorized.read_text() == pub + "\n"
    assert not re.search(r"generated|created", second.log), second.log
    assert cli(home, second.address, "-c", "true").returncode == 0
