"""Terminals through the Python API against a real ``rshell-server`` (SPEC §9):
``conn.run(..., pty=True)`` and the interactive ``conn.terminal()``; and the
protocol's terminal messages abused on the wire.

Markers the remote side prints are written split (``re""ady``) so the
terminal's echo of what was typed never satisfies a wait.  Every wait is
bounded; processes the remote shell reports are checked through /proc
(client and server share this machine).
"""

from __future__ import annotations

import os
import re
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import rshell
from rshell.client.terminal import Terminal
from rshell.errors import RshellError, UsageError
from rshell.protocol.messages import (
    Exit,
    Hello,
    Pty,
    Run,
    Signal,
    Stdin,
    StdinAck,
    Stdout,
    Welcome,
    WindowChange,
    encode,
)
from tests.conftest import InProcessServer, ServerProcess, connect
from tests.support.procs import (
    children,
    kill_group,
    kill_pid,
    read_pid,
    running,
    stat_fields,
    wait_until,
    write_pid,
)
from tests.support.wire import (
    HEADER,
    T_HELLO,
    T_WELCOME,
    Wire,
    error_code,
    frame,
    raw_connect,
    read_until_closed,
)

PTS = re.compile(rb"/dev/pts/\d+")
T_WINDOW_CHANGE = 14
#: Long enough for any wait on a loaded machine; a passing test never waits it out.
WAIT = 15.0


# ---- helpers shared with tests/test_terminal_cli.py --------------------------------------


def echo_off(pid: int) -> bool:
    """The terminal of ``pid`` (its stdin) reads whole lines without echo: a
    ``read -s`` or a password prompt is waiting, so what is typed now is not
    shown.  (Echo off alone is not enough: readline, at the shell's own
    prompt, turns echo off too, but reads key by key; a line typed then
    reaches a later ``read`` without its end, and it waits for ever.)"""
    try:
        fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        lflag = termios.tcgetattr(fd)[3]
        return bool(lflag & termios.ICANON) and not lflag & termios.ECHO
    except termios.error:
        return False
    finally:
        os.close(fd)


def in_foreground(shell: int, name: str) -> int | None:
    """The pid of ``shell``'s child called ``name`` once it is the foreground
    job of its terminal (a Ctrl-C now reaches it), else None."""
    for pid in children(shell):
        fields = stat_fields(pid)
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if fields is not None and comm == name and fields[0] != "Z" \
                and int(fields[5]) == int(fields[2]):  # tpgid == its group
            return pid
    return None


# ---- conn.run(pty=True) ------------------------------------------------------------------


def test_run_on_a_terminal_merges_output_and_reports_the_status(server: ServerProcess) -> None:
    with connect(server) as conn:
        result = conn.run("echo out; echo err >&2; tty; stty size; echo $TERM; exit 3",
                          pty=True, size=(100, 30), term="vt100")
        assert (result.exit_code, result.signal, result.stderr) == (3, None, b"")
        lines = result.stdout.split(b"\r\n")
        assert lines[:2] == [b"out", b"err"] and PTS.fullmatch(lines[2]), result.stdout
        assert lines[3:] == [b"30 100", b"vt100", b""]
        killed = conn.run("kill -USR1 $$", pty=True)
        assert (killed.exit_code, killed.signal) == (None, 10)
        plain = conn.run("tty")  # the next command, without one, has none
        assert (plain.stdout, plain.exit_code) == (b"not a tty\n", 1)


def test_a_malformed_terminal_is_refused_with_its_reason(server: ServerProcess) -> None:
    """The server's refusal for a TERM it will not set; the client's own for
    a size no terminal has; the connection goes on either way."""
    with connect(server) as conn:
        refused = conn.run("tty", pty=True, term="../x")
        assert (refused.exit_code, refused.error) == (126, "refused: invalid TERM '../x'")
        for size in ((0, 24), (80, 65536)):
            with pytest.raises(UsageError, match=r"size must be \(cols, rows\) in 1\.\.65535"):
                conn.run("tty", pty=True, size=size)
        assert conn.run("echo st''ill").stdout == b"still\n"


def test_run_on_a_terminal_forwards_stdin_then_the_eof_character(server: ServerProcess) -> None:
    with connect(server) as conn:
        result = conn.run("cat; echo ended", stdin=b"typed\n", pty=True)
        assert result.exit_code == 0
        assert result.stdout.endswith(b"typed\r\nended\r\n"), result.stdout


# ---- conn.terminal() ---------------------------------------------------------------------


@pytest.fixture
def shell(server: ServerProcess, tmp_path: Path) -> Iterator[tuple[Terminal, int]]:
    """The login shell on a terminal, and its pid once it answered."""
    with connect(server) as conn:
        term = conn.terminal(size=(80, 24))
        try:
            pidfile = tmp_path / "shell.pid"
            term.write(f"{write_pid(pidfile)}; echo re''ady\r")
            term.read_until("ready\r\n", WAIT)
            pid = read_pid(pidfile)
            yield term, pid
        finally:
            term.close()
            if pidfile.exists():
                kill_group(read_pid(pidfile))


