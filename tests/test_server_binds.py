"""Listening: several addresses at once, IPv4 and IPv6, and clean refusal to start."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RSHELL_SERVER, ServerProcess, base_env, cli


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv4_and_ipv6_binds_both_serve(home: Path, start_server: object) -> None:
    port6 = _free_port(socket.AF_INET6, "::1")
    srv: ServerProcess = start_server("--bind", f"[::1]:{port6}")  # type: ignore[operator]
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
