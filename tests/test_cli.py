"""The ``rshell`` command line end to end: the real entry point against a real
server subprocess on loopback.

What scripts rely on: exact output, exit statuses (remote status, 2 for usage,
255 for connection failures), one-line errors with no traceback, batch order
and ``cd`` persistence, and the ``--json`` record.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env, cli

JSON_KEYS = {"host", "command", "exit_code", "signal", "stdout", "stderr", "error", "duration_s"}


def _free_port() -> int:
    """A loopback port nobody listens on: bind, read it, close."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """A failure a user sees: one ``rshell:`` line on stderr, no traceback."""
    text = proc.stderr.decode()
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("rshell:"), text
    return lines[0]


# ---- one-shot -------------------------------------------------------------------


def test_dash_c_runs_one_command(home: Path, server: ServerProcess) -> None:
    """Remote stdout to local stdout, remote stderr to local stderr, exactly."""
    proc = cli(home, server.address, "-c", "echo hello; echo world >&2")
    assert proc.returncode == 0
    assert proc.stdout == b"hello\n"
    assert proc.stderr == b"world\n"


def test_argv_form_is_quoted_for_the_remote_shell(home: Path, server: ServerProcess) -> None:
    """``-- CMD ARG...`` keeps each argument whole, spaces and quotes included."""
    proc = cli(home, server.address, "--", "printf", "%s\\n", "a b", "c'd")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"a b\nc'd\n"


def test_argv_form_does_not_expand_remotely(home: Path, server: ServerProcess) -> None:
    """Shell metacharacters in argv are data, not syntax, on the remote side."""
    proc = cli(home, server.address, "--", "echo", "$HOME", "*", "a;b", "`id`")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"$HOME * a;b `id`\n"


def test_stdin_is_forwarded_with_eof(home: Path, server: ServerProcess) -> None:
    """``rshell h -c 'wc -c' < file``: all bytes arrive and EOF ends the command."""
    data = bytes(range(256)) * 4000
    proc = cli(home, server.address, "-c", "wc -c", input=data, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(data)).encode()


def test_stdin_from_a_regular_file(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """A redirected file (not a pipe) is forwarded too."""
    path = tmp_path / "in.txt"
    path.write_bytes(b"line\n" * 1000)
    with path.open("rb") as fh:
        proc = subprocess.run(
            [RSHELL, *CLIENT_MODE, server.address, "-c", "wc -l"], stdin=fh,
            capture_output=True, env=base_env(home), timeout=30,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == b"1000"


def test_exit_status_with_quiet(home: Path, server: ServerProcess) -> None:
    """``-q`` silences the ``command error`` line, not the exit status."""
    quiet = cli(home, server.address, "-c", "exit 7", "-q")
    assert quiet.returncode == 7
    assert quiet.stdout == b"" and quiet.stderr == b""
    loud = cli(home, server.address, "-c", "exit 7")
    assert loud.returncode == 7
    assert b"command error" in loud.stderr


def test_signal_exit_status(home: Path, server: ServerProcess) -> None:
    """Killed by signal N: exit 128+N, as a local shell reports it."""
    proc = cli(home, server.address, "-c", "kill -TERM $$")
    assert proc.returncode == 143


def test_timeout_option(home: Path, server: ServerProcess) -> None:
    """``--timeout`` stops the command and says so on stderr."""
    start = time.monotonic()
    proc = cli(home, server.address, "--timeout", "1", "-c", "sleep 30", timeout=20)
    assert time.monotonic() - start < 10
    assert proc.returncode != 0
    assert b"timed out" in proc.stderr


def test_broken_stdout_pipe_ends_promptly(home: Path, server: ServerProcess) -> None:
    """``rshell h -c yes | head -1`` must end, as ``yes | head -1`` does."""
    client = shlex.join([RSHELL, *CLIENT_MODE, server.address, "-c", "yes"])
    start = time.monotonic()
    # Own process group, so a hung client is killed with the pipeline, not orphaned.
    pipeline = subprocess.Popen(
        ["/bin/sh", "-c", f"{client} | head -1"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=base_env(home),
        start_new_session=True,
    )
    try:
        out, err = pipeline.communicate(timeout=10)
    finally:
        if pipeline.poll() is None:
            os.killpg(pipeline.pid, signal.SIGKILL)
            pipeline.communicate()
    assert time.monotonic() - start < 8
    assert out == b"y\n"
    assert b"Traceback" not in err
    # The remote `yes` was stopped, not left running on the server.
    server.wait_for_log(r"command 'yes' ", timeout=10)


# ---- batch ---------------------------------------------------------------------------


def _batch(tmp_path: Path, marker: Path) -> str:
    work = tmp_path / "batch dir"
    work.mkdir()
    return "\n".join([
        "# a comment line is skipped",
        f"cd '{work}'",
        "",
        "   ",
        "pwd -P",
        "echo one; exit 3",
        f"# touch '{marker}.commented'",
        "echo two",
        "exit 5",
        f"touch '{marker}'",
        "echo three",
    ]) + "\n"


def _check_batch_output(proc: subprocess.CompletedProcess[bytes], tmp_path: Path) -> None:
    work = (tmp_path / "batch dir").resolve()
    assert proc.stdout.decode().splitlines() == [str(work), "one", "two", "three"]


def test_batch_from_file(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """All commands run in order on one connection; status = last non-zero one."""
    marker = tmp_path / "ran"
    script = tmp_path / "script.txt"
    script.write_text(_batch(tmp_path, marker))
    proc = cli(home, server.address, "-f", str(script))
    assert proc.returncode == 5, proc.stderr
    _check_batch_output(proc, tmp_path)
    assert marker.exists()
    assert not Path(f"{marker}.commented").exists()
    server.wait_for_log(r"disconnected after 7 command")


def test_batch_from_piped_stdin(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """No command and stdin not a terminal: the lines on stdin are the batch."""
    marker = tmp_path / "ran"
    proc = cli(home, server.address, input=_batch(tmp_path, marker).encode())
    assert proc.returncode == 5, proc.stderr
    _check_batch_output(proc, tmp_path)
    assert marker.exists()


def test_batch_dash_f_dash(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """``-f -`` reads the batch from stdin explicitly."""
    proc = cli(home, server.address, "-f", "-", input=b"echo a\ncd /\npwd\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"a\n/\n"


def test_batch_fail_fast(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """``--fail-fast`` stops at the first failure: later commands never run."""
    marker = tmp_path / "ran"
    script = tmp_path / "script.txt"
    script.write_text(_batch(tmp_path, marker))
    proc = cli(home, server.address, "--fail-fast", "-f", str(script))
    assert proc.returncode == 3, proc.stderr
    work = (tmp_path / "batch dir").resolve()
    assert proc.stdout.decode().splitlines() == [str(work), "one"]
    assert not marker.exists()
    server.wait_for_log(r"disconnected after 3 command")


def test_batch_all_succeed(home: Path, server: ServerProcess, tmp_path: Path) -> None:
    """A clean batch exits 0."""
    proc = cli(home, server.address, input=b"true\necho ok\n")
    assert proc.returncode == 0
    assert proc.stdout == b"ok\n"


def test_batch_missing_file_is_usage_error(home: Path, server: ServerProcess,
                                           tmp_path: Path) -> None:
    """An unreadable batch file is the user's mistake: exit 2, one line."""
    proc = cli(home, server.address, "-f", str(tmp_path / "nope.txt"))
    assert proc.returncode == 2
    _assert_one_line_error(proc)