def test_a_terminal_is_the_login_shell_on_a_pty(shell: tuple[Terminal, int]) -> None:
    term, _ = shell
    term.write('tty; echo "[$0]"; echo do""ne\r')
    out = term.read_until("done\r\n", WAIT)
    assert PTS.search(out), out
    assert re.search(rb"\[-[^]$]*\]", out), out  # $0 starts with '-': a login shell


def test_resize_reaches_the_foreground_and_the_size_follows(
    shell: tuple[Terminal, int],
) -> None:
    term, _ = shell
    term.write("sh -c 'trap \"stty size; exit\" WINCH; echo wait''ing; "
               "while :; do sleep 0.05; done'\r")
    term.read_until("waiting\r\n", WAIT)
    term.resize(120, 50)
    assert b"50 120\r\n" in term.read_until("50 120\r\n", WAIT)
    term.write("stty size; echo do''ne\r")
    assert b"50 120\r\ndone\r\n" in term.read_until("done\r\n", WAIT)


def test_ctrl_c_interrupts_the_foreground_and_the_shell_survives(
    shell: tuple[Terminal, int],
) -> None:
    term, pid = shell
    term.write("sleep 100\r")
    assert wait_until(lambda: in_foreground(pid, "sleep"), WAIT), "sleep never started"
    sleeper = in_foreground(pid, "sleep")
    assert sleeper is not None
    started = time.monotonic()
    term.write("\x03")
    assert wait_until(lambda: not running(sleeper), WAIT)
    term.write('echo "sur""vived $?"\r')
    term.read_until("survived 130\r\n", WAIT)
    assert time.monotonic() - started < 10
    assert running(pid)


def test_read_s_takes_a_secret_without_echoing_it(shell: tuple[Terminal, int]) -> None:
    term, pid = shell
    term.write('read -rs S; echo "got $(printf %s "$S" | rev)"\r')
    assert wait_until(lambda: echo_off(pid), WAIT), "read -s never turned echo off"
    term.write("hunter2\r")
    out = term.read_until("got 2retnuh", WAIT)
    term.write("echo do''ne\r")
    out += term.read_until("done\r\n", WAIT)
    assert b"hunter2" not in out, out


def test_wait_returns_the_result_with_the_exit_status(shell: tuple[Terminal, int]) -> None:
    term, pid = shell
    term.write("exit 7\r")
    result = term.wait(WAIT)
    assert (result.exit_code, result.signal, result.stderr) == (7, None, b"")
    assert wait_until(lambda: not running(pid), WAIT)


def test_close_hangs_up_and_no_process_outlives_it(server: ServerProcess,
                                                   tmp_path: Path) -> None:
    """close() is a terminal's hang-up: the shell goes, and so does a job it
    started in a group of its own that it no longer answers for (``disown``:
    bash does not pass SIGHUP on to it); the server hangs up every group."""
    shellfile, jobfile = tmp_path / "shell", tmp_path / "job"
    with connect(server) as conn:
        term = conn.terminal()
        try:
            term.write(f"{write_pid(shellfile)}; sleep 300 & echo $! > {jobfile}; disown; "
                       "echo re''ady\r")
            term.read_until("ready\r\n", WAIT)
            shell, job = read_pid(shellfile), read_pid(jobfile)
            fields = stat_fields(job)
            assert fields is not None and int(fields[2]) == job, "the job shares a group"
            term.close()
            assert wait_until(lambda: not running(shell), WAIT), "the shell survived"
            assert wait_until(lambda: not running(job), WAIT), "its job survived"
            assert conn.run("echo st''ill").stdout == b"still\n"  # the connection goes on
        finally:
            for path in (shellfile, jobfile):
                if path.exists():
                    kill_pid(read_pid(path))


# ---- a server without terminals ----------------------------------------------------------


