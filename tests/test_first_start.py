"""Several servers started at once on a fresh state (a fleet's test rig, a
service manager starting instances together): each makes or takes the one
host key, the user's key pair and authorized_keys, and every one serves.
Before, the losers of the race exited with "host_key already exists"."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.cli import RSHELL_SERVER, base_env, cli
from tests.support.procs import wait_until

SERVERS = 6


def test_servers_started_together_on_a_fresh_state_all_serve(home: Path) -> None:
    procs = [subprocess.Popen([RSHELL_SERVER, "--bind", "127.0.0.1:0"], env=base_env(home),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
             for _ in range(SERVERS)]
    logs: list[str] = [""] * SERVERS
    try:
        for n, proc in enumerate(procs):
            assert proc.stderr is not None
            for line in proc.stderr:
                logs[n] += line
                if "listening on" in line or proc.poll() is not None:
                    break
        assert all("listening on" in log for log in logs), "\n----\n".join(logs)
        prints = {re.search(r"host key fingerprint (\S+)", log).group(1)  # type: ignore[union-attr]
                  for log in logs}
        assert len(prints) == 1, prints  # one host key, whoever made it
        for log in logs:
            address = re.search(r"listening on (\S+)", log).group(1)  # type: ignore[union-attr]
            done = cli(home, "--accept-new", address, "-c", "echo up")
            assert done.returncode == 0 and done.stdout == b"up\n", done.stderr
        key = (home / "server" / "authorized_keys").read_text()
        assert key.count("\n") == 1 and key.split()[:2] == (
            home / "id_ed25519.pub").read_text().split()[:2]
        assert not [p for p in (home / "server").iterdir() if p.name.endswith(".new")]
    finally:
        for proc in procs:
            proc.terminate()
        assert wait_until(lambda: all(p.poll() is not None for p in procs), 10)
