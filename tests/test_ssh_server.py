"""The real OpenSSH client against ``rshell-server --ssh-bind``: exec requests
with exit codes, separate stderr, stdin with EOF, a checksummed stream, the
same host key and authorized_keys (forced command, refusal), a pty granted
(tests/test_ssh_terminal.py tries terminals in depth), a line-oriented
shell, ControlMaster multiplexing, and channel close ending the command's
process group."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import RSHELL, ServerProcess, base_env
from tests.proctools import group_members, wait_until

SSH = shutil.which("ssh")
pytestmark = pytest.mark.skipif(SSH is None, reason="OpenSSH client missing (.ci/run installs it)")


def start_ssh_server(start_server: Callable[..., ServerProcess], *flags: str) -> ServerProcess:
    """A server with an SSH listener too; its port as ``ssh_port``."""
    srv = start_server("--ssh-bind", "127.0.0.1:0", *flags)
    srv.ssh_port = int(srv.wait_for_log(r"ssh listening on \S+:(\d+)").group(1))  # type: ignore[attr-defined]
    return srv


@pytest.fixture
def ssh_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_ssh_server(start_server)


def ssh_argv(srv: ServerProcess, *args: str, key: Path | None = None,
             extra: tuple[str, ...] = ()) -> list[str]:
    """The real ssh client, non-interactive, pinned to a private known_hosts."""
    home = srv.home
    return [
        str(SSH), "-p", str(srv.ssh_port),  # type: ignore[attr-defined]
        "-i", str(key or home / "id_ed25519"), "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
        "-o", f"UserKnownHostsFile={home / 'ssh_known_hosts'}", "-o", "LogLevel=ERROR",
        "-F", "/dev/null", *extra, "tester@127.0.0.1", *args,
    ]


def ssh(
    srv: ServerProcess, *args: str, key: Path | None = None, input: bytes | None = None,
    timeout: float = 60, extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssh_argv(srv, *args, key=key, extra=extra), input=input,
                          capture_output=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def start_remote(
    srv: ServerProcess, pidfile: Path, command: str
) -> tuple[subprocess.Popen[bytes], int]:
    """An ssh client running ``echo $$ > PIDFILE; COMMAND``; (client, the
    command's process group) once the command has started."""
    client = subprocess.Popen(ssh_argv(srv, f"echo $$ > {pidfile}; {command}"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    started = wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20)
    assert started, "the command never started"
    return client, int(pidfile.read_text())


def test_exit_status_and_separate_streams(ssh_server: ServerProcess) -> None:
    proc = ssh(ssh_server, "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    assert proc.stdout == b"out\n"
    assert proc.stderr == b"err\n"


def test_stdin_is_forwarded_with_eof(ssh_server: ServerProcess) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    proc = ssh(ssh_server, "sha256sum", input=data)
    assert proc.returncode == 0
    assert proc.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_large_stream_arrives_whole(ssh_server: ServerProcess) -> None:
    """About 200 MB of deterministic output (seq), checksummed against the same
    output made locally: complete and in order."""
    count = 24_000_000
    proc = ssh(ssh_server, f"seq 1 {count}", timeout=120)
    local = subprocess.run(["seq", "1", str(count)], capture_output=True, check=True).stdout
    assert proc.returncode == 0
    assert len(proc.stdout) == len(local) > 190_000_000
    assert hashlib.sha256(proc.stdout).digest() == hashlib.sha256(local).digest()


def test_host_key_fingerprint_is_the_one_rshell_prints(ssh_server: ServerProcess) -> None:
    assert ssh(ssh_server, "true").returncode == 0
    listed = subprocess.run(
        ["ssh-keygen", "-lF", f"[127.0.0.1]:{ssh_server.ssh_port}",  # type: ignore[attr-defined]
         "-f", str(ssh_server.home / "ssh_known_hosts")],
        capture_output=True, text=True, check=True,
    ).stdout
    printed = subprocess.run(
        [RSHELL, "fingerprint", str(ssh_server.home / "server" / "host_key.pub")],
        capture_output=True, text=True, check=True, env=base_env(ssh_server.home),
    ).stdout
    assert ssh_server.fingerprint in listed
    assert ssh_server.fingerprint in printed


def test_unauthorized_key_is_refused(ssh_server: ServerProcess, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)
    marker = tmp_path / "ran"
    proc = ssh(ssh_server, f"touch {marker}", key=stranger)
    assert proc.returncode == 255
    assert b"Permission denied" in proc.stderr
    assert not marker.exists()
    ssh_server.wait_for_log(
        r"authentication failed for key SHA256:\S+: key not in authorized_keys \(via ssh\)")


def test_forced_command_applies_over_ssh(ssh_server: ServerProcess) -> None:
    keys_file = ssh_server.home / "server" / "authorized_keys"
    line = keys_file.read_text().strip()
    keys_file.write_text(f'command="echo forced:$RSHELL_ORIGINAL_COMMAND" {line}\n')
    proc = ssh(ssh_server, "echo asked")
    assert proc.stdout == b"forced:echo asked\n"


def test_pty_is_granted(ssh_server: ServerProcess) -> None:
    proc = ssh(ssh_server, "tty", extra=("-tt",))
    assert proc.returncode == 0
    assert re.fullmatch(rb"/dev/pts/\d+\r\n", proc.stdout), proc.stdout
    assert proc.stderr == b""


def test_shell_request_is_a_line_session_where_cd_persists(ssh_server: ServerProcess) -> None:
    proc = ssh(ssh_server, input=b"cd /tmp\npwd\necho $((6*7))\n")
    assert proc.returncode == 0
    assert proc.stdout == b"/tmp\n42\n"


def test_controlmaster_multiplexes_channels(ssh_server: ServerProcess, tmp_path: Path) -> None:
    control = tmp_path / "cm"
    opts = ("-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
            "-o", "ControlPersist=30")
    try:
        outputs = [ssh(ssh_server, f"echo channel-{i}", extra=opts).stdout for i in range(3)]
        assert outputs == [b"channel-0\n", b"channel-1\n", b"channel-2\n"]
        assert len(re.findall(r"ssh connection from", ssh_server.log)) == 1
    finally:
        ssh(ssh_server, extra=(*opts, "-O", "exit"))
    ssh_server.wait_for_log(r"disconnected after 3 command\(s\)")


def test_closing_the_channel_ends_the_process_group(
    ssh_server: ServerProcess, tmp_path: Path
) -> None:
    client, pgid = start_remote(ssh_server, tmp_path / "pid", "sleep 300 & sleep 300")
    client.kill()
    client.wait()
    assert wait_until(lambda: not group_members(pgid), 15), \
        "the command's group survived the channel"


def test_port_forwarding_is_refused(ssh_server: ServerProcess) -> None:
    """Everything but exec and shell is refused explicitly: a remote forward
    fails, and with ExitOnForwardFailure the client says so and gives up."""
    proc = ssh(ssh_server, "true",
               extra=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"))
    assert proc.returncode == 255
    assert b"forwarding failed" in proc.stderr.lower()


def test_ssh_shares_the_connection_limit(start_server: Callable[..., ServerProcess]) -> None:
    """One admission count for both protocols: with --max-connections 1 and a
    native session open, an ssh client is turned away; once it closes, admitted."""
    from tests.conftest import connect

    srv = start_ssh_server(start_server, "--max-connections", "1")
    with connect(srv) as conn:
        assert conn.run("true").ok
        refused = ssh(srv, "echo in")
        assert refused.returncode == 255 and refused.stdout == b""
    srv.wait_for_log(r"disconnected after 1 command")
    # The slot is given back just after that log line: poll, bounded.
    assert wait_until(lambda: ssh(srv, "echo in").stdout == b"in\n", 10)


def test_sigterm_ends_ssh_commands_after_the_grace(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A graceful stop covers SSH channels too: after --shutdown-grace the
    command's group is terminated, the client hears of it, the server exits 0."""
    import signal

    srv = start_ssh_server(start_server, "--shutdown-grace", "1")
    client, pgid = start_remote(srv, tmp_path / "pid", "exec sleep 300")
    started = time.monotonic()
    assert srv.stop(signal.SIGTERM, timeout=20) == 0
    assert client.wait(20) != 0
    assert time.monotonic() - started < 15
    assert not group_members(pgid)


def test_data_arriving_as_a_channel_closes_never_reaches_its_pipe() -> None:
    """paramiko writes a byte to a channel's fileno() pipe for each delivery,
    racing close() (which closes that pipe): under load the write hit the
    closed descriptor, EBADF killed the whole transport ("Socket exception:
    Bad file descriptor"), and a client still sending saw a broken pipe.
    Once unwatched, as both sides do before closing, deliveries no longer
    touch the pipe."""
    import select

    import paramiko

    from rshell.ssh._paramiko import unwatch_channel

    channel = paramiko.Channel(1)
    pipe = channel.fileno()
    unwatch_channel(channel)
    channel.in_buffer.feed(b"late data")
    channel.in_stderr_buffer.feed(b"late stderr")
    channel.in_buffer.close()  # EOF: paramiko sets the event then too
    assert select.select([pipe], [], [], 0)[0] == []
    assert channel.recv(64) == b"late data"  # the data itself is still there
