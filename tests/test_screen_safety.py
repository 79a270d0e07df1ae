"""A client that cannot be spoofed on screen (security issue 11).

A malicious or compromised server chooses the text of its Error messages,
its ``command error`` reasons, the user and directory the prompt shows.
Written raw, that text retitles the window, clears the screen and draws a
fake prompt.  The client prints all of it through one rule
(``rshell.client.screen.visible``): controls shown as ``\\x1b``; the
command's own stdout and stderr stay byte-exact.

The hostile servers here are the real thing a user could meet: a liar that
speaks the real protocol over real TLS with a host key the user pinned
(``Liar``), a "sshd" whose banner carries escapes, and a real rshell server
whose home lies under a directory whose name does.  Every client is the
real ``rshell`` entry point, captured or on a pseudo-terminal.
"""

from __future__ import annotations

import io
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from rshell.protocol.frames import BufferDecoder
from rshell.protocol.messages import (
    Error,
    Exit,
    Hello,
    Message,
    Run,
    Stderr,
    Stdout,
    Welcome,
    decode,
    encode,
)
from tests.conftest import InProcessServer, cli, one_line_error

#: What a hostile server says: set the window title (OSC ... BEL), clear the
#: screen and home the cursor, a C1 CSI (what 8-bit terminals obey), a bidi
#: override, DEL, and a line break to start a forged line.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[H\x9b2Jfake$ \u202e\x7f\r\nrshell: all good"
#: The same, as the user must see it: every control spelt out, on one line.
SHOWN = r"\x1b]0;pwned\x07\x1b[2J\x1b[H\x9b2Jfake$ \u202e\x7f\r\nrshell: all good"
#: What any of it would do to a terminal, were it written raw.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: The command's own output: escapes that must arrive exactly as sent.
CMD_OUT = b"\x1b[1mbold\x1b[0m\r\n"
CMD_ERR = b"\x1b[31mred\x1b[0m\n"
#: Every wait of these tests, at most.
DEADLINE = 10.0


def assert_clean(text: str) -> None:
    """No character of ``text`` is a control a terminal would obey (line ends aside)."""
    found = RAW.search(text)
    assert found is None, f"raw {found.group()!r} reached the terminal: {text!r}"


# ---- a lying rshell server -----------------------------------------------------------


class Peer:
    """The liar's side of one connection: messages out and in through rshell's codec."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._decoder = BufferDecoder()

    def send(self, msg: Message) -> None:
        self.sock.sendall(encode(msg))

    def recv(self) -> Message | None:
        """The client's next message; None once it has gone."""
        while True:
            got = self._decoder.next_frame()
            if got is not None:
                return decode(got[0], bytes(got[1]))
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                return None
            if not data:
                return None
            self._decoder.feed(data)

    def welcome(self, user: str = "alice", cwd: str = "/home/alice") -> None:
        """Take the Hello and open the session without asking who the client is."""
        assert isinstance(self.recv(), Hello)
        self.send(Welcome(server="rshell/0.1.0", cwd=cwd, user=user, stdin_window=65536))

    def answer_runs(self, error: str, cwd: str = "") -> None:
        """Every Run: the command's output, then an Exit with ``error`` as the
        reason (and ``cwd`` as the session's new directory)."""
        while isinstance(self.recv(), Run):
            self.send(Stdout(CMD_OUT))
            self.send(Stderr(CMD_ERR))
            self.send(Exit(exit_code=None, error=error, cwd=cwd))


class Liar:
    """A compromised rshell server: real TLS 1.3 with its own host key, pinned
    in the test's known_hosts (the user trusted it once), the real protocol,
    and ``play`` saying whatever it likes, for one connection after another."""

    def __init__(self, home: Path, play: Callable[[Peer], None]) -> None:
        from rshell.trust import keys, known_hosts, tls

        key = keys.generate("ed25519")
        self._context = tls.server_context(key, home)  # type: ignore[arg-type]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # how often the accept loop looks at _done
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        known_hosts.add(home / "known_hosts", self.address, keys.fingerprint(key.public_key()))
        self._play = play
        self._done = threading.Event()
        self.failures: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(DEADLINE)
            try:
                with self._context.wrap_socket(conn, server_side=True) as tls_sock:
                    self._play(Peer(tls_sock))
            except BaseException as exc:  # reported by close(): the test fails on it
                self.failures.append(exc)

    def close(self) -> None:
        self._done.set()
        self._thread.join(DEADLINE)
        self._listener.close()
        assert not self._thread.is_alive(), "the liar is stuck"
        assert not self.failures, self.failures


