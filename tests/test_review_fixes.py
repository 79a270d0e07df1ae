"""One test (or a few) per review finding fixed in ea4af3a, through the real
``rshell`` CLI and a real ``rshell-server`` on 127.0.0.1 wherever possible.

Each test names the finding it guards; a regression of the fix makes it fail.
Every wait is a bounded poll or expect, never a bare sleep.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import select
import shlex
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

import rshell
from rshell.errors import UsageError
from tests.conftest import (
    CLIENT_MODE,
    RSHELL,
    RSHELL_SERVER,
    ServerProcess,
    base_env,
    cli,
    connect,
)
from tests.proctools import describe, group_members, kill_group, pid_gone, wait_until

StartServer = Callable[..., ServerProcess]


# ---- helpers ---------------------------------------------------------------------


def run_client(
    home: Path, *args: str | bytes, input: bytes | None = None,
    env: dict[str, str] | None = None, timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:
    """``cli`` with extra environment and byte arguments (argv need not be UTF-8)."""
    return subprocess.run(
        [RSHELL, *CLIENT_MODE, *args], input=input, capture_output=True,
        env={**base_env(home), **(env or {})}, timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def one_line_error(stderr: bytes, prog: str = "rshell") -> str:
    """The single ``prog:`` line a user sees for a failure; no traceback."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith(f"{prog}:"), text
    return lines[0]


def errors_without_warnings(stderr: bytes) -> str:
    """The stderr lines that are not ``WARNING`` lines: the error proper."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    kept = [ln for ln in text.splitlines() if ln.strip() and "WARNING" not in ln]
    assert len(kept) == 1, text
    assert kept[0].startswith("rshell:"), text
    return kept[0]


def read_line(fd: int, timeout: float) -> bytes:
    """One line from ``fd`` within ``timeout`` (b"" if none came: the test fails)."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return data
        chunk = os.read(fd, 1)
        if not chunk:
            return data
        data += chunk
    return data


def read_pid(path: Path, timeout: float = 10) -> int:
    """The pid a remote command wrote to ``path`` first thing."""
    assert wait_until(lambda: path.read_text().strip().isdigit() if path.exists() else False,
                      timeout), f"{path} never got a pid"
    return int(path.read_text().strip())


def prompt_rx(server: ServerProcess) -> str:
    user = pwd.getpwuid(os.getuid()).pw_name
    host = server.address.rsplit(":", 1)[0]
    return re.escape(f"{user}@{host}:~$ ")


@pytest.fixture
def spawned() -> Iterator[list[pexpect.spawn]]:
    """pexpect children to kill at teardown, whatever the test's outcome."""
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        child.close(force=True)


# ---- 1. --no-auth on the client; warnings for an unauthenticating server ----------


