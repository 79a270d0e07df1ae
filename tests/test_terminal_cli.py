"""``rshell -t`` and the prompt on remote terminals, through the real CLI on
real pseudo-terminals (pexpect) against a real ``rshell-server`` (SPEC §9).

``rshell -t`` runs inside a local ``bash --norc --noprofile`` spawned by
pexpect, as a user runs it from a shell: that local shell prints ``stty -g``
before and after, so every way out (a normal end, a remote failure, ``~.``,
SIGTERM, SIGHUP, the server killed) is checked to leave the local terminal
as it found it, and prints the exit status.  The prompt (``rshell HOST`` on a
terminal) runs each command on a remote terminal unless ``-T``.

Markers the remote side prints are written split (``re""ady``) so the echo of
typed input never satisfies an expectation.  Remote processes are checked
through /proc (client and server share this machine); every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from rshell.protocol.messages import Exit, Run, Stdout
from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env, cli, one_line_error
from tests.support.procs import (
    children,
    kill_pid,
    read_pid,
    running,
    stat_fields,
    wait_until,
    write_pid,
)
from tests.test_prompt_escape import start_deaf
from tests.test_repl import leave, prompt_rx
from tests.test_screen_safety import DEADLINE, Liar, Peer, liar  # noqa: F401  # liar: a fixture
from tests.test_terminal_api import WAIT, echo_off, in_foreground

LOCAL_PROMPT = "local> "
ROWS, COLS = 30, 110
PTS = r"/dev/pts/\d+"


class Local:
    """A local interactive bash on a pexpect terminal, from which rshell runs."""

    def __init__(self, home: Path) -> None:
        self.child = pexpect.spawn(
            "bash", ["--norc", "--noprofile"], encoding="utf-8", timeout=WAIT,
            dimensions=(ROWS, COLS),
            env=base_env(home, PS1=LOCAL_PROMPT, TERM="xterm"))
        self.child.expect_exact(LOCAL_PROMPT)
        self.modes = self.stty()

    def stty(self) -> str:
        """``stty -g`` as the local shell sees its terminal now."""
        self.child.sendline('echo "modes=$(stty -g)"')
        self.child.expect(r"modes=([0-9a-f:]+)\r?\n")
        modes = str(self.child.match.group(1))
        self.child.expect_exact(LOCAL_PROMPT)
        return modes

    def start(self, *args: str) -> None:
        """``rshell ARGS`` from the local shell; it owns the terminal until it ends."""
        self.child.sendline(shlex.join([RSHELL, *args]))

    def raw(self) -> bool:
        """rshell has put the local terminal in raw mode (no signals from keys,
        no output processing: neither bash nor its readline does that), so
        what is typed now goes to the remote terminal, not to a cooked local
        line.  (A pty master reports its slave's modes.)"""
        attrs = termios.tcgetattr(self.child.child_fd)
        return not attrs[3] & termios.ISIG and not attrs[1] & termios.OPOST

    def rshell_pid(self) -> int:
        """The running rshell client (a child of the local shell)."""
        def found() -> int | None:
            for pid in children(self.child.pid):
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "rshell":
                        return pid
                except OSError:
                    continue
            return None

        assert wait_until(found, WAIT), "rshell is not running"
        pid = found()
        assert pid is not None
        return pid

    def ended(self) -> int:
        """rshell's exit status, once the local prompt is back; the local
        terminal's modes are checked to be as they were before it."""
        self.child.expect_exact(LOCAL_PROMPT)
        self.child.sendline('echo "status=$?"')
        self.child.expect(r"status=(\d+)\r?\n")  # (no \r: left raw)
        status = int(self.child.match.group(1))
        self.child.expect_exact(LOCAL_PROMPT)
        assert self.stty() == self.modes, "the local terminal was not restored"
        return status

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def local(home: Path) -> Iterator[Callable[..., Local]]:
    made: list[Local] = []

    def make() -> Local:
        shell = Local(home)
        made.append(shell)
        return shell

    yield make
    for shell in made:
        shell.close()


@pytest.fixture
def remote_pids() -> Iterator[list[Path]]:
    """Pid files of remote processes: whatever they name is killed at the end."""
    files: list[Path] = []
    yield files
    for path in files:
        if path.exists() and path.read_text().strip().isdigit():
            kill_pid(int(path.read_text()))


def login_shell(local: Local, server: ServerProcess, tmp_path: Path,
                remote_pids: list[Path]) -> int:
    """``rshell -t HOST`` to the login shell; the remote shell's pid once it answered."""
    pidfile = tmp_path / "remote-shell"
    remote_pids.append(pidfile)
    local.start("-t", server.address)
    assert wait_until(local.raw, WAIT), "rshell never put the terminal in raw mode"
    local.child.send(f"{write_pid(pidfile)}; echo re''ady\r")  # Enter, as a keyboard sends it
    local.child.expect_exact("ready\r\n")
    return read_pid(pidfile)


def ask(local: Local, command: str, marker: str = "done") -> list[str]:
    """Type ``command`` into the remote shell; the lines it wrote before ``marker``
    (carriage returns and bash's bracketed-paste controls are line breaks)."""
    split = marker[:2] + "''" + marker[2:]
    local.child.send(f"{command}; echo {split}\r")
    local.child.expect_exact(f"{marker}\r\n")
    return re.split(r"[\r\n]+|\x1b\[\?2004[hl]", str(local.child.before))


# ---- rshell -t: a login shell ------------------------------------------------------------


def test_a_login_shell_on_a_terminal(local: Callable[..., Local], server: ServerProcess,
                                     tmp_path: Path, remote_pids: list[Path]) -> None:
    """``tty``, ``tput cols``, ``ls --color=auto``, ``stty size`` before and
    after the local window changes; ``exit 7`` is rshell's exit 7; the local
    terminal is as it was."""
    term = local()
    login_shell(term, server, tmp_path, remote_pids)
    assert any(re.fullmatch(PTS, line) for line in ask(term, "tty"))
    assert str(COLS) in ask(term, "tput cols")
    listed = [line for line in ask(term, "ls --color=auto -d /tmp /")
              if "tmp" in line and "ls" not in line]  # not the echo of the typed line
    assert listed and all("\x1b[" in line for line in listed), listed
    assert f"{ROWS} {COLS}" in ask(term, "stty size")
    term.child.sendline("sh -c 'trap \"stty size; exit\" WINCH; echo wait''ing; "
                        "while :; do sleep 0.05; done'")
    term.child.expect_exact("waiting\r\n")
    term.child.setwinsize(40, 130)  # the local window changes: rshell gets SIGWINCH
    term.child.expect_exact("40 130\r\n")
    assert "40 130" in ask(term, "stty size")
    term.child.sendline("exit 7")
    assert term.ended() == 7


@pytest.mark.skipif(not os.path.exists("/usr/bin/vi"), reason="no vi on this machine")
def test_vi_edits_a_file(local: Callable[..., Local], server: ServerProcess,
                         tmp_path: Path) -> None:
    """(``-i NONE``: no viminfo written into the account's real home.)"""
    term, path = local(), tmp_path / "edited.txt"
    term.start("-t", server.address, f"vi -i NONE {path}")
    term.child.expect_exact(f'"{path}"')  # vim drew its screen: it reads keys now
    term.child.send("ihello\x1b")
    term.child.send(":wq\r")
    assert term.ended() == 0
    assert path.read_text() == "hello\n"


def test_top_in_batch_and_interactive(local: Callable[..., Local],
                                      server: ServerProcess) -> None:
    term = local()
    term.start("-t", server.address, "top -b -n 1")
    term.child.expect(r"load average.*\r\n.*\r\n")
    assert term.ended() == 0
    term.start("-t", server.address, "top")
    term.child.expect("load average")
    term.child.expect(r"PID")  # the table: top reads keys now
    term.child.send("q")
    assert term.ended() == 0


def test_the_python_repl(local: Callable[..., Local], server: ServerProcess) -> None:
    term = local()
    term.start("-t", server.address, shlex.join([sys.executable, "-q"]))
    term.child.expect_exact(">>> ")
    term.child.sendline("print(6 * 7)")
    term.child.expect_exact("42\r\n")
    term.child.expect_exact(">>> ")
    term.child.sendline("raise SystemExit(5)")
    assert term.ended() == 5


def test_read_s_takes_a_secret_unseen(local: Callable[..., Local], server: ServerProcess,
                                      tmp_path: Path, remote_pids: list[Path]) -> None:
    term = local()
    pid = login_shell(term, server, tmp_path, remote_pids)
    term.child.sendline('read -rs S; echo "got $(printf %s "$S" | rev)"')
    assert wait_until(lambda: echo_off(pid), WAIT), "read -s never turned echo off"
    term.child.sendline("hunter2")
    term.child.expect_exact("got 2retnuh\r\n")
    assert "hunter2" not in str(term.child.before)
    term.child.sendline("exit")
    assert term.ended() == 0


@pytest.mark.parametrize(("key", "status"), [("\x03", 130), ("\x1c", 131), ("\x1a", 148)],
                         ids=["ctrl-c", "ctrl-backslash", "ctrl-z"])
def test_ctrl_keys_reach_the_remote_foreground_and_the_shell_survives(
    local: Callable[..., Local], server: ServerProcess, tmp_path: Path,
    remote_pids: list[Path], key: str, status: int,
) -> None:
    """Ctrl-C, Ctrl-\\ and Ctrl-Z are keystrokes (the local terminal is raw):
    the remote terminal makes them SIGINT, SIGQUIT, SIGTSTP for ``sleep``."""
    term = local()
    pid = login_shell(term, server, tmp_path, remote_pids)
    term.child.sendline("sleep 100")
    assert wait_until(lambda: in_foreground(pid, "sleep"), WAIT), "sleep never started"
    sleeper = in_foreground(pid, "sleep")
    assert sleeper is not None
    try:
        term.child.send(key)
        if key == "\x1a":
            assert wait_until(lambda: (stat_fields(sleeper) or ["?"])[0] == "T", WAIT), \
                "sleep was not stopped"
        else:
            assert wait_until(lambda: not running(sleeper), WAIT), "sleep was not interrupted"
        term.child.sendline('echo "sur""vived $?"')
        term.child.expect_exact(f"survived {status}\r\n")
        assert running(pid)
        if key == "\x1a":  # a stopped job would hold up the exit ("There are stopped jobs")
            ask(term, "kill -9 %1; wait")
        term.child.sendline("exit 0")
        assert term.ended() == 0
    finally:
        kill_pid(sleeper)


# ---- escapes ----------------------------------------------------------------------------


def test_tilde_dot_disconnects_and_the_remote_shell_is_gone(
    local: Callable[..., Local], server: ServerProcess, tmp_path: Path,
    remote_pids: list[Path],
) -> None:
    term = local()
    pid = login_shell(term, server, tmp_path, remote_pids)
    term.child.send("~?")
    term.child.expect_exact("~.   - terminate connection")
    term.child.send("~.")
    term.child.expect(r"rshell: connection to \S+ closed \(~\.\)")
    assert term.ended() == 255
    assert wait_until(lambda: not running(pid), WAIT), "the remote shell outlived ~."


def test_tilde_tilde_sends_one_and_e_none_sends_them_all(
    local: Callable[..., Local], server: ServerProcess,
) -> None:
    term = local()
    term.start("-t", server.address, "echo re''ady; exec cat")
    term.child.expect_exact("ready\r\n")  # rshell has the keyboard now
    term.child.send("~~x\r")
    term.child.expect_exact("~x\r\n~x\r\n")  # the terminal's echo, then cat's copy
    assert "~~" not in str(term.child.before)
    term.child.send("\x04")  # ^D at a line's start: cat reads its end
    assert term.ended() == 0
    term.start("-t", "-e", "none", server.address, "echo re''ady; exec cat")
    term.child.expect_exact("ready\r\n")
    term.child.send("~.\r")
    term.child.expect_exact("~.\r\n~.\r\n")  # still connected: cat had it
    term.child.send("\x04")
    assert term.ended() == 0


# ---- every way out restores the local terminal -------------------------------------------


def test_a_remote_failure_and_a_refusal_restore_the_terminal(
    local: Callable[..., Local], server: ServerProcess, home: Path,
) -> None:
    term = local()
    term.start("-t", server.address, "echo fail''ing; exit 3")
    term.child.expect_exact("failing\r\n")
    assert term.ended() == 3
    term.start("-t", "--timeout", "1", server.address, "echo st''arted; sleep 30")
    term.child.expect_exact("started\r\n")
    term.child.expect_exact("rshell: command error: timed out after 1 s\r\n")
    assert term.ended() == 143
    keys = home / "server" / "authorized_keys"
    keys.write_text("no-pty " + keys.read_text())
    term.start("-t", server.address, "tty")
    term.child.expect(r"refused: no terminal for this key")
    assert term.ended() == 126


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_the_client_restores_the_terminal(
    local: Callable[..., Local], server: ServerProcess, tmp_path: Path,
    remote_pids: list[Path], signum: int, status: int,
) -> None:
    term = local()
    pid = login_shell(term, server, tmp_path, remote_pids)
    os.kill(term.rshell_pid(), signum)
    assert term.ended() == status
    assert wait_until(lambda: not running(pid), WAIT), "the remote shell outlived rshell"


def test_the_server_killed_mid_session_restores_the_terminal(
    local: Callable[..., Local], start_server: Callable[..., ServerProcess], tmp_path: Path,
    remote_pids: list[Path],
) -> None:
    server = start_server()
    term = local()
    login_shell(term, server, tmp_path, remote_pids)
    server.proc.kill()
    server.proc.wait(WAIT)
    term.child.expect(r"rshell: connection to \S+ closed by the server\r\n")
    assert term.ended() == 255


def test_the_client_killed_ends_the_remote_session(
    local: Callable[..., Local], server: ServerProcess, tmp_path: Path,
    remote_pids: list[Path],
) -> None:
    """SIGKILL leaves nothing to restore the local terminal, but the server
    hangs the remote one up: the shell and a job it disowned are gone."""
    term = local()
    shell = login_shell(term, server, tmp_path, remote_pids)
    jobfile = tmp_path / "job"
    remote_pids.append(jobfile)
    ask(term, f"sleep 300 & echo $! > {jobfile}; disown")
    job = read_pid(jobfile)
    os.kill(term.rshell_pid(), signal.SIGKILL)
    assert wait_until(lambda: not running(shell), WAIT), "the remote shell survived"
    assert wait_until(lambda: not running(job), WAIT), "its job survived"


# ---- -t, -tt, -T ------------------------------------------------------------------------


def test_tt_gives_a_terminal_even_without_one_locally(home: Path,
                                                      server: ServerProcess) -> None:
    done = cli(home, "-tt", server.address, "tty")  # stdin: /dev/null
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{PTS}\r\n", done.stdout.decode()), done.stdout
    typed = cli(home, "-tt", server.address, input=b"tty; exit 3\n")  # the login shell
    assert typed.returncode == 3, typed.stderr
    assert re.search(rf"[\r\n]{PTS}\r\n", typed.stdout.decode()), typed.stdout


def test_tt_with_a_pipe_leaves_the_local_terminal_cooked(home: Path,
                                                         server: ServerProcess) -> None:
    """``rshell -tt HOST CMD < pipe`` on a terminal, as ``ssh -tt``: only a
    keyboard goes raw, so the local terminal keeps its line mode and its
    Ctrl-C, which ends rshell itself; the remote terminal still has the local
    window's size (it went raw, and Ctrl-C was a byte for nobody, before)."""
    line = shlex.join([RSHELL, *CLIENT_MODE, "-tt", server.address,
                       "stty size; echo re''ady; exec sleep 60"])
    # Started as an interactive shell starts a job: SIGINT at its default (a
    # suite run in the background inherits it ignored, and rshell, as ssh,
    # keeps an ignored SIGINT ignored).
    child = pexpect.spawn("sh", ["-c", f"exec {line} < /dev/null"], env=base_env(home),
                          timeout=WAIT, dimensions=(ROWS, COLS),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        child.expect(rf"{ROWS} {COLS}\r+\nready\r+\n".encode())  # cooked: \r\r\n, as ssh
        lflag = termios.tcgetattr(child.child_fd)[3]
        assert lflag & termios.ICANON and lflag & termios.ISIG, "the local terminal went raw"
        child.sendintr()
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 130, (child.exitstatus, child.signalstatus)
    finally:
        child.close(force=True)


def test_t_without_a_local_terminal_warns_and_runs_without(home: Path,
                                                           server: ServerProcess) -> None:
    done = cli(home, "-t", server.address, "tty", input=b"")
    assert "Pseudo-terminal will not be allocated" in done.stderr.decode()
    assert (done.returncode, done.stdout) == (1, b"not a tty\n")


def test_t_and_capital_t_together_are_a_usage_error(home: Path,
                                                    server: ServerProcess) -> None:
    done = cli(home, "-t", "-T", server.address, "tty")
    assert done.returncode == 2
    assert one_line_error(done.stderr) == "rshell: -t and -T contradict each other"


# ---- the prompt ---------------------------------------------------------------------------


@pytest.fixture
def prompt(server: ServerProcess, terminals: Callable[..., pexpect.spawn],
           monkeypatch: pytest.MonkeyPatch) -> Callable[..., pexpect.spawn]:
    """``rshell [ARGS] HOST`` at its prompt on a terminal, its Ctrl-C window
    widened as in tests/test_prompt_escape.py."""
    monkeypatch.setenv("RSHELL_CTRL_C_WINDOW", "60")
    monkeypatch.setenv("TERM", "xterm")

    def spawn(*args: str) -> pexpect.spawn:
        child = terminals(*args, server.address, timeout=WAIT, width=COLS)
        child.expect(prompt_rx(server))
        return child

    return spawn


@pytest.mark.skipif(not os.path.exists("/usr/bin/vi"), reason="no vi on this machine")
def test_vi_at_the_prompt_edits_a_file(prompt: Callable[..., pexpect.spawn],
                                       server: ServerProcess, tmp_path: Path) -> None:
    child, path = prompt(), tmp_path / "edited.txt"
    child.sendline(f"vi -i NONE {path}")
    child.expect_exact(f'"{path}"')
    child.send("ihello\x1b")
    child.send(":wq\r")
    child.expect(prompt_rx(server))
    assert path.read_text() == "hello\n"
    child.sendline(shlex.join([sys.executable, "-q"]))
    child.expect_exact(">>> ")
    child.sendline("print(6 * 7)")
    child.expect_exact("42\r\n")
    child.sendline("raise SystemExit(0)")
    child.expect(prompt_rx(server))
    child.sendline("cd /tmp")
    child.expect(prompt_rx(server, "/tmp"))
    child.sendline("pwd; tty")
    child.expect(rf"\r\n/tmp\r\n{PTS}\r\n")
    # A key typed before the prompt is back belongs to the command (it had
    # the keyboard) or meets the local terminal between raw and readline's
    # mode, where the line discipline turns ^D into a NUL: wait for the prompt.
    child.expect(prompt_rx(server, "/tmp"))
    child.sendeof()
    assert leave(child) == 0


def test_three_ctrl_c_give_up_on_a_command_deaf_to_sigint(
    prompt: Callable[..., pexpect.spawn], server: ServerProcess, tmp_path: Path,
) -> None:
    """As without a terminal (tests/test_prompt_escape.py), but each press is
    a keystroke the remote terminal makes SIGINT, counted on its way."""
    child = prompt()
    pid, ints = start_deaf(child, server, tmp_path, "int")
    try:
        def seen() -> int:
            return len(ints.read_text()) if ints.exists() else 0

        for press in (1, 2):
            child.sendintr()  # a keystroke, made SIGINT by the remote terminal
            assert wait_until(lambda: seen() >= press, WAIT), f"press {press} not forwarded"  # noqa: B023
        child.sendintr()
        child.expect("rshell: command abandoned")
        child.expect(prompt_rx(server))
        assert wait_until(lambda: not running(pid), WAIT), "the command survived"
        assert ints.read_text() == "ii"  # the third press stayed local
        child.sendline('echo sti""ll')
        child.expect(r"still\r\n")
        child.expect(prompt_rx(server))
    finally:
        kill_pid(pid)


def test_capital_t_at_the_prompt_has_no_terminal(prompt: Callable[..., pexpect.spawn],
                                                 server: ServerProcess) -> None:
    child = prompt("-T")
    child.sendline("tty")
    child.expect_exact("not a tty")
    child.expect(prompt_rx(server))
    child.sendeof()
    assert leave(child) == 1


def test_tilde_dot_at_the_prompt_leaves(prompt: Callable[..., pexpect.spawn]) -> None:
    """While a command has the terminal, ``~.`` after a newline leaves, as in ``rshell -t``."""
    child = prompt()
    child.sendline("echo re''ady; exec cat")
    child.expect_exact("ready\r\n")  # rshell has the keyboard now
    child.send("abc\r")
    child.expect_exact("abc\r\nabc\r\n")  # cat has the keyboard
    child.send("~.")
    child.expect(r"rshell: connection to \S+ closed \(~\.\)")
    assert leave(child) == 255


def test_the_prompt_runs_commands_without_a_terminal_on_an_older_server(
    liar: Callable[[Callable[[Peer], None]], Liar],  # noqa: F811  # the fixture
    terminals: Callable[..., pexpect.spawn],
) -> None:
    """A server that does not offer terminals (its Welcome has no ``pty``
    feature: an rshell-server older than them) still gets its prompt: said
    once, then commands go without a terminal, and none asks for one."""
    runs: list[Run] = []

    def play(peer: Peer) -> None:
        peer.welcome("old", "/")
        while isinstance(msg := peer.recv(), Run):
            runs.append(msg)
            peer.send(Stdout(b"from-" b"old\n"))
            peer.send(Exit(0, cwd="/"))

    server = liar(play)
    child = terminals(server.address, timeout=DEADLINE)
    child.expect_exact("offers no terminals")
    child.expect_exact(f"old@{server.address.rsplit(':', 1)[0]}:/$ ")
    child.sendline("tty")
    child.expect_exact("from-old\r\n")
    child.expect_exact(":/$ ")
    assert [run.pty for run in runs] == [None]
