"""The ``rshell`` command line end to end: the real entry point against a real
server subprocess on loopback.

What scripts rely on: exact output, exit statuses (remote status, 2 for usage,
255 for connection failures), one-line errors with no traceback, batch order
and ``cd`` persistence, and the ``--json`` record.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env, cli
from tests.support.cli import one_line_error, read_line
from tests.support.procs import (
    describe,
    group_members,
    handled,
    kill_group,
    pid_gone,
    read_pid,
    wait_until,
)
from tests.support.wire import free_port

#: A strict UTF-8 stdout, where one undecodable byte would crash a careless encoder.
STRICT = {"PYTHONIOENCODING": "utf-8:strict"}
JSON_KEYS = {"host", "command", "exit_code", "signal", "stdout", "stderr", "error", "duration_s"}


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
    quiet = cli(home, server.address, "-c", "kill -KILL $$", "-q")
    assert quiet.returncode == 137
    assert quiet.stdout == b"" and quiet.stderr == b""
    loud = cli(home, server.address, "-c", "kill -KILL $$")
    assert loud.returncode == 137
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
    one_line_error(proc.stderr)


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


def test_undecodable_batch_input_runs_every_line(home: Path, server: ServerProcess) -> None:
    """A batch line that is not UTF-8 reaches the remote shell byte for byte,
    under a strict local encoding, and the lines around it still run."""
    proc = cli(home, server.address, input=b"echo a\n\xff\necho b\n", env=STRICT)
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == b"a\nb\n", proc.stderr
    # The remote shell saw the raw byte as a command name and did not find it.
    assert re.search(rb"\xff.*not found", proc.stderr), proc.stderr


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


def test_json_survives_undecodable_bytes_and_strict_stdout(
    home: Path, server: ServerProcess
) -> None:
    """A command text and output that are not UTF-8, printed to a strict UTF-8
    stdout, still make one valid JSON line (it used to crash the encoder)."""
    one_shot = cli(home, server.address, "--json", "-c", b"printf '\\377'; : \xff", env=STRICT)
    assert one_shot.returncode == 0, one_shot.stderr
    assert b"Traceback" not in one_shot.stderr
    lines = one_shot.stdout.splitlines()
    assert len(lines) == 1, one_shot.stdout
    assert all(b < 0x80 for b in one_shot.stdout), one_shot.stdout
    record = json.loads(lines[0])
    assert record["stdout"] == "\\xff"
    assert record["exit_code"] == 0
    assert record["command"].endswith(": \udcff")

    argv = cli(home, server.address, "--json", "--", "echo", b"\xfe-arg", env=STRICT)
    assert argv.returncode == 0, argv.stderr
    assert b"Traceback" not in argv.stderr
    assert json.loads(argv.stdout)["stdout"] == "\\xfe-arg\n"

    batch = cli(home, server.address, "--json", input=b"echo a\nprintf '\\377'\n", env=STRICT)
    assert batch.returncode == 0, batch.stderr
    records = [json.loads(line) for line in batch.stdout.splitlines()]
    assert [r["stdout"] for r in records] == ["a\n", "\\xff"]


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
    one_line_error(proc.stderr)


@pytest.mark.parametrize("target", ["127.0.0.1:99999", "127.0.0.1:abc", "[::1", "127.0.0.1:0"])
def test_bad_target_is_usage_error(home: Path, target: str) -> None:
    """A target that cannot name a server is the user's mistake: exit 2."""
    proc = cli(home, target, "-c", "true")
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc.stderr)


def test_missing_target_is_usage_error(home: Path) -> None:
    """Options but no TARGET: a one-line usage error, not a help page."""
    proc = cli(home, "-c", "true")
    assert proc.returncode == 2
    one_line_error(proc.stderr)


def test_connection_refused(home: Path) -> None:
    """Nobody listening: exit 255, one line naming the problem, no traceback."""
    port = free_port()
    proc = cli(home, f"127.0.0.1:{port}", "-c", "true", timeout=30)
    assert proc.returncode == 255
    line = one_line_error(proc.stderr)
    assert str(port) in line
    assert proc.stdout == b""


def test_connection_refused_with_port_option(home: Path) -> None:
    """``-p PORT`` is honoured (the refusal names it)."""
    port = free_port()
    proc = cli(home, "127.0.0.1", "-p", str(port), "-c", "true", timeout=30)
    assert proc.returncode == 255
    assert str(port) in one_line_error(proc.stderr)


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
    one_line_error(err)


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


def test_closed_stdin_is_no_crash(home: Path, server: ServerProcess) -> None:
    """``rshell h -c true <&-`` (no fd 0 at all) runs the command."""
    script = f"exec <&-; exec {shlex.join([RSHELL, *CLIENT_MODE, server.address])} -c 'echo ran'"
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, env=base_env(home),
                          timeout=30)
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"ran\n"


# ---- ssh-style command words ------------------------------------------------------------


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


# ---- Ctrl-C ------------------------------------------------------------------------------

_DEAF = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: open(sys.argv[2], "a").write("i"))
open(sys.argv[1], "w").write(str(os.getpid()))
while True:
    time.sleep(30)
"""


def test_three_ctrl_c_abort_locally(server: ServerProcess, tmp_path: Path,
                                    terminals: Callable[..., pexpect.spawn],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that shrugs off SIGINT cannot hold the user hostage: the first
    two presses are forwarded, the third (within the window, widened here so
    that load cannot spread the presses past it) aborts with 130, and the
    server then terminates the command."""
    monkeypatch.setenv("RSHELL_CTRL_C_WINDOW", "60")
    pidfile, ints = tmp_path / "pid", tmp_path / "ints"
    remote = shlex.join([sys.executable, "-c", _DEAF, str(pidfile), str(ints)])
    child = terminals(server.address, "-c", f"exec {remote}")
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
    """Three SIGINTs within the window abort locally (a command that ignores
    SIGINT): exit 130 and the same words on the fast and the full path.  (The
    window is widened so that a loaded machine cannot spread the presses
    past it; test_a_fourth_press_after_the_window_is_a_first tests it.)"""
    outcomes = []
    for extra in ([], ["-q"]):
        proc = subprocess.Popen(
            [RSHELL, *extra, server.address, "-c", "trap '' INT; echo ready; sleep 30"],
            env=base_env(server.home, RSHELL_CTRL_C_WINDOW="60"), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        for press in range(3):  # three presses, each handled before the next
            proc.send_signal(signal.SIGINT)
            if press < 2:
                handled(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        outcomes.append((proc.returncode, err))
    assert outcomes[0] == outcomes[1] == (130, "\nrshell: aborted\n"), outcomes


def test_a_fourth_press_after_the_window_is_a_first() -> None:
    """The window itself, on a clock the test turns: presses older than it
    are forgotten; three inside it give up."""
    from rshell.cli.common import CTRL_C_WINDOW, forward_sigint

    now = [100.0]
    sent: list[int] = []
    forward = forward_sigint(sent.append, clock=lambda: now[0])
    for step in (0.0, 1.0, CTRL_C_WINDOW, 0.5):  # the third comes a window after the first
        now[0] += step
        forward.press()
    assert sent == [signal.SIGINT] * 4  # so no three were ever within one window
    now[0] += 0.1
    with pytest.raises(KeyboardInterrupt):
        forward.press()  # the last three: within 0.6 s
    assert len(sent) == 4


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
