"""The prompt never traps the user (issue 12, items 1 and 10), through the
real ``rshell`` on a pseudo-terminal.

Three Ctrl-C within two seconds give up on a command that shrugs off
SIGINT, as in one-shot mode (cli.common.forward_sigint): the client stops
it on the server (SIGTERM, SIGKILL after a grace), its process group ends,
and the prompt is back on the same connection, in the same directory.  A
program that waits for a terminal it does not have (vim reads its stderr
once stdin is at EOF) is what that is for.

A line that does not complete a shell command gets the continuation prompt
``> ``; the lines go together; Ctrl-C there drops them; history keeps the
whole command.  Markers the remote side prints are written split
(``re""ady``) so the echo of the typed line never satisfies an expectation.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from tests.conftest import ServerProcess
from tests.support.procs import (
    asleep_in_select,
    assert_group_ends,
    handled,
    kill_group,
    pid_gone,
    read_pid,
    signal_pending,
    wait_until,
)
from tests.test_repl import UP_ARROW, leave, prompt_rx

Spawn = Callable[[], pexpect.spawn]

#: Ignores SIGINT (counting each in a file) and, with "term", SIGTERM too;
#: writes its pid, then waits for input on its stderr, as vim does once
#: its stdin is at EOF (a pipe's write end never becomes readable).
_DEAF = """\
import os, select, signal, sys
pidfile, ints, deaf_to_term = sys.argv[1], sys.argv[2], sys.argv[3] == "term"
signal.signal(signal.SIGINT, lambda *_: open(ints, "a").write("i"))
if deaf_to_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(pidfile + ".tmp", "w").write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
print("re" "ady", flush=True)
while True:
    select.select([2], [], [])
