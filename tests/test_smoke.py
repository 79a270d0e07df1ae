"""The README's promise in a few lines: a server, a client, a command."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ServerProcess, cli, connect


def test_one_shot_exit_status_and_streams(home: Path, server: ServerProcess) -> None:
    proc = cli(home, server.address, "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"


def test_api_run(home: Path, server: ServerProcess) -> None:
    with connect(server) as conn:
        r = conn.run("printf abc; exit 0")
        assert (r.exit_code, r.stdout, r.ok) == (0, b"abc", True)
