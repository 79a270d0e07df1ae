"""Several targets on a terminal, through the real ``rshell`` on a pseudo-terminal
(pexpect): the fleet prompt (each line on every host, output gathered, each
host keeping its own ``cd``), the progress line where output is not
streamed, and a colour per host in the live prefixes.  And ``rshell cp`` to
and from a group, through the real CLI."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from tests.support.cli import cli
from tests.support.servers import ServerProcess

Spawn = Callable[..., pexpect.spawn]


@pytest.fixture
def two(start_server: Callable[..., ServerProcess]) -> list[ServerProcess]:
    return [start_server(), start_server()]


def test_the_fleet_prompt_runs_each_line_on_every_host_and_gathers(
    two: list[ServerProcess], terminals: Spawn,
) -> None:
    a, b = (s.address for s in two)
    child = terminals(f"{a},{b}")
    prompt = re.escape("rshell ") + r"\S+> "
    child.expect(prompt)
    child.sendline("cd /tmp")
    child.expect(prompt)
    child.sendline("pwd; echo mark-$((6*7))")  # the typed line never says mark-42
    child.expect(r"-{15,}\r\n(\S+) \(2\)\r\n-{15,}\r\n/tmp\r\nmark-42\r\n")
    folded = child.match.group(1)  # both hosts, folded: 127.0.0.1:[PORT,PORT]
    assert folded.startswith("127.0.0.1:[") and all(
        s.rsplit(":", 1)[1] in folded for s in (a, b)), folded
    child.expect(prompt)
    child.sendline("exit 3")  # a failed line: the summary names the hosts
    child.expect(r"rshell: 2 hosts: 0 succeeded; 2 failed: \S+")
    child.expect(prompt)
    child.sendeof()
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 1  # the last line's status


def test_a_group_streams_with_a_colour_per_host_on_a_terminal(
    two: list[ServerProcess], terminals: Spawn,
) -> None:
    a, b = (s.address for s in two)
    child = terminals(f"{a},{b}", "-c", "echo out-$((1+1))")
    child.expect(pexpect.EOF, timeout=20)
    text = child.before
    child.close()
    assert child.exitstatus == 0, text
    for address in (a, b):
        assert re.search(r"\x1b\[3\dm" + re.escape(f"{address}:") + r" *\x1b\[0m *out-2", text), \
            text


def test_gathered_output_shows_progress_on_a_terminal_and_clears_it(
    two: list[ServerProcess], terminals: Spawn,
) -> None:
    a, b = (s.address for s in two)
    child = terminals(f"{a},{b}", "-b", "-c", "echo same")
    child.expect(pexpect.EOF, timeout=20)
    text = child.before
    child.close()
    assert child.exitstatus == 0, text
    assert "rshell: 2/2 hosts done" in text and "\r\x1b[K" in text
    assert re.search(r"\(2\)\r\n-+\r\nsame\r\n", text), text


def test_cp_to_and_from_a_group_through_the_cli(
    home: Path, tmp_path: Path, two: list[ServerProcess],
) -> None:
    a, b = (s.address for s in two)
    (home / "config.toml").write_text(f'[groups]\npair = ["{a}", "{b}"]\n')
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    remote = tmp_path / "remote"
    remote.mkdir()
    up = cli(home, "cp", "-q", str(source), f"@pair:{remote}/")
    assert up.returncode == 0, up.stderr
    assert b"rshell: 2 hosts: 2 succeeded" in up.stderr
    assert (remote / "payload.bin").read_bytes() == source.read_bytes()
    logs = tmp_path / "logs"
    logs.mkdir()
    down = cli(home, "cp", "-q", f"@pair:{remote}/payload.bin", f"{logs}/")
    assert down.returncode == 0, down.stderr
    assert sorted(p.name for p in logs.iterdir()) == sorted(
        f"payload.bin.{address}" for address in (a, b))
    assert all(p.read_bytes() == source.read_bytes() for p in logs.iterdir())
    missing = cli(home, "cp", "-q", f"@pair:{remote}/nothing-here", f"{logs}/")
    assert missing.returncode == 1
    said = missing.stderr.decode()
    for address in (a, b):
        assert f"rshell cp: {address}: " in said and "nothing-here" in said
    assert "2 failed" in said


def test_a_client_out_of_descriptors_says_so_per_host_not_a_traceback(
    home: Path, start_server: Callable[..., ServerProcess],
) -> None:
    """A Group keeps every host's connection (about four descriptors each):
    with a hard limit of 64 open files, the hosts past it are ConnectionFailed
    naming ulimit -n, the others succeed, nothing is raised.  (The server
    takes no penalties: this client's failures are not its peers'.)"""
    import subprocess
    import sys

    srv = start_server(*[a for _ in range(29) for a in ("--bind", "127.0.0.1:0")],
                       "--per-source-penalties", "no")
    addresses = re.findall(r"INFO listening on (\S+)", srv.log)
    while len(addresses) < 30:  # the other listeners' lines follow the first
        srv.wait_for_log(r"listening on", timeout=10)
        addresses = re.findall(r"INFO listening on (\S+)", srv.log)
    for address in addresses[1:]:
        srv.pin(home, address, srv.fingerprint)
    script = (
        "import resource, sys, rshell\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "with rshell.Group(sys.argv[1:]) as g:\n"
        "    r = g.run('true')\n"
        "print(len(r.succeeded), len(r.unreachable))\n"
        "print(r[r.unreachable[0]] if r.unreachable else '')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *addresses], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "RSHELL_HOME": str(home)})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    counts, reason = proc.stdout.splitlines()[:2]
    ok, unreachable = map(int, counts.split())
    assert ok + unreachable == 30 and ok >= 5 and unreachable >= 5, proc.stdout
    assert "Too many open files" in reason and "ulimit -n" in reason


def test_fingerprint_and_copy_id_take_an_alias(
    home: Path, two: list[ServerProcess],
) -> None:
    """An alias works wherever a target does: ``rshell fingerprint web1``
    asks the alias's address, ``rshell copy-id web1`` logs in there."""
    srv = two[0]
    (home / "config.toml").write_text(
        f'[hosts.web1]\naddress = "127.0.0.1"\nport = {srv.port}\n')
    shown = cli(home, "fingerprint", "web1")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode().startswith(f"127.0.0.1:{srv.port} ")
    assert srv.fingerprint in shown.stdout.decode()
    copied = cli(home, "copy-id", "-n", "web1")
    assert copied.returncode == 0, copied.stderr
