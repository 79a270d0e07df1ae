"""``rshell copy-id``: a second key admitted over a connection the first
already opens, against a real rshell-server (the file wherever the server
keeps it, told by the server), rshell's own SSH listener, and a real sshd
(``~/.ssh/authorized_keys``).  No duplicate line, the file's mode and inode
kept, the server's StrictModes still satisfied; restricted keys refused."""

from __future__ import annotations

import getpass
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rshell.trust import modes
from tests.conftest import RSHELL, ServerProcess, base_env, cli, one_line_error

SSHD = "/usr/sbin/sshd"


def keygen(path: Path) -> Path:
    """A fresh Ed25519 pair at ``path`` (and ``path.pub``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "second@test",
                    "-f", str(path)], check=True)
    return path


def blob(pub: Path) -> str:
    return pub.read_text().split()[1]


def key_lines(path: Path, pub: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if blob(pub) in line]


def fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[1]


def test_copy_id_admits_a_second_key_once(home: Path, server: ServerProcess,
                                          tmp_path: Path) -> None:
    second = keygen(tmp_path / "second")
    authorized = home / "server" / "authorized_keys"
    before = os.stat(authorized)
    refused = cli(home, "-i", str(second), server.address, "-c", "true")
    assert refused.returncode == 255, refused.stderr

    added = cli(home, "copy-id", "-i", f"{second}.pub", server.address)
    assert added.returncode == 0, added.stderr
    assert added.stdout.decode() == (
        f"added key {fingerprint(Path(f'{second}.pub'))} to {server.address}:{authorized}\n")
    assert cli(home, "-i", str(second), server.address, "-c", "true").returncode == 0

    # Again, naming the private key: its .pub beside it is the key; nothing added.
    again = cli(home, "copy-id", "-i", str(second), server.address)
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode() == (f"key {fingerprint(Path(f'{second}.pub'))} already "
                                     f"authorized on {server.address}:{authorized}\n")
    assert key_lines(authorized, Path(f"{second}.pub")) == [
        Path(f"{second}.pub").read_text().strip()]
    after = os.stat(authorized)
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert (after.st_ino, after.st_uid) == (before.st_ino, before.st_uid)  # appended in place
    assert modes.problem(authorized) == ""
    # The server re-reads it (it would keep its last list if it were unsafe).
    assert cli(home, "-i", str(second), server.address, "-c", "true").returncode == 0
    assert "refusing" not in server.log and "unsafe" not in server.log


def test_the_default_key_is_the_identity(home: Path, server: ServerProcess) -> None:
    """No -i: the client's own identity, already there (the first start put it)."""
    proc = cli(home, "copy-id", "--dry-run", server.address)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith(
        f"key {fingerprint(home / 'id_ed25519.pub')} already authorized on ")


