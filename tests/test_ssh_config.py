"""``ssh://`` targets honour ``~/.ssh/config`` (issue 15, SPEC §11): HostName,
Port, User and IdentityFile through paramiko's parser, with ssh's precedence
(what the user wrote, then the config, then the defaults) and ssh's key order
(``-i``, then IdentityFile; the default key files only when neither names
one), against a real OpenSSH sshd on loopback through ``rshell.connect`` and
the real CLI.  HOME is a folder of each test's own: its ``.ssh/config``,
keys and known_hosts are the only ones read.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import rshell
from rshell.errors import AuthenticationFailed, ConfigError, ConnectionFailed, HostKeyError
from tests.conftest import RSHELL, ServerProcess, base_env, one_line_error
from tests.support.procs import wait_until
from tests.test_copy_id import keygen
from tests.test_ssh_client import SSHD, Sshd

pytestmark = pytest.mark.skipif(not os.path.exists(SSHD),
                                reason="OpenSSH server missing (.ci/run installs it)")

ME = getpass.getuser()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """One sshd for the module; it accepts ``client_key`` only."""
    server = Sshd(tmp_path_factory.mktemp("config") / "sshd")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key the sshd does not accept."""
    return keygen(tmp_path_factory.mktemp("stranger") / "id_stranger")


