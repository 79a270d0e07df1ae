"""``rshell cp`` end to end (SPEC §10, issue 14): the real ``rshell`` entry
point as a subprocess against a real ``rshell-server`` (native protocol, and
its ``--ssh-bind`` for ``ssh://``) and a real OpenSSH sshd (its sftp
subsystem), all on loopback.

What users and scripts rely on: the bytes, trees (links kept as links,
unicode and spaces in names), ``-p``'s modes and times, every operand form
(``HOST:PATH`` with ``-P``, ``rshell://`` relative and ``//`` absolute,
``[::1]:PATH``, ``ssh://``, ``./a:b``), the exit statuses (0; 1 with one
``rshell cp: PATH: REASON`` line per failed file; 2 for usage; 255 for the
connection), and a progress bar on a terminal only, never with ``-q``.

One server for the module, its ``--home`` a folder of its own; each test
copies under a folder named after it.  Every wait is bounded.
"""

from __future__ import annotations

import getpass
import os
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

import rshell
from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env
from tests.support.cli import terminal
from tests.support.sshd import SftpSshd
from tests.support.wire import free_port
from tests.test_copy_id import keygen
from tests.test_ssh_client import SSHD

HOST = "127.0.0.1"
#: The longest one ``rshell cp`` may take here (the copies are small).
WAIT = 30.0


# ---- the servers ----------------------------------------------------------------


@dataclass
class Site:
    srv: ServerProcess
    home: Path  # RSHELL_HOME: the server's and the client's (key pair, pins)
    files: Path  # the server's --home: relative remote paths land here
    ssh_port: int  # its --ssh-bind
    keys: dict[str, Path]  # "restrict" and "command=": keys that may not transfer

    @property
    def port(self) -> str:
        return str(self.srv.port)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("cp")
    home, files = root / "rshell-home", root / "files"
    home.mkdir()
    files.mkdir()
    srv = ServerProcess(home, ["--bind", f"{HOST}:0", "--ssh-bind", f"{HOST}:0",
                               "--home", str(files)], base_env(home))
    try:
        ssh_port = int(srv.wait_for_log(r"ssh listening on \S+:(\d+)").group(1))
        keys: dict[str, Path] = {}
        with (home / "server" / "authorized_keys").open("a") as f:
            for option in ("restrict", 'command="echo forced"'):
                name = option.partition("=")[0].strip('"')
                keys[name] = keygen(root / f"key-{name}")
                f.write(f"{option} {(root / f'key-{name}.pub').read_text()}")
        yield Site(srv, home, files, ssh_port, keys)
    finally:
        srv.stop()
        print(f"---- server log ----\n{srv.log}")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpSshd]:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server missing (.ci/run installs it)")
    server = SftpSshd(tmp_path_factory.mktemp("sshd") / "sshd")
    yield server
    server.stop()


@dataclass
class SshPeer:
    """An ``ssh://`` authority and what ``rshell cp`` needs to reach it."""

    authority: str  # ssh://USER@127.0.0.1:PORT
    args: list[str]  # -i KEY
    env: dict[str, str]  # HOME: whose ~/.ssh/known_hosts pins the host


def pinned(authority: str, key: Path, client_home: Path) -> SshPeer:
    """``authority`` with its host key pinned in ``client_home``'s OpenSSH
    known_hosts, as after a first contact; ``-i key`` to log in."""
    rshell.connect(authority, identity=key, known_hosts=client_home / ".ssh" / "known_hosts",
                   accept_new=True).close()
    return SshPeer(authority, ["-i", str(key)], {"HOME": str(client_home)})


@pytest.fixture(scope="module")
def rshell_ssh(site: Site, tmp_path_factory: pytest.TempPathFactory) -> SshPeer:
    """rshell's own SSH listener (--ssh-bind), any user name."""
    return pinned(f"ssh://tester@{HOST}:{site.ssh_port}", site.home / "id_ed25519",
                  tmp_path_factory.mktemp("client-home"))