def test_dry_run_changes_nothing(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    second = keygen(tmp_path / "second")
    authorized = home / "server" / "authorized_keys"
    text = authorized.read_text()
    proc = cli(home, "copy-id", "-n", "-i", f"{second}.pub", server.address)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().startswith(f"would add key {fingerprint(Path(f'{second}.pub'))}")
    assert authorized.read_text() == text


def test_the_servers_own_file_wherever_it_is(home: Path, tmp_path: Path,
                                             start_server: Callable[..., ServerProcess]) -> None:
    """--authorized-keys elsewhere: that file changes, and no other is made."""
    cli(home, "keygen", "-f", str(home / "id_ed25519"))
    keys_dir = tmp_path / "elsewhere"
    keys_dir.mkdir(mode=0o700)
    elsewhere = keys_dir / "keys"
    # No newline at the end: the new line must not be glued to the last one.
    elsewhere.write_text((home / "id_ed25519.pub").read_text().strip())
    elsewhere.chmod(0o600)
    srv = start_server("--authorized-keys", str(elsewhere))
    second = keygen(tmp_path / "second")

    proc = cli(home, "copy-id", "-i", f"{second}.pub", srv.address)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().endswith(f"to {srv.address}:{elsewhere}\n")
    assert not (home / "server" / "authorized_keys").exists()
    lines = elsewhere.read_text().splitlines()
    assert lines == [(home / "id_ed25519.pub").read_text().strip(),
                     Path(f"{second}.pub").read_text().strip()]
    assert cli(home, "-i", str(second), srv.address, "-c", "true").returncode == 0


def test_concurrent_copies_lose_no_line(home: Path, server: ServerProcess,
                                        tmp_path: Path) -> None:
    pubs = [Path(f"{keygen(tmp_path / f'k{i}')}.pub") for i in range(6)]
    with ThreadPoolExecutor(len(pubs)) as pool:
        procs = list(pool.map(
            lambda pub: cli(home, "copy-id", "-i", str(pub), server.address), pubs))
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    authorized = home / "server" / "authorized_keys"
    assert all(len(key_lines(authorized, pub)) == 1 for pub in pubs)
    assert len(authorized.read_text().splitlines()) == 1 + len(pubs)


@pytest.mark.parametrize("options", ["restrict", 'command="cat >/dev/null; echo forced"'])
def test_a_restricted_key_cannot_copy(home: Path, server: ServerProcess, tmp_path: Path,
                                      options: str) -> None:
    """restrict and command= keys are not told where the file is: refused, nothing written."""
    authorized = home / "server" / "authorized_keys"
    authorized.write_text(f"{options} {(home / 'id_ed25519.pub').read_text()}")
    second = keygen(tmp_path / "second")
    proc = cli(home, "copy-id", "-i", f"{second}.pub", server.address)
    assert proc.returncode == 1
    line = one_line_error(proc.stderr, "rshell")
    assert ("does not say where its authorized_keys is" in line if options == "restrict"
            else "forced command" in line), line
    assert blob(Path(f"{second}.pub")) not in authorized.read_text()


def test_a_missing_key_is_one_line(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    proc = cli(home, "copy-id", "-i", str(tmp_path / "nothing.pub"), server.address)
    assert proc.returncode == 255
    assert "no such key" in one_line_error(proc.stderr)


def test_over_rshells_ssh_listener(home: Path, tmp_path: Path,
                                   start_server: Callable[..., ServerProcess]) -> None:
    """ssh:// to rshell's own SSH listener: the server's file, not ~/.ssh's."""
    account = tmp_path / "account"
    account.mkdir()
    srv = start_server("--ssh-bind", "127.0.0.1:0", "--home", str(account))
    port = srv.wait_for_log(r"ssh listening on \S+:(\d+)").group(1)
    client_home = tmp_path / "client"
    (client_home / ".ssh").mkdir(parents=True)
    (client_home / ".ssh" / "id_ed25519").write_bytes((home / "id_ed25519").read_bytes())
    (client_home / ".ssh" / "id_ed25519").chmod(0o600)
    second = keygen(tmp_path / "second")
    env = {"HOME": str(client_home)}
    target = f"ssh://tester@127.0.0.1:{port}"

    proc = cli(home, "copy-id", "-i", f"{second}.pub", target, env=env)
    assert proc.returncode == 0, proc.stderr
    authorized = home / "server" / "authorized_keys"
    assert proc.stdout.decode().endswith(f":{authorized}\n")
    assert len(key_lines(authorized, Path(f"{second}.pub"))) == 1
    assert not (account / ".ssh").exists()
    assert cli(home, target, "-i", str(second), "-c", "true", env=env).returncode == 0


# ---- a real sshd ------------------------------------------------------------------------


class Sshd:
    """OpenSSH's sshd on loopback, for the test's account with ``account`` as
    its home: HOME for commands (SetEnv) and ``account/.ssh/authorized_keys``
    read for keys, besides ``first_keys`` (the key that opens the door)."""

    def __init__(self, root: Path, first: Path) -> None:
        root.mkdir(mode=0o700)
        self.account = root / "account"
        self.account.mkdir()
        self.authorized = self.account / ".ssh" / "authorized_keys"
        host_key = keygen(root / "host_key")
        (root / "first_keys").write_text(first.read_text())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = root / "sshd_config"
        # StrictModes no: the test's files live under /tmp (mode 1777), which
        # sshd's own StrictModes refuses whatever copy-id does.
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {root / 'first_keys'} {self.authorized}\n"
            f"SetEnv HOME={self.account}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
            f"StrictModes no\nPidFile {root / 'sshd.pid'}\nPermitRootLogin prohibit-password\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "no sshd"
                time.sleep(0.05)
        self.target = f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def client_home(tmp_path: Path) -> Path:
    """The client's HOME, whose ~/.ssh/id_ed25519 the sshd lets in."""
    path = tmp_path / "client"
    (path / ".ssh").mkdir(parents=True, mode=0o700)
    keygen(path / ".ssh" / "id_ed25519")
    return path


@pytest.fixture
def sshd(tmp_path: Path, client_home: Path) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        pytest.fail("OpenSSH server missing (.ci/run installs it)")
    server = Sshd(tmp_path / "sshd", client_home / ".ssh" / "id_ed25519.pub")
    yield server
    server.stop()


def test_over_ssh_to_sshd(home: Path, sshd: Sshd, client_home: Path, tmp_path: Path) -> None:
    """~/.ssh/authorized_keys created (0700 directory, 0600 file), then left alone."""
    second = keygen(tmp_path / "second")
    env = {"HOME": str(client_home)}
    denied = cli(home, sshd.target, "-i", str(second), "-c", "true", env=env)
    assert denied.returncode == 255

    proc = cli(home, "copy-id", "-i", f"{second}.pub", sshd.target, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == (f"added key {fingerprint(Path(f'{second}.pub'))} to "
                                    f"{sshd.target}:{sshd.authorized}\n")
    assert stat.S_IMODE(sshd.authorized.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(sshd.authorized.stat().st_mode) == 0o600
    assert cli(home, sshd.target, "-i", str(second), "-c", "true", env=env).returncode == 0

    sshd.authorized.chmod(0o640)  # the owner's choice, kept
    again = cli(home, "copy-id", "-i", f"{second}.pub", sshd.target, env=env)
    assert again.returncode == 0, again.stderr
    assert re.search(r"already authorized on ", again.stdout.decode())
    assert key_lines(sshd.authorized, Path(f"{second}.pub")) == [
        Path(f"{second}.pub").read_text().strip()]
    third = keygen(tmp_path / "third")
    assert cli(home, "copy-id", "-i", str(third), sshd.target, env=env).returncode == 0
    assert stat.S_IMODE(sshd.authorized.stat().st_mode) == 0o640
    assert len(sshd.authorized.read_text().splitlines()) == 2


def test_copy_id_is_a_subcommand_not_a_host() -> None:
    """``rshell copy-id`` alone asks for its target, as its help says."""
    proc = subprocess.run([RSHELL, "copy-id"], capture_output=True, timeout=30,
                          env=base_env(Path("/nonexistent")), stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert b"copy-id" in proc.stderr and b"TARGET" in proc.stderr
