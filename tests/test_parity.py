"""One engine, two listeners (issue 10, SPEC §8): each scenario runs the same
thing through the native listener (``rshell.connect`` or the real ``rshell``
CLI) and the SSH listener (the real OpenSSH ``ssh``, or paramiko as a client
where OpenSSH cannot send the request or does not report the answer), and
asserts the same behaviour: forced command, ``restrict``, ``--max-commands``,
time and output limits, signals, audit fields, the auth-failure delay,
``command error`` reasons, the SSH line session and its cap, and the cleanup
after 50 SSH clients dropped mid-output.

What SSH adds is kept as sshd has it: the server's reason reaches an SSH
client as one stderr line ``rshell: command error: REASON`` only when the
server itself refused or stopped the command; a command ended by a signal
is an ``exit-signal`` (OpenSSH's ``ssh`` then exits 255, as it does against
sshd; paramiko is used to see the signal's name).

Every server listens on 127.0.0.1 only, with an account home in a temporary
folder; every wait is bounded.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rshell import RshellError
from rshell.errors import AuthenticationFailed
from rshell.ssh import _paramiko as door
from tests.conftest import ServerProcess, cli, connect
from tests.parity_support import (
    SSH,
    WAIT,
    Usage,
    make_stranger,
    paramiko_client,
    read_to_eof,
    read_until,
    rss_kib,
    send_signal_request,
    set_key_options,
    start_both,
    usage,
)
from tests.proctools import pid_gone, wait_until
from tests.test_faults import audit_events
from tests.test_ssh_server import ssh, ssh_argv

pytestmark = pytest.mark.skipif(SSH is None, reason="OpenSSH client missing (.ci/run installs it)")

Start = Callable[..., ServerProcess]
#: How long the server may take to give back what a finished client held.
CLEANUP = 20.0


@pytest.fixture
def account(tmp_path: Path) -> Path:
    """The account's home directory as the server sees it ($HOME of the server)."""
    return tmp_path / "account"


def shell_session(srv: ServerProcess, script: bytes) -> subprocess.CompletedProcess[bytes]:
    """``printf SCRIPT | ssh -T host``: a shell request without a pty."""
    return ssh(srv, input=script, extra=("-T",))


# ---- 1. forced command -----------------------------------------------------------------


