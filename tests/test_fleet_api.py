"""``rshell.Group`` (SPEC §11, issue 15) against real servers on loopback:
one ``rshell-server`` with 20 listeners (20 "hosts"), three more each with a
``--home`` of its own (hosts that differ), and a port nobody listens on.

What callers rely on: a mapping host -> Result (or Copied, or the
RshellError that stopped that host) in the order the hosts were named, with
``.ok``, ``.succeeded``, ``.failed``, ``.unreachable``; callbacks that get the
host and every byte; at most ``parallel`` hosts at work at once (measured on
the servers' side and in this process's sockets, not believed); connections
kept between calls until ``close``; ``stdin`` for every host; put and get
with ``NAME.HOST`` files; a signal to every host; targets from ranges,
groups, aliases and ``-H`` files.  Then ``fan_out``, ``HostResults`` and
``file_name`` on their own.

Every wait is bounded; nothing sleeps in place of a condition.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import rshell
from rshell.client.config import Config, HostEntry
from rshell.errors import ConnectionFailed, RshellError, UsageError
from rshell.fleet.group import Group, HostResults, fan_out, file_name, remote_name
from rshell.result import Copied, Result
from tests.conftest import ServerProcess, base_env
from tests.support.procs import wait_until
from tests.support.wire import free_port

#: The 20-listener server's "hosts".
HOSTS = 20
#: The longest any one wait here may take.
WAIT = 15.0

_LISTEN = re.compile(r"INFO listening on (\S+)")
_SSH_LISTEN = re.compile(r"INFO ssh listening on \S+:(\d+)")


# ---- the rig -----------------------------------------------------------------------------


@dataclass
class Rig:
    home: Path  # RSHELL_HOME: the servers' keys and the client's, and the pins
    big: ServerProcess
    hosts: list[str]  # big's 20 addresses, 127.0.0.1:PORT
    big_files: Path  # big's --home
    audit: Path  # big's --audit-log
    smalls: list[ServerProcess]
    small_hosts: list[str]
    small_files: list[Path]  # each small server's --home
    ssh_port: int  # smalls[0]'s --ssh-bind

    @property
    def ports(self) -> set[int]:
        return {int(h.rsplit(":", 1)[1]) for h in self.hosts}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("fleet")
    home, big_files, audit = root / "rshell-home", root / "big", root / "audit.jsonl"
    home.mkdir()
    big_files.mkdir()
    binds = [arg for _ in range(HOSTS) for arg in ("--bind", "127.0.0.1:0")]
    started: list[ServerProcess] = []
    try:
        big = ServerProcess(home, [*binds, "--home", str(big_files), "--audit-log", str(audit)],
                            base_env(home))
        started.append(big)
        assert wait_until(lambda: len(_LISTEN.findall(big.log)) == HOSTS, WAIT), big.log
        hosts = _LISTEN.findall(big.log)
        for address in hosts[1:]:
            big.pin(home, address, big.fingerprint)
        smalls, small_files = [], []
        for n in range(3):
            files = root / f"small{n}"
            files.mkdir()
            extra = ["--ssh-bind", "127.0.0.1:0"] if n == 0 else []
            srv = ServerProcess(home, ["--bind", "127.0.0.1:0", "--home", str(files), *extra],
                                base_env(home))
            started.append(srv)
            smalls.append(srv)
            small_files.append(files)
        ssh_port = int(smalls[0].wait_for_log(_SSH_LISTEN).group(1))
        yield Rig(home, big, hosts, big_files, audit, smalls, [s.address for s in smalls],
                  small_files, ssh_port)
    finally:
        for srv in started:
            srv.stop()
            print(f"---- server {srv.address} log ----\n{srv.log}")


@pytest.fixture(autouse=True)
def rshell_home(rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The client's files are the rig's; HOME is empty (no ~/.ssh to consult)."""
    monkeypatch.setenv("RSHELL_HOME", str(rig.home))
    (tmp_path / "user-home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))


class Audit:
    """big's audit log from the moment this was made."""

    def __init__(self, rig: Rig) -> None:
        self.path = rig.audit
        self.offset = rig.audit.stat().st_size

    def events(self, kind: str) -> list[dict[str, Any]]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            lines = f.read().decode().splitlines()
        return [e for e in map(json.loads, filter(None, lines)) if e["event"] == kind]

    def sessions(self, kind: str) -> set[str]:
        return {e["session"] for e in self.events(kind)}

    def all_disconnected(self, sessions: set[str]) -> bool:
        return sessions <= self.sessions("disconnect")


def established(ports: set[int]) -> int:
    """This process's TCP connections to ``ports`` that are open (ESTABLISHED)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    # Distinct inodes: the kernel's table is read in pieces while it changes
    # (connections opening and closing in other threads), and a line can
    # come twice; counting lines saw four connections where three were.
    found = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if fields[9] in inodes and remote_port in ports and fields[3] == "01":
                    found.add(fields[9])
    return len(found)


def port_of(host: str) -> int:
    return int(host.rsplit(":", 1)[1])


# ---- run ---------------------------------------------------------------------------------


def test_the_group_is_exported() -> None:
    assert rshell.Group is Group
    assert rshell.HostResults is HostResults


def test_echo_on_twenty_hosts(rig: Rig) -> None:
    with Group(rig.hosts) as g:
        assert g.hosts == rig.hosts
        results = g.run("echo ok")
        assert isinstance(results, HostResults)
        assert list(results) == rig.hosts  # the order they were named in
        for host, value in results.items():
            assert isinstance(value, Result), value
            assert (value.stdout, value.stderr, value.exit_code, value.host) == (
                b"ok\n", b"", 0, host)
            assert g.connection(host).port == port_of(host)  # its own listener
        assert results.ok
        assert results.succeeded == rig.hosts
        assert results.failed == results.unreachable == []


def test_a_host_down_is_unreachable_and_the_rest_unaffected(rig: Rig) -> None:
    down = f"127.0.0.1:{free_port()}"
    hosts = [*rig.hosts[:5], down, *rig.hosts[5:10]]
    with Group(hosts, connect_timeout=10) as g:
        results = g.run("echo ok")
    assert list(results) == hosts
    assert isinstance(results[down], ConnectionFailed), results[down]
    assert str(down) in str(results[down])
    assert results.unreachable == [down]
    assert results.succeeded == [h for h in hosts if h != down]
    assert results.failed == []
    assert not results.ok
    assert all(results[h].stdout == b"ok\n" for h in results.succeeded)


def test_a_failing_command_is_failed_not_unreachable(rig: Rig) -> None:
    """``marker`` is in two hosts' homes, not the third's."""
    for files in rig.small_files[:2]:
        (files / "marker").write_text("here\n")
    (rig.small_files[2] / "marker").unlink(missing_ok=True)
    with Group(rig.small_hosts) as g:
        results = g.run("cat marker")
    assert results.failed == [rig.small_hosts[2]]
    assert results.succeeded == rig.small_hosts[:2]
    assert results.unreachable == []
    assert not results.ok
    bad = results[rig.small_hosts[2]]
    assert isinstance(bad, Result) and bad.exit_code != 0 and b"marker" in bad.stderr


def test_callbacks_get_the_host_and_every_byte(rig: Rig) -> None:
    out: dict[str, bytearray] = {h: bytearray() for h in rig.hosts}
    err: dict[str, bytearray] = {h: bytearray() for h in rig.hosts}
    done: list[tuple[str, object]] = []
    lock = threading.Lock()

    def on_stdout(host: str, data: bytes | memoryview) -> None:
        with lock:
            out[host] += data

    def on_stderr(host: str, data: bytes | memoryview) -> None:
        with lock:
            err[host] += data

    def on_done(host: str, value: object) -> None:
        with lock:
            done.append((host, value))

    with Group(rig.hosts) as g:
        results = g.run("seq 1 30000; seq 1 3000 >&2", on_stdout=on_stdout,
                        on_stderr=on_stderr, on_done=on_done)
    expected_out = "".join(f"{n}\n" for n in range(1, 30001)).encode()
    expected_err = "".join(f"{n}\n" for n in range(1, 3001)).encode()
    assert all(bytes(out[h]) == expected_out for h in rig.hosts)
    assert all(bytes(err[h]) == expected_err for h in rig.hosts)
    assert Counter(h for h, _ in done) == Counter(rig.hosts)  # once per host
    assert all(value is results[h] for h, value in done)
    for value in results.values():
        assert isinstance(value, Result) and value.ok
        assert value.stdout == value.stderr == b""  # streamed, not kept


def test_on_done_gets_the_error_of_a_host_down(rig: Rig) -> None:
    down = f"127.0.0.1:{free_port()}"
    done: dict[str, object] = {}
    with Group([rig.hosts[0], down], connect_timeout=10) as g:
        g.run("true", on_done=lambda h, v: done.__setitem__(h, v))
    assert set(done) == {rig.hosts[0], down}
    assert isinstance(done[down], ConnectionFailed)


def _summary(results: HostResults[Result]) -> dict[str, object]:
    return {h: v if isinstance(v, RshellError) else
            (v.host, v.exit_code, v.signal, v.stdout, v.stderr, v.error)
            for h, v in results.items()}


def test_parallel_one_and_sixty_four_agree(rig: Rig) -> None:
    down = f"127.0.0.1:{free_port()}"
    hosts = [*rig.hosts, down]
    command = "echo out; echo err >&2; exit 3"
    with Group(hosts, parallel=1, connect_timeout=10) as one:
        serial = one.run(command)
    with Group(hosts, parallel=64, connect_timeout=10) as many:
        wide = many.run(command)
    assert list(serial) == list(wide) == hosts
    assert isinstance(serial[down], ConnectionFailed) and isinstance(wide[down], ConnectionFailed)
    del serial[down], wide[down]
    assert _summary(serial) == _summary(wide)
    assert _summary(serial) == {h: (h, 3, None, b"out\n", b"err\n", None) for h in rig.hosts}
    assert serial.failed == wide.failed == rig.hosts


def _max_overlap(log: Path) -> int:
    """The most commands running at once, from their 's NS' / 'e NS' lines."""
    events = []
    for line in log.read_text().splitlines():
        kind, stamp = line.split()
        events.append((int(stamp), 0 if kind == "e" else 1))  # an end first on a tie
    running = most = 0
    for _, start in sorted(events):
        running += 1 if start else -1
        most = max(most, running)
    return most


def test_more_hosts_than_parallel_runs_at_most_parallel_commands(rig: Rig,
                                                                  tmp_path: Path) -> None:
    """parallel=3 on 20 hosts: the commands' own clocks (on the server) never
    see a fourth running; and all 20 ran."""
    log = tmp_path / "spans"
    command = f"echo s $(date +%s%N) >> {log}; sleep 0.2; echo e $(date +%s%N) >> {log}"
    with Group(rig.hosts, parallel=3) as g:
        results = g.run(command)
    assert results.ok, results
    assert len(log.read_text().splitlines()) == 2 * HOSTS
    assert 2 <= _max_overlap(log) <= 3


def test_parallel_from_the_config(rig: Rig) -> None:
    assert Group(rig.hosts, config=Config(parallel=5)).parallel == 5
    assert Group(rig.hosts, parallel=2, config=Config(parallel=5)).parallel == 2
    assert Group(rig.hosts).parallel == 64
    with pytest.raises(UsageError):
        Group(rig.hosts, parallel=-1)


def test_keep_false_holds_at_most_parallel_connections(rig: Rig) -> None:
    """each(keep=False): this process never holds more than ``parallel``
    connections, and the servers see each closed before the group is."""
    audit = Audit(rig)
    seen: list[int] = []
    conns: list[rshell.Connection] = []
    lock = threading.Lock()

    def work(host: str, conn: rshell.Connection) -> Result:
        with lock:
            seen.append(established(rig.ports))
            conns.append(conn)
        return conn.run("echo ok")

    g = Group(rig.hosts, parallel=3)
    try:
        results = g.each(work, keep=False)
        assert results.ok and len(seen) == HOSTS
        assert 1 <= max(seen) <= 3, seen
        assert all(conn.closed for conn in conns)
        assert established(rig.ports) == 0
        assert wait_until(lambda: len(audit.sessions("connect")) == HOSTS, WAIT)
        assert wait_until(lambda: audit.all_disconnected(audit.sessions("connect")), WAIT)
    finally:
        g.close()

    with Group(rig.hosts, parallel=3) as kept:  # the measure sees what keep=True keeps
        assert kept.each(lambda h, c: c.run("true")).ok
        assert established(rig.ports) == HOSTS


def test_connections_are_kept_until_close(rig: Rig) -> None:
    """Two runs share one session per host (``cd`` persists; one connect
    each); close() ends them all; the group then starts afresh."""
    audit = Audit(rig)
    g = Group(rig.hosts)
    try:
        assert g.run("cd /tmp").ok
        results = g.run("pwd")
        assert {h: v.stdout for h, v in results.items()} == {
            h: b"/tmp\n" for h in rig.hosts}
        sessions = audit.sessions("connect")
        assert len(sessions) == HOSTS
        assert not audit.sessions("disconnect") & sessions
        g.close()
        assert wait_until(lambda: audit.all_disconnected(sessions), WAIT)
        assert established(rig.ports) == 0
        again = g.run("pwd")  # new sessions, in the server's --home
        assert {v.stdout for v in again.values()} == {
            f"{rig.big_files}\n".encode()}
        assert len(audit.sessions("connect")) == 2 * HOSTS
    finally:
        g.close()


def test_the_with_block_closes_every_connection(rig: Rig) -> None:
    audit = Audit(rig)
    with Group(rig.hosts) as g:
        assert g.run("true").ok
        assert established(rig.ports) == HOSTS
    assert established(rig.ports) == 0
    sessions = audit.sessions("connect")
    assert len(sessions) == HOSTS
    assert wait_until(lambda: audit.all_disconnected(sessions), WAIT)


def test_a_lost_connection_is_made_again(rig: Rig) -> None:
    with Group(rig.hosts[:2]) as g:
        assert g.run("cd /tmp").ok
        g.connection(rig.hosts[0]).close()
        results = g.run("pwd")
    assert results[rig.hosts[0]].stdout == f"{rig.big_files}\n".encode()
    assert results[rig.hosts[1]].stdout == b"/tmp\n"


# ---- stdin and refused options ---------------------------------------------------------------


def test_stdin_reaches_every_host(rig: Rig) -> None:
    data = os.urandom(150_000)
    with Group(rig.hosts) as g:
        results = g.run("sha256sum", stdin=data)
        twice = g.run("wc -c", stdin=bytearray(b"abc"))
    import hashlib

    digest = hashlib.sha256(data).hexdigest().encode()
    assert all(v.stdout.split()[0] == digest for v in results.values())
    assert {v.stdout.strip() for v in twice.values()} == {b"3"}


@pytest.mark.parametrize("options", [
    {"stdin": "text, not bytes"},
    {"stdin": iter([b"a", b"b"])},
    {"check": True},
])
def test_a_stdin_not_bytes_or_check_is_a_usage_error_before_anything_runs(
        rig: Rig, tmp_path: Path, options: dict[str, Any]) -> None:
    audit = Audit(rig)
    marker = tmp_path / "ran"
    with Group(rig.hosts[:3]) as g:
        with pytest.raises(UsageError):
            g.run(f"touch {marker}", **options)
    assert not marker.exists()
    assert audit.events("connect") == []


# ---- put and get ---------------------------------------------------------------------------


def test_put_to_every_host_and_get_back_as_name_dot_host(rig: Rig, tmp_path: Path) -> None:
    src = tmp_path / "deploy.conf"
    src.write_bytes(b"setting = 1\n" * 500)
    for files in rig.small_files:
        (files / "etc").mkdir(exist_ok=True)
    with Group(rig.small_hosts) as g:
        put = g.put(src, "etc/")
        assert put.ok and list(put) == rig.small_hosts
        for value in put.values():
            assert isinstance(value, Copied) and (value.files, value.bytes) == (1, 6000)
        for files in rig.small_files:
            assert (files / "etc" / "deploy.conf").read_bytes() == src.read_bytes()

        for n, files in enumerate(rig.small_files):  # each host's own version
            (files / "etc" / "deploy.conf").write_text(f"host {n}\n")
        local = tmp_path / "fetched"
        local.mkdir()
        got = g.get("etc/deploy.conf", local)
    assert got.ok
    assert sorted(p.name for p in local.iterdir()) == sorted(
        f"deploy.conf.{h}" for h in rig.small_hosts)
    for n, host in enumerate(rig.small_hosts):
        assert (local / f"deploy.conf.{host}").read_text() == f"host {n}\n"
        assert isinstance(got[host], Copied) and got[host].files == 1


def test_get_several_paths(rig: Rig, tmp_path: Path) -> None:
    for n, files in enumerate(rig.small_files):
        (files / "logs").mkdir(exist_ok=True)
        (files / "logs" / "a.log").write_text(f"a{n}\n")
        (files / "logs" / "b.log").write_text(f"b{n}\n")
    local = tmp_path / "logs"
    local.mkdir()
    with Group(rig.small_hosts) as g:
        got = g.get(["logs/a.log", "logs/b.log"], local)
    assert got.ok
    for n, host in enumerate(rig.small_hosts):
        assert (local / f"a.log.{host}").read_text() == f"a{n}\n"
        assert (local / f"b.log.{host}").read_text() == f"b{n}\n"
        assert got[host].files == 2


def test_a_file_failing_on_one_host_is_that_host_failed(rig: Rig, tmp_path: Path) -> None:
    """get: the file is missing on one host; put: where it would go is a
    directory on one host.  That host is failed (a Copied naming the file),
    the others succeed."""
    for files in rig.small_files:
        (files / "part").mkdir(exist_ok=True)
        (files / "part" / "data.txt").write_text("data\n")
    (rig.small_files[1] / "part" / "data.txt").unlink()
    local = tmp_path / "got"
    local.mkdir()
    src = tmp_path / "blocked.txt"
    src.write_text("new\n")
    (rig.small_files[2] / "part" / "blocked.txt").mkdir(exist_ok=True)
    with Group(rig.small_hosts) as g:
        got = g.get("part/data.txt", local)
        put = g.put(src, "part/")
    bad = rig.small_hosts[1]
    assert got.failed == [bad] and got.unreachable == [] and not got.ok
    assert isinstance(got[bad], Copied)
    assert [path for path, _ in got[bad].failures] == ["part/data.txt"]
    assert sorted(p.name for p in local.iterdir()) == sorted(
        f"data.txt.{h}" for h in rig.small_hosts if h != bad)

    blocked = rig.small_hosts[2]
    assert put.failed == [blocked] and put.unreachable == []
    assert put.succeeded == rig.small_hosts[:2]
    failures = put[blocked].failures
    assert len(failures) == 1 and "blocked.txt" in failures[0][0]
    assert (rig.small_files[0] / "part" / "blocked.txt").read_text() == "new\n"


def test_a_copy_refused_on_a_reached_host_is_failed_not_unreachable(rig: Rig,
                                                                    tmp_path: Path) -> None:
    for files in rig.small_files[:2]:
        (files / "only-here").mkdir(exist_ok=True)
    src = tmp_path / "f.txt"
    src.write_text("f\n")
    with Group(rig.small_hosts) as g:
        put = g.put(src, "only-here/")
    assert put.succeeded == rig.small_hosts[:2]
    assert put.unreachable == []
    assert put.failed == [rig.small_hosts[2]]


def test_get_into_a_non_directory_is_a_usage_error(rig: Rig, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with Group(rig.small_hosts) as g:
        for local in (tmp_path / "file", tmp_path / "missing"):
            with pytest.raises(UsageError, match="not a directory"):
                g.get("x", local)


def test_an_ssh_host_downloads_as_its_file_name(rig: Rig, tmp_path: Path) -> None:
    """An ``ssh://`` host's files are named without the scheme."""
    (rig.small_files[0] / "syslog").write_text("from ssh\n")
    target = f"ssh://tester@127.0.0.1:{rig.ssh_port}"
    local = tmp_path / "ssh"
    local.mkdir()
    with Group(target, identity=rig.home / "id_ed25519",
               known_hosts=tmp_path / "ssh_known_hosts", accept_new=True) as g:
        got = g.get("syslog", local)
    assert got.ok, got
    assert [p.name for p in local.iterdir()] == [f"syslog.tester@127.0.0.1:{rig.ssh_port}"]
    assert (local / f"syslog.tester@127.0.0.1:{rig.ssh_port}").read_text() == "from ssh\n"


# ---- signals -------------------------------------------------------------------------------


def test_send_signal_interrupts_every_host(rig: Rig, tmp_path: Path) -> None:
    """SIGINT from another thread, once every host's command is running
    (each says so with a file), ends every ``sleep 30``."""
    started = tmp_path / "started"
    started.mkdir()
    with Group(rig.hosts) as g:

        def interrupt() -> None:
            if wait_until(lambda: len(os.listdir(started)) == HOSTS, WAIT):
                g.send_signal(signal.SIGINT)

        sender = threading.Thread(target=interrupt, daemon=True)
        sender.start()
        began = time.monotonic()
        results = g.run(f"touch {started}/$$; sleep 30", timeout=WAIT + 5)
        took = time.monotonic() - began
        sender.join(WAIT)
    assert not sender.is_alive()
    assert took < WAIT, took
    assert {(v.signal, v.exit_code) for v in results.values()} == {
        (signal.SIGINT, None)}
    assert results.failed == rig.hosts


def test_send_signal_with_nothing_running_is_harmless(rig: Rig) -> None:
    with Group(rig.hosts[:3]) as g:
        g.send_signal(signal.SIGINT)  # no connection yet
        assert g.run("true").ok
        g.send_signal(signal.SIGINT)  # connections, no command
        assert g.run("echo still").ok


# ---- targets -------------------------------------------------------------------------------


@pytest.fixture
def aliases(rig: Rig) -> Config:
    """h01..h20 for big's listeners; groups over them."""
    hosts = {f"h{n:02d}": HostEntry("127.0.0.1", port_of(h)) for n, h in
             enumerate(rig.hosts, 1)}
    return Config(hosts=hosts, groups={"web": ("h[01-10]",), "rest": ("h[11-20]",),
                                       "all": ("@web", "@rest", "h01")})


def test_a_group_of_aliases(rig: Rig, aliases: Config) -> None:
    names = [f"h{n:02d}" for n in range(1, HOSTS + 1)]
    with Group("@all", config=aliases) as g:
        assert g.hosts == names
        results = g.run("echo ok")
        assert list(results) == names and results.ok
        assert all(v.host == h for h, v in results.items())
        assert [g.connection(h).port for h in names] == [port_of(h) for h in rig.hosts]


def test_ranges_lists_and_hosts_files(rig: Rig, aliases: Config, tmp_path: Path) -> None:
    listing = tmp_path / "hosts.txt"
    listing.write_text("# the rest\nh19\n\nh20\nh01\n")
    with Group(["h[03-04],h02", "@web"], hosts_files=[str(listing)], config=aliases) as g:
        assert g.hosts == ["h03", "h04", "h02", "h01", *(f"h{n:02d}" for n in range(5, 11)),
                           "h19", "h20"]
        assert g.run("true").succeeded == g.hosts


def test_the_config_file_is_read_when_none_is_given(rig: Rig) -> None:
    path = rig.home / "config.toml"
    path.write_text(f"[hosts.first]\naddress = '127.0.0.1'\nport = {port_of(rig.hosts[0])}\n"
                    "[groups]\npair = ['first', " + repr(rig.hosts[1]) + "]\n")
    try:
        with Group("@pair") as g:
            assert g.hosts == ["first", rig.hosts[1]]
            assert g.run("echo ok").ok
    finally:
        path.unlink()


@pytest.mark.parametrize("targets", [[], (), "h[3-1]", "h[1-", "@nope", "", ",", ["h1", "h[a-b]"]])
def test_bad_targets_are_usage_errors(rig: Rig, aliases: Config, targets: Any,
                                      tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        Group(targets, config=aliases)
    assert "\n" not in str(caught.value)


def test_an_empty_hosts_file_alone_is_a_usage_error(rig: Rig, tmp_path: Path) -> None:
    listing = tmp_path / "empty.txt"
    listing.write_text("# nobody\n")
    with pytest.raises(UsageError):
        Group([], hosts_files=[str(listing)], config=Config())


# ---- fan_out, HostResults, file_name -------------------------------------------------------


def test_fan_out_keeps_the_order_whatever_the_finishing_order() -> None:
    """Each item waits for the next to finish: they end last to first."""
    items = [f"i{n}" for n in range(8)]
    finished = {item: threading.Event() for item in items}
    order: list[str] = []

    def work(item: str) -> str:
        n = items.index(item)
        if n + 1 < len(items):
            assert finished[items[n + 1]].wait(WAIT)
        finished[item].set()
        return item.upper()

    results = fan_out(items, work, parallel=len(items), on_done=lambda i, _: order.append(i))
    assert list(results) == items
    assert results == {i: i.upper() for i in items}
    assert order == items[::-1]


def test_fan_out_makes_an_rshell_error_that_items_value() -> None:
    def work(item: str) -> str:
        if item == "b":
            raise ConnectionFailed("b is down")
        return item

    results = fan_out(["a", "b", "c"], work, parallel=2)
    assert list(results) == ["a", "b", "c"]
    assert isinstance(results["b"], ConnectionFailed) and str(results["b"]) == "b is down"
    assert (results["a"], results["c"]) == ("a", "c")


def test_fan_out_raises_another_exception_once_every_thread_has_ended() -> None:
    """'a' raises while 'b' is still at work: the caller gets the
    ValueError only after 'b' is done, and no worker is left."""
    a_raised, b_started, b_done = threading.Event(), threading.Event(), threading.Event()

    def work(item: str) -> str:
        if item == "a":
            assert b_started.wait(WAIT)
            a_raised.set()
            raise ValueError("a crashed")
        b_started.set()
        assert a_raised.wait(WAIT)
        threading.Event().wait(0.2)  # 'b' is a slow host: still at work after 'a' raised
        b_done.set()
        return item

    with pytest.raises(ValueError, match="a crashed"):
        fan_out(["a", "b"], work, parallel=2)
    assert b_done.is_set()
    assert not [t for t in threading.enumerate() if t.name.startswith("fleet ")]


def test_fan_out_raises_what_on_done_raised() -> None:
    def on_done(item: str, value: object) -> None:
        raise KeyError(item)

    with pytest.raises(KeyError):
        fan_out(["a", "b"], lambda i: i, parallel=1, on_done=on_done)


@pytest.mark.parametrize(("count", "parallel"), [(21, 3), (8, 1), (5, 64)])
def test_fan_out_runs_at_most_parallel_at_once(count: int, parallel: int) -> None:
    """A barrier of ``min(parallel, count)`` (which divides ``count``) makes
    each round all run together; a counter sees whether more ever do."""
    width = min(parallel, count)
    barrier = threading.Barrier(width, timeout=WAIT)
    lock = threading.Lock()
    running = most = 0
    threads: set[int] = set()

    def work(item: str) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.get_ident())
        barrier.wait()
        with lock:
            running -= 1
        return item

    items = [str(n) for n in range(count)]
    assert fan_out(items, work, parallel) == {i: i for i in items}
    assert most == width
    assert len(threads) == width


def test_fan_out_of_nothing_is_empty() -> None:
    assert fan_out([], lambda i: i, parallel=4) == {}


def test_host_results_sorts_hosts() -> None:
    results: HostResults[Any] = HostResults({
        "ok": Result("c", 0),
        "exit1": Result("c", 1),
        "down": ConnectionFailed("x"),
        "timeout": Result("c", None, error="timed out"),
        "copied": Copied(1, 10, 0.1),
        "copy-failed": Copied(0, 0, 0.1, (("f", "No such file"),)),
    })
    assert results.succeeded == ["ok", "copied"]
    assert results.failed == ["exit1", "timeout", "copy-failed"]
    assert results.unreachable == ["down"]
    assert not results.ok
    assert HostResults({"a": Result("c", 0), "b": Copied(0, 0, 0.0)}).ok
    assert HostResults({}).ok


@pytest.mark.parametrize(("host", "name"), [
    ("web1", "web1"),
    ("127.0.0.1:7722", "127.0.0.1:7722"),
    ("[::1]:7722", "[::1]:7722"),
    ("ssh://deploy@web1:22", "deploy@web1:22"),
    ("ssh://web1", "web1"),
    ("a/b", "a_b"),
    ("ssh://x/../y", "x_.._y"),
    ("", "_"),
    (".", "_."),
    ("..", "_.."),
    ("ssh://..", "_.."),
])
def test_file_name(host: str, name: str) -> None:
    assert file_name(host) == name
    assert "/" not in file_name(host) and file_name(host) not in ("", ".", "..")


@pytest.mark.parametrize(("path", "name"), [
    ("/var/log/syslog", "syslog"), ("logs/", "logs"), ("syslog", "syslog"),
    ("/", "home"), ("~", "home"), (".", "home"), ("a/..", "home"),
])
def test_remote_name(path: str, name: str) -> None:
    assert remote_name(path) == name
