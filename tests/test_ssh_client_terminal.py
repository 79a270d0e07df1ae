"""Terminals on the ``ssh://`` backend: rshell as a client of a real OpenSSH
sshd, through the API and the real CLI on a pseudo-terminal.  The API's
scenarios run on the ``target`` fixtures of tests/test_client_contract.py
(the native server, a real sshd, rshell's own SSH listener) and read the
same on all three (one client contract, client.api).

The remote terminals are on this machine, so the tests read their state
where a user could only guess it: a pty's size (TIOCGWINSZ) and its echo
flag (``read -s`` has turned it off) are waited for on the pty itself
before the next keystroke.  Markers the remote side prints are written split
(``m$((6*7))`` -> ``m42``) so the echo of a typed line never matches.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import struct
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

import rshell
from tests.conftest import RSHELL
from tests.support.procs import pid_gone, read_pid, wait_until, write_pid
from tests.test_client_contract import Target, native, rshell_ssh, ssh, target
from tests.test_ssh_client import SSHD, Sshd, sshd

__all__ = ["native", "rshell_ssh", "ssh", "sshd", "target"]  # fixtures, used by name
pytestmark = pytest.mark.skipif(not os.path.exists(SSHD),
                                reason="OpenSSH server missing (.ci/run installs it)")


# ---- the API, on every server ----------------------------------------------------------


#: Reads its terminal to an EOF, then says whether a second one is waiting.
_EOFS = ("import select, sys; sys.stdin.read(); "
         "print('twice' if select.select([0], [], [], 0.5)[0] else 'once')")


def test_run_on_a_terminal(target: Target) -> None:
    """``run(pty=True, term=, size=)``: a pty of that type and size, output
    merged into stdout with a terminal's line endings, and the end of stdin
    read as the terminal's EOF, once (``cat`` ends: sshd alone would never
    tell it, and rshell's listener makes the channel's EOF one more)."""
    with target.connect() as conn:
        r = conn.run("tty; stty size; echo $TERM; echo err >&2", pty=True, term="vt220",
                     size=(100, 30), timeout=20)
        fed = conn.run("cat", stdin=b"one\ntwo\n", pty=True, timeout=10)
        eofs = conn.run(f"python3 -c {shlex.quote(_EOFS)}", stdin=b"x\n", pty=True, timeout=10)
    assert r.ok and r.stderr == b"", r
    lines = r.stdout.decode().split("\r\n")
    assert lines[0].startswith("/dev/pts/"), r.stdout
    assert lines[1:4] == ["30 100", "vt220", "err"], r.stdout
    assert fed.ok, fed
    assert fed.stdout.count(b"one\r\n") == 2 and fed.stdout.count(b"two\r\n") == 2, fed.stdout
    assert eofs.ok and eofs.stdout.endswith(b"\r\nonce\r\n"), eofs


def test_a_terminal_object(target: Target) -> None:
    """``terminal()``: python3 on a pty, a resize it sees (the window change
    goes out before the keys written after it), its exit status in the Result."""
    with target.connect() as conn:
        term = conn.terminal("python3 -q", size=(80, 24), timeout=30)
        assert term.read_until(">>> ", timeout=15).endswith(b">>> ")
        term.write("import os; print(os.ttyname(0))\r")
        assert term.read_until(">>> ", timeout=10).split(b"\r\n")[1].startswith(b"/dev/pts/")
        term.resize(120, 40)
        term.write("print(os.get_terminal_size())\r")
        assert b"columns=120, lines=40" in term.read_until("lines=40)", timeout=10)
        term.read_until(">>> ", timeout=10)
        term.write("exit(3)\r")
        result = term.wait(timeout=15)
        assert (result.exit_code, result.signal, result.stderr) == (3, None, b"")
        assert conn.run("echo next").stdout == b"next\n"  # the connection goes on


def test_closing_a_terminal_hangs_it_up(target: Target) -> None:
    """``close()`` is a hang-up: the command dies of SIGHUP at once (sshd may
    refuse a ``signal`` request, so ssh:// closes the channel: the pty goes),
    and the connection runs the next command."""
    with target.connect() as conn:
        term = conn.terminal("echo re''ady; exec sleep 100", timeout=30)
        term.read_until("ready", timeout=15)
        started = time.monotonic()
        result = term.close()
        assert time.monotonic() - started < 1.0  # no grace, no KILL, no connection lost
        assert result is not None and result.signal == signal.SIGHUP, result
        assert conn.run("echo next").stdout == b"next\n"


def test_the_login_shell(target: Target) -> None:
    """``terminal()`` with no command is the account's login shell, on a pty."""
    with target.connect() as conn:
        term = conn.terminal(size=(90, 20), timeout=30)
        term.write("tty; stty size; echo m$((6*7)); exit 4\r")
        result = term.wait(timeout=20)
    assert result.exit_code == 4, result
    assert re.search(rb"/dev/pts/\d+\r\n20 90\r\nm42\r\n", result.stdout), result.stdout


# ---- what only ssh:// has to say ---------------------------------------------------------


def test_login_shell_takes_no_cwd_and_a_refused_pty_is_a_refusal(
        sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    """sshd's login shell starts in the login directory: a cwd or env for it
    is refused here, not dropped.  A pty sshd refuses (``no-pty``) refuses
    the command (126), as natively, where ``ssh -t`` would run it without one."""
    monkeypatch.setenv("HOME", str(sshd.home))
    keys = sshd.root / "authorized_keys"
    with rshell.connect(sshd.target, identity=sshd.client_key, accept_new=True) as conn:
        with pytest.raises(rshell.RshellError, match="login directory"):
            conn.terminal(cwd="/tmp")
        assert conn.run("echo next").stdout == b"next\n"
    keys.write_text("no-pty " + keys.read_text())  # sshd applies it at the login
    with rshell.connect(sshd.target, identity=sshd.client_key) as conn:
        refused = conn.run("echo never", pty=True)
        assert refused.exit_code == 126 and refused.stdout == b"", refused
        assert refused.error is not None and refused.error.startswith("refused: "), refused
        assert conn.run("echo plain").stdout == b"plain\n"  # no pty asked: runs


# ---- the command line, on a real terminal ------------------------------------------------


@pytest.fixture
def ssh_cli(sshd: Sshd) -> Iterator[Callable[..., pexpect.spawn]]:
    """Factory: the real ``rshell -t`` to ``sshd`` on a pseudo-terminal (24x80)."""
    children: list[pexpect.spawn] = []

    def spawn(*args: str) -> pexpect.spawn:
        child = pexpect.spawn(RSHELL, ["-t", sshd.target, "-i", str(sshd.client_key),
                                       "--accept-new", *args],
                              env=sshd.env(), timeout=20, dimensions=(24, 80))
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)


def _pts(child: pexpect.spawn) -> str:
    """The remote pty's path, from a ``tty`` the remote side printed."""
    child.expect(rb"(/dev/pts/\d+)\r\n")
    return child.match.group(1).decode()


def _pty_state(path: str) -> tuple[tuple[int, int], int]:
    """(rows, cols) and the local modes of the pty at ``path``."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        return (rows, cols), termios.tcgetattr(fd)[3]
    finally:
        os.close(fd)


def test_login_shell_from_the_command_line(ssh_cli: Callable[..., pexpect.spawn],
                                           tmp_path: Path) -> None:
    """``rshell -t ssh://...``: the login shell on a pty whose size follows the
    local window, Ctrl-C interrupts ``sleep 100`` and the shell survives,
    ``exit 4`` is rshell's exit status."""
    child = ssh_cli()
    child.sendline("tty; stty size")
    pts = _pts(child)
    child.expect(rb"24 80\r\n")
    child.setwinsize(30, 100)  # SIGWINCH to rshell: a window-change to sshd
    assert wait_until(lambda: _pty_state(pts)[0] == (30, 100), 10), _pty_state(pts)
    child.sendline("stty size")
    child.expect(rb"30 100\r\n")
    pid_file = tmp_path / "sleep.pid"
    child.sendline(f"sh -c {shlex.quote(write_pid(pid_file) + '; exec sleep 100')}")
    pid = read_pid(pid_file)
    assert wait_until(lambda: Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"),
                      10)
    child.sendcontrol("c")  # a keystroke: the remote terminal makes it SIGINT
    assert wait_until(lambda: pid_gone(pid), 10), "sleep outlived Ctrl-C"
    child.sendline("echo m$((6*7))")
    child.expect(rb"m42\r\n")  # the shell survived
    child.sendline("exit 4")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4


def test_tilde_dot_disconnects(ssh_cli: Callable[..., pexpect.spawn], tmp_path: Path) -> None:
    """``~.`` after a newline: one line, 255, and the remote shell is gone."""
    child = ssh_cli()
    pid_file = tmp_path / "shell.pid"
    child.sendline(write_pid(pid_file))
    pid = read_pid(pid_file)
    child.send("~.")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 255
    said = child.before.decode(errors="replace").rstrip("\r\n").split("\r\n")[-1]
    assert re.search(r"rshell: connection to ssh://\S+ closed \(~\.\)$", said), child.before
    assert "Traceback" not in child.before.decode(errors="replace")
    assert wait_until(lambda: pid_gone(pid), 10), "the remote shell outlived ~."


def test_a_secret_typed_is_not_echoed(ssh_cli: Callable[..., pexpect.spawn]) -> None:
    """``rshell -t ssh://... 'read -s x; ...'``: the secret typed once read -s
    has the terminal is not echoed, and reaches the command."""
    child = ssh_cli('tty; read -s x; echo "got $x"')
    pts = _pts(child)
    assert wait_until(lambda: not _pty_state(pts)[1] & termios.ECHO, 10), "no read -s"
    child.send("hunter2\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert child.before.count(b"hunter2") == 1 and b"got hunter2\r\n" in child.before, \
        child.before


def test_the_prompt_runs_on_a_terminal(sshd: Sshd) -> None:
    """The prompt over ssh:// on a terminal: each command on a remote pty,
    ``cd`` kept (it runs without one, as the engine answers it)."""
    child = pexpect.spawn(RSHELL, [sshd.target, "-i", str(sshd.client_key), "--accept-new"],
                          env=sshd.env(), timeout=20, dimensions=(24, 80))
    try:
        child.expect(rb"@127\.0\.0\.1:\S*\$ ")
        child.sendline("cd /tmp")
        child.expect(rb"@127\.0\.0\.1:/tmp\$ ")
        child.sendline("tty; pwd")
        child.expect(rb"/dev/pts/\d+\r\n/tmp\r\n")
        child.expect(rb"@127\.0\.0\.1:/tmp\$ ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