# ---- --json ------------------------------------------------------------------------


def test_json_one_shot(home: Path, server: ServerProcess) -> None:
    """One object with exactly the documented keys and types."""
    proc = cli(home, server.address, "--json", "-c", "echo out; echo err >&2; exit 3")
    assert proc.returncode == 3
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == JSON_KEYS
    assert record["host"] == server.address
    assert record["command"] == "echo out; echo err >&2; exit 3"
    assert (record["exit_code"], record["signal"], record["error"]) == (3, None, None)
    assert (record["stdout"], record["stderr"]) == ("out\n", "err\n")
    assert isinstance(record["duration_s"], float) and record["duration_s"] > 0


def test_json_batch_one_line_per_command(home: Path, server: ServerProcess) -> None:
    """Every command, failed ones included, gets its own line, in order."""
    proc = cli(home, server.address, "--json", input=b"echo a\n# skip\nexit 1\nkill -9 $$\n")
    assert proc.returncode == 137
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["command"] for r in records] == ["echo a", "exit 1", "kill -9 $$"]
    assert all(set(r) == JSON_KEYS for r in records)
    assert records[0]["stdout"] == "a\n"
    assert records[1]["error"] == "exit status 1 with no output"
    assert records[2]["signal"] == 9 and records[2]["exit_code"] is None


