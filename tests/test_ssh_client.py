"""rshell as a client of a real OpenSSH sshd (started here, on loopback, with
its own host key, authorized_keys and config): ``ssh://user@host:port``
targets through the CLI and the API give the same behaviour and Result."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rshell
from tests.conftest import RSHELL, ServerProcess

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
        self._log = b""

    def env(self) -> dict[str, str]:
        return dict(os.environ, HOME=str(self.home), RSHELL_HOME=str(self.home / "rshell"))

    def cli(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [RSHELL, self.target, "-i", str(self.client_key), *args], input=input,
            capture_output=True, env=self.env(), timeout=120,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def log(self) -> str:
        """What sshd has logged so far (-e: to its stderr), without blocking."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        os.set_blocking(fd, False)
        try:
            while chunk := os.read(fd, 65536):
                self._log += chunk
        except BlockingIOError:
            pass
        return self._log.decode(errors="replace")

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
        hung = conn.run("sleep 5", timeout=1)
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
    """The interactive prompt drives an sshd too: cd persists, a failure after
    output is no command error, Ctrl-D leaves."""
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
        child.sendline("echo out; exit 5")  # output, then a failure: no command error
        child.expect(r"@127\.0\.0\.1:/tmp\$ ")
        assert "out" in child.before and "command error" not in child.before
        child.sendline("true")  # Ctrl-D leaves with the last status
        child.expect(r"@127\.0\.0\.1:/tmp\$ ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


# ---- what users of the ssh:// backend saw (issue 10) ------------------------------------


def test_output_then_a_failure_is_no_command_error(sshd: Sshd) -> None:
    """Output went to the terminal, so a failure is no silent one: the exit
    status alone, on every path (one-shot, stderr, signal, batch, prompt)."""
    for command, status in [("echo out; exit 5", 5), ("echo err >&2; exit 5", 5),
                            ("echo out; kill -TERM $$", 143)]:
        proc = sshd.cli("--accept-new", "-c", command)
        assert proc.returncode == status, (command, proc.stderr)
        assert b"command error" not in proc.stderr, (command, proc.stderr)
    batch = sshd.cli(input=b"echo out; exit 5\n")
    assert (batch.returncode, batch.stdout) == (5, b"out\n")
    assert b"command error" not in batch.stderr
    # The prompt: test_prompt_over_ssh.


def test_a_port_that_is_not_ssh_is_one_line(sshd: Sshd, server: ServerProcess) -> None:
    """paramiko's log (a 20-line traceback) never reaches the user: a plain
    TCP port that answers garbage, and an rshell TLS port, each give one
    line and 255."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_garbage() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"garbage\r\n" * 4)
                time.sleep(0.2)

    threading.Thread(target=answer_garbage, daemon=True).start()
    try:
        for port in (listener.getsockname()[1], server.port):
            proc = subprocess.run(
                [RSHELL, f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "--connect-timeout",
                 "5", "-i", str(sshd.client_key), "-c", "true"],
                capture_output=True, env=sshd.env(), timeout=60, stdin=subprocess.DEVNULL,
            )
            assert proc.returncode == 255, proc.stderr
            assert proc.stderr.count(b"\n") == 1 and proc.stderr.startswith(b"rshell: "), \
                proc.stderr
            assert b"Traceback" not in proc.stderr and proc.stdout == b""
    finally:
        listener.close()


def test_a_timeout_ends_as_natively_and_stops_what_sshd_lets_us(sshd: Sshd) -> None:
    """``--timeout 1``: 143 and ``timed out after 1 s``, as natively.  The
    command gets an RFC 4254 ``signal`` (TERM), then its channel is closed:
    a command that writes ends at once (its pipe is gone); one that only
    sleeps ends on the signal where sshd honours it, and runs on where sshd
    refuses (a root login here: "session signalling requires privilege
    separation"), as it would under ``ssh``."""
    pid_file = sshd.root / "pid"
    writer = sshd.cli("--accept-new", "--timeout", "1", "-c",
                      f"echo $$ > {pid_file}; while :; do echo tick; sleep 0.1; done")
    assert writer.returncode == 143
    assert writer.stderr.endswith(b"rshell: command error: timed out after 1 s\n")
    assert writer.stdout.startswith(b"tick\n")  # output kept until the stop
    assert wait_gone(int(pid_file.read_text()), 5), "the writing command still runs"

    started = time.monotonic()
    sleeper = sshd.cli("--timeout", "1", "-c", f"echo $$ > {pid_file}; exec sleep 7")
    assert sleeper.returncode == 143 and time.monotonic() - started < 6
    assert sleeper.stderr == b"rshell: command error: timed out after 1 s\n"
    pid = int(pid_file.read_text())
    if not wait_gone(pid, 2):  # sshd would not signal it: say why, then clean up
        try:
            assert "session signalling requires privilege separation" in sshd.log()
        finally:
            os.kill(pid, 9)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # sshd's to reap; it runs nothing


_STREAM_CLIENT = """
import json, os, sys, time, rshell
def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
size, target, key, known = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
seen = 0
def take(data):
    global seen
    seen += len(data)
    if seen - len(data) < 64 << 20 <= seen:
        time.sleep(1.0)  # a slow consumer: the sender must wait, not we buffer
with rshell.connect(target, identity=key, known_hosts=known, accept_new=True) as conn:
    before = peak()
    result = conn.run(f"head -c {size} /dev/zero", on_stdout=take)
    print(json.dumps({"seen": seen, "ok": result.ok, "growth_kib": peak() - before}))
"""


def test_a_large_stream_stays_in_bounded_memory(sshd: Sshd) -> None:
    """512 MiB through the API with a callback that stalls for a second: the
    client reads the channel only as the callback takes it, so SSH's window
    holds the sender and the client's peak RSS barely moves (the old reader
    threads queued what arrived meanwhile: +176 MiB for 1 GiB).  About 3 s
    on an idle machine; paramiko's ciphers make it CPU-bound."""
    size = 512 << 20
    proc = subprocess.run(
        [sys.executable, "-c", _STREAM_CLIENT, str(size),
         sshd.target, str(sshd.client_key), str(sshd.home / ".ssh" / "known_hosts")],
        capture_output=True, env=sshd.env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["seen"] == size and report["ok"]
    assert report["growth_kib"] < 64 * 1024, report
