"""ssh users' habits and what the client says (issue 12: 2, 6):
the real ``rshell`` and ``rshell-server`` entry points, captured or on a
pseudo-terminal, against real servers on 127.0.0.1.

Each test here fails on the client before the change it covers.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from rshell.trust import keys
from tests.conftest import CLIENT_MODE, RSHELL, RSHELL_SERVER, ServerProcess, base_env, cli
from tests.support.cli import one_line_error

Terminals = Callable[..., pexpect.spawn]


def finish(child: pexpect.spawn, timeout: float = 20) -> tuple[str, int]:
    """Everything the terminal showed until the client exited, and its status."""
    child.expect(pexpect.EOF, timeout=timeout)
    text = child.before or ""
    child.close()
    assert child.signalstatus is None, f"rshell died of signal {child.signalstatus}"
    assert child.exitstatus is not None
    return text, int(child.exitstatus)


@pytest.fixture
def shells(home: Path) -> Iterator[Callable[[str], pexpect.spawn]]:
    """Factory: ``/bin/sh -c SCRIPT`` on a pseudo-terminal (closed at teardown)."""
    children: list[pexpect.spawn] = []

    def spawn(script: str) -> pexpect.spawn:
        child = pexpect.spawn("/bin/sh", ["-c", script], env=base_env(home), timeout=20,
                              encoding="utf-8", dimensions=(24, 250))
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)


# ---- 2: a closed stdin inside a terminal ---------------------------------------------


@pytest.mark.parametrize("words", [
    pytest.param(["-c", "echo ran"], id="fast-path"),
    pytest.param(["echo", "ran"], id="full-path"),
])
def test_closed_stdin_on_a_terminal_is_no_crash(
    server: ServerProcess, shells: Callable[[str], pexpect.spawn], words: list[str],
) -> None:
    """``sh -c "exec <&-; rshell h -c CMD"`` in a terminal: Python leaves
    ``sys.stdin`` None, which the "may I ask?" check used to call isatty on."""
    rshell = shlex.join([RSHELL, *CLIENT_MODE, server.address, *words])
    text, status = finish(shells(f"exec <&-; exec {rshell}"))
    assert "Traceback" not in text, text
    assert status == 0, text
    assert text.replace("\r\n", "\n") == "ran\n"


# ---- 6: messages that mislead -----------------------------------------------------------


def test_public_key_as_identity_says_it_is_public(home: Path, server: ServerProcess) -> None:
    """``-i key.pub`` (mode 0644, as public keys are) is a public key, not a
    private key whose permissions are too open."""
    pub = home / "id_ed25519.pub"
    os.chmod(pub, 0o644)
    proc = cli(home, "-i", str(pub), server.address, "-c", "true")
    assert proc.returncode == 255, proc.stderr
    line = one_line_error(proc.stderr)
    assert "is a public key" in line and "too open" not in line, line
    assert str(home / "id_ed25519") + "" in line  # names the private key beside it


@pytest.mark.parametrize("words", [
    pytest.param(["-c", "true"], id="fast-path"),
    pytest.param(["true"], id="full-path"),
])
def test_user_at_host_says_it_is_for_ssh_targets(home: Path, words: list[str]) -> None:
    """``rshell root@localhost``: not "cannot resolve root@localhost"."""
    proc = cli(home, "root@127.0.0.1", *words)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc.stderr)
    assert "ssh://root@127.0.0.1" in line and "resolve" not in line, line


@pytest.mark.parametrize("argv", [
    pytest.param([RSHELL, "--version"], id="rshell"),
    pytest.param([RSHELL, "-V"], id="rshell-V"),
    pytest.param([RSHELL_SERVER, "--version"], id="rshell-server"),
])
def test_version(home: Path, argv: list[str]) -> None:
    """The version, with the Python and OpenSSL it runs on (the venv's own)."""
    proc = subprocess.run(argv, capture_output=True, env=base_env(home), timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    name = Path(argv[0]).name
    expected = rf"{name} \d+\.\d+\S* \(Python {re.escape(platform.python_version())}, " \
               rf"{re.escape(ssl.OPENSSL_VERSION)}\)\n"
    assert re.fullmatch(expected, proc.stdout.decode()), proc.stdout


def test_wrong_passphrase_says_so(home: Path, terminals: Terminals) -> None:
    """A wrong passphrase is said to be wrong before the next try, as ssh's
    "Bad passphrase, try again"; it used to ask again word for word."""
    path = home / "locked"
    keys.write_key_pair(path, keys.generate(), "locked@test", "right one")
    (home / "locked.pub").unlink()  # so `fingerprint` must open the private key
    child = terminals("fingerprint", str(path))
    child.expect_exact(f"Enter passphrase for key '{path}': ")
    child.sendline("wrong one")
    child.expect_exact(f"Wrong passphrase, try again for key '{path}': ")
    child.sendline("right one")
    text, status = finish(child)
    assert status == 0, text
    assert "SHA256:" in text


@pytest.fixture
def unpinned(home: Path, server: ServerProcess) -> ServerProcess:
    """``server``, its host key not pinned: the client will ask."""
    (home / "known_hosts").unlink()
    return server


def test_host_key_prompt_takes_the_fingerprint(
    home: Path, unpinned: ServerProcess, terminals: Terminals,
) -> None:
    """Answering with the exact fingerprint is a yes, as OpenSSH's
    ``(yes/no/[fingerprint])`` prompt takes it; the key is then pinned."""
    child = terminals(unpinned.address, "-c", "echo 'con''nected'")
    child.expect_exact("continue connecting (yes/no/[fingerprint])? ")
    child.sendline(unpinned.fingerprint)
    text, status = finish(child)
    assert status == 0, text
    assert "connected" in text
    assert unpinned.fingerprint in (home / "known_hosts").read_text()


def test_host_key_prompt_refuses_another_fingerprint(
    home: Path, unpinned: ServerProcess, terminals: Terminals,
) -> None:
    """A fingerprint that is not the host's is a clear refusal, not a
    question asked again."""
    other = keys.fingerprint(keys.generate().public_key())
    child = terminals(unpinned.address, "-c", "echo 'con''nected'")
    child.expect_exact("continue connecting (yes/no/[fingerprint])? ")
    child.sendline(other)
    text, status = finish(child)
    assert status == 255, text
    assert "connected" not in text
    assert f"the fingerprint you gave ({other}) is not the host key" in text, text
    assert not (home / "known_hosts").exists() or \
        unpinned.fingerprint not in (home / "known_hosts").read_text()