def test_json_undecodable_bytes_are_escaped(home: Path, server: ServerProcess) -> None:
    """Bytes that are not UTF-8 never crash the client; they appear escaped."""
    proc = cli(home, server.address, "--json", "-c", r"printf '\377\376'; printf '\377' >&2")
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    record = json.loads(proc.stdout)
    assert record["stdout"] == "\\xff\\xfe"
    assert record["stderr"] == "\\xff"


def test_json_keeps_valid_utf8(home: Path, server: ServerProcess) -> None:
    """Valid UTF-8 is text, not escapes."""
    proc = cli(home, server.address, "--json", "-c", "printf 'h\\303\\251'")
    assert json.loads(proc.stdout)["stdout"] == "hé"


# ---- usage and connection errors ------------------------------------------------------


@pytest.mark.parametrize("args", [
    pytest.param(["-c", "true", "-f", "x.txt"], id="c-and-f"),
    pytest.param(["-c", "true", "--", "echo"], id="c-and-argv"),
    pytest.param(["-p", "0", "-c", "true"], id="port-zero"),
    pytest.param(["-p", "70000", "-c", "true"], id="port-too-big"),
    pytest.param(["-p", "abc", "-c", "true"], id="port-not-a-number"),
    pytest.param(["-c", ""], id="empty-command"),
    pytest.param(["--no-such-option", "-c", "true"], id="unknown-option"),
])
def test_usage_errors(home: Path, server: ServerProcess, args: list[str]) -> None:
    """Exit 2 with one line, before any connection is made."""
    proc = cli(home, server.address, *args)
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_error(proc)


@pytest.mark.parametrize("target", ["127.0.0.1:99999", "127.0.0.1:abc", "[::1", "127.0.0.1:0"])
def test_bad_target_is_usage_error(home: Path, target: str) -> None:
    """A target that cannot name a server is the user's mistake: exit 2."""
    proc = cli(home, target, "-c", "true")
    assert proc.returncode == 2, proc.stderr
    _assert_one_line_error(proc)


def test_missing_target_is_usage_error(home: Path) -> None:
    """Options but no TARGET: a one-line usage error, not a help page."""
    proc = cli(home, "-c", "true")
    assert proc.returncode == 2
    _assert_one_line_error(proc)


def test_connection_refused(home: Path) -> None:
    """Nobody listening: exit 255, one line naming the problem, no traceback."""
    port = _free_port()
    proc = cli(home, f"127.0.0.1:{port}", "-c", "true", timeout=30)
    assert proc.returncode == 255
    line = _assert_one_line_error(proc)
    assert str(port) in line
    assert proc.stdout == b""


def test_connection_refused_with_port_option(home: Path) -> None:
    """``-p PORT`` is honoured (the refusal names it)."""
    port = _free_port()
    proc = cli(home, "127.0.0.1", "-p", str(port), "-c", "true", timeout=30)
    assert proc.returncode == 255
    assert str(port) in _assert_one_line_error(proc)


def test_port_option_reaches_server(home: Path, server: ServerProcess) -> None:
    """``-p`` supplies the port when the target has none."""
    proc = cli(home, "127.0.0.1", "-p", str(server.port), "-c", "echo via-p")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"via-p\n"


