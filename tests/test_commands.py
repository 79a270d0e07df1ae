"""Command behaviour end to end: real server subprocess, real loopback socket.

Mostly through the Python API (``connect``), with the CLI where the exit
status itself is the contract.  Every wait is bounded; timing assertions
measure the server's behaviour (remote sleeps), never local sleeps.
"""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import re
import shlex
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rshell
from rshell.errors import UsageError
from tests.conftest import ServerProcess, cli, connect

MB = 1024 * 1024


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _remote_sha256(result: Any) -> str:
    """The hex digest from ``sha256sum`` output (``<hex>  -``)."""
    assert result.ok, result
    return str(result.stdout.split()[0].decode())


# ---- exit status and signals ------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_propagates(server: ServerProcess, code: int) -> None:
    """The remote status reaches the caller unchanged, 255 included (it is not a
    connection failure when the command says so)."""
    with connect(server) as conn:
        r = conn.run(f"echo x; exit {code}")
    assert r.exit_code == code
    assert r.signal is None
    assert r.ok is (code == 0)
    assert bool(r) is (code == 0)
    assert r.exit_status == code


@pytest.mark.parametrize("code", [1, 3, 255])
def test_cli_exit_code_propagates(home: Path, server: ServerProcess, code: int) -> None:
    """Scripts rely on ``rshell -c`` exiting with the remote status."""
    proc = cli(home, server.address, "-c", f"echo x; exit {code}")
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == b"x\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_sets_result_signal(server: ServerProcess, sig: int) -> None:
    """A command ended by a signal reports the signal, not an exit code."""
    with connect(server) as conn:
        r = conn.run(f"echo before; kill -{sig} $$; echo after")
    assert r.signal == sig
    assert r.exit_code is None
    assert r.stdout == b"before\n"
    assert not r.ok
    assert r.exit_status == 128 + sig


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_cli_signal_exit_status(home: Path, server: ServerProcess, sig: int) -> None:
    """As a shell does: killed by signal N means exit status 128+N."""
    proc = cli(home, server.address, "-c", f"kill -{sig} $$")
    assert proc.returncode == 128 + sig, proc.stderr
    assert b"Traceback" not in proc.stderr


def test_signal_with_no_output_is_a_command_error(server: ServerProcess) -> None:
    """SPEC §3: a command that dies silently carries a reason."""
    with connect(server) as conn:
        r = conn.run("kill -KILL $$")
    assert r.signal == signal.SIGKILL
    assert r.error is not None and "KILL" in r.error


# ---- stdout and stderr -------------------------------------------------------------


def test_stdout_and_stderr_stay_separate(server: ServerProcess) -> None:
    """Interleaved writes to both streams land on their own stream, in order."""
    script = 'i=0; while [ $i -lt 200 ]; do echo "out$i"; echo "err$i" >&2; i=$((i+1)); done'
    with connect(server) as conn:
        r = conn.run(script)
    assert r.ok, r
    assert r.stdout.decode().splitlines() == [f"out{i}" for i in range(200)]
    assert r.stderr.decode().splitlines() == [f"err{i}" for i in range(200)]


def test_binary_output_is_exact(server: ServerProcess) -> None:
    """Output is bytes, not text: every byte value survives the trip."""
    with connect(server) as conn:
        r = conn.run(r"printf '\000\001\377\376\n\r'")
    assert r.stdout == b"\x00\x01\xff\xfe\n\r"


# ---- command error (SPEC §3) --------------------------------------------------------


def test_silent_failure_is_a_command_error(server: ServerProcess) -> None:
    """Non-zero exit with nothing written: the user gets a reason."""
    with connect(server) as conn:
        r = conn.run("exit 1")
    assert r.exit_code == 1
    assert r.error == "exit status 1 with no output"
    assert not r.ok


def test_failure_with_output_is_not_a_command_error(server: ServerProcess) -> None:
    """The command said why it failed; no extra reason is invented."""
    with connect(server) as conn:
        r = conn.run("echo 'it broke' >&2; exit 1")
    assert r.exit_code == 1
    assert r.error is None
    assert r.stderr == b"it broke\n"


def test_silent_success_is_not_an_error(server: ServerProcess) -> None:
    """``true`` writes nothing and succeeds: that is fine."""
    with connect(server) as conn:
        r = conn.run("true")
    assert r.ok is True
    assert r.error is None
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"", b"")