@dataclass
class Home:
    """A HOME of the test's own: ``.ssh/somekey`` is the key sshd accepts."""

    path: Path
    port: int  # the sshd's
    rshell_home: Path

    @property
    def ssh(self) -> Path:
        return self.path / ".ssh"

    @property
    def config(self) -> Path:
        return self.ssh / "config"

    @property
    def known_hosts(self) -> Path:
        return self.ssh / "known_hosts"

    def write_config(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.config.write_bytes(data)
        self.config.chmod(0o600)

    def env(self) -> dict[str, str]:
        return base_env(self.rshell_home, HOME=str(self.path))

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([RSHELL, *args], capture_output=True, env=self.env(),
                              timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def user(tmp_path: Path, sshd: Sshd, home: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """HOME for the API (this process) and the CLI (``Home.env``); ``home``
    (conftest's) is RSHELL_HOME."""
    path = tmp_path / "user"
    (path / ".ssh").mkdir(parents=True, mode=0o700)
    shutil.copy(sshd.client_key, path / ".ssh" / "somekey")
    (path / ".ssh" / "somekey").chmod(0o600)
    monkeypatch.setenv("HOME", str(path))
    return Home(path, sshd.port, home)


def alias_config(port: int, *more: str, user: str = ME, key: str = "~/.ssh/somekey") -> str:
    lines = ["Host myalias", "    HostName 127.0.0.1", f"    Port {port}", f"    User {user}",
             f"    IdentityFile {key}", *more]
    return "\n".join(lines) + "\n"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def offered(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The key files offered, in order, from the debug log (``-v``'s lines)."""
    found = (re.fullmatch(r"offering key \S+ \((.*)\)", r.getMessage()) for r in caplog.records)
    return [m.group(1) for m in found if m]


# ---- an alias resolves ------------------------------------------------------------------


def test_an_alias_connects_through_the_api(user: Home) -> None:
    user.write_config(alias_config(user.port))
    with rshell.connect("ssh://myalias") as conn:
        result = conn.run("echo ok; whoami")
        assert (conn.host, conn.port, conn.user) == ("127.0.0.1", user.port, ME)
        assert conn.address == f"ssh://{ME}@127.0.0.1:{user.port}"
    assert result.stdout == f"ok\n{ME}\n".encode()
    known = user.known_hosts.read_text()
    assert known.startswith(f"[127.0.0.1]:{user.port} ssh-ed25519 "), known
    assert "myalias" not in known  # pinned under the real host, as ssh pins it


def test_an_alias_connects_through_the_cli(user: Home) -> None:
    user.write_config(alias_config(user.port))
    first = user.cli("ssh://myalias", "-c", "echo ok")
    assert (first.returncode, first.stdout) == (0, b"ok\n"), first.stderr
    assert f"pinned new host key for [127.0.0.1]:{user.port}".encode() in first.stderr
    again = user.cli("ssh://myalias", "-c", "echo ok")  # found in known_hosts by its real name
    assert (again.returncode, again.stdout, again.stderr) == (0, b"ok\n", b"")


def test_a_changed_key_under_the_real_name_is_refused_for_the_alias(
    user: Home, stranger: Path
) -> None:
    """known_hosts is consulted under HostName's host and the port, not the alias."""
    user.write_config(alias_config(user.port))
    other = Path(f"{stranger}.pub").read_text().split()[:2]
    user.known_hosts.write_text(f"[127.0.0.1]:{user.port} {' '.join(other)}\n")
    with pytest.raises(HostKeyError, match="changed"):
        rshell.connect("ssh://myalias")
    proc = user.cli("ssh://myalias", "-c", "true")
    assert proc.returncode == 255
    assert "127.0.0.1" in proc.stderr.decode()


# ---- what the user wrote wins -----------------------------------------------------------


def test_a_written_port_beats_the_configs(user: Home) -> None:
    user.write_config(alias_config(closed_port()))
    with pytest.raises(ConnectionFailed, match="refused"):  # the config's Port is used...
        rshell.connect("ssh://myalias", connect_timeout=5)
    with rshell.connect(f"ssh://myalias:{user.port}") as conn:  # ...unless one is written
        assert conn.port == user.port and conn.run("echo uri").stdout == b"uri\n"
    with rshell.connect("ssh://myalias", port=user.port) as conn:
        assert conn.run("echo api").stdout == b"api\n"
    proc = user.cli("ssh://myalias", "-p", str(user.port), "-c", "echo flag")
    assert (proc.returncode, proc.stdout) == (0, b"flag\n"), proc.stderr


def test_a_written_user_beats_the_configs(user: Home, sshd: Sshd) -> None:
    user.write_config(alias_config(user.port, user="nosuchuser"))
    with pytest.raises(AuthenticationFailed):  # the config's User is the one sshd sees...
        rshell.connect("ssh://myalias")
    assert wait_until(lambda: "nosuchuser" in sshd.log(), 10), sshd.log()
    with rshell.connect(f"ssh://{ME}@myalias") as conn:  # ...unless user@ is written
        assert conn.user == ME and conn.run("whoami").stdout == f"{ME}\n".encode()
    proc = user.cli(f"ssh://{ME}@myalias", "-c", "echo cli")
    assert (proc.returncode, proc.stdout) == (0, b"cli\n"), proc.stderr


def test_minus_i_is_offered_before_the_configs_identity_file(
    user: Home, stranger: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ssh's order: ``-i``, then IdentityFile (sshd takes the second here)."""
    user.write_config(alias_config(user.port))
    caplog.set_level(logging.DEBUG, logger="rshell.client")
    with rshell.connect("ssh://myalias", identity=stranger) as conn:
        assert conn.run("echo in").stdout == b"in\n"
    assert offered(caplog) == [str(stranger), str(user.ssh / "somekey")]
    proc = user.cli("ssh://myalias", "-i", str(stranger), "-v", "-c", "echo cli")
    assert (proc.returncode, proc.stdout) == (0, b"cli\n"), proc.stderr
    lines = [ln for ln in proc.stderr.decode().splitlines() if "offering key" in ln]
    assert [ln.rsplit("(", 1)[1] for ln in lines] == [f"{stranger})", f"{user.ssh}/somekey)"]


def test_identity_files_replace_the_default_keys(
    user: Home, sshd: Sshd, stranger: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As ssh: the default ~/.ssh/id_* are tried only when no IdentityFile
    (nor ``-i``) names a key, so a config's key is never bypassed."""
    shutil.copy(sshd.client_key, user.ssh / "id_ed25519")  # would be let in
    (user.ssh / "id_ed25519").chmod(0o600)
    user.write_config(alias_config(user.port, key=str(stranger)))
    caplog.set_level(logging.DEBUG, logger="rshell.client")
    with pytest.raises(AuthenticationFailed, match=re.escape(str(stranger))):
        rshell.connect("ssh://myalias")
    assert offered(caplog) == [str(stranger)]
    caplog.clear()
    user.write_config(alias_config(user.port).replace("    IdentityFile ~/.ssh/somekey\n", ""))
    with rshell.connect("ssh://myalias") as conn:  # no IdentityFile: the defaults
        assert conn.run("echo default").stdout == b"default\n"
    assert offered(caplog) == [str(user.ssh / "id_ed25519")]


# ---- the config's own rules ---------------------------------------------------------------


def test_wildcard_defaults_apply_after_specific_hosts(user: Home) -> None:
    """ssh_config(5): the first value obtained wins, so ``Host *`` at the end
    gives defaults and a specific block before it overrides them."""
    user.write_config(
        "Host myalias\n    HostName 127.0.0.1\n"
        f"Host other\n    HostName 127.0.0.1\n    Port {closed_port()}\n"
        f"Host *\n    Port {user.port}\n    User {ME}\n    IdentityFile ~/.ssh/somekey\n")
    with rshell.connect("ssh://myalias") as conn:
        assert (conn.port, conn.user) == (user.port, ME)
        assert conn.run("echo star").stdout == b"star\n"
    with pytest.raises(ConnectionFailed, match="refused"):
        rshell.connect("ssh://other", connect_timeout=5)
    proc = user.cli("ssh://myalias", "-c", "echo star")
    assert (proc.returncode, proc.stdout) == (0, b"star\n"), proc.stderr


def test_a_missing_identity_file_is_skipped_silently(
    user: Home, caplog: pytest.LogCaptureFixture
) -> None:
    user.write_config(alias_config(user.port, "    IdentityFile ~/.ssh/somekey",
                                   key="~/.ssh/absent-key"))
    caplog.set_level(logging.DEBUG, logger="rshell.client")
    with rshell.connect("ssh://myalias") as conn:
        assert conn.run("echo skipped").stdout == b"skipped\n"
    assert offered(caplog) == [str(user.ssh / "somekey")]
    user.known_hosts.unlink()
    proc = user.cli("ssh://myalias", "-c", "echo skipped")
    assert (proc.returncode, proc.stdout) == (0, b"skipped\n"), proc.stderr
    assert b"absent-key" not in proc.stderr and proc.stderr.count(b"\n") == 1  # the pin notice


def test_proxy_jump_is_said_not_silently_skipped(user: Home) -> None:
    """rshell does not follow ProxyJump/ProxyCommand: it says so, once."""
    user.write_config(alias_config(user.port, "    ProxyJump bastion.invalid"))
    warned: list[str] = []
    with rshell.connect("ssh://myalias", on_warning=warned.append) as conn:
        assert conn.run("echo direct").stdout == b"direct\n"
    assert len(warned) == 1 and "ProxyJump" in warned[0], warned
    proc = user.cli("ssh://myalias", "-c", "true")
    assert proc.returncode == 0 and b"WARNING" in proc.stderr and b"ProxyJump" in proc.stderr


# ---- a config ssh would refuse ---------------------------------------------------------


@pytest.mark.parametrize(("content", "says"), [
    ("garbage\n", "Unparsable line"),
    (b"\xff\xfe\x00\x01binary\n", "Unparsable line"),
    ('Host "unclosed\n    HostName 127.0.0.1\n', "Unparsable host"),
    ("Host myalias\n    Port seventy\n", "bad Port 'seventy'"),
    ("Host *\n    Port 99999\n", "bad Port '99999'"),
    ("Match host\n", "Missing parameter"),
    ("CanonicalizeHostname yes\n", "canonicaldomains is not set"),  # met at lookup
    (None, "cannot read"),  # a folder where the file should be
    ("Host myalias\n    Port 22\n", "bad owner or permissions"),  # group-writable
])
def test_a_config_ssh_would_refuse_is_one_line_and_255(
    user: Home, content: str | bytes | None, says: str
) -> None:
    """Exit 255, as ssh's for a bad config ("terminating, 1 bad configuration
    options") and as rshell's for any file it cannot use (ConfigError), not 2:
    the command line was right, a file was not."""
    if content is None:
        user.config.mkdir()
    else:
        user.write_config(content)
    if says.startswith("bad owner"):
        user.config.chmod(0o664)
    with pytest.raises(ConfigError) as caught:
        rshell.connect(f"ssh://{ME}@myalias:{user.port}")
    assert says in str(caught.value) and str(user.config) in str(caught.value)
    proc = user.cli("ssh://myalias", "-c", "true")
    assert proc.returncode == 255
    line = one_line_error(proc.stderr)
    assert says in line and str(user.config) in line, line


def test_no_config_is_no_config(user: Home) -> None:
    """No ~/.ssh/config at all: the target as written, the defaults."""
    with rshell.connect(f"ssh://127.0.0.1:{user.port}",
                        identity=user.ssh / "somekey") as conn:
        assert (conn.host, conn.user) == ("127.0.0.1", ME)
    with pytest.raises(ConnectionFailed):
        rshell.connect("ssh://myalias.invalid", connect_timeout=5)


# ---- native targets never read it -------------------------------------------------------


def test_a_native_target_neither_reads_the_config_nor_loads_paramiko(
    server: ServerProcess, user: Home
) -> None:
    """``rshell HOST -c CMD`` (no ssh://): a broken ~/.ssh/config is not its
    business, and paramiko (40 ms of imports) is never loaded."""
    user.write_config("garbage\n")
    probe = ("import runpy, sys; sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "finally:\n"
             "    print('PARAMIKO' if 'paramiko' in sys.modules else 'NOPARAMIKO',"
             " file=sys.stderr)")
    env = dict(base_env(server.home), HOME=str(user.path))
    for args in ([server.address, "-c", "echo native"],
                 [server.address, "-q", "-c", "echo native"]):  # fast path and click's
        proc = subprocess.run([sys.executable, "-c", probe, RSHELL, *args], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert (proc.returncode, proc.stdout) == (0, "native\n"), proc.stderr
        assert proc.stderr.strip().endswith("NOPARAMIKO"), proc.stderr
