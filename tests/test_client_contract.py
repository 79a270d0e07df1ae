"""One client contract, two backends (issue 10, SPEC §7, §8): each scenario
runs the same way against an rshell server (the native backend), a real
OpenSSH sshd and rshell's own SSH listener (the ``ssh://`` backend), through
``rshell.connect`` and through the real ``rshell`` CLI, and must give the
same Result fields, the same ``command error`` reason, the same exit status
and the same ``--json``.

The servers listen on 127.0.0.1 only and are started once for the module;
every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import rshell
from rshell.errors import CommandFailed, UsageError
from tests.conftest import RSHELL, ServerProcess, base_env
from tests.proctools import pid_gone, wait_until
from tests.test_ssh_client import SSHD, Sshd


@dataclass
class Target:
    """One server as both the API and the CLI reach it."""

    name: str
    address: str
    env: dict[str, str]
    cli_args: list[str]
    options: dict[str, Any] = field(default_factory=dict)

    def connect(self) -> rshell.Connection:
        return rshell.connect(self.address, **self.options)

    def cli(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [RSHELL, self.address, *self.cli_args, *args], input=input, capture_output=True,
            env=self.env, timeout=60, stdin=None if input is not None else subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    home = tmp_path_factory.mktemp("native") / "rshell-home"
    home.mkdir()
    srv = ServerProcess(home, ["--bind", "127.0.0.1:0"], base_env(home))
    try:
        yield Target("native", srv.address, base_env(home), [], {
            "identity": home / "id_ed25519", "known_hosts": home / "known_hosts",
        })
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server missing (.ci/run installs it)")
    server = Sshd(tmp_path_factory.mktemp("ssh") / "sshd")
    known = server.home / ".ssh" / "known_hosts"
    options = {"identity": server.client_key, "known_hosts": known, "accept_new": True}
    rshell.connect(server.target, **options).close()  # pins the host key for the CLI too
    try:
        yield Target("ssh", server.target, server.env(), ["-i", str(server.client_key)],
                     options)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rshell_ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The ``ssh://`` backend against rshell's own SSH listener (``--ssh-bind``),
    which honours RFC 4254 ``signal`` requests."""
    root = tmp_path_factory.mktemp("rshell-ssh")
    home, account = root / "rshell-home", root / "account"
    home.mkdir()
    account.mkdir()
    srv = ServerProcess(home, ["--bind", "127.0.0.1:0", "--ssh-bind", "127.0.0.1:0",
                               "--home", str(account)], base_env(home))
    port = srv.wait_for_log(r"ssh listening on \S+:(\d+)").group(1)
    env = dict(base_env(home), HOME=str(account))
    known = account / ".ssh" / "known_hosts"
    options = {"identity": home / "id_ed25519", "known_hosts": known, "accept_new": True}
    address = f"ssh://tester@127.0.0.1:{port}"
    rshell.connect(address, **options).close()
    try:
        yield Target("rshell-ssh", address, env, ["-i", str(home / "id_ed25519")], options)
    finally:
        srv.stop()


@pytest.fixture(params=["native", "ssh", "rshell-ssh"])
def target(request: pytest.FixtureRequest) -> Target:
    found: Target = request.getfixturevalue(request.param.replace("-", "_"))
    return found


def fields(result: rshell.Result) -> tuple[object, ...]:
    return result.exit_code, result.signal, result.stdout, result.error


# ---- the Result ------------------------------------------------------------------------


def test_output_then_a_failure_has_no_reason(target: Target) -> None:
    """A command that said something and failed carries no ``command error``,
    whether its output was kept, handed to callbacks, or streamed."""
    with target.connect() as conn:
        kept = conn.run("echo out; exit 5")
        seen: list[bytes] = []
        called = conn.run("echo out; exit 5", on_stdout=lambda d: seen.append(bytes(d)))
        on_err = conn.run("echo err >&2; exit 5", on_stderr=lambda d: None)
        stream = conn.stream("echo out; exit 5")
        chunks = list(stream)
    assert fields(kept) == (5, None, b"out\n", None) and kept.exit_status == 5
    assert fields(called) == (5, None, b"", None) and b"".join(seen) == b"out\n"
    assert (on_err.exit_code, on_err.stderr, on_err.error) == (5, b"", None)
    assert b"".join(d for _, d in chunks) == b"out\n"
    assert stream.result is not None and fields(stream.result) == (5, None, b"", None)


@pytest.mark.parametrize(("command", "code", "reason"), [
    ("exit 3", 3, "exit status 3 with no output"),
    ("exit 127", 127, "command not found"),
    ("no-such-command-here", 127, "command not found"),
    ("exit 126", 126, "command cannot be executed"),
])
def test_failure_reasons(target: Target, command: str, code: int, reason: str) -> None:
    with target.connect() as conn:
        result = conn.run(command)
    assert (result.exit_code, result.signal, result.error) == (code, None, reason)
    assert not result.ok and result.exit_status == code


def test_a_signal_death(target: Target) -> None:
    with target.connect() as conn:
        result = conn.run("kill -TERM $$")
    assert fields(result) == (None, 15, b"", "killed by SIGTERM with no output")
    assert result.exit_status == 143


def test_cd_persists_and_cwd_env_apply_once(target: Target) -> None:
    with target.connect() as conn:
        home = conn.cwd
        moved = conn.run("cd /tmp")
        after = conn.run("pwd")
        failed = conn.run("cd /no/such/dir")
        once = conn.run('pwd; echo "$GREETING"', cwd="/", env={"GREETING": "hi"})
        still = conn.run("pwd")
        back = conn.run("cd")
        cwd_home = conn.cwd
    assert home and fields(moved) == (0, None, b"", None)
    assert after.stdout == b"/tmp\n"
    assert failed.exit_code == 1 and failed.stderr and failed.error is None
    assert once.stdout == b"/\nhi\n" and still.stdout == b"/tmp\n"
    assert back.ok and cwd_home == home