def test_server_dying_mid_command(home: Path, server: ServerProcess) -> None:
    """The server vanishing is a connection failure: 255, one line."""
    client = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, server.address, "-c", "echo started $$; exec sleep 30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=base_env(home),
    )
    remote_group = 0
    try:
        assert client.stdout is not None
        first = client.stdout.readline()
        assert first.startswith(b"started ")
        remote_group = int(first.split()[1])  # the command leads its own group
        server.proc.kill()
        _, err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if remote_group:  # a SIGKILLed server cannot clean up: we do
            try:
                os.killpg(remote_group, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert client.returncode == 255
    assert b"Traceback" not in err
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rshell:"), err


# ---- the one-shot fast path (rshell.cli.oneshot) -------------------------------------


def test_plain_one_shot_never_imports_click(server: ServerProcess) -> None:
    """``rshell HOST -c CMD``, the form a cold start is measured with, runs
    without click (about 15 ms of a 90 ms start); any other form uses it."""
    probe = ("import runpy, sys; sys.argv = [sys.argv[1], *sys.argv[2:]]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "finally:\n"
             "    print('CLICK' if 'click' in sys.modules else 'NOCLICK', file=sys.stderr)")
    env = base_env(server.home)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", probe, RSHELL, *args], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    fast = run(server.address, "-c", "echo fast")
    assert (fast.returncode, fast.stdout) == (0, "fast\n"), fast.stderr
    assert fast.stderr.strip().endswith("NOCLICK"), fast.stderr
    full = run(server.address, "-q", "-c", "echo full")
    assert (full.returncode, full.stdout) == (0, "full\n"), full.stderr
    assert full.stderr.strip().endswith("CLICK") and "NOCLICK" not in full.stderr


def test_fast_path_errors_are_the_full_paths(server: ServerProcess) -> None:
    """The same one-line errors and exit codes as through click."""
    env = base_env(server.home)
    for args in ([server.address, "-c", "  "], ["nosuchhost.invalid:1", "-c", "true"]):
        fast = subprocess.run([RSHELL, *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        full = subprocess.run([RSHELL, "-q", *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert fast.returncode == full.returncode != 0, (fast, full)
        assert fast.stderr == full.stderr and fast.stderr.count("\n") == 1, (fast, full)


def test_fast_path_and_full_path_agree_on_a_closed_stderr(server: ServerProcess) -> None:
    """stderr gone before the command writes to it: 141 on both paths (click
    would have made the full path's 1)."""
    codes = []
    for extra in ([], ["-q"]):
        proc = subprocess.Popen([RSHELL, *extra, server.address, "-c", "sleep 0.3; echo x >&2"],
                                env=base_env(server.home), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        proc.stderr.close()
        codes.append(proc.wait(60))
    assert codes == [141, 141]


def test_three_ctrl_c_abort_alike_on_both_paths(server: ServerProcess) -> None:
    """Three SIGINTs within two seconds abort locally (a command that ignores
    SIGINT): exit 130 and the same words on the fast and the full path."""
    outcomes = []
    for extra in ([], ["-q"]):
        proc = subprocess.Popen(
            [RSHELL, *extra, server.address, "-c", "trap '' INT; echo ready; sleep 30"],
            env=base_env(server.home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        for _ in range(3):  # three presses, as a hand makes them: apart, within 2 s
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)  # signals sent at once would merge into one
        _, err = proc.communicate(timeout=30)
        outcomes.append((proc.returncode, err))
    assert outcomes[0] == outcomes[1] == (130, "\nrshell: aborted\n"), outcomes


def test_fast_path_defaults_are_the_full_paths() -> None:
    """Every option the fast path leaves out is at click's default there, and
    both know the same subcommands."""
    import inspect

    from rshell.cli import commands as cli
    from rshell.cli import common as oneshot

    # What click hands client_command for ``rshell HOST -c CMD``.
    ctx = cli.client_command.make_context("rshell", ["HOST", "-c", "true"])
    defaults = dict(ctx.params)
    assert (defaults["target"], defaults["command"]) == ("HOST", "true")
    assert set(oneshot.SUBCOMMANDS) == set(cli._SUBCOMMANDS)
    opened = inspect.signature(oneshot.open_client).parameters
    assert opened["connect_timeout"].default == defaults["connect_timeout"]
    for name in ("port", "identity", "known_hosts"):
        assert opened[name].default is None and defaults[name] is None
    for name in ("strict_host_keys", "accept_new"):
        assert opened[name].default is False and defaults[name] is False
    assert opened["tls"].default is True and defaults["no_tls"] is False
    assert opened["auth"].default is True and defaults["no_auth"] is False
    assert (defaults["as_json"], defaults["quiet"], defaults["timeout"]) == (False, False, None)


def test_value_options_are_read_off_click() -> None:
    """The ssh-style word splitter knows exactly the options click gives a value."""
    from rshell.cli import commands

    assert {"-c", "-f", "-p", "--port", "-i", "--timeout", "--connect-timeout"} <= \
        commands._VALUE_OPTIONS
    assert not {"-q", "--json", "--no-tls", "--fail-fast"} & commands._VALUE_OPTIONS
    words = commands.command_words
    assert words(["-p", "22", "h", "ls", "-l"]) == ["-p", "22", "h", "--", "ls", "-l"]
    assert words(["h", "--timeout", "3", "ls"]) == ["h", "--timeout", "3", "--", "ls"]