@pytest.fixture(scope="module", params=["sshd", "rshell-ssh"])
def ssh_peer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SshPeer:
    """sshd's sftp subsystem, or rshell's own."""
    if request.param == "rshell-ssh":
        found: SshPeer = request.getfixturevalue("rshell_ssh")
        return found
    peer: SftpSshd = request.getfixturevalue("sshd")
    return pinned(f"ssh://{getpass.getuser()}@{HOST}:{peer.port}", peer.key,
                  tmp_path_factory.mktemp("client-home"))


# ---- helpers ----------------------------------------------------------------------


@dataclass
class Box:
    """This test's folders: ``local`` (the client's cwd) and ``remote`` (under
    the server's --home), which the server reads as ``rel``."""

    local: Path
    remote: Path
    rel: str


@pytest.fixture
def box(site: Site, tmp_path: Path) -> Box:
    local = tmp_path / "local"
    local.mkdir()
    remote = site.files / tmp_path.name
    remote.mkdir()
    return Box(local, remote, tmp_path.name)


def rcp(home: Path, *args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = WAIT) -> subprocess.CompletedProcess[bytes]:
    """The real ``rshell cp ARGS`` run from ``cwd``, captured (no terminal)."""
    return subprocess.run([RSHELL, "cp", *CLIENT_MODE, *args], cwd=cwd, capture_output=True,
                          env=base_env(home, **(env or {})), stdin=subprocess.DEVNULL,
                          timeout=timeout)


def one_line(stderr: bytes) -> str:
    """The one line a failure shows (``rshell:`` or ``rshell cp:``), no traceback."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("rshell"), text
    return lines[0]


def ok(proc: subprocess.CompletedProcess[bytes]) -> None:
    """Success as a script sees it: status 0, nothing on stdout or stderr."""
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b""), proc.stderr


Snapshot = dict[str, tuple[str, bytes | str]]


def make_tree(root: Path) -> None:
    """Nested directories, a relative link, an empty file and folder, and
    names with spaces and non-ASCII letters."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "f.bin").write_bytes(os.urandom(70_000))
    (root / "sub" / "top.txt").write_text("top\n")
    (root / "ünï cødé dir").mkdir()
    (root / "ünï cødé dir" / "a file ✓.txt").write_text("spaces and unicode\n")
    (root / "empty dir").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "link").symlink_to("sub/deeper/f.bin")


def snapshot(root: Path) -> Snapshot:
    """Every entry under ``root``: a file's bytes, a link's target, a dir."""
    seen: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir", "")
            else:
                seen[rel] = ("file", path.read_bytes())
    return seen


# ---- copies -----------------------------------------------------------------------


def test_one_file_up_and_down(site: Site, box: Box) -> None:
    """HOST:PATH with -P, both ways; into an existing directory it keeps its name."""
    data = os.urandom(300_000)
    (box.local / "one.bin").write_bytes(data)
    ok(rcp(site.home, "-P", site.port, "one.bin", f"{HOST}:{box.rel}/up.bin", cwd=box.local))
    assert (box.remote / "up.bin").read_bytes() == data

    ok(rcp(site.home, "-P", site.port, f"{HOST}:{box.rel}/up.bin", "down.bin", cwd=box.local))
    assert (box.local / "down.bin").read_bytes() == data
    (box.local / "into").mkdir()
    ok(rcp(site.home, "-P", site.port, f"{HOST}:{box.rel}/up.bin", "into", cwd=box.local))
    assert (box.local / "into" / "up.bin").read_bytes() == data


