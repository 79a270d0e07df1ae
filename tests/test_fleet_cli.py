"""``rshell`` on many hosts, end to end (issue 15, SPEC §11): the real
``rshell`` entry point against real ``rshell-server`` processes (hundreds of
loopback listeners each, every listener a host: tests/support/fleet.py) and
a real OpenSSH sshd, so the fleet's promises are pinned where users meet them:

- a thousand hosts each answer once, every line whole under its own host's
  aligned prefix, many lines per host in order, the summary, exit 0;
- faults in one run (nothing listening, a changed host key, a listener that
  never speaks, a command past --timeout): each host's own reason line, the
  others' output intact, the summary's folded host sets, exit 255 (1 when
  every host was reached);
- --gather, --out-dir (byte-exact files), --json with "host";
- batches per host (own connection, own cd), --fail-fast, piped stdin;
- native and ssh:// targets in one run;
- ``rshell hosts`` and config.toml's aliases, groups and errors.

Servers differ where a test needs it by ``--home``: a session starts in its
server's home, so a marker file there tells one server's hosts from
another's (the server's own environment does not reach commands: only PATH,
LANG, LANGUAGE, TZ and LC_* pass, exec/environment.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from rshell.fleet.targets import expand
from tests.conftest import cli, one_line_error
from tests.support.cli import CLIENT_MODE, RSHELL, base_env
from tests.support.fleet import (
    StartServer,
    by_host,
    closed_port,
    closed_ports,
    free_port_run,
    home_with,
    hosts_file,
    pin,
    rig,
    silent_listeners,
    stderr_lines,
    summary,
)
from tests.support.procs import wait_until


def cli_argv() -> list[str]:
    return [RSHELL, *CLIENT_MODE]


# ---- scale ---------------------------------------------------------------------------


def test_a_thousand_hosts_each_answer_once(home: Path, start_server: StartServer,
                                           tmp_path: Path) -> None:
    """1,000 hosts (4 servers x 250 listeners), one ``echo``: every host's
    line once, under its own prefix; the summary; exit 0; each server ran
    its 250 commands (one per listener, no host run twice or skipped)."""
    servers = rig(home, start_server, [250] * 4)
    hosts = [a for s in servers for a in s.addresses]
    assert len(set(hosts)) == 1000
    started = time.monotonic()
    # -H with a target beside it (the first host again: named once); -H
    # alone is test_hosts_file_alone_names_the_fleet's (an xfail).
    proc = cli(home, hosts[0], "-H", hosts_file(tmp_path / "hosts", hosts),
               "--strict-host-keys", "--parallel", "128", "-c", "echo ok", timeout=120)
    took = time.monotonic() - started
    print(f"1,000 hosts: {took:.2f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(b"\n") == 1000
    assert by_host(proc.stdout, hosts) == {h: [b"ok"] for h in hosts}
    assert proc.stderr == b"rshell: 1000 hosts: 1000 succeeded\n"
    # Every listener's command ran on its own server, once.  A server logs a
    # command just after its Exit goes out, and its log writer batches lines:
    # the client can be done before the last lines are written.
    for s in servers:
        wait_until(lambda s=s: s.server.log.count("echo ok") >= 250, 10)
        assert s.server.log.count("echo ok") == 250, s.server.log[-2000:]


def test_many_lines_from_many_hosts_are_whole_and_in_order(
    home: Path, start_server: StartServer, tmp_path: Path,
) -> None:
    """200 hosts at once each write 2,000 lines to stdout and 300 to stderr:
    every line of every host arrives whole under its prefix, in its order,
    on its own stream (lines of different hosts interleave, never within a
    line)."""
    (servers,) = rig(home, start_server, [200])
    hosts = servers.addresses
    proc = cli(home, hosts[0], "-H", hosts_file(tmp_path / "hosts", hosts), "--parallel", "200",
               "-c", "seq 1 2000; seq 1 300 >&2", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = by_host(proc.stdout, hosts)
    expected = [str(n).encode() for n in range(1, 2001)]
    assert sorted(lines) == sorted(hosts)
    for host in hosts:
        assert lines[host] == expected, host
    errors = by_host(stderr_lines(proc.stderr), hosts)
    assert errors == {h: [str(n).encode() for n in range(1, 301)] for h in hosts}
    assert summary(proc.stderr).succeeded == 200


# ---- faults --------------------------------------------------------------------------


def test_faults_are_each_hosts_own_and_summarized(
    home: Path, start_server: StartServer, tmp_path: Path,
) -> None:
    """100 hosts in one run: 60 good; 10 where nothing listens; 10 whose
    pinned key is not theirs; 10 that take TCP and never speak (past
    --connect-timeout); 10 whose command outlives --timeout.  Each faulty
    host has its one reason line, the good ones their output and nothing
    else, the summary names exactly the failed and the unreachable, exit 255;
    known_hosts is left as it was.

    --connect-timeout is 3 s, not 1, and --parallel 20: the client does its
    hosts' TLS handshakes at once in one process, and on a loaded 2-core
    machine a good host's could otherwise near the limit, which is not what
    this test is about.  The server's own limit ends the slow commands (the
    smaller of the client's and the server's wins): nothing outlives the test."""
    slow_home = home_with(tmp_path / "slow", slow="")
    good, slow = rig(home, start_server, [70, 10], [[], ["--home", str(slow_home)]])
    wrong_key = good.addresses[60:]
    ok_hosts = good.addresses[:60]
    with open(home / "known_hosts") as f:
        pins = f.read()
    other = "SHA256:" + "A" * 43
    # Every address is pinned to its real key; a pin written before those
    # wins (the first pin of an address is the one that counts).
    (home / "known_hosts").write_text("".join(f"{a} {other}\n" for a in wrong_key) + pins)
    before = (home / "known_hosts").read_bytes()
    down = closed_ports(10)
    with silent_listeners(10) as silent:
        hosts = [*ok_hosts[:30], *down, *wrong_key, *slow.addresses, *silent, *ok_hosts[30:]]
        proc = cli(home, hosts[0], "-H", hosts_file(tmp_path / "hosts", hosts),
                   "--connect-timeout", "3", "--timeout", "2", "--parallel", "20",
                   "-c", "test -e slow && sleep 30; echo ok", timeout=60)
    assert proc.returncode == 255, proc.stderr[-3000:]
    assert by_host(proc.stdout, hosts) == {h: [b"ok"] for h in ok_hosts}
    said = by_host(stderr_lines(proc.stderr), hosts)
    reasons = {h: [line.decode() for line in lines] for h, lines in said.items()}
    assert set(reasons) == {*down, *wrong_key, *silent, *slow.addresses}, reasons
    for host, expected in (
        *((h, f"rshell: connecting to {h}: Connection refused") for h in down),
        *((h, f"rshell: WARNING: HOST KEY FOR {h} HAS CHANGED") for h in wrong_key),
        *((h, f"rshell: TLS handshake with {h}: timed out") for h in silent),
        *((h, "rshell: command error: timed out after 2 s") for h in slow.addresses),
    ):
        assert len(reasons[host]) == 1 and reasons[host][0].startswith(expected), \
            (host, reasons[host])
    result = summary(proc.stderr)
    assert (result.total, result.succeeded) == (100, 60)
    assert set(result.failed) == set(slow.addresses)
    assert set(result.unreachable) == {*down, *wrong_key, *silent}
    assert len(result.unreachable) == 30
    assert (home / "known_hosts").read_bytes() == before


def test_command_failures_alone_exit_1(home: Path, start_server: StartServer,
                                       tmp_path: Path) -> None:
    """Every host reached, some commands failed (a timeout, a non-zero
    status): exit 1, and the summary names those hosts as failed, none
    unreachable."""
    slow_home = home_with(tmp_path / "slow", slow="")
    good, slow = rig(home, start_server, [8, 3], [[], ["--home", str(slow_home)]])
    hosts = [*good.addresses, *slow.addresses]
    proc = cli(home, ",".join(hosts), "--timeout", "2",
               "-c", "test -e slow && sleep 30; echo ok")
    assert proc.returncode == 1, proc.stderr
    assert by_host(proc.stdout, hosts) == {h: [b"ok"] for h in good.addresses}
    result = summary(proc.stderr)
    assert (result.total, result.succeeded, result.unreachable) == (11, 8, [])
    assert set(result.failed) == set(slow.addresses)
    # A plain non-zero status, with output: failed, and no reason line of ours.
    proc = cli(home, ",".join(hosts), "-c", "echo out; test ! -e slow")
    assert proc.returncode == 1, proc.stderr
    assert set(summary(proc.stderr).failed) == set(slow.addresses)
    assert stderr_lines(proc.stderr) == b""
    assert by_host(proc.stdout, hosts) == {h: [b"out"] for h in hosts}
    # -q: the same status, without the summary.
    proc = cli(home, ",".join(hosts), "-q", "-c", "echo out; test ! -e slow")
    assert (proc.returncode, proc.stderr) == (1, b"")
    assert by_host(proc.stdout, hosts) == {h: [b"out"] for h in hosts}


# ---- output modes --------------------------------------------------------------------


def _two_kinds(home: Path, start_server: StartServer, tmp_path: Path,
               count: int = 6) -> tuple[list[str], list[str]]:
    """Two servers whose homes differ (a marker 'alpha' or 'beta', a folder
    'sub' in alpha's only): their addresses."""
    alpha = home_with(tmp_path / "alpha", marker="alpha\n", only_in_alpha="")
    (alpha / "sub").mkdir()
    beta = home_with(tmp_path / "beta", marker="beta\n")
    a, b = rig(home, start_server, [count, count],
               [["--home", str(alpha)], ["--home", str(beta)]])
    return a.addresses, b.addresses


def test_gather_prints_each_output_once_with_its_hosts(
    home: Path, start_server: StartServer, tmp_path: Path,
) -> None:
    """--gather: two distinct outputs, each once under a header naming its
    hosts (folded) and their count, the group of the first host named
    first; stderr stays live and prefixed; an unreachable host is no group."""
    alpha, beta = _two_kinds(home, start_server, tmp_path)
    down = closed_port()
    hosts = [beta[0], *alpha, down, *beta[1:]]
    proc = cli(home, ",".join(hosts), "--gather", "-c", "cat marker; echo e >&2")
    assert proc.returncode == 255, proc.stderr
    text = proc.stdout.decode()
    lines = text.splitlines()
    assert len(lines) == 8, text
    for at, (members, body) in enumerate(((beta, "beta"), (alpha, "alpha"))):
        rule, title, rule2, content = lines[4 * at: 4 * at + 4]
        assert rule == rule2 and set(rule) == {"-"} and len(rule) >= 15, text
        folded, count = title.rsplit(" ", 1)
        assert count == "(6)" and sorted(expand(folded)) == sorted(members), text
        assert content == body
    said = by_host(stderr_lines(proc.stderr), hosts)
    assert {h: v for h, v in said.items() if h != down} == \
        {h: [b"e"] for h in [*alpha, *beta]}
    assert len(said[down]) == 1 and b"Connection refused" in said[down][0]
    result = summary(proc.stderr)
    assert (result.succeeded, result.unreachable) == (12, [down])


def test_out_dir_files_are_complete(home: Path, start_server: StartServer,
                                    tmp_path: Path) -> None:
    """--out-dir: HOST.out and HOST.err per host, byte-exact (588,895 bytes
    of seq each), nothing else in the folder and nothing on stdout."""
    (servers,) = rig(home, start_server, [20])
    hosts = servers.addresses
    out = tmp_path / "out"
    proc = cli(home, ",".join(hosts), "--out-dir", str(out), "-c",
               "seq 1 100000; echo warn >&2; printf 'no newline' >&2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert proc.stderr == b"rshell: 20 hosts: 20 succeeded\n"
    expected = subprocess.run(["seq", "1", "100000"], capture_output=True, check=True).stdout
    assert sorted(p.name for p in out.iterdir()) == \
        sorted(f"{h}.{kind}" for h in hosts for kind in ("out", "err"))
    for host in hosts:
        assert (out / f"{host}.out").read_bytes() == expected, host
        assert (out / f"{host}.err").read_bytes() == b"warn\nno newline", host


def test_json_is_one_object_per_host_and_command(
    home: Path, start_server: StartServer, tmp_path: Path,
) -> None:
    """--json with a batch of two commands on five hosts: ten objects, each
    with its host as written, the command, its output and status; a host
    that could not be reached has one too (no exit code, the reason)."""
    (servers,) = rig(home, start_server, [5])
    hosts = servers.addresses
    down = closed_port()
    batch = tmp_path / "batch"
    batch.write_text("echo hi\nexit 3\n")
    proc = cli(home, ",".join([*hosts, down]), "--json", "-f", str(batch))
    assert proc.returncode == 255, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 11, records
    seen = {(r["host"], r["command"]): r for r in records}
    assert set(seen) == {(h, c) for h in hosts for c in ("echo hi", "exit 3")} | \
        {(down, "echo hi")}
    for host in hosts:
        assert seen[host, "echo hi"]["stdout"] == "hi\n"
        assert seen[host, "echo hi"]["exit_code"] == 0
        assert seen[host, "exit 3"]["exit_code"] == 3
    assert seen[down, "echo hi"]["exit_code"] is None
    assert "Connection refused" in seen[down, "echo hi"]["error"]
    result = summary(proc.stderr)
    assert (set(result.failed), result.unreachable) == (set(hosts), [down])


# ---- batches and stdin -----------------------------------------------------------------


def test_batch_runs_on_every_host_with_its_own_cd(
    home: Path, start_server: StartServer, tmp_path: Path,
) -> None:
    """-f FILE and a piped batch: ``cd /tmp`` then ``pwd`` gives /tmp on
    every host; ``cd sub`` succeeds only where sub exists, and each host's
    later ``pwd`` shows its own directory (a connection, a cd, per host)."""
    alpha, beta = _two_kinds(home, start_server, tmp_path, count=4)
    hosts = [*alpha, *beta]
    batch = tmp_path / "batch"
    batch.write_text("cd /tmp\npwd\n")
    for proc in (cli(home, ",".join(hosts), "-f", str(batch)),
                 cli(home, ",".join(hosts), input=b"cd /tmp\npwd\n")):
        assert proc.returncode == 0, proc.stderr
        assert by_host(proc.stdout, hosts) == {h: [b"/tmp"] for h in hosts}
    proc = cli(home, ",".join(hosts), input=b"cd sub\npwd\n")
    assert proc.returncode == 1, proc.stderr
    lines = by_host(proc.stdout, hosts)
    assert lines == {**{h: [str(tmp_path / "alpha" / "sub").encode()] for h in alpha},
                     **{h: [str(tmp_path / "beta").encode()] for h in beta}}
    assert by_host(stderr_lines(proc.stderr), hosts) == \
        {h: [b"cd: sub: No such file or directory"] for h in beta}
    result = summary(proc.stderr)
    assert (result.succeeded, set(result.failed)) == (4, set(beta))


def test_fail_fast_stops_only_that_hosts_sequence(
    home: Path, start_server: StartServer, tmp_path: Path,
) -> None:
    """A first command that fails on beta's hosts only: without --fail-fast
    every host goes on; with it beta's hosts stop there and alpha's go on.
    Exit 1 and the summary names beta's hosts either way."""
    alpha, beta = _two_kinds(home, start_server, tmp_path, count=3)
    hosts = [*alpha, *beta]
    batch = tmp_path / "batch"
    batch.write_text("test -e only_in_alpha || echo missing\ntest -e only_in_alpha\n"
                     "echo after\n")
    for flags, beta_lines in (((), [b"missing", b"after"]), (("--fail-fast",), [b"missing"])):
        proc = cli(home, ",".join(hosts), *flags, "-f", str(batch))
        assert proc.returncode == 1, proc.stderr
        assert by_host(proc.stdout, hosts) == \
            {**{h: [b"after"] for h in alpha}, **{h: beta_lines for h in beta}}, flags
        result = summary(proc.stderr)
        assert (result.succeeded, set(result.failed)) == (3, set(beta)), flags


def test_piped_stdin_reaches_every_host_whole(home: Path, start_server: StartServer) -> None:
    """``... | rshell HOSTS -c CMD``: every host reads all of stdin."""
    (servers,) = rig(home, start_server, [6])
    hosts = servers.addresses
    data = os.urandom(300_000)
    proc = cli(home, ",".join(hosts), "-c", "sha256sum", input=data)
    assert proc.returncode == 0, proc.stderr
    digest = f"{hashlib.sha256(data).hexdigest()}  -".encode()
    assert by_host(proc.stdout, hosts) == {h: [digest] for h in hosts}


# ---- targets ---------------------------------------------------------------------------


def test_live_lines_and_the_forms_that_name_several_hosts(
    home: Path, start_server: StartServer,
) -> None:
    """Stdout to stdout, stderr to stderr, a partial last line ended; the
    same hosts named as a comma list, as a node range in the port, and as
    ``rshell -c CMD HOST HOST...``."""
    base = free_port_run(5)
    srv = start_server(*[a for p in range(base + 1, base + 5)
                         for a in ("--bind", f"127.0.0.1:{p}")],
                       bind=f"127.0.0.1:{base}")
    hosts = [f"127.0.0.1:{p}" for p in range(base, base + 5)]
    pin(home, hosts[1:], srv.fingerprint)
    command = "echo out; echo err >&2; printf partial"
    for args in ((",".join(hosts), "-c", command),
                 (f"127.0.0.1:[{base}-{base + 4}]", "-c", command),
                 ("-c", command, *hosts)):
        proc = cli(home, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert by_host(proc.stdout, hosts) == {h: [b"out", b"partial"] for h in hosts}, args
        assert by_host(stderr_lines(proc.stderr), hosts) == {h: [b"err"] for h in hosts}
        assert summary(proc.stderr).succeeded == 5


def test_hosts_file_alone_names_the_fleet(home: Path, start_server: StartServer,
                                          tmp_path: Path) -> None:
    """``rshell -H FILE -c CMD``: the file's hosts, no other target."""
    (servers,) = rig(home, start_server, [3])
    hosts = servers.addresses
    proc = cli(home, "-H", hosts_file(tmp_path / "hosts", hosts), "-c", "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert by_host(proc.stdout, hosts) == {h: [b"ok"] for h in hosts}
    assert proc.stderr == b"rshell: 3 hosts: 3 succeeded\n"


def test_a_silent_failure_says_nothing_per_host_as_with_one_host(
        home: Path, start_server: StartServer) -> None:
    """``exit 3`` without a word: the status tells it (the summary names the
    hosts), no "command error" line per host, as one host prints none."""
    (servers,) = rig(home, start_server, [3])
    hosts = servers.addresses
    proc = cli(home, ",".join(hosts), "-c", "exit 3")
    assert proc.returncode == 1
    assert b"command error" not in proc.stderr and proc.stdout == b""
    assert set(summary(proc.stderr).failed) == set(hosts)


def test_a_reader_gone_stops_the_fleet_and_exits_141(
        home: Path, start_server: StartServer) -> None:
    """``rshell HOSTS -c 'seq ...' | head -2``: once stdout's reader is gone,
    the commands get SIGPIPE as a pipe would give it, the client exits 141
    at once, not after every host's endless output."""
    (servers,) = rig(home, start_server, [3])
    reader = subprocess.Popen(["head", "-c", "10"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    started = time.monotonic()
    proc = subprocess.run(
        [*cli_argv(), ",".join(servers.addresses), "-c", "yes"], stdout=reader.stdin,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=base_env(home), timeout=60)
    assert reader.stdin is not None
    reader.stdin.close()
    reader.wait(10)
    assert proc.returncode == 141, proc.stderr
    assert time.monotonic() - started < 30  # `yes` never ends: only SIGPIPE stopped it


def test_native_and_ssh_targets_in_one_run(home: Path, start_server: StartServer,
                                           tmp_path: Path) -> None:
    """A -H file naming native hosts and an ``ssh://`` one (a real OpenSSH
    sshd): every host answers under its own prefix; with --out-dir the
    ssh:// host's files are named USER@HOST:PORT."""
    from tests.support.sshd import SftpSshd
    from tests.test_ssh_client import SSHD

    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server missing (.ci/run installs it)")
    sshd = SftpSshd(tmp_path / "sshd")
    try:
        (servers,) = rig(home, start_server, [3])
        # One key for both: sshd's, authorized on the native servers too.
        with open(home / "server" / "authorized_keys", "a") as f:
            f.write(Path(f"{sshd.key}.pub").read_text())
        user_home = tmp_path / "user"
        (user_home / ".ssh").mkdir(parents=True)
        kind, blob = (tmp_path / "sshd" / "host_key.pub").read_text().split()[:2]
        (user_home / ".ssh" / "known_hosts").write_text(
            f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
        hosts = [servers.addresses[0], sshd.address, *servers.addresses[1:]]
        listed = hosts_file(tmp_path / "hosts", hosts)
        env = {"HOME": str(user_home)}
        proc = cli(home, hosts[0], "-H", listed, "-i", str(sshd.key), "-c", "echo ok", env=env)
        assert proc.returncode == 0, proc.stderr
        assert by_host(proc.stdout, hosts) == {h: [b"ok"] for h in hosts}
        assert proc.stderr == b"rshell: 4 hosts: 4 succeeded\n"
        out = tmp_path / "out"
        proc = cli(home, hosts[0], "-H", listed, "-i", str(sshd.key), "--out-dir", str(out),
                   "-c", "echo ok", env=env)
        assert proc.returncode == 0, proc.stderr
        ssh_name = sshd.address.removeprefix("ssh://")
        assert (out / f"{ssh_name}.out").read_bytes() == b"ok\n"
        assert sorted(p.name for p in out.glob("*.out")) == \
            sorted(f"{h.removeprefix('ssh://')}.out" for h in hosts)
    finally:
        sshd.stop()


def test_hosts_prints_expansions(home: Path, tmp_path: Path) -> None:
    """``rshell hosts``: ranges with their padding, ports, @group from
    config.toml, -H files, duplicates once; --fold; an unknown group is one
    usage line."""
    (home / "config.toml").write_text('[groups]\nweb = ["web[08-10]", "db1"]\n'
                                      'all = ["@web", "n[098-100]"]\n')
    listed = hosts_file(tmp_path / "hosts", ["x1", "web09", "x2"])

    def hosts(*args: str) -> list[str]:
        proc = cli(home, "hosts", *args)
        assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
        return proc.stdout.decode().splitlines()

    assert hosts("web[08-11]") == ["web08", "web09", "web10", "web11"]
    assert hosts("n[098-101],n7") == ["n098", "n099", "n100", "n101", "n7"]
    assert hosts("127.0.0.1:[20000-20002]") == \
        ["127.0.0.1:20000", "127.0.0.1:20001", "127.0.0.1:20002"]
    assert hosts("@all") == ["web08", "web09", "web10", "db1", "n098", "n099", "n100"]
    assert hosts("@web", "-H", listed) == ["web08", "web09", "web10", "db1", "x1", "x2"]
    assert hosts("--fold", "@all") == ["db1,n[098-100],web[08-10]"]
    assert hosts("--fold", "ssh://u@h[1-3]:22") == ["ssh://u@h[1-3]:22"]
    proc = cli(home, "hosts", "@nosuch")
    assert proc.returncode == 2
    assert "nosuch" in one_line_error(proc.stderr)


# ---- config.toml -----------------------------------------------------------------------


def test_aliases_and_groups_from_config(home: Path, start_server: StartServer) -> None:
    """``[hosts.NAME]`` aliases: one alias is one host (SPEC §4's output, no
    prefix); two, or a group, a fleet whose prefixes are the aliases."""
    (servers,) = rig(home, start_server, [2])
    ports = [int(a.rsplit(":", 1)[1]) for a in servers.addresses]
    (home / "config.toml").write_text(
        f'[hosts.web1]\naddress = "127.0.0.1"\nport = {ports[0]}\n'
        f'[hosts.web10]\naddress = "127.0.0.1"\nport = {ports[1]}\n'
        '[groups]\nweb = ["web1", "web10"]\n')
    proc = cli(home, "web1", "-c", "echo ok")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"ok\n", b"")
    proc = cli(home, "web10", "-c", "echo ok; exit 4")  # one host: its own status
    assert (proc.returncode, proc.stdout) == (4, b"ok\n")
    for args in (("web1,web10", "-c", "echo ok"), ("@web", "-c", "echo ok"),
                 ("-c", "echo ok", "web1", "web10")):
        proc = cli(home, *args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert proc.stdout == b"web1:  ok\nweb10: ok\n" or \
            proc.stdout == b"web10: ok\nweb1:  ok\n", (args, proc.stdout)
        assert proc.stderr == b"rshell: 2 hosts: 2 succeeded\n"


@pytest.mark.parametrize(("config", "key"), [
    ('[hosts.web1]\naddress = "127.0.0.1"\ncolour = "red"\n', "hosts.web1.colour"),
    ('[hosts.web1]\naddress = "127.0.0.1"\nport = 70000\n', "hosts.web1.port"),
    ('[defaults]\nparallel = 0\n', "defaults.parallel"),
    ('[groups]\nweb = 3\n', "groups.web"),
])
def test_a_bad_config_is_one_line_naming_the_key(home: Path, config: str, key: str) -> None:
    """Whatever the form (one host, a fleet, a group, ``rshell hosts``): one
    line naming the key, exit 255, nothing run."""
    (home / "config.toml").write_text(config)
    for args in (("web1", "-c", "echo ok"), ("web1,web2", "-c", "echo ok"),
                 ("@web", "-c", "echo ok"), ("hosts", "@web")):
        proc = cli(home, *args)
        assert proc.returncode == 255, (args, proc.stderr)
        assert key in one_line_error(proc.stderr), args
        assert proc.stdout == b""