class OldServer:
    """A server from before terminals, as far as a client can tell: plain TCP,
    no authentication, a Welcome without ``features``; it keeps every frame it
    is sent until the client leaves."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(WAIT)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.kinds: list[int] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sock, _ = self.listener.accept()
        sock.settimeout(WAIT)
        with sock:
            data = b""
            welcomed = False
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
                while len(data) >= HEADER.size:
                    length, kind = HEADER.unpack_from(data)
                    if len(data) < HEADER.size + length:
                        break
                    data = data[HEADER.size + length:]
                    self.kinds.append(kind)
                    if kind == T_HELLO and not welcomed:
                        welcomed = True
                        sock.sendall(frame(T_WELCOME, b'{"server":"rshell-server 0.9",'
                                           b'"cwd":"/","user":"old","stdin_window":65536}'))

    def join(self) -> list[int]:
        self._thread.join(WAIT)
        assert not self._thread.is_alive()
        self.listener.close()
        return self.kinds


def test_a_server_without_terminals_gets_no_request_and_a_clear_error() -> None:
    old = OldServer()
    conn = rshell.connect(old.address, tls=False, auth=False)
    try:
        with pytest.raises(RshellError, match="offers no terminals.*predates them"):
            conn.terminal()
        with pytest.raises(RshellError, match="offers no terminals"):
            conn.run("tty", pty=True)
    finally:
        conn.close()
    assert old.join() == [T_HELLO], "a terminal request reached a server that cannot honour it"


# ---- the wire ---------------------------------------------------------------------------


@pytest.fixture
def open_server(start_in_process: Callable[..., InProcessServer]) -> InProcessServer:
    """A server a hand-made client can use without signing (loopback --no-auth)."""
    return start_in_process("--no-auth")


@pytest.mark.parametrize("payload", [b"", b"\x00\x50", b"\x00\x50\x00\x18\x00"],
                         ids=["empty", "short", "long"])
def test_a_window_change_of_the_wrong_length_is_a_protocol_error(
    open_server: InProcessServer, payload: bytes,
) -> None:
    """Mid-command on a terminal: an Error, the connection closed, the command
    ended, and the server serves the next client."""
    with Wire(open_server) as wire:
        wire.send(Hello())
        wire.expect(Welcome)
        wire.send(Run("echo $$; exec sleep 300", pty=Pty("xterm", 80, 24)))
        started = wire.expect(Stdout)
        assert isinstance(started, Stdout)
        pid = int(bytes(started.data))
        try:
            wire.sock.sendall(frame(T_WINDOW_CHANGE, payload))
            assert error_code(read_until_closed(wire.sock)) == "malformed"
            assert wait_until(lambda: not running(pid), WAIT), "the command outlived it"
        finally:
            kill_group(pid)
    with connect(open_server, auth=False) as conn:
        assert conn.run("echo fi''ne").stdout == b"fine\n"


def test_a_window_change_before_the_session_is_a_protocol_error(
    in_process_server: InProcessServer,
) -> None:
    for before_hello in (True, False):
        with raw_connect(in_process_server) as sock:
            if not before_hello:  # after Hello, while a Challenge waits for Auth
                sock.sendall(encode(Hello()))
            sock.sendall(encode(WindowChange(80, 24)))
            reply = read_until_closed(sock)
        tail = reply if before_hello else reply[HEADER.size + struct.unpack("!I", reply[:4])[0]:]
        assert error_code(tail) == "unexpected"
    with connect(in_process_server) as conn:
        assert conn.run("echo fi''ne").stdout == b"fine\n"


def test_a_window_change_between_commands_or_without_a_terminal_is_harmless(
    open_server: InProcessServer,
) -> None:
    """A late one (the command just ended) and one for a command with no
    terminal change nothing and end nothing."""
    with Wire(open_server) as wire:
        wire.send(Hello())
        wire.expect(Welcome)
        wire.send(WindowChange(100, 40))  # between commands: the late race, ignored
        wire.send(Run("read x; echo got $x", stdin=True))
        wire.send(WindowChange(100, 40))  # no terminal: nothing to size
        wire.send(Stdin(b"it\n"))
        out = b""
        while not isinstance(msg := wire.recv(), Exit):
            assert isinstance(msg, (Stdout, StdinAck)), msg
            out += bytes(msg.data) if isinstance(msg, Stdout) else b""
        assert (out, msg.exit_code) == (b"got it\n", 0)



def test_a_keystroke_costs_no_acknowledgement(open_server: InProcessServer) -> None:
    """Stdin is acknowledged by the quarter window (PROTOCOL.md 7.3), never per
    keystroke: the frames back for each key typed at a terminal are its echo,
    not a StdinAck before it (one more frame, send and wake-up in the way of
    every echo, as it was)."""
    with Wire(open_server) as wire:
        wire.send(Hello())
        wire.expect(Welcome)
        wire.send(Run("stty raw -echo; printf re''ady; exec cat", stdin=True,
                      pty=Pty("xterm", 80, 24)))
        out = b""
        while b"ready" not in out:
            msg = wire.recv()
            assert isinstance(msg, Stdout), msg
            out += bytes(msg.data)
        for key in b"keys":
            wire.send(Stdin(bytes([key])))
            msg = wire.recv()
            assert isinstance(msg, Stdout) and bytes(msg.data) == bytes([key]), msg
        wire.send(Signal(9))  # raw mode: ^D would be one more byte for cat
        while not isinstance(msg := wire.recv(), Exit):
            assert isinstance(msg, Stdout), msg