def test_several_files_into_a_directory(site: Site, box: Box) -> None:
    names = {"a.txt": b"alpha\n", "b c.txt": b"beta\n", "ç.txt": b"gamma\n"}
    for name, data in names.items():
        (box.local / name).write_bytes(data)
    ok(rcp(site.home, "-P", site.port, *names, f"{HOST}:{box.rel}", cwd=box.local))
    assert {p.name: p.read_bytes() for p in box.remote.iterdir()} == names

    (box.local / "back").mkdir()
    ok(rcp(site.home, "-P", site.port, *(f"{HOST}:{box.rel}/{n}" for n in names), "back",
           cwd=box.local))
    assert {p.name: p.read_bytes() for p in (box.local / "back").iterdir()} == names


def test_a_tree_with_r_both_ways(site: Site, box: Box) -> None:
    """-r: the same tree arrives, its link a link (relative, as it was)."""
    make_tree(box.local / "tree")
    ok(rcp(site.home, "-r", "-P", site.port, "tree", f"{HOST}:{box.rel}", cwd=box.local))
    assert snapshot(box.remote / "tree") == snapshot(box.local / "tree")
    assert os.readlink(box.remote / "tree" / "link") == "sub/deeper/f.bin"

    ok(rcp(site.home, "-r", "-P", site.port, f"{HOST}:{box.rel}/tree", "back", cwd=box.local))
    assert snapshot(box.local / "back") == snapshot(box.local / "tree")
    assert (box.local / "back" / "link").is_symlink()


def test_a_directory_without_r_is_one_line(site: Site, box: Box) -> None:
    (box.local / "dir").mkdir()
    (box.local / "dir" / "f").write_text("f\n")
    proc = rcp(site.home, "-P", site.port, "dir", f"{HOST}:{box.rel}", cwd=box.local)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == "rshell cp: dir: is a directory (use -r)"
    assert list(box.remote.iterdir()) == []


def _stamp(path: Path, mode: int, atime: int, mtime: int) -> None:
    os.chmod(path, mode)
    os.utime(path, ns=(atime * 10**9, mtime * 10**9), follow_symlinks=False)


def _attrs(root: Path) -> dict[str, tuple[int, int | None, int]]:
    """(mode bits, atime, mtime) in whole seconds for each entry but links; a
    directory's atime is None (listing it, as the copy must, moves it)."""
    found: dict[str, tuple[int, int | None, int]] = {}
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            st = path.lstat()
            atime = None if stat.S_ISDIR(st.st_mode) else int(st.st_atime)
            found[str(path.relative_to(root))] = (
                stat.S_IMODE(st.st_mode), atime, int(st.st_mtime))
    return found


def test_p_keeps_modes_and_times(site: Site, box: Box) -> None:
    """-p: files' and directories' permission bits, atime and mtime, both
    ways; without it a new file's times are the copy's."""
    tree = box.local / "kept"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "run.sh").write_text("#!/bin/sh\n")
    (tree / "secret").write_text("key\n")
    _stamp(tree / "d" / "run.sh", 0o751, 1_000_000_000, 1_100_000_000)
    _stamp(tree / "secret", 0o600, 1_200_000_000, 1_300_000_000)
    _stamp(tree / "d", 0o750, 1_400_000_000, 1_500_000_000)
    _stamp(tree, 0o705, 1_600_000_000, 1_700_000_000)
    wanted = _attrs(tree)
    assert wanted["d/run.sh"] == (0o751, 1_000_000_000, 1_100_000_000)

    ok(rcp(site.home, "-r", "-p", "-P", site.port, "kept", f"{HOST}:{box.rel}", cwd=box.local))
    assert _attrs(box.remote / "kept") == wanted
    ok(rcp(site.home, "-r", "-p", "-P", site.port, f"{HOST}:{box.rel}/kept", "back",
           cwd=box.local))
    assert _attrs(box.local / "back") == wanted

    before = time.time() - 60
    ok(rcp(site.home, "-P", site.port, "kept/secret", f"{HOST}:{box.rel}/plain", cwd=box.local))
    assert (box.remote / "plain").stat().st_mtime > before


