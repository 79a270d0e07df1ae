"""The interactive prompt, driven through a real pseudo-terminal.

Each test spawns the real ``rshell`` entry point under pexpect, so readline,
terminal echo and the tty's Ctrl-C -> SIGINT path are all the real thing.
Markers the remote side prints are written split (``ar""med``) so the echo of
the typed line can never satisfy an expectation meant for the output.
"""

from __future__ import annotations

import io
import os
import pwd
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from tests.conftest import ServerProcess
from tests.support.procs import asleep_in_select, wait_until

Spawn = Callable[[], pexpect.spawn]

UP_ARROW = "\x1b[A"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def prompt_rx(server: ServerProcess, cwd: str = "~") -> str:
    """The exact prompt ``user@host:cwd$ `` for this server, as a regex."""
    user = pwd.getpwuid(os.getuid()).pw_name
    host = server.address.rsplit(":", 1)[0]
    return re.escape(f"{user}@{host}:{cwd}$ ")


@pytest.fixture
def spawn(server: ServerProcess, terminals: Callable[..., pexpect.spawn]) -> Spawn:
    """Factory for prompt sessions on ``server``; all are killed at teardown."""
    return lambda: terminals(server.address)


def leave(child: pexpect.spawn) -> int:
    """Wait (bounded) for the client to exit and return its exit status."""
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.signalstatus is None, f"rshell died of signal {child.signalstatus}"
    assert child.exitstatus is not None
    return int(child.exitstatus)


def history_lines(home: Path) -> list[str]:
    return (home / "history").read_text(encoding="utf-8").splitlines()


def test_prompt_shows_user_host_and_home_as_tilde(spawn: Spawn, server: ServerProcess) -> None:
    """The prompt tells the user where they are: user, host, cwd (home as ``~``)."""
    child = spawn()
    child.expect(prompt_rx(server, "~"))
    assert child.isalive()


def test_command_output_appears(spawn: Spawn, server: ServerProcess) -> None:
    """A command's stdout and stderr reach the terminal, then the prompt returns."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline('echo hel""lo; echo oo""ps >&2')
    child.expect(r"hello\r\n")
    child.expect(r"oops\r\n")
    child.expect(prompt_rx(server))


def test_cd_persists_in_prompt_and_pwd(spawn: Spawn, server: ServerProcess) -> None:
    """``cd`` changes the session's directory: the prompt and later commands see it."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("cd /tmp")
    child.expect(prompt_rx(server, "/tmp"))
    child.sendline("pwd")
    child.expect(r"\r\n/tmp\r\n")
    child.expect(prompt_rx(server, "/tmp"))
    child.sendline("cd")
    child.expect(prompt_rx(server, "~"))


def test_empty_line_does_nothing(home: Path, spawn: Spawn, server: ServerProcess) -> None:
    """An empty line prints nothing, runs nothing remotely and is not remembered."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("")
    child.expect(prompt_rx(server))
    assert _ANSI.sub("", child.before).strip() == ""
    child.sendline("   ")
    child.expect(prompt_rx(server))
    assert _ANSI.sub("", child.before).strip() == ""
    child.sendline("true")
    child.expect(prompt_rx(server))
    child.sendeof()
    assert leave(child) == 0
    server.wait_for_log(r"disconnected after 1 command\(s\)")
    assert history_lines(home) == ["true"]


def test_ctrl_c_delivers_sigint_to_remote_command(spawn: Spawn, server: ServerProcess) -> None:
    """Ctrl-C reaches the remote command as SIGINT (its trap runs), and the
    session stays usable afterwards."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("trap 'echo got\"\"-int; kill $!; exit 4' INT; echo ar\"\"med; sleep 30 & wait")
    child.expect("armed")  # trap installed, client is inside run()
    started = time.monotonic()
    child.sendintr()
    child.expect("got-int", timeout=5)
    child.expect(prompt_rx(server), timeout=5)
    assert time.monotonic() - started < 5
    server.wait_for_log(r"command .*trap.* exit=4 signal=None")
    child.sendline('echo sti""ll-alive')
    child.expect(r"still-alive\r\n")
    child.expect(prompt_rx(server))
    assert child.isalive()


def test_ctrl_c_ends_plain_remote_command_promptly(spawn: Spawn, server: ServerProcess) -> None:
    """A command that does not trap SIGINT dies of it; the prompt is back long
    before the command would have finished, and the last status is 128+2."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline('echo go""ing; exec sleep 30')
    child.expect("going")
    started = time.monotonic()
    child.sendintr()
    child.expect(prompt_rx(server), timeout=5)
    assert time.monotonic() - started < 5
    server.wait_for_log(r"command 'echo go\"\"ing; exec sleep 30' exit=None signal=2")
    child.sendeof()
    assert leave(child) == 130


def test_ctrl_c_at_empty_prompt_does_not_exit(spawn: Spawn, server: ServerProcess) -> None:
    """Ctrl-C at the prompt drops the line and re-prompts, like bash; it never
    ends the session."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.send("half-typed")
    child.expect_exact("half-typed")  # readline holds it in its line buffer
    for _ in range(2):  # once with a half-typed line, once at an empty prompt
        # Only once readline waits for a key again (procs.asleep_in_select).
        assert wait_until(lambda: asleep_in_select(child.pid), 10)
        child.sendintr()
        child.expect(prompt_rx(server))
    child.sendline('echo af""ter')
    child.expect(r"\r\nafter\r\n")  # the dropped text was not prepended
    child.expect(prompt_rx(server))
    assert child.isalive()


