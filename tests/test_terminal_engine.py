"""Commands on a pseudo-terminal in the engine alone (rshell/exec, SPEC §9):
real subprocesses on real ptys, no sockets.

The driver and the sink are tests/test_engine.py's (``Recording``,
``login``, ``run``, ``pump``), so what holds here holds for both listeners,
which drive the same ``Command``.  A command on a terminal leads a session
whose controlling terminal is the pty; ``TERM`` and the size come from the
request and follow ``resize``; the end of stdin is the terminal's EOF
character; the end of output is the pty's EIO; a hang-up is SIGHUP first,
then every process group of the session ends.  The policy refuses a
terminal to ``no-pty`` and ``restrict`` keys (unless ``pty`` follows) and to
a malformed request, runs a forced command on one, and gives an empty
command the account's login shell.

Markers the command prints are written split (``re""ady``) wherever the
terminal echoes what was typed, so the echo never satisfies a wait.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
from pathlib import Path

import pytest

from rshell.exec.command import STDERR, STDOUT, Command
from rshell.exec.loop import Loop
from rshell.exec.policy import Answer, Grant, Launch, Limits, Request, decide
from rshell.exec.terminal import Pty
from rshell.server.auth import grant_of
from rshell.trust import authorized_keys, keys
from tests.support.procs import (
    kill_group,
    kill_pid,
    pgid_of,
    read_pid,
    running,
    stat_fields,
    wait_until,
)
from tests.test_engine import DEFAULTS, NO_OPTIONS, Recording, login, pump, run

#: What the policy says to a key that may not have a terminal.
NO_TERMINAL = "refused: no terminal for this key (no-pty, or restrict without pty)"
PTS = re.compile(rb"/dev/pts/\d+\r\n")
XTERM = Pty()


class OnTerminal:
    """One command on a pty, driven as a listener drives it."""

    def __init__(self, tmp_path: Path, text: str, pty: Pty | None = None, *,
                 stdin: bool = False, limits: Limits = DEFAULTS, grant: Grant = NO_OPTIONS,
                 ) -> None:
        self.consumed: list[int] = []
        plan = decide(Request(text, stdin=stdin, pty=pty or XTERM),
                      login(tmp_path, grant).workspace(), limits)
        assert isinstance(plan, Launch), plan
        self.plan = plan
        self.loop, self.sink = Loop(), Recording()
        self.cmd = Command(plan, self.loop, self.sink, limits,
                           self.consumed.append)

    @property
    def out(self) -> bytes:
        return self.sink.data(STDOUT)

    def wait_for(self, marker: bytes, timeout: float = 10) -> None:
        """Drive the loop until ``marker`` is in the output (bounded)."""
        if not wait_until(lambda: marker in pump(self.cmd, self.loop, self.sink), timeout):
            raise AssertionError(f"{marker!r} never came; output: {self.out!r}")

    def finish(self, budget: float = 20.0) -> tuple[int | None, int | None, str | None]:
        outcome = run(self.cmd, self.loop, budget)
        self.loop.close()
        return outcome.exit_code, outcome.signal, outcome.reason


def refusal(grant: Grant, pty: Pty = XTERM, tmp_path: Path = Path("/")) -> str | None:
    """The policy's reason for refusing ``pty`` to this grant, or None if it runs."""
    plan = decide(Request("true", pty=pty), login(tmp_path, grant).workspace(), Limits())
    if isinstance(plan, Launch):
        return None
    assert isinstance(plan, Answer) and plan.outcome.exit_code == 126, plan
    return plan.outcome.reason


# ---- the terminal itself ---------------------------------------------------------------


def test_the_command_leads_a_session_whose_controlling_terminal_is_the_pty(
    tmp_path: Path,
) -> None:
    """Session leader, group leader, in the foreground of its terminal, which
    is a /dev/pts/N; stderr goes to the terminal too (merged, as ssh -t)."""
    term = OnTerminal(tmp_path, "tty; cat /proc/$$/stat; echo to-stderr >&2")
    assert term.finish() == (0, None, None)
    lines = term.out.split(b"\r\n")
    assert PTS.fullmatch(lines[0] + b"\r\n"), term.out
    pid_text, rest = lines[1].split(b" (", 1)
    pid = int(pid_text)
    _state, _ppid, pgrp, session, tty_nr, tpgid = rest.rsplit(b") ", 1)[1].split()[:6]
    assert (int(session), int(pgrp), int(tpgid)) == (pid, pid, pid), lines[1]
    assert int(tty_nr) != 0, "no controlling terminal"
    assert lines[2] == b"to-stderr"
    assert term.sink.data(STDERR) == b"", "a terminal has no separate stderr"