def test_command_not_found(server: ServerProcess) -> None:
    """The shell's 127 is named, whatever the shell printed."""
    with connect(server) as conn:
        r = conn.run("no-such-command-rshell-test")
    assert r.exit_code == 127
    assert r.error == "command not found"
    assert b"no-such-command-rshell-test" in r.stderr


def test_nonexistent_cwd_cannot_start(server: ServerProcess, tmp_path: Path) -> None:
    """A command that cannot start reports why, as 127, and the session lives on."""
    missing = tmp_path / "does-not-exist"
    with connect(server) as conn:
        r = conn.run("echo should-not-run", cwd=str(missing))
        assert r.exit_code == 127
        assert r.error is not None and r.error
        assert r.stdout == b""
        assert not r.ok
        assert conn.run("echo alive").stdout == b"alive\n"


def test_cli_reports_command_error_on_stderr(home: Path, server: ServerProcess) -> None:
    """README: ``command error: REASON`` on stderr where the server stopped the
    command (or a signal the user did not send ended it); a plain silent
    failure is its exit status alone (the reason stays in --json)."""
    proc = cli(home, server.address, "-c", "exit 1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, b"", b"")
    stopped = cli(home, server.address, "--timeout", "0.5", "-c", "exec sleep 30")
    assert stopped.stderr.decode().strip() == "rshell: command error: timed out after 0.5 s"


# ---- working directory ----------------------------------------------------------------


def test_cd_persists_across_commands(server: ServerProcess, tmp_path: Path) -> None:
    """The session, not the command, owns the directory."""
    target = tmp_path / "work dir"
    (target / "sub").mkdir(parents=True)
    with connect(server) as conn:
        r = conn.run(f"cd '{target}'")
        assert r.ok, r
        assert conn.run("pwd -P").stdout.decode().strip() == os.path.realpath(target)
        assert conn.run("cd sub").ok  # relative to the session's directory
        assert conn.run("pwd -P").stdout.decode().strip() == os.path.realpath(target / "sub")
        assert conn.cwd == str(target / "sub")


def test_cd_without_argument_goes_home(server: ServerProcess, tmp_path: Path) -> None:
    """Plain ``cd`` returns to the session's home, as in a shell."""
    with connect(server) as conn:
        start = conn.run("pwd -P").stdout.decode().strip()
        assert conn.run(f"cd '{tmp_path}'").ok
        assert conn.run("pwd -P").stdout.decode().strip() == os.path.realpath(tmp_path)
        assert conn.run("cd").ok
        home_now = conn.run("pwd -P").stdout.decode().strip()
    # The account's home (the password database's), whatever this process's HOME says.
    assert home_now == os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir)
    assert home_now == start


def test_cd_dash_goes_back(server: ServerProcess, tmp_path: Path) -> None:
    """``cd -`` returns to the previous directory."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    with connect(server) as conn:
        assert conn.run(f"cd '{first}'").ok
        assert conn.run(f"cd '{second}'").ok
        assert conn.run("cd -").ok
        assert conn.run("pwd -P").stdout.decode().strip() == os.path.realpath(first)
        assert conn.run("cd -").ok
        assert conn.run("pwd -P").stdout.decode().strip() == os.path.realpath(second)


def test_cd_to_missing_directory_fails_and_keeps_cwd(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A failed ``cd`` says why on stderr and leaves the session where it was."""
    with connect(server) as conn:
        assert conn.run(f"cd '{tmp_path}'").ok
        r = conn.run("cd /nonexistent-rshell-dir")
        assert r.exit_code == 1
        assert not r.ok
        assert b"/nonexistent-rshell-dir" in r.stderr
        assert r.stdout == b""
        assert conn.run("pwd -P").stdout.decode().strip() == os.path.realpath(tmp_path)


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


def test_run_cwd_applies_to_one_command(server: ServerProcess, tmp_path: Path) -> None:
    """``run(cwd=...)`` is a one-off; the session directory does not move."""
    with connect(server) as conn:
        before = conn.run("pwd -P").stdout
        r = conn.run("pwd -P", cwd=str(tmp_path))
        assert r.stdout.decode().strip() == os.path.realpath(tmp_path)
        assert conn.run("pwd -P").stdout == before


def test_run_env_applies_to_one_command(server: ServerProcess) -> None:
    """``run(env=...)`` adds to the environment of that command only."""
    with connect(server) as conn:
        r = conn.run('printf %s "$TEST_VAR"', env={"TEST_VAR": "v a l"})
        assert r.stdout == b"v a l"
        assert conn.run('printf %s "${TEST_VAR-unset}"').stdout == b"unset"
        # The rest of the environment is still there alongside the addition.
        assert conn.run('printf %s "$HOME"', env={"X": "1"}).stdout != b""


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