def test_ctrl_c_at_the_prompt_works_when_the_parent_ignored_it(
    server: ServerProcess, home: Path
) -> None:
    """An ignored SIGINT is inherited across exec (``pytest &`` in a script, a
    launcher); the prompt takes it back, as an interactive shell does."""
    import signal

    from tests.support.cli import CLIENT_MODE, RSHELL, base_env

    child = pexpect.spawn(RSHELL, [*CLIENT_MODE, server.address], env=base_env(home),
                          timeout=10, encoding="utf-8", dimensions=(24, 250),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        child.expect(prompt_rx(server))
        assert wait_until(lambda: asleep_in_select(child.pid), 10)
        child.sendintr()
        child.expect(prompt_rx(server))
        assert child.isalive()
    finally:
        child.close(force=True)


def test_ctrl_d_exits_zero_in_fresh_session(spawn: Spawn, server: ServerProcess) -> None:
    """Ctrl-D with nothing run yet leaves cleanly with status 0."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendeof()
    assert leave(child) == 0


def test_ctrl_d_exits_with_last_command_status(spawn: Spawn, server: ServerProcess) -> None:
    """Like a shell, leaving reports the last command's status (repl.interactive)."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("(exit 3)")
    child.expect(prompt_rx(server))
    child.sendeof()
    assert leave(child) == 3


@pytest.mark.parametrize("word", ["exit", "quit"])
def test_exit_words_leave(word: str, spawn: Spawn, server: ServerProcess) -> None:
    """``exit`` and ``quit`` end the session locally, without a remote round trip."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("true")
    child.expect(prompt_rx(server))
    child.sendline(word)
    assert leave(child) == 0
    server.wait_for_log(r"disconnected after 1 command\(s\)")


def test_history_is_appended_as_commands_run(
    home: Path, spawn: Spawn, server: ServerProcess
) -> None:
    """Each line is written to $RSHELL_HOME/history as soon as it is entered, so
    history survives a crash."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("echo one")
    child.expect(prompt_rx(server))
    assert history_lines(home) == ["echo one"]
    child.sendline("cd /tmp")
    child.expect(prompt_rx(server, "/tmp"))
    assert history_lines(home) == ["echo one", "cd /tmp"]
    child.sendline("exit")
    assert leave(child) == 0
    assert history_lines(home) == ["echo one", "cd /tmp", "exit"]


def test_up_arrow_recalls_previous_session(
    home: Path, spawn: Spawn, server: ServerProcess
) -> None:
    """History persists across sessions: Up in a new session recalls the last
    command of the previous one."""
    first = spawn()
    first.expect(prompt_rx(server))
    first.sendline('echo fr""om-first')
    first.expect(r"from-first\r\n")
    first.expect(prompt_rx(server))
    first.sendeof()
    assert leave(first) == 0

    second = spawn()
    second.expect(prompt_rx(server))
    second.send(UP_ARROW)
    second.expect_exact('echo fr""om-first')  # readline redraws the recalled line
    second.send("\r")
    second.expect(r"\r\nfrom-first\r\n")
    second.expect(prompt_rx(server))
    second.sendeof()
    assert leave(second) == 0
    assert history_lines(home) == ['echo fr""om-first', 'echo fr""om-first']


def test_command_error_is_reported_and_prompt_returns(
    spawn: Spawn, server: ServerProcess
) -> None:
    """A failure is no ``rshell: command error:`` line (a missing command is
    said once, by the shell); the session goes on."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("false")
    child.expect(prompt_rx(server))
    assert "command error" not in child.before
    child.sendline("no-such-command-xyz")
    child.expect(r"no-such-command-xyz: (command )?not found\r\n")
    child.expect(prompt_rx(server))
    assert "command error" not in child.before
    child.sendline('echo o""k')
    child.expect(r"\r\nok\r\n")
    child.expect(prompt_rx(server))
    child.sendeof()
    assert leave(child) == 0


# ---- an idle timeout on the server --------------------------------------------------------


def test_prompt_reconnects_after_idle_timeout(start_server: Callable[..., ServerProcess],
                                              terminals: Callable[..., pexpect.spawn]) -> None:
    """A user who left the prompt for longer than --idle-timeout types a command
    and it runs (on a fresh session), rather than a protocol error ending rshell."""
    srv = start_server("--idle-timeout", "1")
    child = terminals(srv.address)
    child.logfile_read = transcript = io.StringIO()
    child.expect(prompt_rx(srv))
    srv.wait_for_log(r"disconnected .*idle", timeout=10)
    child.sendline('echo ba""ck')
    child.expect("reconnecting")
    child.expect(r"back\r\n")
    child.expect(prompt_rx(srv))
    # The reconnect notice is the only word from rshell itself.
    assert re.findall(r"rshell: [^\r\n]*", transcript.getvalue()) == [
        "rshell: the session was idle too long; reconnecting"
    ], transcript.getvalue()


def test_prompt_reconnect_keeps_the_directory(start_server: Callable[..., ServerProcess],
                                              tmp_path: Path,
                                              terminals: Callable[..., pexpect.spawn]) -> None:
    """The fresh session starts where the user was, not back in the home."""
    srv = start_server("--idle-timeout", "1")
    where = tmp_path / "work dir"
    where.mkdir()
    child = terminals(srv.address)
    child.expect(prompt_rx(srv))
    child.sendline(f"cd {shlex.quote(str(where))}")
    child.expect(re.escape(f":{where}$ "))
    srv.wait_for_log(r"disconnected .*idle", timeout=10)
    child.sendline("pwd")
    child.expect("reconnecting")
    child.expect(re.escape(f"\r\n{where}\r\n"))
    child.expect(re.escape(f":{where}$ "))
    child.sendline("exit")
    assert leave(child) == 0
