"""Keys held only by ssh-agent, for both backends: a real ``ssh-agent``, keys
from the real ``ssh-keygen`` loaded with the real ``ssh-add`` and then
deleted from disk, a real rshell server (native protocol) and a real sshd
(``ssh://``).  The order is ssh's: ``-i``, then the agent's keys, then the
key files; which key won is told by the server, through a forced command
per key, not by the client's word.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rshell.client.agent import Agent, agent_keys
from rshell.trust import keys as trust_keys
from tests.conftest import RSHELL, ServerProcess, cli
from tests.test_auth_e2e import authorize
from tests.test_ssh_client import SSHD, Sshd

pytestmark = pytest.mark.skipif(
    not all(os.path.exists(f"/usr/bin/{tool}") for tool in ("ssh-agent", "ssh-add", "ssh-keygen")),
    reason="OpenSSH client tools missing",
)


class SshAgent:
    """A private ``ssh-agent -D`` on a socket in the test's directory."""

    def __init__(self, root: Path) -> None:
        root.mkdir(mode=0o700, exist_ok=True)
        self.sock = str(root / "agent.sock")
        # A key added with -c needs a confirmation; this agent's answer is no.
        declines = dict(os.environ, SSH_ASKPASS="/bin/false", SSH_ASKPASS_REQUIRE="force",
                        DISPLAY=":0")
        self.proc = subprocess.Popen(["ssh-agent", "-D", "-a", self.sock], env=declines,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None and time.monotonic() < deadline, "no ssh-agent"
            time.sleep(0.02)
        self.root = root

    def add(self, kind: str, name: str | None = None, *, confirm: bool = False) -> str:
        """A new key of ``kind``, loaded into the agent (``confirm``: each use
        asked for, and declined), its files deleted: the agent is then its
        only holder.  Returns its public line."""
        path = self.root / (name or f"key_{kind}")
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{kind}@agent",
                        "-f", str(path)], check=True, capture_output=True, timeout=60)
        subprocess.run(["ssh-add", "-q", *(["-c"] if confirm else []), str(path)], check=True,
                       capture_output=True, env=dict(os.environ, SSH_AUTH_SOCK=self.sock),
                       timeout=30)
        line = Path(f"{path}.pub").read_text().strip()
        path.unlink()
        Path(f"{path}.pub").unlink()
        return line

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SshAgent]:
    running = SshAgent(tmp_path / "agent")
    yield running
    running.stop()


def key_file(path: Path, kind: str = "ed25519") -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "file", "-f", str(path)],
                   check=True, capture_output=True, timeout=60)
    return Path(f"{path}.pub").read_text().strip()


def forced(word: str, line: str) -> str:
    """An authorized_keys line whose key can only say ``word``."""
    return f'command="echo {word}" {line}'