@pytest.fixture
def liar(home: Path) -> Iterator[Callable[[Callable[[Peer], None]], Liar]]:
    """Factory: ``liar(play)`` -> a Liar on 127.0.0.1:0; closed at teardown."""
    started: list[Liar] = []

    def start(play: Callable[[Peer], None]) -> Liar:
        started.append(Liar(home, play))
        return started[-1]

    yield start
    for server in started:
        server.close()


# ---- the rule ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "shown"), [
    ("plain text, ~/dir: ok", "plain text, ~/dir: ok"),
    ("\x1b[2J\x07\x00\x7f", r"\x1b[2J\x07\x00\x7f"),
    ("a\nb\tc\r", r"a\nb\tc\r"),
    ("\x9b\x85", r"\x9b\x85"),  # C1: CSI, NEL
    ("abc\u202edef\u2066", r"abc\u202edef\u2066"),  # bidi override, isolate
    ("\u2028\ufeff", r"\u2028\ufeff"),  # line separator, zero-width no-break space
    ("bad \udc9b byte", r"bad \x9b byte"),  # an undecodable byte kept by surrogateescape
    ("café\u00a0日本 😀\u200d🔥", "café\u00a0日本 😀\u200d🔥"),  # text stays text
])
def test_visible_spells_out_controls_and_keeps_text(text: str, shown: str) -> None:
    """Controls, C1, format characters and raw bytes are spelt out; letters,
    no-break spaces and emoji (with their joiner) are not touched."""
    from rshell.client.screen import visible

    assert visible(text) == shown


def test_new_host_key_notice_shows_a_hostile_name_escaped(
        capsys: pytest.CaptureFixture[str]) -> None:
    """The "pinned new host key" notice names the host it was handed as it was
    handed, but never lets that name drive the terminal."""
    from rshell.client.hostkeys import Decision, HostKeyPolicy

    decision = HostKeyPolicy().decide(f"evil{HOSTILE}:7722", "SHA256:x", None, "/k")
    assert decision is Decision.PIN
    err = capsys.readouterr().err
    assert_clean(err.rstrip("\n"))
    assert f"evil{SHOWN}:7722" in err


# ---- before login --------------------------------------------------------------------


@pytest.mark.parametrize(("code", "message"), [("busy", HOSTILE), (HOSTILE, "")])
def test_error_before_login_is_shown_escaped(
        home: Path, liar: Callable[..., Liar], code: str, message: str) -> None:
    """An Error frame in place of the Welcome (its message, or its code when it
    sends no message) is one visible line, 255, no control obeyed."""

    def refuse(peer: Peer) -> None:
        assert isinstance(peer.recv(), Hello)
        peer.send(Error(code, message))

    server = liar(refuse)
    proc = cli(home, server.address, "-c", "true", timeout=DEADLINE)
    assert proc.returncode == 255, proc
    line = one_line_error(proc.stderr)
    assert_clean(line)
    assert line == f"rshell: peer reported an error: {SHOWN}"
    assert proc.stdout == b""


# ---- after login ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["one-shot", "batch"])
def test_command_error_reason_is_escaped_and_output_is_exact(
        home: Path, liar: Callable[..., Liar], mode: str) -> None:
    """A ``command error`` reason is shown escaped, in one-shot (the fast path)
    and batch mode alike, while the command's stdout and stderr, escapes and
    all, arrive byte for byte."""
    server = liar(lambda peer: (peer.welcome(), peer.answer_runs(HOSTILE)))
    if mode == "one-shot":
        proc = cli(home, server.address, "-c", "tput bold", timeout=DEADLINE)
    else:
        proc = cli(home, server.address, input=b"tput bold\n", timeout=DEADLINE)
    assert proc.returncode == 1, proc
    assert proc.stdout == CMD_OUT
    assert proc.stderr.count(CMD_ERR) == 1, proc.stderr
    ours = proc.stderr.replace(CMD_ERR, b"").decode()
    assert_clean(ours.replace("\n", ""))
    assert f"rshell: command error: {SHOWN}\n" in ours