def test_no_auth_client_with_no_auth_server_works_and_warns(
    home: Path, start_server: StartServer
) -> None:
    """A client may knowingly talk to a --no-auth server, loudly."""
    srv = start_server("--no-auth")
    proc = cli(home, srv.address, "--no-auth", "-c", "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ok\n"
    assert re.search(rb"^rshell: WARNING: --no-auth", proc.stderr, re.M), proc.stderr


def test_no_auth_client_against_key_server_is_refused(home: Path, server: ServerProcess) -> None:
    """Offering no key to a server that wants one fails fast and says why."""
    proc = cli(home, server.address, "--no-auth", "-c", "echo ok")
    assert proc.returncode == 255, proc.stderr
    assert proc.stdout == b""
    assert "requires a key" in errors_without_warnings(proc.stderr)


def test_key_client_against_no_auth_server_warns(home: Path, start_server: StartServer) -> None:
    """A server that never asked who we are is worth a warning: anyone gets in."""
    srv = start_server("--no-auth")
    proc = cli(home, srv.address, "-c", "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ok\n"
    assert re.search(rb"^rshell: WARNING: .*did not ask who you are", proc.stderr, re.M), \
        proc.stderr


def test_no_tls_client_warns(home: Path, start_server: StartServer) -> None:
    """Plain TCP works only when asked for, and never silently."""
    srv = start_server("--no-tls")
    proc = cli(home, srv.address, "--no-tls", "-c", "echo ok")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ok\n"
    assert re.search(rb"^rshell: WARNING: --no-tls: .*not authenticated.*encrypted",
                     proc.stderr, re.M), proc.stderr


# ---- 2. --json is ASCII-safe -------------------------------------------------------


def test_json_survives_undecodable_bytes_and_strict_stdout(
    home: Path, server: ServerProcess
) -> None:
    """A command text and output that are not UTF-8, printed to a strict UTF-8
    stdout, still make one valid JSON line (it used to crash the encoder)."""
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    one_shot = run_client(home, server.address, "--json", "-c",
                          b"printf '\\377'; : \xff", env=strict)
    assert one_shot.returncode == 0, one_shot.stderr
    assert b"Traceback" not in one_shot.stderr
    lines = one_shot.stdout.splitlines()
    assert len(lines) == 1, one_shot.stdout
    assert all(b < 0x80 for b in one_shot.stdout), one_shot.stdout
    record = json.loads(lines[0])
    assert record["stdout"] == "\\xff"
    assert record["exit_code"] == 0
    assert record["command"].endswith(": \udcff")

    argv = run_client(home, server.address, "--json", "--", "echo", b"\xfe-arg", env=strict)
    assert argv.returncode == 0, argv.stderr
    assert b"Traceback" not in argv.stderr
    assert json.loads(argv.stdout)["stdout"] == "\\xfe-arg\n"

    batch = run_client(home, server.address, "--json", input=b"echo a\nprintf '\\377'\n",
                       env=strict)
    assert batch.returncode == 0, batch.stderr
    records = [json.loads(line) for line in batch.stdout.splitlines()]
    assert [r["stdout"] for r in records] == ["a\n", "\\xff"]


# ---- 3. SIGHUP stops the server gracefully -------------------------------------------


def test_sighup_is_a_graceful_stop(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """A hang-up (closed terminal) lets the running command finish and deliver
    its output, then the server exits 0 and leaves no process behind."""
    pidfile = tmp_path / "pid"
    client = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, server.address, "-c", f"echo $$ > {pidfile}; sleep 1; echo done"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=base_env(home),
    )
    try:
        pgid = read_pid(pidfile)
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log(r"SIGHUP received: shutting down")
        out, err = client.communicate(timeout=15)
        assert server.proc.wait(timeout=15) == 0, server.log
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert out == b"done\n", err
    assert client.returncode == 0, err
    survivors = group_members(pgid)
    assert not survivors, kill_group(pgid)
    assert pid_gone(pgid)


# ---- 4. StrictModes for authorized_keys ------------------------------------------------


def test_authorized_keys_writable_by_others_is_ignored(
    home: Path, server: ServerProcess
) -> None:
    """Anyone who can edit authorized_keys (or swap it in its directory) could
    let themselves in: such a file admits nobody, and says so in the log; the
    check runs on every login, so fixing the mode admits again."""
    state = home / "server"
    keys = state / "authorized_keys"
    assert cli(home, server.address, "-c", "true").returncode == 0

    keys.chmod(0o666)
    refused = cli(home, server.address, "-c", "true")
    assert refused.returncode == 255, refused.stderr
    server.wait_for_log(rf"ERROR .*{re.escape(str(keys))} is writable by others .*mode 0666")

    keys.chmod(0o600)
    accepted = cli(home, server.address, "-c", "echo in")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout == b"in\n"

    state.chmod(0o777)
    try:
        refused = cli(home, server.address, "-c", "true")
        assert refused.returncode == 255, refused.stderr
        server.wait_for_log(rf"ERROR .*\({re.escape(str(state))} has mode 0777\)")
    finally:
        state.chmod(0o700)
    assert cli(home, server.address, "-c", "true").returncode == 0


# ---- 5. passphrases only from the terminal -------------------------------------------


def test_passphrase_is_never_read_from_stdin(home: Path, server: ServerProcess,
                                             tmp_path: Path) -> None:
    """Without a terminal there is nobody to ask: stdin is the command's data
    and must not be eaten as a passphrase (nor echoed by getpass's fallback)."""
    key = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-C", "locked",
                    "-f", str(key)], check=True, capture_output=True, timeout=30)
    client = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, server.address, "-i", str(key), "-c", "cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=base_env(home), start_new_session=True,  # no controlling terminal
    )
    try:
        out, err = client.communicate(b"pw\nthe data\n", timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 255, err
    line = one_line_error(err)
    assert "no passphrase was given" in line
    assert b"GetPassWarning" not in err
    assert b"the data" not in out + err


# ---- 6. one-line errors for local failures ------------------------------------------------


def test_closed_stdin_is_no_crash(home: Path, server: ServerProcess) -> None:
    """``rshell h -c true <&-`` (no fd 0 at all) runs the command."""
    script = f"exec <&-; exec {shlex.join([RSHELL, *CLIENT_MODE, server.address])} -c 'echo ran'"
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, env=base_env(home),
                          timeout=30)
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ran\n"


