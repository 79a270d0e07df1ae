"""``Connection.put`` and ``Connection.get`` (issue 14, SPEC §10) on every
backend: the native server, the ``ssh://`` backend against a real OpenSSH
sshd (its internal-sftp), and the same backend against rshell's own SSH
listener (``--ssh-bind``, rshell/ssh/sftp.py).  The same scenario runs on
each where the rules are the same: bytes and digests, trees with links and
odd names, modes and times, scp's destination rules, failures named one by
one, atomic replacement, a destination that is a link, progress, and a
connection that still runs commands afterwards.  The native server's key
refusals and audit events are native only.

Both servers run under umask 027 (so "less the umask" shows) with a
folder of their own as the remote home, so relative remote paths land
there and never in the tester's HOME.  Everything listens on 127.0.0.1;
every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import rshell
from rshell.errors import CopyFailed
from rshell.transfer.names import umask
from tests.conftest import ServerProcess, base_env
from tests.support.procs import wait_until
from tests.support.sshd import SftpSshd
from tests.test_faults import audit_events
from tests.test_sftp_server import UMASK
from tests.test_ssh_audit import new_key
from tests.test_ssh_client import SSHD

MiB = 1 << 20
REMOTE_UMASK = 0o027
WAIT = 15.0
#: Small files in the tree test.  Not the issue's 10,000: each file is fsynced
#: on arrival, and 10,000 each way on the native wire took 8 s on a quiet
#: machine but 50 s beside other disk work; over SFTP each file costs round trips.
TREE_FILES = 2_000


@dataclass
class Target:
    """One server as ``rshell.connect`` reaches it; ``files`` is its remote home."""

    name: str
    address: str
    files: Path
    options: dict[str, Any] = field(default_factory=dict)

    def connect(self, **more: Any) -> rshell.Connection:
        return rshell.connect(self.address, **dict(self.options, **more))


@dataclass
class Site:
    """The rshell-server both rshell targets talk to (native and --ssh-bind)."""

    srv: ServerProcess
    files: Path
    audit: Path
    keys: dict[str, Path]  # "forced" (command=) and "restricted" (restrict)
    ssh_port: int


@pytest.fixture(autouse=True)
def client_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client reads nothing of the tester's: HOME and RSHELL_HOME are empty folders."""
    empty = tmp_path_factory.mktemp("client-home")
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("RSHELL_HOME", str(empty / "rshell"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("copy-api")
    home, files, audit = root / "rshell-home", root / "files", root / "audit.jsonl"
    home.mkdir()
    files.mkdir()
    srv = ServerProcess(home, ["--bind", "127.0.0.1:0", "--ssh-bind", "127.0.0.1:0",
                               "--home", str(files), "--audit-log", str(audit)],
                        base_env(home), UMASK)
    try:
        port = int(srv.wait_for_log(r"ssh listening on \S+:(\d+)").group(1))
        keys: dict[str, Path] = {}
        authorized = home / "server" / "authorized_keys"
        with authorized.open("a") as f:
            for name, option in (("forced", 'command="echo forced"'), ("restricted", "restrict")):
                new_key(root / name, name)
                f.write(f"{option} {(root / f'{name}.pub').read_text()}")
                keys[name] = root / name
        st = authorized.stat()  # a change the server's reload cannot miss
        os.utime(authorized, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        yield Site(srv, files, audit, keys, port)
    finally:
        srv.stop()
        print(f"---- server log ----\n{srv.log}")


@pytest.fixture(scope="module")
def native(site: Site) -> Target:
    home = site.srv.home
    return Target("native", site.srv.address, site.files,
                  {"identity": home / "id_ed25519", "known_hosts": home / "known_hosts"})


@pytest.fixture(scope="module")
def rshell_ssh(site: Site) -> Target:
    home = site.srv.home
    return Target("rshell-ssh", f"ssh://tester@127.0.0.1:{site.ssh_port}", site.files,
                  {"identity": home / "id_ed25519", "known_hosts": home / "ssh_known_hosts",
                   "accept_new": True})


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server missing (.ci/run installs it)")
    root = tmp_path_factory.mktemp("sshd")
    (root / "files").mkdir()
    server = SftpSshd(root / "sshd", files=root / "files", umask=REMOTE_UMASK)
    try:
        yield Target("sshd", server.address, root / "files",
                     {"identity": server.key,
                      "known_hosts": root / "known_hosts", "accept_new": True})
    finally:
        server.stop()


@pytest.fixture(params=["native", "sshd", "rshell-ssh"])
def target(request: pytest.FixtureRequest) -> Target:
    found: Target = request.getfixturevalue(request.param.replace("-", "_"))
    return found


@dataclass
class Room:
    """A fresh folder in a target's remote home: ``path`` here, ``rel`` there."""

    path: Path
    rel: str


def new_room(target: Target, request: pytest.FixtureRequest) -> Room:
    rel = re.sub(r"[^\w.-]+", "-", request.node.name)
    path = target.files / rel
    path.mkdir()
    return Room(path, rel)


@pytest.fixture
def room(target: Target, request: pytest.FixtureRequest) -> Room:
    return new_room(target, request)


def digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256, the file read in chunks."""
    with open(path, "rb") as f:
        return os.fstat(f.fileno()).st_size, hashlib.file_digest(f, "sha256").hexdigest()


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below ``root``, links not followed: kind and content or target."""
    seen: dict[str, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir",)
            else:
                seen[rel] = ("file", path.read_bytes())
    return seen


def write(path: Path, data: bytes, mode: int | None = None) -> Path:
    path.write_bytes(data)
    if mode is not None:
        path.chmod(mode)
    return path


def one_line(exc: pytest.ExceptionInfo[CopyFailed]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


# ---- bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, MiB], ids=["empty", "one-byte", "1MiB"])
def test_a_file_round_trip_keeps_every_byte(
    target: Target, room: Room, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    src = write(tmp_path / "src", data)
    with target.connect() as conn:
        up = conn.put(src, f"{room.rel}/copy")
        down = conn.get(f"{room.rel}/copy", tmp_path / "back")
    want = (size, hashlib.sha256(data).hexdigest())
    assert digest(room.path / "copy") == want == digest(tmp_path / "back")
    assert (up.files, up.bytes, up.failures, up.ok) == (1, size, (), True)
    assert 0 < up.duration < 60 and 0 < down.duration < 60
    assert (down.files, down.bytes, down.failures, down.ok) == (1, size, (), True)


def test_a_256_mib_file_round_trip_on_the_native_wire(
    native: Target, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    room = new_room(native, request)
    src, back, remote = tmp_path / "big", tmp_path / "big.back", room.path / "big"
    sha = hashlib.sha256()
    with open(src, "wb") as f:
        for _ in range(64):
            block = os.urandom(4 * MiB)
            sha.update(block)
            f.write(block)
    want = (256 * MiB, sha.hexdigest())
    try:
        with native.connect() as conn:
            up = conn.put(src, f"{room.rel}/big")
            down = conn.get(f"{room.rel}/big", back)
        assert digest(remote) == want == digest(back)
        assert (up.files, up.bytes, down.files, down.bytes) == (1, want[0], 1, want[0])
    finally:
        for path in (src, back, remote):
            path.unlink(missing_ok=True)


def build_tree(root: Path, count: int) -> None:
    """Nested folders, unicode and spaces in names, relative links inside the
    tree (to a file, up a level, to a folder), an empty folder, and ``count``
    small files."""
    deep = root / "sub dir" / "deeper ünïcødé"
    deep.mkdir(parents=True)
    (root / "empty folder").mkdir()
    write(deep / "naïve file ✓.txt", "grüße, 世界\n".encode())
    write(root / "sub dir" / "empty", b"")
    (root / "sub dir" / "link to it").symlink_to("deeper ünïcødé/naïve file ✓.txt")
    (deep / "up a level").symlink_to("../empty")
    (root / "folder link").symlink_to("sub dir")
    many = root / "many"
    many.mkdir()
    for i in range(count):
        (many / f"f{i:05d}").write_bytes(b"%d\n" % i)


def test_a_tree_round_trip(target: Target, room: Room, tmp_path: Path) -> None:
    """Into an existing folder the tree arrives inside it; into a new name it
    arrives as that name.  Links arrive as links with the same target."""
    count = TREE_FILES
    build_tree(tmp_path / "tree", count)
    with target.connect() as conn:
        up = conn.put(tmp_path / "tree", room.rel, recursive=True)
        down = conn.get(f"{room.rel}/tree", tmp_path / "back", recursive=True)
    want = snapshot(tmp_path / "tree")
    assert len(want) == count + 9
    assert snapshot(room.path / "tree") == want
    assert snapshot(tmp_path / "back") == want
    assert (up.files, down.files, up.failures, down.failures) == (count + 2, count + 2, (), ())


# ---- modes and times -------------------------------------------------------------------


def test_preserve_keeps_modes_and_times_both_ways(
    target: Target, room: Room, tmp_path: Path
) -> None:
    """Bits the umask (027 remote) would take, and times to the second."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    wanted = {"a": (0o751, 1_000_000_000, 981_173_106.7), "b": (0o600, 1_100_000_000, 1e9),
              "d/c": (0o644, 1_200_000_000, 1_300_000_000), "d": (0o755, 1_050_000_000, 1e9)}
    for name in ("a", "b", "d/c"):
        write(src / name, name.encode())
    for name, (mode, atime, mtime) in wanted.items():
        (src / name).chmod(mode)
        os.utime(src / name, (atime, mtime))
    with target.connect() as conn:
        conn.put([src / "a", src / "b"], room.rel, preserve=True)
        conn.put(src / "d", room.rel, recursive=True, preserve=True)
        seen_remote = {n: (room.path / n).stat() for n in wanted}
        back = tmp_path / "back"
        back.mkdir()
        conn.get([f"{room.rel}/a", f"{room.rel}/b"], back, preserve=True)
        conn.get(f"{room.rel}/d", back, recursive=True, preserve=True)
    for where, stats in (("remote", seen_remote), ("local", {n: (back / n).stat()
                                                             for n in wanted})):
        got = {n: (st.st_mode & 0o7777, int(st.st_atime), int(st.st_mtime))
               for n, st in stats.items()}
        assert got == {n: (m, int(a), int(t)) for n, (m, a, t) in wanted.items()}, where


def test_put_without_preserve_gives_a_new_file_the_source_mode_less_the_umask(
    target: Target, room: Room, tmp_path: Path
) -> None:
    """Over SFTP too, where the server's umask is read off the file it creates
    (ssh:// gave every new file 0644 before 740d1f8, a 0600 one world-readable)."""
    modes = {"a": 0o757, "b": 0o600, "c": 0o666}
    sources = [write(tmp_path / n, n.encode(), m) for n, m in modes.items()]
    with target.connect() as conn:
        conn.put(sources, room.rel)
    got = {n: (room.path / n).stat().st_mode & 0o7777 for n in modes}
    assert got == {n: m & ~REMOTE_UMASK for n, m in modes.items()}


def test_a_tree_into_a_new_folder_gives_each_file_its_mode_less_the_umask_both_ways(
    target: Target, room: Room, tmp_path: Path
) -> None:
    """Files in folders the copy makes (their names linked in at once, made
    with their final mode on the native wire): the sender's bits less the
    receiving side's umask, read-only and executable ones too."""
    modes = {"a": 0o757, "b": 0o600, "c": 0o666, "d": 0o444}
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for n, m in modes.items():
        write(tree / "sub" / n, n.encode(), m)
    with target.connect() as conn:
        conn.put(tree, room.rel, recursive=True)
        conn.get(f"{room.rel}/tree", tmp_path / "back", recursive=True)
    up = {n: (room.path / "tree" / "sub" / n).stat().st_mode & 0o7777 for n in modes}
    assert up == {n: m & ~REMOTE_UMASK for n, m in modes.items()}
    down = {n: (tmp_path / "back" / "sub" / n).stat().st_mode & 0o7777 for n in modes}
    assert down == {n: m & ~REMOTE_UMASK & ~umask() for n, m in modes.items()}
    assert (tmp_path / "back" / "sub" / "d").read_bytes() == b"d"


def test_get_without_preserve_gives_a_new_file_the_source_mode_less_the_umask(
    target: Target, room: Room, tmp_path: Path
) -> None:
    modes = {"a": 0o757, "b": 0o600, "c": 0o666}
    for n, m in modes.items():
        write(room.path / n, n.encode(), m)
    with target.connect() as conn:
        conn.get([f"{room.rel}/{n}" for n in modes], tmp_path)
    got = {n: (tmp_path / n).stat().st_mode & 0o7777 for n in modes}
    assert got == {n: m & ~umask() for n, m in modes.items()}


def test_a_replaced_file_keeps_its_own_mode_both_ways(
    target: Target, room: Room, tmp_path: Path
) -> None:
    write(room.path / "f", b"old remote", 0o604)
    write(tmp_path / "f", b"new content", 0o777)
    with target.connect() as conn:
        conn.put(tmp_path / "f", f"{room.rel}/f")
        write(tmp_path / "mine", b"old local", 0o640)
        write(room.path / "g", b"remote content", 0o755)
        conn.get(f"{room.rel}/g", tmp_path / "mine")
    assert (room.path / "f").read_bytes() == b"new content"
    assert (room.path / "f").stat().st_mode & 0o7777 == 0o604
    assert (tmp_path / "mine").read_bytes() == b"remote content"
    assert (tmp_path / "mine").stat().st_mode & 0o7777 == 0o640


# ---- scp's destination rules and failures ----------------------------------------------


def test_several_sources_go_into_an_existing_folder(
    target: Target, room: Room, tmp_path: Path
) -> None:
    sources = [write(tmp_path / n, n.encode() * 100) for n in ("one", "two", "three")]
    into = tmp_path / "into"
    into.mkdir()
    with target.connect() as conn:
        up = conn.put(sources, room.rel)
        down = conn.get([f"{room.rel}/{p.name}" for p in sources], into)
    for p in sources:
        assert (room.path / p.name).read_bytes() == p.read_bytes() == (into / p.name).read_bytes()
    assert (up.files, up.bytes, down.files, down.bytes) == (3, 1100, 3, 1100)


@pytest.mark.parametrize("dest", ["missing", "a-file"])
def test_several_sources_into_a_non_folder_write_nothing(
    target: Target, room: Room, tmp_path: Path, dest: str
) -> None:
    sources = [write(tmp_path / n, n.encode()) for n in ("one", "two")]
    for p in sources:
        write(room.path / p.name, b"remote " + p.name.encode())
    local = tmp_path / "local"
    local.mkdir()
    if dest == "a-file":
        write(room.path / dest, b"untouched")
        write(local / dest, b"untouched")
    before_remote, before_local = snapshot(room.path), snapshot(local)
    with target.connect() as conn:
        with pytest.raises(CopyFailed) as up:
            conn.put(sources, f"{room.rel}/{dest}")
        with pytest.raises(CopyFailed) as down:
            conn.get([f"{room.rel}/one", f"{room.rel}/two"], local / dest)
    for caught in (up, down):
        assert "not a directory" in one_line(caught) and dest in str(caught.value)
    assert snapshot(room.path) == before_remote and snapshot(local) == before_local


def test_a_folder_without_recursive_fails_and_the_rest_is_copied(
    target: Target, room: Room, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "inside", b"x")
    write(tmp_path / "file", b"file bytes")
    (room.path / "out").mkdir()
    back = tmp_path / "back"
    back.mkdir()
    with target.connect() as conn:
        with pytest.raises(CopyFailed) as up:
            conn.put([folder, tmp_path / "file"], f"{room.rel}/out")
        (room.path / "rfolder").mkdir()
        with pytest.raises(CopyFailed) as down:
            conn.get([f"{room.rel}/rfolder", f"{room.rel}/out/file"], back)
    for caught, name in ((up, "folder"), (down, "rfolder")):
        assert f"{name}: is a directory (use -r)" in one_line(caught)
        copied = caught.value.copied
        assert copied is not None and (copied.files, copied.bytes) == (1, 10)
        assert len(copied.failures) == 1 and copied.failures[0][0].endswith(name)
        assert copied.failures[0][1] == "is a directory (use -r)"
    assert os.listdir(room.path / "out") == ["file"] and os.listdir(back) == ["file"]
    assert (back / "file").read_bytes() == b"file bytes"


def test_a_missing_source_is_named_and_the_rest_is_copied(
    target: Target, room: Room, tmp_path: Path
) -> None:
    write(tmp_path / "here", b"here")
    back = tmp_path / "back"
    back.mkdir()
    with target.connect() as conn:
        with pytest.raises(CopyFailed) as up:
            conn.put([tmp_path / "nowhere", tmp_path / "here"], room.rel)
        with pytest.raises(CopyFailed) as down:
            conn.get([f"{room.rel}/not-there", f"{room.rel}/here"], back)
    for caught, name in ((up, "nowhere"), (down, "not-there")):
        message = one_line(caught)
        copied = caught.value.copied
        assert copied is not None and copied.files == 1 and not copied.ok
        [(path, reason)] = copied.failures
        assert path.endswith(name) and "No such file" in reason and name in message
    assert os.listdir(room.path) == ["here"] and os.listdir(back) == ["here"]


def test_a_link_out_of_the_tree_is_refused_on_every_wire(
    target: Target, room: Room, tmp_path: Path
) -> None:
    """The receiver's link rule holds whichever side receives: the native
    server applies it, and so does the ssh:// client before it asks an
    sftp-server (which judges no names) to make the link."""
    tree = tmp_path / "tree"
    tree.mkdir()
    write(tree / "ok", b"ok")
    os.symlink("/etc/passwd", tree / "abs")
    os.symlink("../../outside", tree / "up")
    os.symlink("ok", tree / "fine")
    with target.connect() as conn:
        with pytest.raises(CopyFailed) as caught:
            conn.put(tree, room.rel, recursive=True)
    copied = caught.value.copied
    assert copied is not None
    refused = {path.rsplit("/", 1)[-1]: reason for path, reason in copied.failures}
    assert set(refused) == {"abs", "up"}, copied.failures
    assert all(reason.startswith("refused: a link") for reason in refused.values()), refused
    landed = room.path / "tree"
    assert sorted(os.listdir(landed)) == ["fine", "ok"]
    assert os.readlink(landed / "fine") == "ok"


# ---- atomic replacement, a destination that is a link ----------------------------------


def test_a_reader_of_the_old_file_reads_it_whole_after_a_replace(
    target: Target, room: Room, tmp_path: Path
) -> None:
    """The new file is renamed over the old: a reader holding the old one
    reads all of it, a fresh open sees the new one, and no temporary file is
    left beside it, on either side."""
    old, new = os.urandom(3 * MiB), os.urandom(MiB + 7)
    remote, local = room.path / "f", tmp_path / "local"
    write(remote, old)
    write(local, old)
    src = write(tmp_path / "src", new)
    with target.connect() as conn:
        with open(remote, "rb") as reader:
            head = reader.read(1000)
            conn.put(src, f"{room.rel}/f")
            assert head + reader.read() == old
        assert remote.read_bytes() == new
        with open(local, "rb") as reader:
            head = reader.read(1000)
            conn.get(f"{room.rel}/f", local)
            assert head + reader.read() == old
    assert local.read_bytes() == new
    assert os.listdir(room.path) == ["f"]
    assert sorted(os.listdir(tmp_path)) == ["local", "src"]


def test_a_destination_that_is_a_link_is_followed(
    target: Target, room: Room, tmp_path: Path
) -> None:
    """The user named it: files land in the link's target, on either side."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    (room.path / "rreal").mkdir()
    (room.path / "rlink").symlink_to("rreal")
    (room.path / "tree").mkdir()
    write(room.path / "tree" / "t", b"tree file")
    write(room.path / "f", b"f")
    write(room.path / "g", b"g")
    src = write(tmp_path / "src", b"uploaded")
    with target.connect() as conn:
        conn.get(f"{room.rel}/f", tmp_path / "link")
        conn.get([f"{room.rel}/g", f"{room.rel}/tree"], tmp_path / "link", recursive=True)
        conn.put(src, f"{room.rel}/rlink")
    assert (tmp_path / "link").is_symlink() and (room.path / "rlink").is_symlink()
    assert snapshot(tmp_path / "real") == {
        "f": ("file", b"f"), "g": ("file", b"g"), "tree": ("dir",),
        "tree/t": ("file", b"tree file")}
    assert snapshot(room.path / "rreal") == {"src": ("file", b"uploaded")}


# ---- the connection, progress ----------------------------------------------------------


def test_the_connection_runs_commands_after_copies(
    target: Target, room: Room, tmp_path: Path
) -> None:
    src = write(tmp_path / "src", b"x")
    with target.connect() as conn:
        conn.put(src, f"{room.rel}/ok")
        assert conn.run("echo after-success").stdout == b"after-success\n"
        with pytest.raises(CopyFailed):
            conn.put(tmp_path / "missing", room.rel)
        assert conn.run("echo after-missing").stdout == b"after-missing\n"
        with pytest.raises(CopyFailed):
            conn.put([src, src], f"{room.rel}/no-folder")
        assert conn.run("echo after-refused").stdout == b"after-refused\n"
        conn.get(f"{room.rel}/ok", tmp_path / "back")
        assert conn.run("echo after-get").stdout == b"after-get\n"
    assert (tmp_path / "back").read_bytes() == b"x"


def progress_ends(calls: list[tuple[str, int, int]]) -> dict[str, tuple[int, int]]:
    """Per file: the last (done, size); every call's size the same, done never back."""
    last: dict[str, tuple[int, int]] = {}
    for path, done, size in calls:
        before = last.get(path, (0, size))
        assert before[1] == size and before[0] <= done <= size, (path, done, size)
        last[path] = (done, size)
    return last


SIZES = {"empty": 0, "small": 10, "big": 3 * MiB + 5}


def test_put_progress_reaches_each_files_size(
    target: Target, room: Room, tmp_path: Path
) -> None:
    sources = [write(tmp_path / n, os.urandom(s)) for n, s in SIZES.items()]
    calls: list[tuple[str, int, int]] = []
    with target.connect() as conn:
        conn.put(sources, room.rel, progress=lambda *call: calls.append(call))
    assert progress_ends(calls) == {n: (s, s) for n, s in SIZES.items()}


def test_get_progress_reaches_each_files_size(
    target: Target, room: Room, tmp_path: Path
) -> None:
    sizes = {n: s for n, s in SIZES.items() if s}
    for n, s in sizes.items():
        write(room.path / n, os.urandom(s))
    calls: list[tuple[str, int, int]] = []
    with target.connect() as conn:
        conn.get([f"{room.rel}/{n}" for n in sizes], tmp_path,
                 progress=lambda *call: calls.append(call))
    assert progress_ends(calls) == {n: (s, s) for n, s in sizes.items()}


def test_get_progress_reports_an_empty_file(target: Target, room: Room, tmp_path: Path) -> None:
    write(room.path / "empty", b"")
    calls: list[tuple[str, int, int]] = []
    with target.connect() as conn:
        conn.get(f"{room.rel}/empty", tmp_path, progress=lambda *call: calls.append(call))
    assert (tmp_path / "empty").read_bytes() == b""
    assert calls == [("empty", 0, 0)]


# ---- the native server: refusals and audit ---------------------------------------------


def transfers(site: Site, match: Callable[[dict[str, Any]], bool],
              count: int) -> list[dict[str, Any]]:
    """The audit's transfer events that ``match``, once ``count`` are there."""
    def found() -> list[dict[str, Any]]:
        return [e for e in audit_events(site.audit) if e["event"] == "transfer" and match(e)]

    assert wait_until(lambda: len(found()) >= count, WAIT), found()
    return found()


@pytest.mark.parametrize(("kind", "said"), [("forced", b"forced\n"), ("restricted", b"hi\n")])
def test_keys_that_may_not_copy_files_are_refused(
    site: Site, native: Target, request: pytest.FixtureRequest, tmp_path: Path,
    kind: str, said: bytes,
) -> None:
    room = new_room(native, request)
    write(room.path / "there", b"remote")
    src = write(tmp_path / "src", b"local")
    with native.connect(identity=site.keys[kind]) as conn:
        with pytest.raises(CopyFailed, match="not permitted") as up:
            conn.put(src, f"{room.rel}/refused")
        with pytest.raises(CopyFailed, match="not permitted") as down:
            conn.get(f"{room.rel}/there", tmp_path / "back")
        assert conn.run("echo hi").stdout == said
    one_line(up), one_line(down)
    assert os.listdir(room.path) == ["there"] and sorted(os.listdir(tmp_path)) == ["src"]
    events = transfers(site, lambda e: room.rel in e["path"], 2)
    option = "command=" if kind == "forced" else "restrict"
    assert sorted((e["direction"], e["error"]) for e in events) == [
        (d, f"refused: file transfer not permitted for this key ({option})")
        for d in ("download", "upload")]


def test_each_file_copied_is_audited_with_its_digest(
    site: Site, native: Target, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    room = new_room(native, request)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    data = {"a": os.urandom(5000), "sub/b": b"", "sub/c": os.urandom(MiB + 1)}
    for name, content in data.items():
        write(tree / name, content)
    with native.connect() as conn:
        conn.put(tree, room.rel, recursive=True)
        conn.get(f"{room.rel}/tree", tmp_path / "back", recursive=True)
        conn.get(f"{room.rel}/tree/a", tmp_path / "one")
    events = transfers(site, lambda e: e["path"].startswith(f"{room.path}/"), 7)
    got = sorted((e["direction"], e["path"], e["bytes"], e["sha256"], e["error"])
                 for e in events)
    want = [(direction, f"{room.path}/tree/{name}", len(content),
             hashlib.sha256(content).hexdigest(), None)
            for direction in ("download", "upload") for name, content in data.items()]
    want.append(("download", f"{room.path}/tree/a", len(data["a"]),
                 hashlib.sha256(data["a"]).hexdigest(), None))
    assert got == sorted(want)
    assert all(e["event"] == "transfer" and e["session"] for e in events)


def test_the_log_gives_a_copys_totals_and_no_line_per_file(
    site: Site, native: Target, rshell_ssh: Target, request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """A tree is thousands of files: each is an audit event (above), and the
    log says each copy's totals once, on both wires; a file's own line is
    for failures only."""
    room = new_room(native, request)
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(5):
        write(tree / f"f{i}", b"x" * (10 + i))
    with native.connect() as conn:
        conn.put(tree, room.rel, recursive=True)
        conn.get(f"{room.rel}/tree", tmp_path / "back", recursive=True)
    with rshell_ssh.connect() as conn:
        conn.put(tree, f"{room.rel}/tree", recursive=True)  # into it: tree/tree
    srv = site.srv
    srv.wait_for_log(rf"upload '{re.escape(str(room.path))}': 5 file\(s\), 60 bytes via=rshell")
    srv.wait_for_log(rf"download '{re.escape(str(room.path / 'tree'))}': 5 file\(s\), "
                     r"60 bytes via=rshell")
    srv.wait_for_log(rf"upload '{re.escape(str(site.files))}': 5 file\(s\), 60 bytes via=ssh")
    assert sorted(os.listdir(room.path / "tree")) == ["f0", "f1", "f2", "f3", "f4", "tree"]
    assert not re.search(rf"{re.escape(str(room.path))}/\S*f\d' \d+ bytes", srv.log), srv.log


def test_an_sftp_refusal_on_the_ssh_listener_writes_nothing(
    site: Site, rshell_ssh: Target, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The same keys over --ssh-bind: no SFTP for them; the connection goes on."""
    room = new_room(rshell_ssh, request)
    src = write(tmp_path / "src", b"local")
    with rshell_ssh.connect(identity=site.keys["restricted"]) as conn:
        with pytest.raises(CopyFailed) as up:
            conn.put(src, f"{room.rel}/refused")
        assert conn.run("echo hi").stdout == b"hi\n"
    assert "SFTP" in one_line(up)
    assert os.listdir(room.path) == []
    reason = "file transfer not permitted for this key (restrict)"
    assert wait_until(lambda: any(e["event"] == "subsystem" and e["error"] == reason
                                  for e in audit_events(site.audit)), WAIT)
