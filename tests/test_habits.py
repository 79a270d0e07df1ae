"""ssh users' habits and what the client says (issue 12: 2, 5, 6, 8, 9, 14):
the real ``rshell`` and ``rshell-server`` entry points, captured or on a
pseudo-terminal, against real servers on 127.0.0.1.

Each test here fails on the client before the change it covers.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import pwd
import re
import shlex
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from rshell.errors import KeyFileError
from rshell.trust import keys
from tests.conftest import CLIENT_MODE, RSHELL, RSHELL_SERVER, ServerProcess, base_env, cli
from tests.support.cli import one_line_error
from tests.support.procs import wait_until

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


# ---- 5: --json and bytes that are not UTF-8 -------------------------------------------


def test_json_binary_output_is_lossless_and_unambiguous(
    home: Path, server: ServerProcess,
) -> None:
    """The four characters ``\\xf4`` and the byte 0xf4 used to give the same
    record; the byte now also comes exactly, base64, beside the text."""
    text = cli(home, server.address, "--json", "-c", r"printf '%s' '\xf4'")
    byte = cli(home, server.address, "--json", "-c", r"printf '\364'; printf 'a\377' >&2")
    assert text.returncode == byte.returncode == 0, (text.stderr, byte.stderr)
    as_text, as_bytes = json.loads(text.stdout), json.loads(byte.stdout)
    assert as_text["stdout"] == as_bytes["stdout"] == "\\xf4"  # the text for the eye
    assert "stdout_base64" not in as_text and "stderr_base64" not in as_text
    assert as_text != as_bytes
    assert base64.b64decode(as_bytes["stdout_base64"]) == b"\xf4"
    assert base64.b64decode(as_bytes["stderr_base64"]) == b"a\xff"
    assert as_bytes["stderr"] == "a\\xff"


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


# ---- 8: noise where nothing went wrong ---------------------------------------------------


def test_plain_failures_are_quiet_in_scripts(home: Path, server: ServerProcess) -> None:
    """``false``, ``test -f``, ``grep -q`` fail with their status and no word
    from us; a missing command is said once, by the shell; --json keeps the
    reason."""
    for command in ("false", "test -f /nonexistent/x", "echo a | grep -q b"):
        proc = cli(home, server.address, "-c", command)
        assert (proc.returncode, proc.stdout, proc.stderr) == (1, b"", b""), command
    missing = cli(home, server.address, "-c", "no-such-command-here")
    assert missing.returncode == 127
    lines = missing.stderr.decode().splitlines()
    assert len(lines) == 1 and "no-such-command-here" in lines[0], lines
    assert not lines[0].startswith("rshell:"), lines
    batch = cli(home, server.address, input=b"false\ntest -f /nonexistent/x\necho done\n")
    assert (batch.returncode, batch.stdout, batch.stderr) == (1, b"done\n", b"")
    record = json.loads(cli(home, server.address, "--json", "-c", "false").stdout)
    assert record["error"] == "exit status 1 with no output"


def test_server_stops_and_foreign_signals_are_still_said(
    home: Path, server: ServerProcess,
) -> None:
    """What the user cannot see otherwise keeps its line: a time limit, and a
    signal the user did not send (SIGINT included, in one-shot, where the
    client knows whether Ctrl-C was pressed)."""
    late = cli(home, server.address, "--timeout", "0.5", "-c", "exec sleep 30")
    assert late.returncode != 0
    assert "rshell: command error: timed out" in one_line_error(late.stderr)
    for name, number in (("KILL", 9), ("INT", 2)):
        proc = cli(home, server.address, "-c", f"kill -{name} $$")
        assert proc.returncode == 128 + number, proc.stderr
        assert f"killed by SIG{name}" in one_line_error(proc.stderr)
    batch = cli(home, server.address, input=b"kill -KILL $$\n")
    assert "killed by SIGKILL" in one_line_error(batch.stderr)


def test_ctrl_c_is_not_reported_as_an_error(
    server: ServerProcess, terminals: Terminals, tmp_path: Path,
) -> None:
    """The user's Ctrl-C ends a silent command: status 130, and no
    ``^Crshell: command error: killed by SIGINT with no output``."""
    started = tmp_path / "started"
    child = terminals(server.address, "-c", f": > {shlex.quote(str(started))}; exec sleep 30")
    assert wait_until(started.exists, 15), "the command never started"
    child.send("\x03")
    text, status = finish(child)
    assert status == 130, text
    assert "command error" not in text and "SIGINT" not in text, text


def test_silent_failure_at_the_prompt_is_no_error_line(
    server: ServerProcess, terminals: Terminals,
) -> None:
    """At the prompt, ``false`` is not a ``command error``."""
    child = terminals(server.address)
    prompt = re.escape(f"@{server.address.rsplit(':', 1)[0]}:~$ ")
    child.expect(prompt)
    child.sendline("false")
    child.expect(prompt)
    assert "command error" not in (child.before or ""), child.before
    child.sendline("exit")
    finish(child)


# ---- 9: words after the target, as ssh joins them -------------------------------------


def test_words_after_the_target_are_one_command_line(
    home: Path, server: ServerProcess,
) -> None:
    """``rshell h 'ls / | wc -l'``, ``rshell h echo '$HOME'``, ``rshell h 'cd
    /tmp && pwd'``: joined with spaces, parsed by the remote shell."""
    count = cli(home, server.address, "ls / | wc -l")
    assert count.returncode == 0, count.stderr
    assert int(count.stdout) > 1
    expands = cli(home, server.address, "echo", "$HOME")
    assert expands.returncode == 0, expands.stderr
    assert expands.stdout.decode() == pwd.getpwuid(os.getuid()).pw_dir + "\n"
    chained = cli(home, server.address, "cd /tmp && pwd")
    assert chained.stdout == b"/tmp\n", chained.stderr
    options_ended = cli(home, "--", server.address, "echo", "$HOME")
    assert options_ended.stdout == expands.stdout, options_ended.stderr