def test_server_bad_state_dir_is_one_line(home: Path) -> None:
    """A state directory that cannot be created is a message, not a traceback."""
    proc = subprocess.run([RSHELL_SERVER, "--bind", "127.0.0.1:0", "--state-dir", "/proc/foo"],
                          capture_output=True, env=base_env(home), stdin=subprocess.DEVNULL,
                          timeout=30)
    assert proc.returncode != 0
    line = one_line_error(proc.stderr, "rshell-server")
    assert "/proc/foo" in line


def test_known_hosts_directory_is_one_line(home: Path, server: ServerProcess,
                                           tmp_path: Path) -> None:
    """A known_hosts path that is a directory: exit 255 and one line naming it."""
    proc = cli(home, server.address, "--known-hosts", str(tmp_path), "-c", "true")
    assert proc.returncode == 255, proc.stderr
    assert str(tmp_path) in one_line_error(proc.stderr)


def test_undecodable_batch_input_runs_every_line(home: Path, server: ServerProcess) -> None:
    """A batch line that is not UTF-8 reaches the remote shell byte for byte,
    under a strict local encoding, and the lines around it still run."""
    proc = run_client(home, server.address, input=b"echo a\n\xff\necho b\n",
                      env={"PYTHONIOENCODING": "utf-8:strict"})
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == b"a\nb\n", proc.stderr
    # The remote shell saw the raw byte as a command name and did not find it.
    assert re.search(rb"\xff.*not found", proc.stderr), proc.stderr


# ---- 7. argument checks ------------------------------------------------------------------


def test_fingerprint_of_missing_path_says_missing(home: Path) -> None:
    """A path (it has a '/') is a file to read, never a host name to resolve."""
    proc = cli(home, "fingerprint", "/nonexistent/key")
    assert proc.returncode != 0
    line = one_line_error(proc.stderr)
    assert "/nonexistent/key" in line
    assert re.search(r"not found|no such file", line, re.I), line
    assert not re.search(r"resolve|name or service|getaddrinfo|connect", line, re.I), line


def test_keygen_bad_ecdsa_size_is_usage_error(home: Path, tmp_path: Path) -> None:
    """An impossible key size is the caller's mistake (2), and writes nothing."""
    target = tmp_path / "k"
    proc = cli(home, "keygen", "-t", "ecdsa", "-b", "2048", "-f", str(target))
    assert proc.returncode == 2, proc.stderr
    assert "2048" in one_line_error(proc.stderr, "rshell")
    assert not target.exists()


def test_port_option_contradicting_target_is_usage_error(
    home: Path, server: ServerProcess
) -> None:
    """``-p 1 host:PORT`` is ambiguous: refused (2), while an agreeing -p works."""
    proc = cli(home, "-p", "1", server.address, "-c", "true")
    assert proc.returncode == 2, proc.stderr
    assert "contradicts" in one_line_error(proc.stderr)
    same = cli(home, "-p", str(server.port), server.address, "-c", "echo ok")
    assert same.returncode == 0, same.stderr
    assert same.stdout == b"ok\n"


# ---- 8. ssh-style command words ---------------------------------------------------------


