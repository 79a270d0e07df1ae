"""rshell as a client of a real OpenSSH sshd (started here, on loopback, with
its own host key, authorized_keys and config): ``ssh://user@host:port``
targets through the CLI and the API give the same behaviour and Result."""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rshell
from tests.conftest import RSHELL

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not os.path.exists(SSHD),
                                reason="OpenSSH server missing (.ci/run installs it)")


class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700)
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "id_ed25519"
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        (root / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = root / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
            f"StrictModes no\nPidFile {root / 'sshd.pid'}\nPermitRootLogin prohibit-password\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("sshd did not start: " + self.proc.stderr.read().decode()
                                         if self.proc.stderr else "") from None
                time.sleep(0.05)
        self.target = f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"
        self.home = root / "home"
        self.home.mkdir()

    def env(self) -> dict[str, str]:
        return dict(os.environ, HOME=str(self.home), RSHELL_HOME=str(self.home / "rshell"))

    def cli(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [RSHELL, self.target, "-i", str(self.client_key), *args], input=input,
            capture_output=True, env=self.env(), timeout=120,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()


def test_one_shot_pins_the_host_and_propagates_status(sshd: Sshd) -> None:
    proc = sshd.cli("-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == b"out\n"
    assert b"err\n" in proc.stderr and b"pinned new host key" in proc.stderr
    known = (sshd.home / ".ssh" / "known_hosts").read_text()
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in known
    again = sshd.cli("-c", "echo quiet")
    assert again.returncode == 0 and again.stderr == b""


def test_batch_keeps_cd_and_json_reports(sshd: Sshd) -> None:
    proc = sshd.cli(input=b"cd /tmp\npwd\nfalse\n")
    assert proc.stdout == b"/tmp\n"
    assert proc.returncode == 1
    import json

    lines = sshd.cli("--json", input=b"echo a\nprintf '\\377'\n").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["stdout"] for r in records] == ["a\n", "\\xff"]
    assert all(r["exit_code"] == 0 and r["host"].startswith("ssh://") for r in records)


def test_large_stream_through_the_api(sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(sshd.home))
    digest = hashlib.sha256()
    with rshell.connect(sshd.target, identity=sshd.client_key, accept_new=True) as conn:
        result = conn.run("seq 1 6000000", on_stdout=digest.update)
        piped = conn.run("wc -c", stdin=b"x" * 3_000_000)
        hung = conn.run("sleep 30", timeout=1)
    local = subprocess.run(["seq", "1", "6000000"], capture_output=True, check=True).stdout
    assert result.ok and digest.digest() == hashlib.sha256(local).digest()
    assert piped.stdout.strip() == b"3000000"
    assert hung.error is not None and "timed out" in hung.error and hung.duration < 10


def test_changed_host_key_is_refused(sshd: Sshd) -> None:
    other = sshd.root / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    ssh_dir = sshd.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    wrong = Path(f"{other}.pub").read_text().split()
    (ssh_dir / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {wrong[0]} {wrong[1]}\n")
    before = (ssh_dir / "known_hosts").read_bytes()
    proc = sshd.cli("-c", "echo never")
    assert proc.returncode == 255
    assert b"HAS CHANGED" in proc.stderr and proc.stderr.count(b"\n") == 1
    assert proc.stdout == b""
    assert (ssh_dir / "known_hosts").read_bytes() == before


def test_unknown_host_with_strict_checking_is_refused(sshd: Sshd) -> None:
    proc = sshd.cli("--strict-host-keys", "-c", "echo never")
    assert proc.returncode == 255
    assert b"strict host key checking" in proc.stderr
    assert not (sshd.home / ".ssh" / "known_hosts").exists()


def test_a_signal_death_is_reported_as_such(sshd: Sshd) -> None:
    """sshd sends exit-signal; the client reports 128+N, promptly."""
    started = time.monotonic()
    proc = sshd.cli("--accept-new", "-c", "kill -TERM $$")
    assert proc.returncode == 128 + 15
    assert b"killed by SIGTERM" in proc.stderr
    assert time.monotonic() - started < 8


def test_prompt_over_ssh(sshd: Sshd) -> None:
    """The interactive prompt drives an sshd too: cd persists, Ctrl-D leaves."""
    import pexpect

    child = pexpect.spawn(RSHELL, [sshd.target, "-i", str(sshd.client_key), "--accept-new"],
                          env=sshd.env(), timeout=20, encoding="utf-8")
    try:
        child.expect(r"@127\.0\.0\.1:\S*\$ ")
        child.sendline("cd /tmp")
        child.expect(r"@127\.0\.0\.1:/tmp\$ ")
        child.sendline("echo in-$((40+2))")
        child.expect("in-42")
        child.expect(r"@127\.0\.0\.1:/tmp\$ ")  # back at the prompt before Ctrl-D
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
