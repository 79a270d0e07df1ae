"""The execution engine alone (rshell/exec): real subprocesses, no sockets.

A ``Recording`` sink stands where the native stream or an SSH channel
would; a small driver runs the loop as both listeners do.  What is proved
here holds for both listeners, since both drive this code.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rshell.errors import LocalProtocolError
from rshell.exec.command import HIGH_WATER, STDERR, STDOUT, Command
from rshell.exec.loop import Loop
from rshell.exec.policy import Answer, Grant, Launch, Limits, Login, Request, decide
from rshell.exec.record import Outcome, Recorder
from tests.proctools import group_members, wait_until


class Recording:
    """A sink that keeps what it is given; ``hold`` makes it report a backlog."""

    headroom = 3  # a header's room, as the native sink needs

    def __init__(self) -> None:
        self.chunks: list[tuple[int, bytes]] = []
        self.queued = 0

    def output(self, kind: int, buf: bytearray, n: int) -> bool:
        assert len(buf) >= self.headroom + n
        self.chunks.append((kind, bytes(buf[self.headroom:self.headroom + n])))
        return True

    def data(self, kind: int) -> bytes:
        return b"".join(d for k, d in self.chunks if k == kind)


NO_OPTIONS, DEFAULTS = Grant(), Limits()


def login(tmp_path: Path, grant: Grant = NO_OPTIONS) -> Login:
    who = Login(str(tmp_path), "/bin/sh", "test", f"{os.getpid()}:engine")
    who.grant = grant
    return who


def run(cmd: Command, loop: Loop, budget: float = 20.0) -> Outcome:
    """Drive the loop as a listener does, until the command's Outcome."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        cmd.sync()
        nxt = cmd.next_deadline()
        loop.poll(0.5 if nxt is None else max(0.0, min(0.5, nxt - time.monotonic())))
        cmd.check(time.monotonic())
        outcome = cmd.finish()
        if outcome is not None:
            return outcome
    raise AssertionError("the command did not finish in time")


def pump(cmd: Command, loop: Loop, sink: Recording) -> bytes:
    """One loop turn as a driver makes it; stdout so far."""
    cmd.sync()
    loop.poll(0.05)
    return sink.data(STDOUT)


def start(tmp_path: Path, text: str, limits: Limits = DEFAULTS, stdin: bool = False,
          sink: Recording | None = None) -> tuple[Command, Loop, Recording]:
    plan = decide(Request(text, stdin=stdin), login(tmp_path).workspace(), limits)
    assert isinstance(plan, Launch)
    loop, sink = Loop(), sink or Recording()
    return Command(plan, loop, sink, limits), loop, sink


def test_output_streams_apart_and_the_status_is_reported(tmp_path: Path) -> None:
    cmd, loop, sink = start(tmp_path, "echo out; echo err >&2; exit 5")
    outcome = run(cmd, loop)
    assert (sink.data(STDOUT), sink.data(STDERR)) == (b"out\n", b"err\n")
    assert (outcome.exit_code, outcome.signal, outcome.reason) == (5, None, None)
    assert (outcome.stdout_bytes, outcome.stderr_bytes) == (4, 4)
    assert outcome.error is None  # it said something: no silent-failure reason
    loop.close()


def test_timeout_keeps_output_until_the_stop(tmp_path: Path) -> None:
    cmd, loop, sink = start(tmp_path, "echo start; sleep 30", Limits(timeout=0.5))
    outcome = run(cmd, loop)
    assert sink.data(STDOUT) == b"start\n"
    assert outcome.signal == signal.SIGTERM and outcome.reason == "timed out after 0.5 s"
    loop.close()


def test_output_limit_is_exact(tmp_path: Path) -> None:
    cmd, loop, sink = start(tmp_path, "yes", Limits(max_output=1000))
    outcome = run(cmd, loop)
    assert len(sink.data(STDOUT)) == 1000 and outcome.reason == "output limit exceeded"
    loop.close()


def test_a_client_signal_reaches_the_group(tmp_path: Path) -> None:
    cmd, loop, sink = start(tmp_path, "trap 'echo got; exit 7' USR1; echo ready; "
                                      "while :; do sleep 0.05; done")
    assert wait_until(lambda: pump(cmd, loop, sink) == b"ready\n", 10)
    cmd.signal(signal.SIGUSR1)
    cmd.signal(signal.SIGALRM)  # not one a client may send: ignored
    outcome = run(cmd, loop)
    assert sink.data(STDOUT) == b"ready\ngot\n" and outcome.exit_code == 7
    loop.close()


def test_stdin_reaches_the_command_with_eof(tmp_path: Path) -> None:
    taken: list[int] = []
    plan = decide(Request("wc -c", stdin=True), login(tmp_path).workspace(), Limits())
    assert isinstance(plan, Launch)
    loop, sink = Loop(), Recording()
    cmd = Command(plan, loop, sink, Limits(), taken.append)
    cmd.feed(b"x" * 100_000)
    cmd.end_stdin()
    outcome = run(cmd, loop)
    assert sink.data(STDOUT).strip() == b"100000" and outcome.exit_code == 0
    assert sum(taken) == 100_000
    loop.close()


def test_a_full_sink_stops_the_reading_not_the_memory(tmp_path: Path) -> None:
    """Back-pressure: while HIGH_WATER waits in the sink the pipes are not
    read, so the command blocks; once it drains, everything arrives."""
    sink = Recording()
    cmd, loop, _ = start(tmp_path, "head -c 3000000 /dev/zero", sink=sink)
    sink.queued = HIGH_WATER
    for _ in range(20):
        cmd.sync()
        loop.poll(0.02)
    assert sink.data(STDOUT) == b"", "read while the sink was full"
    sink.queued = 0
    outcome = run(cmd, loop)
    assert len(sink.data(STDOUT)) == 3_000_000 and outcome.exit_code == 0
    loop.close()