def test_commands_get_login_environment(home: Path, start_server: Any,
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


def test_home_is_the_accounts_not_the_servers_environment(
    home: Path, start_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As sshd: HOME and the starting directory come from the password
    database, whatever HOME the server was started with (sudo, a unit file)."""
    elsewhere = tmp_path / "not-the-home"
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(elsewhere))
    srv = start_server()
    proc = cli(home, srv.address, "-c", "echo $HOME; pwd -P")
    assert proc.returncode == 0, proc.stderr
    account = pwd.getpwuid(os.getuid()).pw_dir
    assert proc.stdout.decode().splitlines() == [account, os.path.realpath(account)]


# ---- stdin ---------------------------------------------------------------------------


def test_stdin_bytes(server: ServerProcess) -> None:
    """Bytes go through untouched, NUL and non-UTF-8 included."""
    with connect(server) as conn:
        r = conn.run("cat", stdin=b"hello\x00\xff")
    assert r.stdout == b"hello\x00\xff"


def test_stdin_str(server: ServerProcess) -> None:
    """A str is sent as UTF-8."""
    with connect(server) as conn:
        r = conn.run("cat", stdin="héllo\n")
    assert r.stdout == "héllo\n".encode()


def test_stdin_real_file(server: ServerProcess, tmp_path: Path) -> None:
    """A file with a descriptor is read directly, to EOF."""
    data = os.urandom(300_000)
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    with connect(server) as conn, path.open("rb") as fh:
        r = conn.run("sha256sum", stdin=fh)
    assert _remote_sha256(r) == _sha256(data)


def test_stdin_file_like_without_descriptor(server: ServerProcess) -> None:
    """An in-memory file object (no fileno) works too."""
    data = os.urandom(200_000)
    with connect(server) as conn:
        r = conn.run("sha256sum", stdin=io.BytesIO(data))
    assert _remote_sha256(r) == _sha256(data)


def test_stdin_iterator_of_chunks(server: ServerProcess) -> None:
    """Chunks of any size, including empty ones, arrive concatenated and in order."""
    chunks = [b"a" * 10, b"", b"b" * 100_000, os.urandom(70_000), b"z"]

    def gen() -> Iterator[bytes]:
        yield from chunks

    with connect(server) as conn:
        r = conn.run("sha256sum", stdin=gen())
    assert _remote_sha256(r) == _sha256(b"".join(chunks))


def test_stdin_several_megabytes(server: ServerProcess) -> None:
    """More than the flow-control window: acks must refill it, bytes intact."""
    data = os.urandom(8 * MB)
    with connect(server) as conn:
        r = conn.run("sha256sum", stdin=data, timeout=15)
        assert _remote_sha256(r) == _sha256(data)
        assert conn.run("wc -c", stdin=data, timeout=15).stdout.strip() == b"%d" % len(data)


def test_stdin_commands_back_to_back(server: ServerProcess) -> None:
    """Each command's stdin pipe is a fresh descriptor: one command's stdin
    must not disturb the next one's (the server's selector bookkeeping)."""
    data = b"x" * (3 * MB)
    with connect(server) as conn:
        for i in range(10):
            r = conn.run("wc -c", stdin=data, timeout=5)
            assert r.error is None, f"command {i}: {r.error}"
            assert r.stdout.strip() == b"%d" % len(data), f"command {i}"


def test_empty_stdin_gives_eof(server: ServerProcess) -> None:
    """``cat`` must see EOF at once, not hang waiting for input."""
    with connect(server) as conn:
        r = conn.run("cat; echo done", stdin=b"", timeout=10)
    assert r.stdout == b"done\n"
    assert r.error is None


@pytest.mark.parametrize("command", ["true", "head -c 10 >/dev/null", "exec 0<&-; echo x"])
def test_command_ignoring_stdin_still_finishes(server: ServerProcess, command: str) -> None:
    """Offering far more stdin than the command reads must not wedge the session."""
    data = b"\0" * (10 * MB)
    with connect(server) as conn:
        start = time.monotonic()
        r = conn.run(command, stdin=data, timeout=20)
        assert time.monotonic() - start < 15
        assert r.exit_code == 0, r
        assert r.error is None
        assert conn.run("echo again").stdout == b"again\n"


def test_no_stdin_reads_eof(server: ServerProcess) -> None:
    """Without stdin the command reads EOF (not the server's stdin, not a hang)."""
    with connect(server) as conn:
        r = conn.run("wc -c", timeout=10)
    assert r.stdout.strip() == b"0"


# ---- timeouts --------------------------------------------------------------------


def test_client_timeout_stops_command(server: ServerProcess) -> None:
    """The command is stopped with a reason and the connection stays usable."""
    with connect(server) as conn:
        start = time.monotonic()
        r = conn.run("sleep 30", timeout=1)
        elapsed = time.monotonic() - start
        assert elapsed < 5
        assert r.error is not None and "timed out" in r.error
        assert r.signal is not None
        assert not r.ok
        assert conn.run("echo reusable").stdout == b"reusable\n"


def test_server_timeout_applies(start_server: Any) -> None:
    """``rshell-server --timeout`` limits commands that ask for no limit."""
    srv = start_server("--timeout", "1")
    with connect(srv) as conn:
        start = time.monotonic()
        r = conn.run("sleep 30")
        assert time.monotonic() - start < 5
        assert r.error is not None and "timed out" in r.error
        assert r.signal is not None
        assert conn.run("echo ok").ok


def test_server_timeout_wins_when_smaller(start_server: Any) -> None:
    """A client may not extend the server's limit."""
    srv = start_server("--timeout", "1")
    with connect(srv) as conn:
        start = time.monotonic()
        r = conn.run("sleep 30", timeout=20)
    assert time.monotonic() - start < 5
    assert r.error is not None and "timed out" in r.error


def test_client_timeout_wins_when_smaller(start_server: Any) -> None:
    """A client may shorten the server's limit."""
    srv = start_server("--timeout", "20")
    with connect(srv) as conn:
        start = time.monotonic()
        r = conn.run("sleep 30", timeout=1)
    assert time.monotonic() - start < 5
    assert r.error is not None and "timed out" in r.error


def test_command_within_timeout_is_unaffected(start_server: Any) -> None:
    """A limit does not touch a command that finishes in time."""
    srv = start_server("--timeout", "10")
    with connect(srv) as conn:
        r = conn.run("echo quick", timeout=10)
    assert r.ok and r.error is None and r.stdout == b"quick\n"


# ---- output limit -------------------------------------------------------------------


def test_max_output_cuts_and_reports(start_server: Any) -> None:
    """Beyond ``--max-output`` the command is stopped and the client got at most
    the limit."""
    limit = 100_000
    srv = start_server("--max-output", str(limit))
    with connect(srv) as conn:
        start = time.monotonic()
        r = conn.run("yes", timeout=20)
        assert time.monotonic() - start < 10
        assert r.error == "output limit exceeded"
        assert 0 < len(r.stdout) + len(r.stderr) <= limit
        assert set(r.stdout) <= set(b"y\n")
        assert not r.ok
        assert conn.run("echo fine").stdout == b"fine\n"


def test_max_output_counts_stderr_too(start_server: Any) -> None:
    """The limit is per command, over both streams."""
    limit = 50_000
    srv = start_server("--max-output", str(limit))
    with connect(srv) as conn:
        r = conn.run("yes >&2", timeout=20)
    assert r.error == "output limit exceeded"
    assert 0 < len(r.stderr) <= limit
    assert r.stdout == b""


def test_output_under_limit_is_whole(start_server: Any) -> None:
    """Exactly the limit is allowed; nothing is cut."""
    srv = start_server("--max-output", "1000")
    with connect(srv) as conn:
        r = conn.run("head -c 1000 /dev/zero")
    assert r.ok, r
    assert r.stdout == b"\0" * 1000


# ---- streaming ---------------------------------------------------------------------


def test_on_stdout_receives_chunks_live(server: ServerProcess) -> None:
    """The first line is delivered while the command is still sleeping."""
    arrivals: list[tuple[float, bytes]] = []
    errs: list[bytes] = []
    with connect(server) as conn:
        r = conn.run(
            "echo first; echo oops >&2; sleep 3; echo second",
            on_stdout=lambda chunk: arrivals.append((time.monotonic(), bytes(chunk))),
            on_stderr=lambda chunk: errs.append(bytes(chunk)),
        )
        end = time.monotonic()
    assert r.ok, r
    assert b"".join(c for _, c in arrivals) == b"first\nsecond\n"
    assert b"".join(errs) == b"oops\n"
    first_at = arrivals[0][0]
    assert arrivals[0][1].startswith(b"first")
    assert end - first_at > 2.0, f"first chunk only {end - first_at:.2f}s before the end"
    # Streamed output is handed over, not also kept.
    assert r.stdout == b"" and r.stderr == b""


def test_stream_iterator(server: ServerProcess) -> None:
    """``conn.stream()`` yields tagged chunks live, then exposes the Result."""
    with connect(server) as conn:
        it = conn.stream("echo first; echo e >&2; sleep 2; echo second; exit 4")
        seen: list[tuple[float, str, bytes]] = []
        for kind, chunk in it:
            seen.append((time.monotonic(), kind, chunk))
        end = time.monotonic()
        assert it.result is not None
        assert it.result.exit_code == 4
        out = b"".join(c for _, k, c in seen if k == "stdout")
        err = b"".join(c for _, k, c in seen if k == "stderr")
        assert (out, err) == (b"first\nsecond\n", b"e\n")
        assert end - seen[0][0] > 1.0
        assert conn.run("echo after").stdout == b"after\n"


def test_large_streamed_output(server: ServerProcess) -> None:
    """Tens of megabytes pass through a callback intact."""
    size = 32 * MB
    digest = hashlib.sha256()
    total = 0

    def sink(chunk: bytes | memoryview) -> None:
        nonlocal total
        digest.update(chunk)
        total += len(chunk)

    with connect(server) as conn:
        r = conn.run(f"head -c {size} /dev/zero", on_stdout=sink, timeout=60)
    assert r.ok, r
    assert total == size
    assert digest.hexdigest() == _sha256(b"\0" * size)


# ---- check=True, reuse, Result fields ------------------------------------------------


def test_check_raises_command_failed(server: ServerProcess) -> None:
    """``check=True`` turns a failure into an exception carrying the Result."""
    with connect(server) as conn:
        with pytest.raises(rshell.CommandFailed) as info:
            conn.run("echo bad >&2; exit 3", check=True)
        assert isinstance(info.value, rshell.RshellError)
        assert info.value.result.exit_code == 3
        assert info.value.result.stderr == b"bad\n"
        ok = conn.run("echo good", check=True)
        assert ok.stdout == b"good\n"


def test_check_raises_on_command_error(server: ServerProcess) -> None:
    """A timed-out command is a failure for ``check`` too."""
    with connect(server) as conn, pytest.raises(rshell.CommandFailed) as info:
        conn.run("sleep 30", timeout=1, check=True)
    assert info.value.result.error is not None and "timed out" in info.value.result.error


def test_many_commands_on_one_connection(server: ServerProcess) -> None:
    """A connection is reusable for any number of commands."""
    with connect(server) as conn:
        for i in range(200):
            r = conn.run(f"echo {i}; exit {i % 3}")
            assert r.stdout == f"{i}\n".encode()
            assert r.exit_code == i % 3
    server.wait_for_log(r"disconnected after 200 command")


def test_result_fields(server: ServerProcess) -> None:
    """Duration, host and command are filled in."""
    with connect(server) as conn:
        r = conn.run("sleep 0.2; echo hi")
    assert isinstance(r, rshell.Result)
    assert r.command == "sleep 0.2; echo hi"
    assert r.duration >= 0.2
    assert r.duration < 10
    assert r.host == server.address
    assert str(server.port) in r.host


def test_server_logs_each_command(server: ServerProcess) -> None:
    """SPEC §3: the log has a line per command with its exit status."""
    with connect(server) as conn:
        conn.run("exit 5")
    server.wait_for_log(r"command 'exit 5' exit=5")


def test_cd_expands_variables_like_a_shell(server: ServerProcess) -> None:
    """``cd $HOME`` and ``cd ${OLDPWD}`` work as in a shell; unknown names expand empty."""
    with connect(server) as conn:
        home = conn.cwd
        assert conn.run("cd /tmp").ok
        assert conn.run("cd $HOME").ok and conn.cwd == home
        assert conn.run("cd ${OLDPWD}").ok and conn.cwd == "/tmp"
        assert conn.run("pwd").stdout == b"/tmp\n"


def test_oversized_command_is_refused_locally(server: ServerProcess) -> None:
    """A command beyond the frame limit is a UsageError before anything is sent;
    the connection stays usable."""
    import rshell

    with connect(server) as conn:
        with pytest.raises(rshell.RshellError) as info:
            conn.run("echo " + "x" * (2 << 20))
        assert info.value.exit_code == 2
        assert conn.run("echo still").stdout == b"still\n"