def test_rshell_uris_relative_and_absolute(site: Site, box: Box, tmp_path: Path) -> None:
    """rshell://HOST:PORT/rel is under the home; rshell://HOST:PORT//abs is /abs."""
    (box.local / "u.txt").write_bytes(b"by uri\n")
    authority = f"rshell://{HOST}:{site.port}"
    ok(rcp(site.home, "u.txt", f"{authority}/{box.rel}/rel.txt", cwd=box.local))
    assert (box.remote / "rel.txt").read_bytes() == b"by uri\n"

    absolute = tmp_path / "absolute"
    absolute.mkdir()
    ok(rcp(site.home, "u.txt", f"{authority}/{absolute}/abs.txt", cwd=box.local))
    assert (absolute / "abs.txt").read_bytes() == b"by uri\n"
    assert not (site.files / str(absolute).lstrip("/")).exists()

    (box.local / "down").mkdir()
    ok(rcp(site.home, f"{authority}/{absolute}/abs.txt", f"{authority}/{box.rel}/rel.txt",
           "down", cwd=box.local))
    assert sorted(p.name for p in (box.local / "down").iterdir()) == ["abs.txt", "rel.txt"]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="::1 is not configured here")
def test_ipv6_operand(start_server: Callable[..., ServerProcess], home: Path,
                      tmp_path: Path) -> None:
    """[::1]:PATH with -P, against a server bound to [::1]:0."""
    files = tmp_path / "files6"
    files.mkdir()
    srv = start_server("--home", str(files), bind="[::1]:0")
    assert srv.address.startswith("[::1]:")
    local = tmp_path / "local"
    local.mkdir()
    (local / "six.txt").write_bytes(b"over v6\n")
    ok(rcp(home, "-P", str(srv.port), "six.txt", "[::1]:six.txt", cwd=local))
    assert (files / "six.txt").read_bytes() == b"over v6\n"
    ok(rcp(home, "-P", str(srv.port), "[::1]:six.txt", "back.txt", cwd=local))
    assert (local / "back.txt").read_bytes() == b"over v6\n"


# ---- exit statuses and their lines ----------------------------------------------------


def test_a_missing_source_is_one_line_and_the_rest_is_copied(site: Site, box: Box) -> None:
    (box.local / "a.txt").write_bytes(b"a\n")
    (box.local / "b.txt").write_bytes(b"b\n")
    proc = rcp(site.home, "-P", site.port, "a.txt", "missing.txt", "b.txt",
               f"{HOST}:{box.rel}", cwd=box.local)
    assert proc.returncode == 1
    assert one_line(proc.stderr).startswith("rshell cp: missing.txt: No such file")
    assert sorted(p.name for p in box.remote.iterdir()) == ["a.txt", "b.txt"]

    (box.local / "down").mkdir()
    proc = rcp(site.home, "-P", site.port, f"{HOST}:{box.rel}/a.txt", f"{HOST}:{box.rel}/gone",
               f"{HOST}:{box.rel}/b.txt", "down", cwd=box.local)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert line.startswith(f"rshell cp: {box.rel}/gone: No such file"), line
    assert str(site.files) not in line  # named as the user wrote it
    assert sorted(p.name for p in (box.local / "down").iterdir()) == ["a.txt", "b.txt"]


def test_several_sources_to_a_non_directory(site: Site, box: Box) -> None:
    """Refused as a whole, as scp refuses it: status 1, one line, nothing written."""
    (box.local / "a.txt").write_bytes(b"a\n")
    (box.local / "b.txt").write_bytes(b"b\n")
    (box.remote / "file").write_bytes(b"old\n")
    for dest in ("file", "nothing"):
        proc = rcp(site.home, "-P", site.port, "a.txt", "b.txt", f"{HOST}:{box.rel}/{dest}",
                   cwd=box.local)
        assert proc.returncode == 1
        assert one_line(proc.stderr) == f"rshell: {box.rel}/{dest}: not a directory"
    assert sorted(p.name for p in box.remote.iterdir()) == ["file"]
    assert (box.remote / "file").read_bytes() == b"old\n"

    proc = rcp(site.home, "-P", site.port, f"{HOST}:{box.rel}/file", f"{HOST}:{box.rel}/file",
               "a.txt", cwd=box.local)
    assert proc.returncode == 1
    assert one_line(proc.stderr) == "rshell: a.txt: not a directory"
    assert (box.local / "a.txt").read_bytes() == b"a\n"