def test_term_and_window_size_come_from_the_request(tmp_path: Path) -> None:
    term = OnTerminal(tmp_path, "echo $TERM; stty size; tput cols", Pty("vt100", 132, 43))
    assert term.finish() == (0, None, None)
    assert term.out == b"vt100\r\n43 132\r\n132\r\n"


def test_a_resize_reaches_the_foreground_as_sigwinch(tmp_path: Path) -> None:
    term = OnTerminal(tmp_path, "trap 'echo winch; stty size; exit 0' WINCH; echo ready; "
                                "while :; do sleep 0.05; done", Pty("xterm", 80, 24))
    term.wait_for(b"ready\r\n")
    term.cmd.resize(100, 40)
    assert term.finish() == (0, None, None)
    assert term.out == b"ready\r\nwinch\r\n40 100\r\n"


def test_the_end_of_stdin_is_the_eof_character(tmp_path: Path) -> None:
    """A pty cannot be half-closed: the client's end of input is typed as ^D,
    so ``cat`` ends; the ^D is the engine's, never acknowledged as the
    client's input (only the client's own bytes are counted as taken)."""
    term = OnTerminal(tmp_path, "cat", stdin=True)
    term.cmd.feed(b"hello\n")
    term.wait_for(b"hello\r\nhello\r\n")  # the terminal's echo, then cat's copy
    term.cmd.end_stdin()
    assert term.finish() == (0, None, None)
    assert term.out == b"hello\r\nhello\r\n"
    assert sum(term.consumed) == len(b"hello\n")


def test_without_stdin_the_terminal_reads_end_of_file_at_once(tmp_path: Path) -> None:
    term = OnTerminal(tmp_path, "cat; echo ended")
    assert term.finish(budget=10) == (0, None, None)
    assert term.out.endswith(b"ended\r\n")


@pytest.mark.parametrize(("text", "status"), [
    ("seq 1 20000; exit 3", (3, None, None)),
    ("seq 1 20000; kill -USR1 $$", (None, signal.SIGUSR1, None)),
], ids=["exit", "signal"])
def test_output_ends_when_the_slave_closes_with_status_and_signal(
    tmp_path: Path, text: str, status: tuple[int | None, int | None, None],
) -> None:
    """Once no process holds the slave, the master reads EIO: the end of the
    output, after every byte written before it (nothing lost at the end)."""
    term = OnTerminal(tmp_path, text)
    assert term.finish() == status
    lines = term.out.split(b"\r\n")
    assert lines[:-1] == [str(n).encode() for n in range(1, 20001)] and lines[-1] == b""


def test_the_output_limit_stops_a_command_on_a_terminal(tmp_path: Path) -> None:
    term = OnTerminal(tmp_path, "yes", limits=Limits(max_output=1000))
    _, sig, reason = term.finish()
    assert reason == "output limit exceeded" and sig is not None
    assert len(term.out) == 1000 and term.out.startswith(b"y\r\ny\r\n")


def test_the_time_limit_stops_a_command_on_a_terminal(tmp_path: Path) -> None:
    term = OnTerminal(tmp_path, "echo start; sleep 30", limits=Limits(timeout=0.5))
    assert term.finish() == (None, signal.SIGTERM, "timed out after 0.5 s")
    assert term.out == b"start\r\n"


# ---- the hang-up ----------------------------------------------------------------------


def test_abandon_hangs_up_with_sighup_first(tmp_path: Path) -> None:
    """The client went: the session gets SIGHUP (a shell that traps it
    records it), then the usual end of the group."""
    record = tmp_path / "signals"
    term = OnTerminal(
        tmp_path, f"trap 'echo hup >> {record}' HUP; trap 'echo term >> {record}; exit 1' TERM; "
                  "echo ready; while :; do sleep 0.05; done",
        limits=Limits(kill_grace=5))
    term.wait_for(b"ready\r\n")
    outcome = term.cmd.abandon()
    term.loop.close()
    assert outcome.reason == "connection ended"
    assert "hup" in record.read_text().split(), record.read_text()