def test_prompt_shows_a_hostile_user_and_directory_escaped(
        home: Path, liar: Callable[..., Liar],
        terminals: Callable[..., pexpect.spawn]) -> None:
    """The prompt's user (from the Welcome) and directory (from an Exit) come
    from the server: a liar's are spelt out, while a command's escapes still
    reach the terminal, and the reason is shown escaped."""
    user, cwd = "root\x1b]0;pwned\x07", "/\x1b[2J\x1b[Hfake$ \x9b"
    server = liar(lambda peer: (peer.welcome(user, "/root"), peer.answer_runs(HOSTILE, cwd)))
    child = terminals(server.address, timeout=DEADLINE)
    seen = child.logfile_read = io.StringIO()
    child.expect_exact(r"root\x1b]0;pwned\x07@127.0.0.1:~$ ")
    child.sendline("tput bold")
    child.expect_exact(CMD_OUT.decode().replace("\n", ""))  # the tty adds its own \r
    child.expect_exact(f"rshell: command error: {SHOWN}")
    child.expect_exact(r"root\x1b]0;pwned\x07@127.0.0.1:/\x1b[2J\x1b[Hfake$ \x9b$ ")
    child.sendeof()
    child.expect(pexpect.EOF)
    for hostile in ("\x1b]0;", "\x1b[2J", "\x9b", "\u202e", "\x7f"):
        assert hostile not in seen.getvalue(), seen.getvalue()


def test_prompt_shows_a_real_hostile_directory_escaped(
        home: Path, tmp_path: Path, start_in_process: Callable[..., InProcessServer],
        terminals: Callable[..., pexpect.spawn]) -> None:
    """No liar needed: a real server, and a directory named with escapes (a
    tarball can bring one).  The user ``cd``s into it (the controls typed as
    readline's quoted inserts, Ctrl-V); the prompt shows its name spelt out,
    while ``printf`` of the same escapes reaches the terminal as escapes."""
    (tmp_path / "\x1b]0;pwned\x07\x1b[2Jx").mkdir()
    server = start_in_process()
    child = terminals(server.address, timeout=DEADLINE)
    seen = child.logfile_read = io.StringIO()
    child.expect_exact("$ ")
    quoted = "\x16\x1b]0;pwned\x16\x07\x16\x1b[2Jx"  # each control after a Ctrl-V
    child.sendline(f"cd '{tmp_path}/{quoted}'")
    child.expect_exact(f":{tmp_path}/" + r"\x1b]0;pwned\x07\x1b[2Jx$ ")
    child.sendline(r"printf '\033[1mbo''ld\n'")
    child.expect_exact("\x1b[1mbold")
    child.expect_exact("$ ")
    child.sendeof()
    child.expect(pexpect.EOF)
    shown = seen.getvalue()
    assert "\x1b]0;" not in shown and "\x1b[2J" not in shown, shown


# ---- the SSH backend -----------------------------------------------------------------


def test_ssh_banner_text_in_an_error_is_escaped(home: Path) -> None:
    """An ``ssh://`` server's words reach the user only through paramiko's
    exceptions: a version banner that carries escapes is shown escaped."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(DEADLINE)
        port = listener.getsockname()[1]

        def lie() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(DEADLINE)
                conn.sendall(b"SSH-\x1b]0;pwned\x07\x1b[2J\xc2\x9b-fake\r\n")
                while conn.recv(4096):  # until the client gives up and closes
                    pass

        thread = threading.Thread(target=lie, daemon=True)
        thread.start()
        proc = cli(home, f"ssh://someone@127.0.0.1:{port}", "-c", "true", timeout=DEADLINE)
        thread.join(DEADLINE)
    assert proc.returncode == 255, proc
    line = one_line_error(proc.stderr)
    assert_clean(line)
    assert r"\x1b]0;pwned\x07\x1b[2J\x9b" in line, line


# ---- what a file brings ------------------------------------------------------------------


def test_fingerprint_of_a_public_key_shows_its_comment_escaped(home: Path, tmp_path: Path) -> None:
    """A ``.pub`` file someone sent names itself in its comment: ``rshell
    fingerprint`` shows that comment spelt out, as the rest of the client does."""
    from rshell.trust import keys

    path = tmp_path / "theirs"
    comment = "bob\x1b]0;pwned\x07\x1b[2J\x9b2J\u202e"  # a line of its own: no line break
    keys.write_key_pair(path, keys.generate("ed25519"), comment, "")
    proc = cli(home, "fingerprint", f"{path}.pub", timeout=DEADLINE)
    assert proc.returncode == 0, proc
    out = proc.stdout.decode()
    assert_clean(out.rstrip("\n"))
    assert r" bob\x1b]0;pwned\x07\x1b[2J\x9b2J\u202e (ED25519)" in out, out