@pytest.mark.parametrize("args, says", [
    (["onlyone"], "needs a source and a destination"),
    ([f"{HOST}:a", f"{HOST}:b"], "remote-to-remote"),
    (["a.txt", "b.txt"], "no remote operand"),
])
def test_usage_errors_are_two_and_one_line(site: Site, box: Box, args: list[str],
                                           says: str) -> None:
    (box.local / "a.txt").write_bytes(b"a\n")
    proc = rcp(site.home, "-P", site.port, *args, cwd=box.local)
    assert proc.returncode == 2
    assert says in one_line(proc.stderr)
    assert list(box.remote.iterdir()) == []


def test_a_server_not_listening_is_255(site: Site, box: Box) -> None:
    (box.local / "a.txt").write_bytes(b"a\n")
    port = free_port()
    proc = rcp(site.home, "-P", str(port), "a.txt", f"{HOST}:x", cwd=box.local)
    assert proc.returncode == 255
    assert f"{HOST}:{port}" in one_line(proc.stderr)
    proc = rcp(site.home, f"rshell://{HOST}:{port}/x", "back", cwd=box.local)
    assert proc.returncode == 255
    assert f"{HOST}:{port}" in one_line(proc.stderr)
    assert not (box.local / "back").exists()


def test_a_contradicting_port_names_no_wrong_flag(site: Site, box: Box) -> None:
    """rshell cp's -p means preserve: the message names the port, not rshell's -p."""
    (box.local / "a.txt").write_bytes(b"a\n")
    proc = rcp(site.home, "-P", "1", "a.txt", f"rshell://{HOST}:{site.port}/x", cwd=box.local)
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert "port 1 contradicts" in line and "-p" not in line, line


def test_a_restricted_key_cannot_copy(site: Site, box: Box) -> None:
    """restrict and command= keys: status 1, one "not permitted" line, nothing written."""
    (box.local / "a.txt").write_bytes(b"a\n")
    (box.remote / "there.txt").write_bytes(b"there\n")
    for option, key in site.keys.items():
        up = rcp(site.home, "-i", str(key), "-P", site.port, "a.txt", f"{HOST}:{box.rel}/up",
                 cwd=box.local)
        assert up.returncode == 1
        line = one_line(up.stderr)
        assert "not permitted" in line and option in line, line
        down = rcp(site.home, "-i", str(key), "-P", site.port, f"{HOST}:{box.rel}/there.txt",
                   "down", cwd=box.local)
        assert down.returncode == 1
        assert "not permitted" in one_line(down.stderr)
    assert sorted(p.name for p in box.remote.iterdir()) == ["there.txt"]
    assert sorted(p.name for p in box.local.iterdir()) == ["a.txt"]


# ---- the progress bar -------------------------------------------------------------------


@pytest.mark.parametrize("quiet", [False, True])
def test_no_bar_when_stderr_is_not_a_terminal(site: Site, box: Box, quiet: bool) -> None:
    (box.local / "big.bin").write_bytes(os.urandom(2 << 20))
    flags = ["-q"] if quiet else []
    ok(rcp(site.home, *flags, "-P", site.port, "big.bin", f"{HOST}:{box.rel}/", cwd=box.local))
    ok(rcp(site.home, *flags, "-P", site.port, f"{HOST}:{box.rel}/big.bin", "back.bin",
           cwd=box.local))
    assert (box.local / "back.bin").read_bytes() == (box.local / "big.bin").read_bytes()