def test_command_words_after_target(home: Path, server: ServerProcess) -> None:
    """``rshell h ls -d /`` runs ``ls -d /``: its dashes are its own, as with ssh."""
    proc = cli(home, server.address, "ls", "-d", "/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"/\n"

    dash_c = cli(home, server.address, "-c", "echo x")
    assert dash_c.returncode == 0, dash_c.stderr
    assert dash_c.stdout == b"x\n"

    port_first = cli(home, "-p", str(server.port), "127.0.0.1", "echo", "a", "b")
    assert port_first.returncode == 0, port_first.stderr
    assert port_first.stdout == b"a b\n"


def test_clustered_short_options_after_target(home: Path, server: ServerProcess) -> None:
    """``rshell h -qc CMD``: a cluster ending in a value option takes the next
    word as its value, after the target as before it (click reads it so)."""
    before = cli(home, "-qc", "echo hi", server.address)
    assert before.returncode == 0, before.stderr
    assert before.stdout == b"hi\n"
    after = cli(home, server.address, "-qc", "echo hi")
    assert after.returncode == 0, after.stderr
    assert after.stdout == b"hi\n"


# ---- 9. batch lines are streamed -------------------------------------------------------


def test_batch_line_runs_before_stdin_ends(home: Path, server: ServerProcess) -> None:
    """A batch from a pipe runs each line as it arrives (it used to wait for EOF),
    so a producer can react to a command's output before sending the next."""
    client = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, server.address], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=base_env(home),
    )
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write(b"echo first\n")
        client.stdin.flush()
        assert read_line(client.stdout.fileno(), 10) == b"first\n"
        client.stdin.write(b"echo second\n")
        client.stdin.flush()
        assert read_line(client.stdout.fileno(), 10) == b"second\n"
        client.stdin.close()
        assert client.wait(timeout=10) == 0
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for pipe in (client.stdin, client.stdout, client.stderr):
            if pipe is not None:
                pipe.close()


# ---- 10. Ctrl-C three times aborts locally -----------------------------------------------


_DEAF = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: open(sys.argv[2], "a").write("i"))
open(sys.argv[1], "w").write(str(os.getpid()))
while True:
    time.sleep(30)
"""


def test_three_ctrl_c_abort_locally(home: Path, server: ServerProcess, tmp_path: Path,
                                    spawned: list[pexpect.spawn]) -> None:
    """A command that shrugs off SIGINT cannot hold the user hostage: the first
    two presses are forwarded, the third (within 2 s) aborts with 130, and the
    server then terminates the command."""
    pidfile, ints = tmp_path / "pid", tmp_path / "ints"
    remote = shlex.join([sys.executable, "-c", _DEAF, str(pidfile), str(ints)])
    child = pexpect.spawn(RSHELL, [*CLIENT_MODE, server.address, "-c", f"exec {remote}"],
                          env=base_env(home), timeout=10)
    spawned.append(child)
    pid = read_pid(pidfile)
    try:
        def seen() -> int:
            return len(ints.read_text()) if ints.exists() else 0

        def press_forwarded(n: int) -> None:
            # Each press handled (forwarded to the command) before the next: two
            # signals pending at once would merge into one.
            child.send("\x03")
            assert wait_until(lambda: seen() >= n, 5), f"press {n} not forwarded"
            assert seen() == n

        press_forwarded(1)
        press_forwarded(2)
        started = time.monotonic()
        child.send("\x03")
        child.expect(pexpect.EOF, timeout=5)
        child.close()
        assert time.monotonic() - started < 5
        assert child.exitstatus == 130, (child.exitstatus, child.signalstatus)
        assert wait_until(lambda: pid_gone(pid), 10), describe(group_members(pid))
        assert ints.read_text() == "ii"  # the third press stayed local
    finally:
        kill_group(pid)


# ---- 11. API: env is checked locally ----------------------------------------------------


def test_bad_env_is_refused_locally_and_connection_survives(server: ServerProcess) -> None:
    """A non-str env value is the caller's bug: UsageError here, not a dropped
    connection (the server would have cut it off)."""
    with connect(server) as conn:
        with pytest.raises(rshell.RshellError) as caught:
            conn.run("true", env={"A": 1})  # type: ignore[dict-item]
        assert isinstance(caught.value, UsageError)
        with pytest.raises(UsageError):
            conn.run("true", env={"A=B": "x"})
        result = conn.run("echo $A", env={"A": "1"})
        assert result.ok
        assert result.stdout == b"1\n"


# ---- 12. a login-like environment -------------------------------------------------------


def test_commands_get_login_environment(home: Path, start_server: StartServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's own environment (its RSHELL_HOME, any secret) stays out;
    what a login sets is there."""
    monkeypatch.setenv("RSHELL_TEST_SECRET", "hunter2")
    srv = start_server()
    script = ("echo ${RSHELL_HOME:-unset} ${RSHELL_TEST_SECRET:-unset}; "
              "echo $HOME; echo $USER; echo $LOGNAME; echo $SHELL; echo $PATH; "
              "echo $RSHELL_CLIENT")
    proc = cli(home, srv.address, "-c", script)
    assert proc.returncode == 0, proc.stderr
    leaked, home_dir, user, logname, shell, path, client = proc.stdout.decode().splitlines()
    me = pwd.getpwuid(os.getuid())
    assert leaked == "unset unset"
    assert home_dir == me.pw_dir
    assert user == logname == me.pw_name
    assert shell == "/bin/sh"
    assert path and "/bin" in path.split(":")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", client), client


