"""The ``sftp`` subsystem of ``rshell-server --ssh-bind`` (rshell/ssh/sftp.py),
driven by the real OpenSSH ``sftp`` and ``scp`` (SFTP mode, and ``-O``
through exec), and by paramiko's SFTP client where OpenSSH's cannot say what
is asked (a rename onto an existing name, a write at an offset, a session
cut off with a file open, two SFTP channels on one connection).

One server for the module, run under umask 027 (so "masked by the umask" is
seen), with ``--home`` a folder of its own: relative paths land there.
Keys with ``command=`` and ``restrict`` are refused the subsystem.  The
stop tests start servers of their own.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest

from tests.conftest import ServerProcess, base_env
from tests.parity_support import WAIT, paramiko_client
from tests.support.procs import wait_until
from tests.test_faults import audit_events
from tests.test_ssh_audit import new_key
from tests.test_ssh_server import ssh_argv, start_ssh_server

SFTP, SCP = shutil.which("sftp"), shutil.which("scp")
pytestmark = pytest.mark.skipif(SFTP is None or SCP is None,
                                reason="OpenSSH client missing (.ci/run installs it)")

DEST = "tester@127.0.0.1"
#: The server runs under this umask: a file asked for 0666 is made 0640.
UMASK = ("/bin/sh", "-c", 'umask 027 && exec "$@"', "sh")


@dataclass
class Site:
    srv: ServerProcess
    files: Path  # the server's --home
    audit: Path
    keys: dict[str, Path]  # "forced" (command=) and "restricted" (restrict)

    def transfers(self, under: Path) -> list[dict[str, Any]]:
        """The audit's transfer events for paths under ``under``."""
        return [e for e in audit_events(self.audit)
                if e["event"] == "transfer" and e["path"].startswith(f"{under}/")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("sftp")
    home, files, audit = root / "rshell-home", root / "files", root / "audit.jsonl"
    home.mkdir()
    files.mkdir()
    srv = ServerProcess(home, ["--bind", "127.0.0.1:0", "--ssh-bind", "127.0.0.1:0",
                               "--home", str(files), "--audit-log", str(audit),
                               "--max-sessions", "2"], base_env(home), UMASK)
    try:
        srv.ssh_port = int(srv.wait_for_log(r"ssh listening on \S+:(\d+)").group(1))  # type: ignore[attr-defined]
        keys: dict[str, Path] = {}
        with (home / "server" / "authorized_keys").open("a") as f:
            for name, option in (("forced", 'command="echo forced"'), ("restricted", "restrict")):
                new_key(root / name, name)
                f.write(f"{option} {(root / f'{name}.pub').read_text()}")
                keys[name] = root / name
        yield Site(srv, files, audit, keys)
    finally:
        srv.stop()
        print(f"---- server log ----\n{srv.log}")


def client_options(srv: ServerProcess, key: Path | None = None) -> list[str]:
    """ssh_argv's options (the key, a private known_hosts, batch mode) in the
    form sftp and scp take them (``-P PORT``)."""
    argv = ssh_argv(srv, key=key)
    assert argv[1] == "-p" and argv[-1] == DEST, argv
    return ["-P", argv[2], *argv[3:-1]]


def sftp(site: Site, batch: str, cwd: Path,
         key: Path | None = None) -> subprocess.CompletedProcess[str]:
    """OpenSSH's sftp running ``batch`` (``-b -``: a failed command ends it,
    unless it starts with ``-``), local paths relative to ``cwd``."""
    return subprocess.run([str(SFTP), *client_options(site.srv, key), "-b", "-", DEST],
                          input=batch, capture_output=True, text=True, cwd=cwd, timeout=60)


def scp(site: Site, *args: str, cwd: Path,
        key: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCP), *client_options(site.srv, key), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=60,
                          stdin=subprocess.DEVNULL)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sftp_puts_gets_lists_renames_and_removes_in_the_session_home(
    site: Site, tmp_path: Path
) -> None:
    """Relative paths are the session's home (--home); files keep their
    bytes both ways, get the mode asked less the server's umask, and each
    file closed after a read or a write is one audit event."""
    local = {"empty": b"", "small": b"hello sftp\n", "big": os.urandom(1 << 20)}
    for name, data in local.items():
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(0o666)
    proc = sftp(site, "mkdir batch\n"
                      "put empty batch/empty\nput small batch/small\nput big batch/big\n"
                      "ls -1 batch\n"
                      "rename batch/small batch/renamed\n"
                      "get batch/big big.back\nget batch/empty empty.back\n"
                      "get batch/renamed small.back\n"
                      "rm batch/empty\n"
                      "ls -1 batch\n", tmp_path)
    assert proc.returncode == 0, proc.stderr

    remote = site.files / "batch"
    assert sorted(p.name for p in remote.iterdir()) == ["big", "renamed"]
    assert digest(remote / "big") == digest(tmp_path / "big")
    assert (remote / "renamed").read_bytes() == local["small"]
    assert (remote / "big").stat().st_mode & 0o777 == 0o640  # 0666 asked, umask 027
    for name in local:
        assert digest(tmp_path / f"{name}.back") == hashlib.sha256(local[name]).hexdigest()
    first, second = proc.stdout.split("ls -1 batch\n")[1:]
    assert {"batch/big", "batch/empty", "batch/small"} <= set(first.split()), proc.stdout
    assert "batch/empty" not in second and "batch/renamed" in second, proc.stdout

    events = {(e["direction"], e["path"]): e for e in site.transfers(remote)}
    assert len(events) == len(site.transfers(remote)) == 6, site.transfers(remote)
    for direction, name, local_name in [
        ("upload", "empty", "empty"), ("upload", "small", "small"), ("upload", "big", "big"),
        ("download", "big", "big"), ("download", "empty", "empty"),
        ("download", "renamed", "small"),
    ]:
        event = events[(direction, f"{remote}/{name}")]
        data = local[local_name]
        assert (event["bytes"], event["error"]) == (len(data), None), event
        assert event["sha256"] == hashlib.sha256(data).hexdigest(), event  # sequential from 0