def _on_terminal(site: Site, *args: str) -> tuple[str, int]:
    """``rshell cp ARGS`` on a pseudo-terminal (100 columns): what it drew, its status."""
    child = terminal(site.home, "cp", *args, timeout=WAIT, width=100)
    try:
        child.expect(pexpect.EOF)
        drawn = child.before
        child.close()
        return drawn, child.exitstatus
    finally:
        child.close(force=True)


def test_the_bar_on_a_terminal_names_the_file_and_reaches_100(site: Site, box: Box) -> None:
    data = os.urandom(3 << 20)
    (box.local / "barred.bin").write_bytes(data)
    drawn, status = _on_terminal(site, "-P", site.port, str(box.local / "barred.bin"),
                                 f"{HOST}:{box.rel}/")
    assert status == 0, drawn
    assert "barred.bin" in drawn and "100%" in drawn, drawn
    assert "3.00M/3.00M" in drawn, drawn
    assert (box.remote / "barred.bin").read_bytes() == data

    drawn, status = _on_terminal(site, "-P", site.port, f"{HOST}:{box.rel}/barred.bin",
                                 str(box.local / "fetched.bin"))
    assert status == 0, drawn
    assert "fetched.bin" in drawn and "100%" in drawn, drawn
    assert (box.local / "fetched.bin").read_bytes() == data


def test_a_failure_on_a_terminal_is_its_own_line(site: Site, box: Box) -> None:
    """Each file's bar is left whole; the failed file's line starts a line."""
    (box.local / "a.txt").write_bytes(b"a\n" * 1000)
    drawn, status = _on_terminal(site, "-P", site.port, str(box.local / "a.txt"),
                                 str(box.local / "missing"), f"{HOST}:{box.rel}/")
    assert status == 1, drawn
    lines = [ln for ln in drawn.split("\n") if ln.strip()]  # a bar redraws itself after \r
    assert lines[-1].startswith(f"rshell cp: {box.local / 'missing'}: No such file"), drawn
    assert "a.txt" in lines[0] and "100%" in lines[0], drawn
    assert "Traceback" not in drawn
    assert (box.remote / "a.txt").stat().st_size == 2000


def test_the_bar_goes_to_stderr_not_stdout(site: Site, box: Box) -> None:
    """stdout redirected to a file, stderr the terminal: the bar on the terminal only."""
    (box.local / "f.bin").write_bytes(os.urandom(1 << 20))
    out = box.local / "stdout"
    child = pexpect.spawn("/bin/sh", ["-c", 'exec "$@" > "$OUT"', "sh", RSHELL, "cp",
                                      *CLIENT_MODE, "-P", site.port, str(box.local / "f.bin"),
                                      f"{HOST}:{box.rel}/"],
                          env=base_env(site.home, OUT=str(out)), timeout=WAIT,
                          encoding="utf-8", dimensions=(24, 100))
    try:
        child.expect(pexpect.EOF)
        drawn = child.before
        child.close()
        assert child.exitstatus == 0, drawn
    finally:
        child.close(force=True)
    assert "100%" in drawn, drawn
    assert out.read_bytes() == b""


def test_q_on_a_terminal_draws_nothing(site: Site, box: Box) -> None:
    (box.local / "quiet.bin").write_bytes(os.urandom(1 << 20))
    drawn, status = _on_terminal(site, "-q", "-P", site.port, str(box.local / "quiet.bin"),
                                 f"{HOST}:{box.rel}/")
    assert status == 0, drawn
    assert drawn == "", drawn
    assert (box.remote / "quiet.bin").stat().st_size == 1 << 20


# ---- ssh:// (SFTP) ------------------------------------------------------------------------