def test_check_raises_with_the_result(target: Target) -> None:
    with target.connect() as conn:
        assert conn.run("true", check=True).ok
        with pytest.raises(CommandFailed) as caught:
            conn.run("echo no; exit 4", check=True)
        assert conn.run("echo reusable").stdout == b"reusable\n"
    assert caught.value.result.exit_code == 4 and caught.value.exit_code == 4
    assert caught.value.result.stdout == b"no\n"


def test_stdin_is_forwarded_with_eof(target: Target) -> None:
    with target.connect() as conn:
        result = conn.run("wc -c", stdin=b"x" * 300_000)
        lines = conn.run("cat", stdin=iter([b"a\n", b"b\n"]))
    assert result.stdout.strip() == b"300000"
    assert lines.stdout == b"a\nb\n"


def test_a_timeout_stops_the_command(target: Target) -> None:
    """The native server's verdict, and the SSH backend's own: SIGTERM, the reason."""
    with target.connect() as conn:
        result = conn.run("sleep 7", timeout=1)
        after = conn.run("echo alive")
    assert (result.exit_code, result.signal, result.error) == (None, 15, "timed out after 1 s")
    assert result.exit_status == 143 and result.duration < 5
    assert after.stdout == b"alive\n"


# ---- the command line ----------------------------------------------------------------


def test_cli_statuses_and_reasons_agree(native: Target, ssh: Target, rshell_ssh: Target) -> None:
    """Same exit status, same stdout, same ``command error`` line (or none)."""
    targets = (native, ssh, rshell_ssh)
    cases = ["echo out; exit 5", "echo err >&2; exit 5", "exit 3", "kill -TERM $$"]
    for command in cases:
        runs = [t.cli("-c", command) for t in targets]
        assert len({(p.returncode, p.stdout) for p in runs}) == 1, (command, runs)
        reasons = {tuple(line for line in p.stderr.splitlines() if b"command error" in line)
                   for p in runs}
        assert len(reasons) == 1, (command, runs)
    slow = [t.cli("--timeout", "1", "-c", "sleep 7") for t in targets]
    assert [p.returncode for p in slow] == [143, 143, 143]
    assert all(p.stderr.endswith(b"rshell: command error: timed out after 1 s\n") for p in slow)


def test_a_timeout_stops_the_remote_command_where_sshd_lets_us(
    rshell_ssh: Target, tmp_path: Path,
) -> None:
    """Over SSH the deadline is the client's: a ``signal`` request (TERM),
    then the channel is closed.  A server that honours the request (rshell's
    own listener; OpenSSH for a non-root login) ends even a silent command;
    test_ssh_client.py has what OpenSSH does for root."""
    pid_file = tmp_path / "pid"
    with rshell_ssh.connect() as conn:
        result = conn.run(f"echo $$ > {pid_file}; exec sleep 7", timeout=1)
    assert (result.signal, result.error) == (15, "timed out after 1 s")
    pid = int(pid_file.read_text())
    assert wait_until(lambda: pid_gone(pid), 5), "the remote sleep still runs"


def test_json_fields_are_identical(native: Target, ssh: Target, rshell_ssh: Target) -> None:
    """``--json`` over a batch: every field but host and duration is the same."""
    batch = b"echo out; exit 5\nexit 3\nexit 127\nkill -TERM $$\ncd /tmp\npwd\nprintf '\\377'\n"
    records = []
    for t in (native, ssh, rshell_ssh):
        proc = t.cli("--json", input=batch)
        assert proc.returncode == 143, proc.stderr  # the last failure's status
        lines = [json.loads(line) for line in proc.stdout.splitlines()]
        assert all(r.pop("host") == t.address for r in lines)
        assert all(isinstance(r.pop("duration_s"), float) for r in lines)
        records.append(lines)
    assert records[0] == records[1] == records[2]
    assert [r["error"] for r in records[0]] == [
        None, "exit status 3 with no output", "command not found",
        "killed by SIGTERM with no output", None, None, None,
    ]


def test_the_connect_timeout_default_is_one_value() -> None:
    """``rshell.connect``, the fast path, click's ``--connect-timeout`` and
    ``rshell fingerprint`` all read client.options.CONNECT_TIMEOUT."""
    import inspect

    from rshell.cli import commands
    from rshell.cli.common import open_client
    from rshell.client.options import CONNECT_TIMEOUT, ConnectOptions

    defaults = [
        inspect.signature(rshell.connect).parameters["connect_timeout"].default,
        inspect.signature(open_client).parameters["connect_timeout"].default,
        ConnectOptions().connect_timeout,
        commands.client_command.make_context("rshell", ["h"]).params["connect_timeout"],
        commands.fingerprint_command.make_context("fingerprint", []).params["connect_timeout"],
    ]
    assert defaults == [CONNECT_TIMEOUT] * len(defaults)


@pytest.mark.parametrize("target", ["127.0.0.1:2222", "ssh://someone@127.0.0.1:2222"])
def test_a_port_that_contradicts_p_is_a_usage_error(target: str) -> None:
    """``-p 22`` with a target that names port 2222: refused before connecting,
    alike for both backends."""
    with pytest.raises(UsageError, match="contradicts"):
        rshell.connect(target, port=22, connect_timeout=1)