def test_forced_command_runs_once_in_home_whatever_the_client_sends(
    start_server: Start, account: Path, tmp_path: Path
) -> None:
    """command="..." runs once per request, in the account's home, with the
    requested command in $RSHELL_ORIGINAL_COMMAND and $SSH_ORIGINAL_COMMAND;
    the client can steer it neither with cd (native or SSH line session),
    nor cwd/env (native: refused; SSH: an env request does not reach it)."""
    srv = start_both(start_server, account)
    runs = tmp_path / "runs"
    forced = tmp_path / "forced.sh"
    forced.write_text(
        "#!/bin/sh\n"
        f"echo run >> {shlex.quote(str(runs))}\n"
        'echo "pwd=$(pwd)"\n'
        'echo "rshell=${RSHELL_ORIGINAL_COMMAND-unset}"\n'
        'echo "ssh=${SSH_ORIGINAL_COMMAND-unset}"\n'
        'echo "foo=${FOO-unset}"\n'
    )
    forced.chmod(0o755)
    set_key_options(srv, f'command="{forced}"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = os.path.realpath(account)

    def count() -> int:
        return runs.read_text().count("run\n") if runs.exists() else 0

    def forced_output(asked: str) -> bytes:
        return f"pwd={home}\nrshell={asked}\nssh={asked}\nfoo=unset\n".encode()

    # Native.
    with connect(srv) as conn:
        r = conn.run("echo asked")
        assert (r.exit_code, r.stdout, r.error) == (0, forced_output("echo asked"), None), r
        assert count() == 1
        r = conn.run(f"cd {elsewhere}")  # not a cd: the forced command, from home
        assert r.stdout == forced_output(f"cd {elsewhere}"), r
        r = conn.run("pwd")  # and nothing moved
        assert r.stdout == forced_output("pwd"), r
        assert count() == 3
        for kwargs in ({"cwd": str(elsewhere)}, {"env": {"FOO": "bar"}}):
            r = conn.run("echo steered", **kwargs)  # type: ignore[arg-type]
            assert r.error is not None and r.error.startswith("refused:"), (kwargs, r)
            assert "forced command" in r.error, r
            assert r.stdout == b"", r
        assert count() == 3, "a refused request ran the forced command"

    # SSH exec requests.
    p = ssh(srv, "echo asked")
    assert (p.returncode, p.stdout, p.stderr) == (0, forced_output("echo asked"), b""), p
    p = ssh(srv, f"cd {elsewhere}")
    assert (p.returncode, p.stdout) == (0, forced_output(f"cd {elsewhere}")), p
    p = ssh(srv, "echo asked", extra=("-o", "SetEnv=FOO=bar"))
    assert (p.returncode, p.stdout) == (0, forced_output("echo asked")), p
    assert count() == 6

    # SSH shell request: the forced command, once, from home; the lines are
    # its stdin (which it does not read), never commands.
    p = shell_session(srv, f"cd {elsewhere}\nrun\n".encode())
    assert p.returncode == 0, p
    lines = p.stdout.decode().splitlines()
    assert lines[0] == f"pwd={home}" and lines[-1] == "foo=unset", p
    assert count() == 7, f"the forced command ran {count() - 6} times for one shell"


# ---- 2. restrict -----------------------------------------------------------------------


def test_restrict_keeps_the_client_environment_out(start_server: Start, account: Path) -> None:
    srv = start_both(start_server, account)
    set_key_options(srv, "restrict")
    with connect(srv) as conn:
        r = conn.run("echo ${FOO-unset}", env={"FOO": "bar"})
        assert r.error == "refused: environment not permitted for this key (restrict)", r
        assert r.stdout == b"" and not r.ok, r
        r = conn.run("echo ${FOO-unset}")
        assert (r.exit_code, r.stdout, r.error) == (0, b"unset\n", None), r
    p = ssh(srv, "echo ${FOO-unset}", extra=("-o", "SetEnv=FOO=bar"))
    assert (p.returncode, p.stdout, p.stderr) == (0, b"unset\n", b""), p


# ---- 3. --max-commands ------------------------------------------------------------------


def test_max_commands_ends_the_connection_both_ways(
    start_server: Start, account: Path, tmp_path: Path
) -> None:
    """The command past --max-commands never runs and the connection ends:
    native, a 'limit' protocol error; SSH (line session and exec channels on
    one ControlMaster connection), one stderr line and exit 255."""
    srv = start_both(start_server, account, "--max-commands", "2")
    markers = [tmp_path / f"ran-{i}" for i in range(3)]

    with connect(srv) as conn:
        assert conn.run("echo 1").stdout == b"1\n"
        assert conn.run("echo 2").stdout == b"2\n"
        with pytest.raises(RshellError) as info:
            conn.run(f"touch {markers[0]}")
        assert getattr(info.value, "code", None) == "limit", repr(info.value)
        assert "more than 2 commands" in str(info.value), info.value
        with pytest.raises(RshellError):
            conn.run("echo after-the-limit")
    native_reason = str(info.value)

    p = shell_session(srv, f"echo 1\necho 2\ntouch {markers[1]}\necho never\n".encode())
    assert (p.returncode, p.stdout) == (255, b"1\n2\n"), p
    # The server's one line first; OpenSSH may add its own "Connection to
    # HOST closed by remote host." after it.
    said = p.stderr.decode().splitlines()
    assert said[0].startswith("rshell: more than 2 commands on one connection"), p.stderr
    assert said[0].removeprefix("rshell: ") in native_reason, (native_reason, p.stderr)
    assert [line for line in said if line.startswith("rshell:")] == said[:1], p.stderr

    control = tmp_path / "cm"
    opts = ("-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
            "-o", "ControlPersist=30")
    try:
        assert ssh(srv, "echo a", extra=opts).stdout == b"a\n"
        assert ssh(srv, "echo b", extra=opts).stdout == b"b\n"
        p = ssh(srv, f"touch {markers[2]}", extra=opts)
        assert (p.returncode, p.stdout) == (255, b""), p
        assert p.stderr.decode().splitlines()[0] == said[0], p.stderr
    finally:
        ssh(srv, extra=(*opts, "-O", "exit"))
    assert not [m for m in markers if m.exists()], "a command beyond the limit ran"


# ---- 4. time and output limits ----------------------------------------------------------


def test_timeout_keeps_output_until_the_stop(start_server: Start, account: Path) -> None:
    srv = start_both(start_server, account, "--timeout", "1")
    command = "echo start; sleep 5"

    with connect(srv) as conn:
        started = time.monotonic()
        r = conn.run(command)
        elapsed = time.monotonic() - started
    assert (r.stdout, r.exit_code, r.signal, r.error) == (
        b"start\n", None, signal.SIGTERM, "timed out after 1 s"), r
    assert r.exit_status == 143
    assert 0.9 <= elapsed < 4.5, elapsed

    started = time.monotonic()
    p = ssh(srv, command)
    elapsed = time.monotonic() - started
    # An exit-signal, as sshd sends: OpenSSH's ssh exits 255 for it.
    assert (p.returncode, p.stdout, p.stderr) == (
        255, b"start\n", b"rshell: command error: timed out after 1 s\n"), p
    assert 0.9 <= elapsed < 4.5, elapsed
    # In a line session the status is the shell's $?: 128 + SIGTERM, and the
    # session goes on.
    p = shell_session(srv, f"{command}\n".encode())
    assert (p.returncode, p.stdout, p.stderr) == (
        143, b"start\n", b"rshell: command error: timed out after 1 s\n"), p
    p = shell_session(srv, f"{command}\necho after\n".encode())
    assert (p.returncode, p.stdout) == (0, b"start\nafter\n"), p

    with paramiko_client(srv) as client:
        transport = client.get_transport()
        assert transport is not None
        door.hear_exit_signals(transport)
        chan = transport.open_session(timeout=WAIT)
        chan.exec_command(command)
        out = bytearray()
        read_to_eof(chan, out)
        assert chan.status_event.wait(WAIT)
        err = chan.makefile_stderr("rb").read()
        assert (bytes(out), door.exit_signal(chan)) == (b"start\n", signal.SIGTERM), out
        assert err == b"rshell: command error: timed out after 1 s\n", err


GRACE = "trap 'echo term' TERM; echo start; while :; do sleep 0.1; done"


def test_output_during_the_kill_grace_is_delivered(start_server: Start, account: Path) -> None:
    """A command that outlives the timeout's SIGTERM keeps its output flowing
    through the kill grace until SIGKILL, both ways."""
    srv = start_both(start_server, account, "--timeout", "1")
    with connect(srv) as conn:
        r = conn.run(GRACE)
    assert (r.stdout, r.signal, r.error) == (
        b"start\nterm\n", signal.SIGKILL, "timed out after 1 s"), r
    p = ssh(srv, GRACE)
    # The command's own stderr (the shell may say its sleep was terminated),
    # then the server's reason.
    assert (p.returncode, p.stdout, p.stderr) == (
        255, b"start\nterm\n", r.stderr + b"rshell: command error: timed out after 1 s\n"), p


def test_output_limit_delivers_exactly_the_limit(start_server: Start, account: Path) -> None:
    srv = start_both(start_server, account, "--max-output", "1000")
    with connect(srv) as conn:
        r = conn.run("yes")
    assert (r.stdout, r.error) == (b"y\n" * 500, "output limit exceeded"), (len(r.stdout), r)
    assert r.exit_code is None and r.signal is not None, r

    p = ssh(srv, "yes")
    assert p.stdout == b"y\n" * 500, len(p.stdout)
    assert p.stderr == b"rshell: command error: output limit exceeded\n", p.stderr
    assert p.returncode == 255, p  # an exit-signal, as for native's r.signal


# ---- 5. signals ------------------------------------------------------------------------

TRAP = "trap 'echo got; exit 7' USR1; echo ready; while :; do sleep 0.1; done"


def test_client_signal_reaches_the_command(start_server: Start, account: Path) -> None:
    srv = start_both(start_server, account)

    with connect(srv) as conn:
        out = bytearray()
        senders: list[threading.Thread] = []

        def on_stdout(chunk: bytes | memoryview) -> None:
            out.extend(chunk)
            if b"ready\n" in out and not senders:
                sender = threading.Thread(target=conn.send_signal, args=(signal.SIGUSR1,))
                senders.append(sender)
                sender.start()

        r = conn.run(TRAP, on_stdout=on_stdout, timeout=WAIT)
        for sender in senders:
            sender.join(WAIT)
    assert (bytes(out), r.exit_code, r.signal, r.error) == (b"ready\ngot\n", 7, None, None), \
        (out, r)
    assert b"rshell:" not in r.stderr, r

    with paramiko_client(srv) as client:
        transport = client.get_transport()
        assert transport is not None
        chan = transport.open_session(timeout=WAIT)
        chan.exec_command(TRAP)
        got = bytearray()
        read_until(chan, b"ready\n", got)
        assert got == b"ready\n", got
        send_signal_request(chan, "USR1")
        read_to_eof(chan, got)
        assert chan.status_event.wait(WAIT), "no exit status after the signal"
        assert (bytes(got), chan.recv_exit_status()) == (b"ready\ngot\n", 7), got
        # The shell may report its sleep's death by the signal; the server says nothing.
        assert b"rshell:" not in chan.makefile_stderr("rb").read()


# ---- 6. audit records ------------------------------------------------------------------

EVENTS = ("connect", "auth", "command-start", "command-end", "disconnect")
#: Fields whose values may differ between two connections running the same thing.
PER_CONNECTION = {"time", "via", "peer", "session", "pid", "duration"}


def audit_both_ways(srv: ServerProcess, audit: Path) -> dict[str, dict[str, dict[str, object]]]:
    """Run ``echo hi`` once over each listener: via -> event kind -> the event."""

    def session_over(via: str) -> bool:
        return any(e["event"] == "disconnect" and e.get("via") == via
                   for e in audit_events(audit))

    with connect(srv) as conn:
        assert conn.run("echo hi").stdout == b"hi\n"
    assert wait_until(lambda: session_over("rshell"), CLEANUP), audit.read_text()
    assert ssh(srv, "echo hi").stdout == b"hi\n"
    assert wait_until(lambda: session_over("ssh"), CLEANUP), audit.read_text()

    events = audit_events(audit)
    by_via: dict[str, dict[str, dict[str, object]]] = {}
    for via in ("rshell", "ssh"):
        mine = [e for e in events if e.get("via") == via]
        assert [e["event"] for e in mine] == list(EVENTS), (via, mine)
        assert len({e["session"] for e in mine}) == 1, mine
        by_via[via] = {str(e["event"]): e for e in mine}
    return by_via


def test_audit_events_have_the_same_fields_both_ways(
    start_server: Start, account: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    srv = start_both(start_server, account, "--audit-log", str(audit))
    by_via = audit_both_ways(srv, audit)
    for kind in EVENTS:
        native, over_ssh = by_via["rshell"][kind], by_via["ssh"][kind]
        assert sorted(native) == sorted(over_ssh), (kind, native, over_ssh)
    for kind in ("auth", "command-start", "command-end"):
        native, over_ssh = by_via["rshell"][kind], by_via["ssh"][kind]
        same = {k: v for k, v in native.items() if k not in PER_CONNECTION}
        assert same == {k: over_ssh[k] for k in same}, (kind, native, over_ssh)
    end = by_via["ssh"]["command-end"]
    assert (end["command"], end["exit_code"], end["stdout_bytes"], end["error"]) == (
        "echo hi", 0, 3, None), end
    assert by_via["rshell"]["disconnect"]["commands"] == by_via["ssh"]["disconnect"]["commands"]


def test_disconnect_reason_is_audited_alike_both_ways(
    start_server: Start, account: Path, tmp_path: Path
) -> None:
    """The same end of a connection is recorded with the same reason: a client
    that closes after its command, and a connection ended by --max-commands.
    NOT COMMITTED: fails on the engine as of b8aa82b (see the report)."""
    audit = tmp_path / "audit.jsonl"
    srv = start_both(start_server, account, "--audit-log", str(audit), "--max-commands", "1")
    by_via = audit_both_ways(srv, audit)
    clean = {via: by_via[via]["disconnect"]["reason"] for via in by_via}
    assert clean["rshell"] == clean["ssh"], clean

    with connect(srv) as conn:
        assert conn.run("true").ok
        with pytest.raises(RshellError):
            conn.run("true")
    assert shell_session(srv, b"true\ntrue\n").returncode == 255

    def ends() -> list[dict[str, object]]:
        return [e for e in audit_events(audit) if e["event"] == "disconnect"][2:]

    assert wait_until(lambda: len(ends()) == 2, CLEANUP), audit.read_text()
    limit = {str(e["via"]): e["reason"] for e in ends()}
    assert limit["rshell"] == limit["ssh"], limit


def test_idle_timeout_ends_an_idle_line_session_like_a_native_session(
    start_server: Start, account: Path
) -> None:
    """--idle-timeout between commands: a native session is closed with
    'idle for 1 s without a command'; an SSH line session waiting for its next
    line must be too.  NOT COMMITTED: fails on the engine as of b8aa82b."""
    srv = start_both(start_server, account, "--idle-timeout", "1")
    with connect(srv) as conn:
        assert conn.run("true").ok
        srv.wait_for_log(r"idle for 1 s without a command", timeout=CLEANUP)
        with pytest.raises(RshellError):
            conn.run("echo after-idle")

    client = subprocess.Popen(ssh_argv(srv, extra=("-T",)), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert client.stdin is not None
        client.stdin.write(b"echo first\n")
        client.stdin.flush()
        try:
            client.wait(timeout=6)  # stdin held open: only the server can end it
        except subprocess.TimeoutExpired:
            pytest.fail("an idle SSH line session outlived --idle-timeout 1 by 5 s")
        assert client.stdout is not None and client.stderr is not None
        out, err = client.stdout.read(), client.stderr.read()
        assert out == b"first\n", out
        assert client.returncode != 0 and b"idle" in err, (client.returncode, err)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(WAIT)


def escape(pidfile: Path) -> str:
    """A command that starts ``sleep`` in a session of its own and returns
    once it is there (so the sweep, not the command's group, must end it),
    printing its pid."""
    f = shlex.quote(str(pidfile))
    return (f"setsid sh -c 'echo $$ > {f}; exec sleep 300' >/dev/null 2>&1 </dev/null & "
            f"while [ ! -s {f} ]; do sleep 0.01; done; cat {f}")


def test_escaped_process_is_swept_and_audited_both_ways(
    start_server: Start, account: Path, tmp_path: Path
) -> None:
    """A process that left its command's group (setsid) dies with its
    connection, and the sweep is logged and audited alike for both listeners."""
    audit = tmp_path / "audit.jsonl"
    srv = start_both(start_server, account, "--audit-log", str(audit))
    escaped: dict[str, int] = {}
    try:
        with connect(srv) as conn:
            escaped["rshell"] = int(conn.run(escape(tmp_path / "native.pid"),
                                             timeout=WAIT).stdout)
        escaped["ssh"] = int(ssh(srv, escape(tmp_path / "ssh.pid"), timeout=WAIT).stdout)

        def swept(via: str) -> list[dict[str, object]]:
            return [e for e in audit_events(audit)
                    if e["event"] == "sweep" and e.get("via") == via]

        for via, pid in escaped.items():
            assert wait_until(lambda v=via: swept(v), CLEANUP), (via, audit.read_text())
            assert swept(via)[0]["pids"] == [pid], swept(via)
            assert wait_until(lambda p=pid: pid_gone(p), CLEANUP), f"{via}: {pid} lives"
        assert sorted(swept("rshell")[0]) == sorted(swept("ssh")[0])
        assert len(re.findall(r"killed 1 process\(es\) that left their command's group",
                              srv.log)) == 2, srv.log
    finally:
        for pid in escaped.values():
            if not pid_gone(pid):
                os.kill(pid, signal.SIGKILL)


# ---- 7. auth-failure delay --------------------------------------------------------------


def test_unauthorized_key_is_refused_after_the_delay_both_ways(
    home: Path, start_server: Start, account: Path, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    srv = start_both(start_server, account, "--audit-log", str(audit))
    stranger = make_stranger(tmp_path / "stranger")
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", f"{stranger}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    marker = tmp_path / "ran"

    started = time.monotonic()
    with pytest.raises(AuthenticationFailed):
        connect(srv, identity=stranger)
    api_took = time.monotonic() - started

    started = time.monotonic()
    proc = cli(home, "-i", str(stranger), srv.address, "-c", f"touch {marker}", timeout=WAIT)
    cli_took = time.monotonic() - started
    assert proc.returncode == 255, proc
    assert proc.stderr.count(b"\n") == 1 and b"Traceback" not in proc.stderr, proc.stderr

    started = time.monotonic()
    p = ssh(srv, f"touch {marker}", key=stranger, timeout=WAIT)
    ssh_took = time.monotonic() - started
    assert p.returncode == 255 and b"Permission denied" in p.stderr, p

    assert min(api_took, cli_took, ssh_took) >= 0.9, (api_took, cli_took, ssh_took)
    assert not marker.exists()
    for via in ("rshell", "ssh"):
        srv.wait_for_log(rf"authentication failed for key {re.escape(fingerprint)}: "
                         rf".*\(via {via}\)")
    failed = [e for e in audit_events(audit) if e["event"] == "auth"]
    assert [e["via"] for e in failed] == ["rshell", "rshell", "ssh"], failed
    assert all(e["ok"] is False and e["key"] == fingerprint for e in failed), failed
    assert sorted(failed[0]) == sorted(failed[2]), failed
    assert failed[0]["reason"] == failed[2]["reason"], failed


# ---- 8. command error reasons -----------------------------------------------------------


@pytest.mark.parametrize(("command", "code", "stdout", "reason"), [
    ("exit 3", 3, b"", "exit status 3 with no output"),
    ("test -f /nonexistent", 1, b"", "exit status 1 with no output"),
    ("echo out; exit 5", 5, b"out\n", None),
], ids=["exit-3", "test-f", "output-then-exit-5"])
def test_plain_failure_reason_is_native_only(
    start_server: Start, account: Path, command: str, code: int, stdout: bytes,
    reason: str | None,
) -> None:
    """A plain non-zero exit: native Result.error says it was silent; over SSH
    the stderr is the command's own (empty), as with sshd; both have the code."""
    srv = start_both(start_server, account)
    with connect(srv) as conn:
        r = conn.run(command)
    assert (r.exit_code, r.signal, r.stdout, r.stderr, r.error) == (
        code, None, stdout, b"", reason), r
    p = ssh(srv, command)
    assert (p.returncode, p.stdout, p.stderr) == (code, stdout, b""), p


# ---- 9. the SSH line session ------------------------------------------------------------


def test_line_session_statuses_and_cd_match_native(start_server: Start, account: Path) -> None:
    """``ssh host < script`` keeps every failure (the status is the last
    command's, ``exit N`` ends it with N) and ``cd`` persists and expands as
    on a native connection."""
    srv = start_both(start_server, account)
    home = os.path.realpath(account).encode() + b"\n"
    missing = b"cd: /nonexistent: No such file or directory\n"
    with connect(srv) as conn:
        assert conn.run("false").exit_code == 1
        assert conn.run("exit 4").exit_code == 4
        assert conn.run("cd /tmp").exit_code == 0
        assert conn.run("pwd").stdout == b"/tmp\n"
        assert conn.run("cd $HOME").exit_code == 0
        assert conn.run("pwd").stdout == home
        assert conn.run("cd -").exit_code == 0
        assert conn.run("pwd").stdout == b"/tmp\n"
        r = conn.run("cd /nonexistent")
        assert (r.exit_code, r.stdout, r.stderr) == (1, b"", missing), r
        assert conn.run("pwd").stdout == b"/tmp\n"
    p = shell_session(srv, b"false\n")
    assert (p.returncode, p.stdout, p.stderr) == (1, b"", b""), p
    p = shell_session(srv, b"exit 4\n")
    assert (p.returncode, p.stdout, p.stderr) == (4, b"", b""), p
    p = shell_session(srv, b"cd /tmp\npwd\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"/tmp\n", b""), p
    p = shell_session(srv, b"cd /nonexistent\n")
    assert (p.returncode, p.stdout, p.stderr) == (1, b"", missing), p
    p = shell_session(srv, b"cd /tmp\ncd $HOME\npwd\ncd -\npwd\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, home + b"/tmp\n", b""), p


def test_export_and_unset_persist_both_ways(start_server: Start, account: Path) -> None:
    """A lone ``export NAME=VALUE``/``unset NAME`` changes the session's
    environment for the commands after it, as ``cd`` its directory
    (exec/variables.py), on a native connection and in an SSH line session
    alike; the server's own RSHELL_ variables stay out of reach."""
    srv = start_both(start_server, account)
    script = (b"export GREETING=hello PATH=$PATH:/opt/x\n"
              b"echo \"$GREETING\" ${PATH##*:}\n"
              b"unset GREETING\n"
              b"echo \"${GREETING-unset}\"\n"
              b"export 1BAD=x\n")
    bad = b"export: 1BAD: bad variable name\n"
    with connect(srv) as conn:
        results = [conn.run(line.decode()) for line in script.splitlines()]
        assert [r.exit_code for r in results] == [0, 0, 0, 0, 2], results
        assert results[1].stdout == b"hello /opt/x\n"
        assert results[3].stdout == b"unset\n"
        assert results[4].stderr == bad
        refused = conn.run("unset RSHELL_SESSION")
        assert refused.exit_code == 126, refused
        assert refused.error == "refused: environment variable RSHELL_SESSION is reserved " \
                                "for the server"
        assert conn.run("echo $RSHELL_SESSION").stdout.strip()
    p = shell_session(srv, script)
    assert (p.returncode, p.stdout, p.stderr) == (2, b"hello /opt/x\nunset\n", bad), p


def test_overlong_line_ends_the_channel_and_memory_returns(
    start_server: Start, account: Path
) -> None:
    """A line beyond the native frame cap (1 MiB): one clear stderr line,
    exit 255; the server never held the line (peak memory) and is back near
    where it was."""
    srv = start_both(start_server, account)
    pid = srv.proc.pid
    for _ in range(2):  # warm up: imports, the first thread of each kind
        assert shell_session(srv, b"echo warm\n").stdout == b"warm\n"
    baseline, peak = rss_kib(pid), rss_kib(pid, "VmHWM")

    # 2 MiB, and 16 MiB: the cap bounds what is read, not only what is kept.
    for size in (2 << 20, 16 << 20):
        p = shell_session(srv, b"x" * size)
        assert (p.returncode, p.stdout) == (255, b""), p
        assert p.stderr.count(b"\n") == 1, p.stderr
        assert re.match(rb"rshell: line .*long", p.stderr), p.stderr

    slack_kib = 16 << 10
    assert wait_until(lambda: rss_kib(pid) - baseline < slack_kib, CLEANUP, interval=0.1), (
        f"VmRSS {rss_kib(pid)} KiB after the long lines, {baseline} KiB before")
    assert rss_kib(pid, "VmHWM") - peak < slack_kib, (
        f"VmHWM {rss_kib(pid, 'VmHWM')} KiB after the long lines, {peak} KiB before")
    assert shell_session(srv, b"echo alive\n").stdout == b"alive\n"


# ---- 10. dropped SSH clients ------------------------------------------------------------

DROPPED = 50
BATCH = 10


def drop_batch(srv: ServerProcess, commands: list[str]) -> None:
    """Start one ssh client per command, wait until each receives output, then
    SIGKILL them all."""
    clients = [subprocess.Popen(ssh_argv(srv, c), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
               for c in commands]
    try:
        waiting = {c.stdout.fileno(): c for c in clients if c.stdout is not None}
        deadline = time.monotonic() + WAIT
        while waiting:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(waiting)} of {len(clients)} clients never got output"
            ready, _, _ = select.select(list(waiting), [], [], left)
            for fd in ready:
                assert os.read(fd, 65536), "a client's output ended before it was dropped"
                del waiting[fd]
    finally:
        for c in clients:
            c.kill()
        for c in clients:
            c.wait(WAIT)
            if c.stdout is not None:
                c.stdout.close()


def settled(pid: int) -> Usage:
    """The server's usage once it has stayed the same for 0.3 s."""
    last, since = usage(pid), time.monotonic()
    deadline = since + CLEANUP
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = usage(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.3:
            return last
    raise AssertionError(f"the server never settled: last {last}")


def test_fifty_dropped_ssh_clients_leave_nothing_behind(
    start_server: Start, account: Path
) -> None:
    srv = start_both(start_server, account)
    pid = srv.proc.pid
    drop_batch(srv, ["yes"])  # warm up every path the drops take
    assert ssh(srv, "echo warm").stdout == b"warm\n"
    baseline = settled(pid)
    assert not baseline.children and not baseline.descendants, baseline

    commands = ["yes", "cat /dev/zero"] * (DROPPED // 2)
    for at in range(0, DROPPED, BATCH):
        drop_batch(srv, commands[at:at + BATCH])

    def recovered() -> bool:
        now = usage(pid)
        return (now.fds <= baseline.fds and now.threads <= baseline.threads
                and not now.children and not now.descendants)

    assert wait_until(recovered, CLEANUP, interval=0.1), (
        f"after {DROPPED} dropped clients: {usage(pid)}; before: {baseline}")
    assert srv.proc.poll() is None
    assert ssh(srv, "echo alive").stdout == b"alive\n"
