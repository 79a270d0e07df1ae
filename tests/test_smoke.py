"""The README's promise in a few lines: a server, a client, a command."""

from __future__ import annotations

from pathlib import Path

import rshell
from tests.conftest import CLIENT_MODE, ServerProcess, cli


def test_one_shot_exit_status_and_streams(home: Path, server: ServerProcess) -> None:
    proc = cli(home, server.address, "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"


def test_api_run(home: Path, server: ServerProcess) -> None:
    with rshell.connect(server.address, tls="--no-tls" not in CLIENT_MODE) as conn:
        r = conn.run("printf abc; exit 0")
        assert (r.exit_code, r.stdout, r.ok) == (0, b"abc", True)