"""


@pytest.fixture
def spawn(server: ServerProcess, terminals: Callable[..., pexpect.spawn],
          monkeypatch: pytest.MonkeyPatch) -> Spawn:
    """The prompt, its Ctrl-C window widened: presses a loaded machine spreads
    over more than two seconds still count as three (the window itself is
    test_cli.py::test_a_fourth_press_after_the_window_is_a_first's)."""
    monkeypatch.setenv("RSHELL_CTRL_C_WINDOW", "60")
    return lambda: terminals(server.address, timeout=15)


def press_ctrl_c(child: pexpect.spawn) -> None:
    """One Ctrl-C, handled before the next (two pending at once would merge).

    The terminal turns the key into SIGINT later, in a kernel worker: until
    then nothing is pending, so "not pending" alone proved nothing, and a
    second key could follow before the first signal existed (the lost third
    press of a loaded run).  The echoed ``^C`` comes after the signal is
    sent (n_tty: isig, then the echo), so it is waited for first."""
    child.sendintr()
    child.expect_exact("^C")
    handled(child.pid, signal.SIGINT)


def start_deaf(child: pexpect.spawn, server: ServerProcess, tmp_path: Path,
               mode: str) -> tuple[int, Path]:
    pidfile, ints = tmp_path / "pid", tmp_path / "ints"
    remote = shlex.join([sys.executable, "-c", _DEAF, str(pidfile), str(ints), mode])
    child.sendline(f"exec {remote}")
    child.expect("ready")
    return read_pid(pidfile), ints


@pytest.mark.parametrize("mode", ["int", "term"], ids=["deaf-to-sigint", "deaf-to-sigterm"])
def test_three_ctrl_c_give_up_and_the_session_goes_on(
    spawn: Spawn, server: ServerProcess, tmp_path: Path, mode: str
) -> None:
    """The first two presses reach the command; the third gives up on it: the
    server stops it (SIGTERM, or SIGKILL a grace later for one deaf to
    SIGTERM too), its group ends, and the same connection, in the same
    directory, runs the next command.  Before, the prompt stayed stuck."""
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("cd /tmp")
    child.expect(prompt_rx(server, "/tmp"))
    pid, ints = start_deaf(child, server, tmp_path, mode)
    try:
        def seen() -> int:
            return len(ints.read_text()) if ints.exists() else 0

        press_ctrl_c(child)
        assert wait_until(lambda: seen() >= 1, 5), "press 1 not forwarded"
        press_ctrl_c(child)
        assert wait_until(lambda: seen() >= 2, 5), "press 2 not forwarded"
        started = time.monotonic()
        child.sendintr()
        child.expect("rshell: command abandoned")
        child.expect(prompt_rx(server, "/tmp"))
        assert time.monotonic() - started < 8
        assert_group_ends(pid)
        assert ints.read_text() == "ii"  # the third press stayed local
        signum = 15 if mode == "int" else 9
        server.wait_for_log(rf"command 'exec .*' exit=None signal={signum}")
        child.sendline('echo sti""ll')
        child.expect(r"still\r\n")
        child.expect(prompt_rx(server, "/tmp"))
        assert server.log.count("authenticated with key") == 1  # the same connection
        child.sendline("kill -INT $$")  # as a command the user interrupted: 130
        child.expect(prompt_rx(server, "/tmp"))
        child.sendeof()
        assert leave(child) == 130
    finally:
        kill_group(pid)


@pytest.mark.skipif(shutil.which("vi") is None, reason="no vi on this machine")
def test_vi_at_the_prompt_without_a_terminal_can_be_left(
    server: ServerProcess, terminals: Callable[..., pexpect.spawn], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12's case, where commands run without a remote terminal (``-T``;
    by default the prompt gives them one, tests/test_terminal_cli.py): ``vi
    FILE`` says it has no terminal and then waits forever (on its stderr);
    Ctrl-C gets the prompt back, three at most.  vim may end at the first: it
    then reads its input, which is empty at the prompt, and leaves ("Error
    reading input"); otherwise the third press gives up on it.  Either way
    its group ends and the session goes on."""
    monkeypatch.setenv("RSHELL_CTRL_C_WINDOW", "60")
    child = terminals("-T", server.address, timeout=15)
    child.expect(prompt_rx(server))
    child.sendline(f"echo $$ > {tmp_path / 'pid'}; exec vi {tmp_path / 'file'}")
    child.expect("not from a terminal")
    pid = read_pid(tmp_path / "pid")
    assert wait_until(lambda: asleep_in_select(pid), 10), "vim never settled to wait"
    try:
        presses = 0
        while presses < 3 and not pid_gone(pid):
            press_ctrl_c(child)
            presses += 1
            # vim has taken it: ended, or back to its wait.
            assert wait_until(lambda: pid_gone(pid) or (
                not signal_pending(pid, signal.SIGINT) and asleep_in_select(pid)), 10)
        if presses == 3:
            child.expect("rshell: command abandoned")
        child.expect(prompt_rx(server))
        assert_group_ends(pid)
        child.sendline('echo ba""ck')
        child.expect(r"back\r\n")
    finally:
        kill_group(pid)


# ---- continuation lines -----------------------------------------------------------------


def test_an_unfinished_line_continues_and_history_keeps_the_whole(
    spawn: Spawn, server: ServerProcess, home: Path
) -> None:
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("for i in 1 2")
    child.expect_exact("> ")
    child.sendline('do echo "n$i"')
    child.expect_exact("> ")
    child.sendline("done")
    child.expect(r"n1\r\nn2\r\n")
    child.expect(prompt_rx(server))
    child.sendline('echo "a')
    child.expect_exact("> ")
    child.sendline('b"')
    child.expect(r"a\r\nb\r\n")
    child.expect(prompt_rx(server))
    server.wait_for_log(r"command 'for i in 1 2\\ndo echo \"n\$i\"\\ndone' exit=0")
    # Up twice: the whole loop, one entry, not its last line.
    child.send(UP_ARROW + UP_ARROW + "\r")
    child.expect(r"n1\r\nn2\r\n")
    child.expect(prompt_rx(server))
    child.sendeof()
    assert leave(child) == 0
    assert (home / "history").read_text().splitlines() == [
        "for i in 1 2", 'do echo "n$i"', "done", 'echo "a', 'b"',
        "for i in 1 2", 'do echo "n$i"', "done",
    ]


def test_ctrl_c_at_the_continuation_prompt_drops_the_lines(
    spawn: Spawn, server: ServerProcess
) -> None:
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("echo 'never")
    child.expect_exact("> ")
    child.sendline("sent")
    child.expect_exact("> ")
    assert wait_until(lambda: asleep_in_select(child.pid), 10)
    child.sendintr()
    child.expect(prompt_rx(server))
    child.sendline('echo af""ter')
    child.expect(r"\r\nafter\r\n")
    child.expect(prompt_rx(server))
    server.wait_for_log(r"command 'echo af\"\"ter' exit=0")
    assert "never" not in server.log


def test_ctrl_d_at_the_continuation_prompt_lets_the_shell_say_why(
    spawn: Spawn, server: ServerProcess
) -> None:
    child = spawn()
    child.expect(prompt_rx(server))
    child.sendline("echo 'open")
    child.expect_exact("> ")
    child.sendeof()
    child.expect(r"(?i)unterminated|unexpected|matching")  # the remote shell's words
    child.expect(prompt_rx(server))
    child.sendline('echo al""ive')
    child.expect(r"alive\r\n")
    child.expect(prompt_rx(server))
    assert child.isalive()