def test_abandon_ends_every_process_group_of_the_session(tmp_path: Path) -> None:
    """An interactive shell puts a background job in a group of its own; the
    hang-up ends it too, even one that ignores SIGHUP and SIGTERM."""
    pidfile, shellfile = tmp_path / "job", tmp_path / "shell"
    term = OnTerminal(tmp_path, "exec bash --norc --noprofile -i", stdin=True)
    try:
        term.cmd.feed(f"(trap '' HUP TERM; exec sleep 300) & echo $! > {pidfile}; "
                      f"echo $$ > {shellfile}; echo re''ady\n".encode())
        term.wait_for(b"ready\r\n")
        job, shell = read_pid(pidfile), read_pid(shellfile)
        fields = stat_fields(job)
        assert fields is not None and int(fields[3]) == shell, "not in the shell's session"
        assert pgid_of(job) == job != shell, "the job does not lead a group of its own"
        outcome = term.cmd.abandon()
        term.loop.close()
        assert outcome.reason == "connection ended"
        assert wait_until(lambda: not running(job), 10), "the background job survived"
        assert not running(shell)
    finally:
        if pidfile.exists():
            kill_pid(int(pidfile.read_text()))
        kill_group(term.cmd.child.pid)


# ---- the policy -------------------------------------------------------------------------


def test_no_pty_and_restrict_are_refused_a_terminal_and_a_later_pty_allows_one() -> None:
    assert refusal(Grant(pty=False)) == NO_TERMINAL
    assert refusal(Grant(restrict=True, pty=False)) == NO_TERMINAL
    assert refusal(Grant(restrict=True, pty=True)) is None
    assert refusal(Grant()) is None


@pytest.mark.parametrize(("options", "allowed"), [
    ("", True), ("no-pty", False), ("restrict", False), ("pty,restrict", False),
    ("restrict,pty", True), ("no-pty,pty", True), ("pty,no-pty", False),
    ('restrict,command="true",pty', True),
])
def test_authorized_keys_options_decide_the_terminal_in_order(options: str,
                                                              allowed: bool) -> None:
    """As sshd: the last of restrict / no-pty / pty wins."""
    line = keys.public_line(keys.generate().public_key(), "test")
    entry = authorized_keys.parse_line(f"{options} {line}".strip(), 1)
    assert refusal(grant_of(entry)) == (None if allowed else NO_TERMINAL)


@pytest.mark.parametrize(("pty", "reason"), [
    (Pty("../../etc/passwd"), "refused: invalid TERM '../../etc/passwd'"),
    (Pty("xterm\n"), "refused: invalid TERM 'xterm\\n'"),
    (Pty("x" * 65), "refused: invalid TERM '" + "x" * 64 + "'"),
    (Pty("xterm", 70000, 24), "refused: invalid window size 70000x24"),
    (Pty("xterm", 80, -1), "refused: invalid window size 80x-1"),
])
def test_a_malformed_terminal_request_is_refused_with_its_reason(pty: Pty,
                                                                 reason: str) -> None:
    assert refusal(Grant(), pty) == reason


def test_a_terminal_of_unknown_type_is_granted_with_term_unset(tmp_path: Path) -> None:
    """ssh with TERM unset asks for type "": sshd grants the terminal and
    leaves TERM out of the environment, and so do we (it was refused)."""
    term = OnTerminal(tmp_path, 'echo "[${TERM-unset}]"; tty', Pty("", 80, 24))
    assert "TERM" not in term.plan.env
    assert term.finish() == (0, None, None)
    assert term.out.startswith(b"[unset]\r\n") and PTS.fullmatch(term.out[9:]), term.out


def test_a_forced_command_runs_on_the_terminal_instead(tmp_path: Path) -> None:
    for asked in ("", "top"):
        term = OnTerminal(tmp_path, asked, grant=Grant(forced="echo for''ced; tty"))
        assert (term.plan.command, term.plan.login) == ("echo for''ced; tty", False)
        assert term.finish() == (0, None, None)
        assert term.out.startswith(b"forced\r\n") and PTS.fullmatch(term.out[8:]), term.out


def test_an_empty_command_is_the_accounts_login_shell(tmp_path: Path) -> None:
    shell = pwd.getpwuid(os.getuid()).pw_shell
    term = OnTerminal(tmp_path, "", stdin=True)
    assert term.plan.login
    term.cmd.feed(b'echo "[$0]"; exit 4\n')
    assert term.finish() == (4, None, None)
    # Not the echo of "[$0]", nor a terminal control such as ESC [?2004l.
    found = re.search(rb"\[([^][$?]*)\]", term.out)
    assert found is not None, term.out
    assert found.group(1) == b"-" + os.path.basename(shell).encode()
