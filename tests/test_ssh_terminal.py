"""Terminals on ``rshell-server --ssh-bind``, with the real OpenSSH client on
a real terminal (pexpect): ``pty-req``, ``window-change``, ``shell`` and
``exec`` on a pty, so ``ssh -t host CMD``, ``ssh host`` (a login shell) and
``ssh -t host top`` behave as with sshd; Ctrl-C reaches the remote terminal;
the client's EOF is the terminal's ^D; authorized_keys ``no-pty``,
``restrict``, ``restrict,pty`` and ``command=`` decide a terminal as on the
native listener (one rule, shown through both); a client killed mid-session
leaves no process behind.

The real rshell-server and ssh subprocesses, on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from tests.conftest import ServerProcess, base_env, connect
from tests.parity_support import paramiko_client, read_to_eof
from tests.support.procs import (
    CLEANUP_DEADLINE,
    handled,
    pid_gone,
    read_pid,
    running,
    wait_until,
)
from tests.test_ssh_server import ssh, ssh_argv, start_ssh_server

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None,
                                reason="OpenSSH client missing (.ci/run installs it)")

#: What a refused terminal says, whichever listener refused it.
NO_TERMINAL = "refused: no terminal for this key (no-pty, or restrict without pty)"

_markers = itertools.count(1)


@pytest.fixture
def ssh_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_ssh_server(start_server)


@pytest.fixture
def ssh_terminal(ssh_server: ServerProcess) -> Iterator[Callable[..., pexpect.spawn]]:
    """Factory: the real ``ssh`` to the test's server on a pseudo-terminal
    (``ssh_terminal(*args, term=, size=(rows, cols), extra=)``); closed at teardown."""
    children: list[pexpect.spawn] = []

    def spawn(*args: str, term: str = "xterm", size: tuple[int, int] = (24, 200),
              extra: tuple[str, ...] = ()) -> pexpect.spawn:
        argv = ssh_argv(ssh_server, *args, extra=extra)
        child = pexpect.spawn(argv[0], argv[1:], env=base_env(ssh_server.home, TERM=term),
                              timeout=20, encoding="utf-8", dimensions=size)
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.close(force=True)


def ask(child: pexpect.spawn, command: str) -> str:
    """Type ``command`` at the remote interactive shell; what came before its
    end marker (the typed line's echo included).  The marker is printed in two
    halves, so the echo of the line never matches it."""
    n = next(_markers)
    child.sendline(f"{command}; printf '%s%s\\n' @@ {n}@@")
    child.expect_exact(f"@@{n}@@\r\n")
    return str(child.before)


def write_keys(srv: ServerProcess, options: str) -> None:
    """The server's one authorized key, with these options in front."""
    keys_file = srv.home / "server" / "authorized_keys"
    key = keys_file.read_text().strip().split("\n")[-1]
    key = key[key.index("ssh-ed25519"):]
    keys_file.write_text(f"{options} {key}\n" if options else f"{key}\n")


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def ended(child: pexpect.spawn) -> int:
    """The ssh client's exit status, once it has ended by itself."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None, child.signalstatus
    return int(child.exitstatus)


def test_a_command_on_a_terminal_has_its_size_and_term(
    ssh_terminal: Callable[..., pexpect.spawn]
) -> None:
    child = ssh_terminal("tty; stty size; echo $TERM", extra=("-tt",), term="vt220",
                         size=(33, 101))
    child.expect(r"/dev/pts/\d+\r\n33 101\r\nvt220\r\n")
    assert ended(child) == 0


def test_interactive_login_shell_follows_the_window_and_exits_with_its_status(
    ssh_terminal: Callable[..., pexpect.spawn]
) -> None:
    """``ssh host`` with no command, on a terminal: the account's login shell
    on a pty; a resize of the local window reaches it; ``exit 3`` is ssh's 3."""
    child = ssh_terminal(size=(24, 100))
    assert re.search(r"size=24 100\r\n", ask(child, "echo size=$(stty size)"))
    assert re.search(r"login=-", ask(child, 'echo login=$0'))  # a login shell, as sshd's
    child.setwinsize(40, 120)
    # ssh sends the window change before it reads another key once its
    # handler ran; the server applies it before the keys that follow.
    handled(child.pid, signal.SIGWINCH)
    assert re.search(r"size=40 120\r\n", ask(child, "echo size=$(stty size)"))
    child.sendline("exit 3")
    assert ended(child) == 3


def test_ctrl_c_interrupts_the_remote_command_and_the_shell_survives(
    ssh_terminal: Callable[..., pexpect.spawn], tmp_path: Path, stray: list[int]
) -> None:
    pidfile = tmp_path / "sleep.pid"
    child = ssh_terminal()
    ask(child, "true")
    child.sendline(f'sh -c "echo \\$\\$ > {pidfile}; exec sleep 100"')
    pid = read_pid(pidfile)
    stray.append(pid)
    assert wait_until(lambda: cmdline(pid).startswith(b"sleep"), 10), "sleep never started"
    child.sendintr()
    assert wait_until(lambda: not running(pid), 10), "Ctrl-C did not reach the remote sleep"
    assert "status=130" in ask(child, "echo status=$?")  # the shell is still there
    child.sendline("exit")
    assert ended(child) == 0


def test_top_runs_and_quits(ssh_terminal: Callable[..., pexpect.spawn]) -> None:
    if shutil.which("top") is None:
        pytest.skip("top missing (procps)")
    child = ssh_terminal("top", extra=("-t",), size=(30, 120))
    child.expect("load average")
    child.expect("PID")  # its table: the screen is drawn, the keyboard read
    child.send("q")
    assert ended(child) == 0


def test_sudo_finds_the_terminal(ssh_terminal: Callable[..., pexpect.spawn]) -> None:
    """``ssh -t host sudo -k ...`` as with sshd: sudo, which refuses to ask for
    a password without a terminal, finds one.  As root it asks nothing and
    runs the command (on a terminal of its own under Debian's use_pty); any
    other account gets the password prompt on the remote terminal."""
    if shutil.which("sudo") is None:
        pytest.skip("sudo missing (.ci/run installs it)")
    child = ssh_terminal("sudo -k sh -c 'echo sud''o-ran; tty'", extra=("-t",))
    if os.getuid() == 0:
        child.expect(r"sudo-ran\r\n/dev/pts/\d+\r\n")
        assert ended(child) == 0
    else:
        child.expect(r"\[sudo\] password for ")
        child.sendintr()
        assert ended(child) != 0


def test_a_window_change_before_the_command_sizes_its_terminal(
    ssh_server: ServerProcess
) -> None:
    """A window change that comes between pty-req and exec (paramiko sends
    them in the order it is told) resizes the terminal the command starts on."""
    with paramiko_client(ssh_server) as client:
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session()
        chan.get_pty("vt100", 80, 24)
        chan.resize_pty(132, 43)
        chan.exec_command("stty size; echo $TERM")
        got = bytearray()
        read_to_eof(chan, got)
        assert bytes(got) == b"43 132\r\nvt100\r\n"
        assert chan.recv_exit_status() == 0


def test_end_of_input_is_the_terminals_eof_character(ssh_server: ServerProcess) -> None:
    """ssh -tt with a pipe for stdin: the data, then EOF, which a pty can
    only say as ^D; cat reads it as its end (and would hang without it)."""
    proc = ssh(ssh_server, "cat", input=b"hello\n", extra=("-tt",), timeout=30)
    assert proc.returncode == 0, proc
    assert proc.stdout.count(b"hello\r\n") == 2  # the terminal's echo, then cat's copy


def test_keys_decide_a_terminal_alike_on_both_listeners(
    ssh_server: ServerProcess, ssh_terminal: Callable[..., pexpect.spawn]
) -> None:
    """no-pty and restrict refuse a terminal: ``ssh host`` says so and goes on
    without one, as with sshd (the line session, where ``tty`` is no tty);
    ``ssh -tt``, which insists, gives up; the native run is refused with the
    engine's reason.  restrict,pty gives one; a forced command runs on the
    terminal asked for."""

    def over_ssh(*args: str) -> tuple[int, str, str]:
        proc = ssh(ssh_server, *args, extra=("-tt",), timeout=30)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()

    def native(command: str) -> tuple[int | None, str, str | None]:
        with connect(ssh_server) as conn:
            result = conn.run(command, pty=True)
        return result.exit_code, result.stdout.decode(), result.error

    for options in ("no-pty", "restrict"):
        write_keys(ssh_server, options)
        child = ssh_terminal()
        child.expect_exact("PTY allocation request failed")
        child.sendline("tty")
        child.expect_exact("not a tty\r\n")
        child.sendline("exit 4")
        assert ended(child) == 4
        code, out, err = over_ssh("tty")
        assert "PTY allocation request failed" in err, options
        assert (code, out) == (255, ""), (options, code, out)
        assert native("tty") == (126, "", NO_TERMINAL), options

    write_keys(ssh_server, "restrict,pty")
    code, out, _ = over_ssh("tty")
    assert code == 0 and re.fullmatch(r"/dev/pts/\d+\r\n", out), out
    code, out, error = native("tty")
    assert code == 0 and error is None and re.fullmatch(r"/dev/pts/\d+\r\n", out), out

    write_keys(ssh_server, 'command="tty; echo forced:$SSH_ORIGINAL_COMMAND"')
    code, out, _ = over_ssh("asked")
    assert code == 0 and re.fullmatch(r"/dev/pts/\d+\r\nforced:asked\r\n", out), out
    code, out, _ = over_ssh()  # a shell request: the forced command, on the terminal
    assert code == 0 and re.fullmatch(r"/dev/pts/\d+\r\nforced:\r\n", out), out
    code, out, error = native("asked")
    assert code == 0 and re.fullmatch(r"/dev/pts/\d+\r\nforced:asked\r\n", out), out


def test_client_killed_mid_session_leaves_nothing_behind(
    ssh_server: ServerProcess, ssh_terminal: Callable[..., pexpect.spawn], tmp_path: Path,
    stray: list[int],
) -> None:
    """ssh SIGKILLed with a job in the background and one in the foreground of
    the remote login shell: the server hangs up the terminal; the shell, both
    jobs and their groups end, and the session is over."""
    child = ssh_terminal()
    shell_pid = int(re.findall(r"pid=(\d+)", ask(child, "echo pid=$$"))[-1])
    stray.append(shell_pid)
    job = 'sh -c "echo \\$\\$ > {}; exec sleep 1000"'
    ask(child, job.format(tmp_path / "bg.pid") + " & true")
    child.sendline(job.format(tmp_path / "fg.pid"))
    sleepers = [read_pid(tmp_path / "bg.pid"), read_pid(tmp_path / "fg.pid")]
    stray.extend(sleepers)
    assert all(running(pid) for pid in [shell_pid, *sleepers])
    child.kill(signal.SIGKILL)
    assert wait_until(lambda: not any(running(pid) for pid in sleepers), CLEANUP_DEADLINE), \
        f"jobs survived: {[pid for pid in sleepers if running(pid)]}"
    assert wait_until(lambda: pid_gone(shell_pid), CLEANUP_DEADLINE), "the shell survived"
    ssh_server.wait_for_log(r"disconnected after 1 command")