def test_ssh_a_file_and_a_tree_both_ways(ssh_peer: SshPeer, site: Site, tmp_path: Path) -> None:
    """ssh://USER@HOST:PORT//abs against sshd and rshell's --ssh-bind: same bytes, same tree."""
    local, far = tmp_path / "local", tmp_path / "far"
    local.mkdir()
    far.mkdir()
    data = os.urandom(200_000)
    (local / "one.bin").write_bytes(data)
    make_tree(local / "tree")
    at = f"{ssh_peer.authority}/{far}"

    def run(*args: str) -> None:
        proc = rcp(site.home, *ssh_peer.args, *args, cwd=local, env=ssh_peer.env)
        assert proc.returncode == 0, proc.stderr
        assert b"Traceback" not in proc.stderr

    run("one.bin", f"{at}/one.bin")
    assert (far / "one.bin").read_bytes() == data
    run(f"{at}/one.bin", "back.bin")
    assert (local / "back.bin").read_bytes() == data

    run("-r", "tree", f"{at}/")
    assert snapshot(far / "tree") == snapshot(local / "tree")
    run("-r", f"{at}/tree", "tree-back")
    assert snapshot(local / "tree-back") == snapshot(local / "tree")


def test_ssh_a_missing_source_is_one_line(ssh_peer: SshPeer, site: Site,
                                         tmp_path: Path) -> None:
    local, far = tmp_path / "local", tmp_path / "far"
    local.mkdir()
    far.mkdir()
    (local / "a.txt").write_bytes(b"a\n")
    at = f"{ssh_peer.authority}/{far}"
    proc = rcp(site.home, *ssh_peer.args, "a.txt", "nope", f"{at}/", cwd=local,
               env=ssh_peer.env)
    assert proc.returncode == 1
    assert one_line(proc.stderr).startswith("rshell cp: nope: No such file")
    assert [p.name for p in far.iterdir()] == ["a.txt"]
    (local / "down").mkdir()
    proc = rcp(site.home, *ssh_peer.args, f"{at}/a.txt", f"{at}/nope", "down", cwd=local,
               env=ssh_peer.env)
    assert proc.returncode == 1
    assert one_line(proc.stderr).startswith(f"rshell cp: {far}/nope: No such file")
    assert [p.name for p in (local / "down").iterdir()] == ["a.txt"]


def _ssh_refused(site: Site, tmp_path: Path) -> str:
    """``rshell cp`` to an ssh:// port nobody listens on: its one line (status 255)."""
    (tmp_path / "a.txt").write_bytes(b"a\n")
    port = free_port()
    proc = rcp(site.home, "-i", str(site.home / "id_ed25519"), "a.txt",
               f"ssh://tester@{HOST}:{port}/x", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert proc.returncode == 255
    line = one_line(proc.stderr)
    assert str(port) in line, line
    return line


def test_ssh_a_server_not_listening_is_255(site: Site, tmp_path: Path) -> None:
    _ssh_refused(site, tmp_path)


def test_ssh_a_server_not_listening_says_why_as_natively(site: Site, tmp_path: Path) -> None:
    line = _ssh_refused(site, tmp_path)
    assert "Errno None" not in line and "Connection refused" in line, line


def test_ssh_a_restricted_key_cannot_copy(site: Site, box: Box, rshell_ssh: SshPeer) -> None:
    """rshell's --ssh-bind refuses the sftp subsystem to a restrict key: status 1,
    one line, nothing written (SSH carries no reason for the refusal)."""
    (box.local / "a.txt").write_bytes(b"a\n")
    (box.remote / "there.txt").write_bytes(b"there\n")
    at = f"{rshell_ssh.authority}/{box.rel}"
    ssh, env = ["-i", str(site.keys["restrict"])], rshell_ssh.env
    up = rcp(site.home, *ssh, "a.txt", f"{at}/up", cwd=box.local, env=env)
    assert up.returncode == 1
    assert "SFTP" in one_line(up.stderr)
    down = rcp(site.home, *ssh, f"{at}/there.txt", "down", cwd=box.local, env=env)
    assert down.returncode == 1
    assert "SFTP" in one_line(down.stderr)
    assert sorted(p.name for p in box.remote.iterdir()) == ["there.txt"]
    assert sorted(p.name for p in box.local.iterdir()) == ["a.txt"]


def test_ssh_to_rshell_relative_paths_are_the_home(site: Site, box: Box,
                                                   rshell_ssh: SshPeer) -> None:
    """ssh://HOST:PORT/rel against --ssh-bind is under the server's --home, both ways."""
    (box.local / "r.txt").write_bytes(b"relative\n")
    uri = f"{rshell_ssh.authority}/{box.rel}/r.txt"
    ok(rcp(site.home, *rshell_ssh.args, "r.txt", uri, cwd=box.local, env=rshell_ssh.env))
    assert (box.remote / "r.txt").read_bytes() == b"relative\n"
    ok(rcp(site.home, *rshell_ssh.args, uri, "back.txt", cwd=box.local, env=rshell_ssh.env))
    assert (box.local / "back.txt").read_bytes() == b"relative\n"


def _mode_without_p(site: Site, peer: SshPeer | None, local: Path, far: Path) -> dict[str, int]:
    """Upload a 0751 and a 0600 file without -p; the modes they arrive with."""
    (local / "run.sh").write_text("#!/bin/sh\n")
    (local / "private").write_text("secret\n")
    os.chmod(local / "run.sh", 0o751)
    os.chmod(local / "private", 0o600)
    if peer is None:
        target = f"rshell://{HOST}:{site.port}/{far}/"
        args: list[str] = []
        env: dict[str, str] = {}
    else:
        target, args, env = f"{peer.authority}/{far}/", peer.args, peer.env
    proc = rcp(site.home, *args, "run.sh", "private", target, cwd=local, env=env)
    assert proc.returncode == 0, proc.stderr
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in far.iterdir()}