def test_a_missing_file_is_an_error_and_the_session_goes_on(site: Site, tmp_path: Path) -> None:
    (tmp_path / "after").write_bytes(b"still here\n")
    proc = sftp(site, "-get missing-file here\nput after after-the-error\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f'File "{site.files}/missing-file" not found' in proc.stderr
    assert not (tmp_path / "here").exists()
    assert (site.files / "after-the-error").read_bytes() == b"still here\n"


def test_scp_copies_files_and_trees_both_ways_and_keeps_mode_and_times_with_p(
    site: Site, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    contents = {"a": b"a" * 1000, "sub/b": os.urandom(70_000), "sub/deeper/c": b""}
    for name, data in contents.items():
        (tree / name).write_bytes(data)
    keep = tmp_path / "keep"
    keep.write_bytes(b"mode and times\n")
    keep.chmod(0o751)  # the umask (027) would take 001 away: -p must not
    os.utime(keep, (981_173_106, 981_173_106))  # 2001-02-03

    assert scp(site, "-r", "tree", f"{DEST}:scp-tree", cwd=tmp_path).returncode == 0
    assert scp(site, "-p", "keep", f"{DEST}:scp-keep", cwd=tmp_path).returncode == 0
    assert scp(site, "-r", f"{DEST}:scp-tree", "tree.back", cwd=tmp_path).returncode == 0
    got = scp(site, "-p", f"{DEST}:{site.files}/scp-keep", "keep.back", cwd=tmp_path)
    assert got.returncode == 0, got.stderr

    for name, data in contents.items():
        assert (site.files / "scp-tree" / name).read_bytes() == data
        assert (tmp_path / "tree.back" / name).read_bytes() == data
    for copy in (site.files / "scp-keep", tmp_path / "keep.back"):
        st = copy.stat()
        assert (st.st_mode & 0o7777, int(st.st_mtime)) == (0o751, 981_173_106), copy
        assert copy.read_bytes() == b"mode and times\n"
    uploads = sorted(e["path"] for e in site.transfers(site.files / "scp-tree")
                     if e["direction"] == "upload")
    assert uploads == sorted(f"{site.files}/scp-tree/{name}" for name in contents)


def test_legacy_scp_runs_through_exec(site: Site, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    (tmp_path / "legacy").write_bytes(data)
    up = scp(site, "-O", "legacy", f"{DEST}:scp-legacy", cwd=tmp_path)
    down = scp(site, "-O", f"{DEST}:scp-legacy", "legacy.back", cwd=tmp_path)
    assert (up.returncode, down.returncode) == (0, 0), (up.stderr, down.stderr)
    assert (site.files / "scp-legacy").read_bytes() == data
    assert (tmp_path / "legacy.back").read_bytes() == data
    site.srv.wait_for_log(r"command 'scp -t scp-legacy' exit=0")
    site.srv.wait_for_log(r"command 'scp -f scp-legacy' exit=0")


@pytest.mark.parametrize("kind, option", [("forced", "command="), ("restricted", "restrict")])
def test_keys_that_may_not_copy_files_are_refused_the_subsystem(
    site: Site, tmp_path: Path, kind: str, option: str
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    key = site.keys[kind]
    proc = sftp(site, f"put f refused-{kind}\n", tmp_path, key=key)
    copied = scp(site, "f", f"{DEST}:refused-scp-{kind}", cwd=tmp_path, key=key)
    assert proc.returncode != 0 and copied.returncode != 0, (proc.stderr, copied.stderr)
    assert "subsystem request failed" in proc.stderr
    assert not list(site.files.glob(f"refused-*{kind}"))
    reason = f"file transfer not permitted for this key ({option})"
    site.srv.wait_for_log("sftp refused: " + re.escape(reason))
    refusals = [e for e in audit_events(site.audit)
                if e["event"] == "subsystem" and e["error"] == reason]
    assert len(refusals) == 2, refusals  # sftp's and scp's


def test_paramiko_client_rename_offsets_and_a_file_left_open(site: Site) -> None:
    """A plain rename never replaces (SFTP v3), posix-rename does; bytes
    written at an offset have no digest; a file the session left open is
    audited as cut off; relative paths are the home's."""
    remote = site.files / "pm"
    with paramiko_client(site.srv) as client:
        files = client.open_sftp()
        files.mkdir("pm")
        files.putfo(io.BytesIO(b"A"), "pm/a")
        files.putfo(io.BytesIO(b"B"), "pm/b")
        with pytest.raises(OSError):
            files.rename("pm/a", "pm/b")
        assert (remote / "b").read_bytes() == b"B"
        files.posix_rename("pm/a", "pm/b")
        assert (remote / "b").read_bytes() == b"A" and not (remote / "a").exists()
        renames = [(e["old"], e["new"]) for e in audit_events(site.audit)
                   if e["event"] == "rename" and e["new"].startswith(f"{remote}/")]
        assert renames == [(f"{remote}/a", f"{remote}/b")], renames  # the refused one: none
        with files.open("pm/sparse", "wb") as f:
            f.seek(10)
            f.write(b"x")
        left = files.open("pm/left-open", "wb")
        left.write(b"partial")
        left.flush()
    assert (remote / "sparse").read_bytes() == bytes(10) + b"x"

    def cut() -> list[dict[str, Any]]:
        return [e for e in site.transfers(remote) if e["path"].endswith("/left-open")]

    assert wait_until(cut, WAIT), site.transfers(remote)
    assert (cut()[0]["bytes"], cut()[0]["error"]) == (
        7, "session ended before the file was closed")
    sparse = [e for e in site.transfers(remote) if e["path"].endswith("/sparse")]
    assert [(e["bytes"], e["sha256"], e["error"]) for e in sparse] == [(1, None, None)]


def test_an_sftp_channel_holds_a_session_slot_until_its_close(site: Site) -> None:
    """--max-sessions 2: two SFTP channels fill the connection; one ended by
    the client's EOF gives its slot back before its close (and exits 0)."""
    with paramiko_client(site.srv) as client:
        transport = client.get_transport()
        assert transport is not None
        first = paramiko.SFTPClient.from_transport(transport)
        second = paramiko.SFTPClient.from_transport(transport)
        with pytest.raises(paramiko.ChannelException):
            transport.open_session(timeout=WAIT)
        channel = first.get_channel()
        channel.shutdown_write()
        assert wait_until(lambda: channel.closed, WAIT), "the server never closed it"
        assert channel.recv_exit_status() == 0
        chan = transport.open_session(timeout=WAIT)  # the freed slot, at once
        chan.exec_command("echo ok")
        assert chan.makefile("rb").read() == b"ok\n"
        assert second.listdir(".") is not None


def test_a_stop_closes_an_idle_sftp_session_at_once_and_waits_for_an_open_file(
    start_server: Callable[..., ServerProcess],
) -> None:
    """SIGTERM with a 60 s grace: the idle channel is closed at once; the
    channel with a file open goes on until the file closes, then the server
    exits, long before the grace."""
    srv = start_ssh_server(start_server, "--shutdown-grace", "60")
    home = Path(srv.home)
    with paramiko_client(srv) as client:
        transport = client.get_transport()
        assert transport is not None
        busy = paramiko.SFTPClient.from_transport(transport)  # first: told first
        idle = paramiko.SFTPClient.from_transport(transport)
        f = busy.open(f"{home}/during-stop", "wb")
        f.write(b"before ")
        f.flush()
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_for_log(r"sftp session closed: server shutting down")
        assert wait_until(lambda: idle.get_channel().closed, WAIT)
        f.write(b"after")
        f.close()  # answered: the session was still there
        assert srv.proc.wait(WAIT) == 0
    assert (home / "during-stop").read_bytes() == b"before after"
    assert "stopped in" in srv.log