def test_abandon_ends_the_whole_group(tmp_path: Path) -> None:
    cmd, loop, sink = start(tmp_path, "sleep 300 & echo $$; sleep 300")
    assert wait_until(lambda: pump(cmd, loop, sink) != b"", 10)
    pgid = int(sink.data(STDOUT))
    outcome = cmd.abandon()
    assert outcome.reason == "connection ended" and outcome.signal == signal.SIGTERM
    assert wait_until(lambda: not group_members(pgid), 10)
    loop.close()


# ---- the policy ------------------------------------------------------------------


def test_forced_command_runs_in_home_with_the_request_in_its_environment(tmp_path: Path) -> None:
    ws = login(tmp_path, Grant(forced="./backup.sh")).workspace()
    ws.cwd = "/"  # wherever the session is, the forced command starts at home
    plan = decide(Request("cd /elsewhere"), ws, Limits())
    assert isinstance(plan, Launch)  # not taken as the cd builtin
    assert (plan.command, plan.cwd, plan.forced) == ("./backup.sh", str(tmp_path), True)
    assert plan.env["RSHELL_ORIGINAL_COMMAND"] == plan.env["SSH_ORIGINAL_COMMAND"] == \
        "cd /elsewhere"
    for request in (Request("x", cwd="/tmp"), Request("x", env={"PATH": "/evil"})):
        answer = decide(request, ws, Limits())
        assert isinstance(answer, Answer) and answer.outcome.exit_code == 126
        assert answer.outcome.reason == \
            "refused: environment and cwd not permitted with a forced command"


def test_restrict_refuses_client_environment(tmp_path: Path) -> None:
    ws = login(tmp_path, Grant(restrict=True)).workspace()
    answer = decide(Request("env", env={"A": "b"}), ws, Limits())
    assert isinstance(answer, Answer)
    assert answer.outcome.reason == "refused: environment not permitted for this key (restrict)"
    assert isinstance(decide(Request("env"), ws, Limits()), Launch)


def test_the_servers_own_variables_cannot_be_set_by_a_client(tmp_path: Path) -> None:
    """RSHELL_SESSION is what the end-of-session sweep follows, RSHELL_CLIENT
    who asked: a client that set them could hide its processes or lie."""
    ws = login(tmp_path).workspace()
    for name in ("RSHELL_SESSION", "RSHELL_CLIENT", "RSHELL_ANYTHING"):
        answer = decide(Request("env", env={name: "x", "OK": "1"}), ws, Limits())
        assert isinstance(answer, Answer) and answer.outcome.exit_code == 126
        assert answer.outcome.reason == \
            f"refused: environment variable {name} is reserved for the server"
    assert isinstance(decide(Request("env", env={"OK": "1"}), ws, Limits()), Launch)


def test_cd_moves_the_workspace_and_a_failure_says_why(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    ws = login(tmp_path).workspace()
    moved = decide(Request("cd sub"), ws, Limits())
    assert isinstance(moved, Answer) and moved.outcome.exit_code == 0
    assert ws.cwd == str(tmp_path / "sub")
    failed = decide(Request("cd /nonexistent-dir"), ws, Limits())
    assert isinstance(failed, Answer) and failed.outcome.exit_code == 1
    assert b"nonexistent-dir" in failed.stderr and ws.cwd == str(tmp_path / "sub")
    back = decide(Request("cd -"), ws, Limits())
    assert isinstance(back, Answer) and ws.cwd == str(tmp_path)


def test_timeouts_the_smaller_wins(tmp_path: Path) -> None:
    ws = login(tmp_path).workspace()
    for server, client, expected in ((0, None, 0.0), (5, None, 5), (0, 2, 2), (5, 2, 2),
                                     (2, 5, 2)):
        plan = decide(Request("true", timeout=client), ws, Limits(timeout=server))
        assert isinstance(plan, Launch) and plan.timeout == expected


def test_max_commands_and_stopping(tmp_path: Path) -> None:
    who = login(tmp_path)
    first, second = who.workspace(), who.workspace()  # two SSH channels share the count
    assert isinstance(decide(Request("true"), first, Limits(max_commands=2)), Launch)
    assert isinstance(decide(Request("true"), second, Limits(max_commands=2)), Launch)
    with pytest.raises(LocalProtocolError, match="more than 2 commands"):
        decide(Request("true"), first, Limits(max_commands=2))
    stopped = login(tmp_path)
    stopped.stopping = True
    answer = decide(Request("true"), stopped.workspace(), Limits())
    assert isinstance(answer, Answer) and answer.outcome.reason == "server shutting down"


def test_the_record_has_one_schema_for_every_wire(tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, object]]] = []

    class Audit:
        def event(self, kind: str, **fields: object) -> None:
            events.append((kind, fields))

    outcome = Outcome("x", 3, None, None, 0, 0, 0.5)
    for via in ("rshell", "ssh"):
        record = Recorder("peer", via, "m", Audit())
        record.connected()
        record.started("x", "/", 1, False)
        record.finished(outcome)
        record.disconnected(1, "")
    by_via = [{k: set(f) for k, f in events[i:i + 4]} for i in (0, 4)]
    assert by_via[0] == by_via[1]
    assert events[2][1]["error"] == "exit status 3 with no output"
    assert {f["via"] for _, f in events} == {"rshell", "ssh"}