def test_double_dash_keeps_an_exact_argv(home: Path, server: ServerProcess) -> None:
    """``rshell h -- CMD ARG...``: each word quoted (SPEC §4), options first or not."""
    for args in ([server.address, "--"], [server.address, "-q", "--"]):
        proc = cli(home, *args, "echo", "$HOME", "a  b")
        assert proc.stdout == b"$HOME a  b\n", proc.stderr


# ---- 14: completion and keygen's passphrase ------------------------------------------


def complete(home: Path, instruction: str, words: str, cword: str) -> list[str]:
    proc = subprocess.run([RSHELL], capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
                          env=base_env(home, _RSHELL_COMPLETE=instruction, COMP_WORDS=words,
                                       COMP_CWORD=cword))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().splitlines()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(home: Path, shell: str) -> None:
    """``_RSHELL_COMPLETE={shell}_source rshell``: click's script for that shell."""
    proc = subprocess.run([RSHELL], capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
                          env=base_env(home, _RSHELL_COMPLETE=f"{shell}_source"))
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout.decode()
    assert "_rshell_completion" in script and "_RSHELL_COMPLETE" in script, script


def test_completion_of_subcommands_hosts_and_options(
    home: Path, server: ServerProcess,
) -> None:
    """Through click's protocol, as the scripts call it: a subcommand or a
    pinned host for TARGET, the client's options, a subcommand's options."""
    assert complete(home, "bash_complete", "rshell key", "1") == ["plain,keygen"]
    assert complete(home, "bash_complete", "rshell 127.0.0", "1") == [f"plain,{server.address}"]
    assert complete(home, "bash_complete", "rshell --js", "1") == ["plain,--json"]
    keygen = complete(home, "bash_complete", "rshell keygen -", "2")
    assert {"plain,-N", "plain,-t", "plain,-f"} <= set(keygen), keygen
    assert "plain,--json" not in keygen
    assert complete(home, "bash_complete", "rshell keygen -t e", "3") == \
        ["plain,ed25519", "plain,ecdsa"]
    assert complete(home, "fish_complete", "rshell fing", "fing") == ["plain,fingerprint"]


def test_keygen_asks_for_a_passphrase_on_a_terminal(home: Path, terminals: Terminals) -> None:
    """Twice, as ssh-keygen does; two different answers are asked again."""
    path = home / "asked"
    child = terminals("keygen", "-f", str(path))
    for first, second in (("s3cret", "typo"), ("s3cret", "s3cret")):
        child.expect_exact("Enter passphrase (empty for no passphrase): ")
        child.sendline(first)
        child.expect_exact("Enter same passphrase again: ")
        child.sendline(second)
        if first != second:
            child.expect_exact("Passphrases do not match.  Try again.")
    text, status = finish(child)
    assert status == 0, text
    assert keys.load_identity(path, lambda _: "s3cret").path == str(path)
    with pytest.raises(KeyFileError):
        keys.load_identity(path)


@pytest.mark.parametrize("on_terminal", [True, False])
def test_keygen_without_asking(home: Path, terminals: Terminals, on_terminal: bool) -> None:
    """``-N ''`` on a terminal, or no terminal at all: no question, no passphrase."""
    path = home / "plain"
    if on_terminal:
        text, status = finish(terminals("keygen", "-N", "", "-f", str(path)))
        assert status == 0, text
        assert "passphrase" not in text.lower(), text
    else:
        proc = cli(home, "keygen", "-f", str(path))
        assert proc.returncode == 0, proc.stderr
        assert b"passphrase" not in (proc.stdout + proc.stderr).lower()
    assert keys.load_identity(path).path == str(path)