@pytest.fixture
def bare(tmp_path: Path, start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server whose client has no key file at all ($RSHELL_HOME's first-start
    key removed, $HOME empty): only the agent, or -i, can log in."""
    srv = start_server()
    for name in ("id_ed25519", "id_ed25519.pub"):
        (srv.home / name).unlink()
    return srv


def run(srv: ServerProcess, tmp_path: Path, agent: SshAgent | None, *args: str,
        ) -> subprocess.CompletedProcess[bytes]:
    empty = tmp_path / "empty-home"
    empty.mkdir(exist_ok=True)
    env = {"HOME": str(empty)}
    if agent is not None:
        env["SSH_AUTH_SOCK"] = agent.sock
    return cli(srv.home, *args, srv.address, "-c", "echo ok", env=env)


# ---- the native protocol ----------------------------------------------------------


def test_a_signature_the_agent_declines_moves_on_to_the_next_key(
    start_server: Callable[..., ServerProcess], agent: SshAgent, tmp_path: Path
) -> None:
    """The agent's key needs a confirmation the user declines (ssh-add -c):
    as ssh, the login goes on with the next key (the key file), instead of
    ending on the agent's refusal."""
    srv = start_server()
    own = (srv.home / "id_ed25519.pub").read_text().strip()  # the first start's key file
    authorize(srv, forced("agent", agent.add("ed25519", confirm=True)), own)
    proc = run(srv, tmp_path, agent, "-v")
    assert (proc.returncode, proc.stdout) == (0, b"ok\n"), proc.stderr
    assert b"ssh-agent refused to sign" in proc.stderr  # said under -v, then the file key


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_a_key_only_in_the_agent_logs_in(kind: str, bare: ServerProcess, agent: SshAgent,
                                         tmp_path: Path) -> None:
    authorize(bare, agent.add(kind))
    proc = run(bare, tmp_path, agent)
    assert (proc.returncode, proc.stdout) == (0, b"ok\n"), proc.stderr
    without = run(bare, tmp_path, None)
    assert without.returncode == 255 and b"no identity found" in without.stderr


def test_agent_signatures_verify_as_the_server_verifies(agent: SshAgent,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's SSH-format signatures become what trust.keys.verify checks
    (RSA with SHA-256, asked for with flag 2), and only those."""
    lines = [agent.add(kind) for kind in ("ed25519", "ecdsa", "rsa")]
    monkeypatch.setenv("SSH_AUTH_SOCK", agent.sock)
    held = agent_keys()
    assert [k.public_line for k in held] == [" ".join(line.split()[:2]) for line in lines]
    for key in held:
        public, _ = trust_keys.parse_public(key.public_line)
        signature = key.sign(b"data to sign")
        assert trust_keys.verify(public, signature, b"data to sign"), key.kind
        assert not trust_keys.verify(public, signature, b"other data"), key.kind
    held[0].agent.close()


def test_an_sha1_rsa_signature_is_refused() -> None:
    """An agent that ignored the SHA-256 flag answers ssh-rsa (SHA-1): never sent."""
    key = trust_keys.generate("rsa", 2048)
    blob = trust_keys.public_blob(key.public_key())
    sha1 = b"\0\0\0\x07ssh-rsa\0\0\0\x04abcd"
    with pytest.raises(ValueError, match="ssh-rsa signature"):
        trust_keys.agent_signature(blob, sha1)


def test_no_agent_or_a_dead_one_is_no_key(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    assert agent_keys() == []
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "gone.sock"))
    assert agent_keys() == []
    assert Agent(str(tmp_path / "gone.sock")).sock is None


def test_dash_i_beats_the_agent(bare: ServerProcess, agent: SshAgent, tmp_path: Path) -> None:
    mine = key_file(tmp_path / "mine")
    authorize(bare, forced("AGENT", agent.add("ed25519")), forced("DASH-I", mine))
    proc = run(bare, tmp_path, agent, "-i", str(tmp_path / "mine"))
    assert (proc.returncode, proc.stdout) == (0, b"DASH-I\n"), proc.stderr


def test_the_agent_beats_key_files(start_server: Callable[..., ServerProcess], agent: SshAgent,
                                   tmp_path: Path) -> None:
    srv = start_server()  # $RSHELL_HOME/id_ed25519: the key file
    authorize(srv, forced("FILE", (srv.home / "id_ed25519.pub").read_text().strip()),
              forced("AGENT", agent.add("ecdsa")))
    proc = run(srv, tmp_path, agent)
    assert (proc.returncode, proc.stdout) == (0, b"AGENT\n"), proc.stderr


def test_a_refused_agent_key_falls_back_to_the_key_file(
        start_server: Callable[..., ServerProcess], agent: SshAgent, tmp_path: Path) -> None:
    """One Auth per connection: the refused key costs a new connection, then
    the key file is offered on it."""
    srv = start_server()
    refused = agent.add("ed25519")
    authorize(srv, forced("FILE", (srv.home / "id_ed25519.pub").read_text().strip()))
    proc = run(srv, tmp_path, agent, "-v")
    assert (proc.returncode, proc.stdout) == (0, b"FILE\n"), proc.stderr
    err = proc.stderr.decode()
    fp = trust_keys.fingerprint(trust_keys.parse_public(refused)[0])
    assert f"key {fp} refused" in err
    assert err.index(f"offering key {fp}") < err.index("id_ed25519)")


def test_all_refused_names_every_key_offered(bare: ServerProcess, agent: SshAgent,
                                             tmp_path: Path) -> None:
    authorize(bare, key_file(tmp_path / "other"))
    first, second = agent.add("ed25519", "a"), agent.add("ecdsa", "b")
    proc = run(bare, tmp_path, agent)
    assert proc.returncode == 255 and proc.stdout == b""
    line = proc.stderr.decode().strip().splitlines()[-1]
    for public in (first, second):
        assert trust_keys.fingerprint(trust_keys.parse_public(public)[0]) in line, line
    assert "refused key" in line and "(agent ed25519@agent)" in line, line


# ---- ssh:// -----------------------------------------------------------------------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server missing")
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()


def ssh_run(sshd: Sshd, agent: SshAgent, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The real rshell against sshd, with no -i unless given, and no key file."""
    return subprocess.run(
        [RSHELL, *args, sshd.target, "-c", "echo ok"], capture_output=True,
        env=dict(sshd.env(), SSH_AUTH_SOCK=agent.sock), stdin=subprocess.DEVNULL, timeout=120,
    )


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_ssh_a_key_only_in_the_agent_logs_in(kind: str, sshd: Sshd, agent: SshAgent) -> None:
    (sshd.root / "authorized_keys").write_text(agent.add(kind) + "\n")
    proc = ssh_run(sshd, agent)
    assert (proc.returncode, proc.stdout) == (0, b"ok\n"), proc.stderr


def test_ssh_dash_i_beats_the_agent_and_the_agent_key_files(sshd: Sshd, agent: SshAgent) -> None:
    ssh_dir = sshd.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    file_line = key_file(ssh_dir / "id_ed25519")
    agent_line = agent.add("ecdsa")
    dash_i = Path(f"{sshd.client_key}.pub").read_text().strip()
    (sshd.root / "authorized_keys").write_text("".join(
        forced(word, line) + "\n"
        for word, line in (("FILE", file_line), ("AGENT", agent_line), ("DASH-I", dash_i))))
    proc = ssh_run(sshd, agent, "-i", str(sshd.client_key))
    assert (proc.returncode, proc.stdout) == (0, b"DASH-I\n"), proc.stderr
    proc = ssh_run(sshd, agent)
    assert (proc.returncode, proc.stdout) == (0, b"AGENT\n"), proc.stderr