# ---- 13. first start provisions, second start reuses -------------------------------------


def test_first_start_provisions_keys_once(home: Path, start_server: StartServer) -> None:
    """A fresh home gets a private host key, the user's key pair and an
    authorized_keys holding exactly that key, each logged once; a restart
    reuses them all."""
    first = start_server()
    host_key = home / "server" / "host_key"
    identity = home / "id_ed25519"
    authorized = home / "server" / "authorized_keys"
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    pub = Path(f"{identity}.pub").read_text().strip()
    assert authorized.read_text() == pub + "\n"
    first.wait_for_log(r"created .*authorized_keys")
    for pattern in (r"generated host key", r"generated your rshell key pair",
                    r"created .*authorized_keys"):
        hits = [ln for ln in first.log.splitlines() if re.search(pattern, ln)]
        assert len(hits) == 1, (pattern, first.log)
    assert first.stop() == 0
    identity_before = identity.read_bytes()

    second = start_server()
    assert second.fingerprint == first.fingerprint
    assert identity.read_bytes() == identity_before
    assert authorized.read_text() == pub + "\n"
    assert not re.search(r"generated|created", second.log), second.log
    assert cli(home, second.address, "-c", "true").returncode == 0


# ---- 14. the prompt reconnects after an idle timeout -------------------------------------


def test_prompt_reconnects_after_idle_timeout(home: Path, start_server: StartServer,
                                              spawned: list[pexpect.spawn]) -> None:
    """A user who left the prompt for longer than --idle-timeout types a command
    and it runs (on a fresh session), rather than a protocol error ending rshell."""
    srv = start_server("--idle-timeout", "1")
    child = pexpect.spawn(RSHELL, [*CLIENT_MODE, srv.address], env=base_env(home),
                          timeout=10, encoding="utf-8", dimensions=(24, 250))
    spawned.append(child)
    child.logfile_read = transcript = io.StringIO()
    child.expect(prompt_rx(srv))
    srv.wait_for_log(r"disconnected .*idle", timeout=10)
    child.sendline('echo ba""ck')
    child.expect("reconnecting")
    child.expect(r"back\r\n")
    child.expect(prompt_rx(srv))
    # The reconnect notice is the only word from rshell itself.
    assert re.findall(r"rshell: [^\r\n]*", transcript.getvalue()) == [
        "rshell: the session was idle too long; reconnecting"
    ], transcript.getvalue()


def test_prompt_reconnect_keeps_the_directory(home: Path, start_server: StartServer,
                                              tmp_path: Path,
                                              spawned: list[pexpect.spawn]) -> None:
    """The fresh session starts where the user was, not back in the home."""
    srv = start_server("--idle-timeout", "1")
    where = tmp_path / "work dir"
    where.mkdir()
    child = pexpect.spawn(RSHELL, [*CLIENT_MODE, srv.address], env=base_env(home),
                          timeout=10, encoding="utf-8", dimensions=(24, 250))
    spawned.append(child)
    child.expect(prompt_rx(srv))
    child.sendline(f"cd {shlex.quote(str(where))}")
    child.expect(re.escape(f":{where}$ "))
    srv.wait_for_log(r"disconnected .*idle", timeout=10)
    child.sendline("pwd")
    child.expect("reconnecting")
    child.expect(re.escape(f"\r\n{where}\r\n"))
    child.expect(re.escape(f":{where}$ "))
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# ---- found along the way ------------------------------------------------------------------


def test_cd_keeps_quoted_dollar_literal(home: Path, server: ServerProcess,
                                        tmp_path: Path) -> None:
    """``cd 'a$HOME'`` names a directory with a dollar in it, as in any shell:
    single quotes stop expansion (the reconnecting prompt relies on it, as it
    restores the directory with ``cd <shlex.quote(cwd)>``)."""
    odd = tmp_path / "we$HOME"
    odd.mkdir()
    proc = cli(home, server.address, input=f"cd {shlex.quote(str(odd))}\npwd\n".encode())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode() == f"{odd}\n"