def test_without_p_a_new_file_keeps_its_bits_natively(site: Site, tmp_path: Path) -> None:
    """As scp: the sender's bits less the umask (an executable stays one, a
    private file stays private)."""
    (tmp_path / "local").mkdir()
    (tmp_path / "far").mkdir()
    modes = _mode_without_p(site, None, tmp_path / "local", tmp_path / "far")
    assert modes["run.sh"] & 0o700 == 0o700
    assert modes["private"] == 0o600


def test_without_p_a_new_file_keeps_its_bits_over_ssh(ssh_peer: SshPeer, site: Site,
                                                      tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "far").mkdir()
    modes = _mode_without_p(site, ssh_peer, tmp_path / "local", tmp_path / "far")
    assert modes["run.sh"] & 0o700 == 0o700
    assert modes["private"] == 0o600


# ---- a ':' in a local name ------------------------------------------------------------------


def test_a_colon_in_the_first_component_needs_dot_slash(site: Site, box: Box) -> None:
    """./a:b is the local file; a:b is host a (a connection error, one line, or,
    beside a remote destination, a remote-to-remote usage error)."""
    (box.local / "a:b").write_bytes(b"colon\n")
    ok(rcp(site.home, "-P", site.port, "./a:b", f"{HOST}:{box.rel}/", cwd=box.local))
    assert (box.remote / "a:b").read_bytes() == b"colon\n"
    ok(rcp(site.home, "-P", site.port, f"{HOST}:{box.rel}/a:b", "./c:d", cwd=box.local))
    assert (box.local / "c:d").read_bytes() == b"colon\n"

    closed = str(free_port())
    proc = rcp(site.home, "-P", closed, "--connect-timeout", "5", "a:b", "out",
               cwd=box.local)
    assert proc.returncode == 255
    line = one_line(proc.stderr)
    assert " a:" in line, line  # "cannot resolve a: ..." (or "connecting to a:PORT: ...")
    assert not (box.local / "out").exists()

    proc = rcp(site.home, "-P", site.port, "a:b", f"{HOST}:{box.rel}/x", cwd=box.local)
    assert proc.returncode == 2
    assert "remote-to-remote" in one_line(proc.stderr)
    assert not (box.remote / "x").exists()
