"""Leaving a command early (issue 12, item 4), on every backend of the one
client contract (the ``target`` fixtures of tests/test_client_contract.py:
an rshell server, a real OpenSSH sshd, rshell's own SSH listener).

A ``conn.stream()`` left before its end (``break``, ``close()``, ``with``,
an exception, the iterator collected), or a ``run()`` whose callback
raised, stops the remote command (its process group ends) and the same
connection runs the next command.  Before, every later ``run()`` raised
``another command is still running on this connection``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

import rshell
from tests.support.procs import assert_group_ends, kill_group
from tests.test_client_contract import Target, native, rshell_ssh, ssh, target

__all__ = ["native", "rshell_ssh", "ssh", "target"]  # fixtures, used by name

#: Writes as long as it lives: its channel's close ends it even where sshd
#: refuses ``signal`` requests (a root login), as SIGPIPE would under ssh.
TICKER = "echo $$; while :; do echo tick; sleep 0.05; done"


def first_pid(stream: Iterable[tuple[str, bytes]]) -> tuple[Iterator[tuple[str, bytes]], int]:
    """The chunks still to come and the pid the command printed first (its
    first chunk may hold ticks too)."""
    chunks = iter(stream)
    kind, first = next(chunks)
    assert kind == "stdout", (kind, first)
    return chunks, int(first.split()[0])


def _break(conn: rshell.Connection) -> int:
    pgid = 0
    for _kind, data in conn.stream(TICKER):
        pgid = int(data.split()[0])
        break
    return pgid


def _close(conn: rshell.Connection) -> int:
    stream = conn.stream(TICKER)
    _chunks, pgid = first_pid(stream)
    stream.close()
    return pgid


def _with(conn: rshell.Connection) -> int:
    with conn.stream(TICKER) as stream:
        _chunks, pgid = first_pid(stream)
    return pgid


def _raise(conn: rshell.Connection) -> int:
    found: list[int] = []

    class Enough(Exception):
        pass

    with pytest.raises(Enough):
        for _kind, data in conn.stream(TICKER):
            if not found:
                found.append(int(data.split()[0]))
            raise Enough
    return found[0]


def _collected(conn: rshell.Connection) -> int:
    stream = conn.stream(TICKER)
    chunks, pgid = first_pid(stream)
    del chunks  # the stream is still held: the command runs on
    assert next(iter(stream))[0] == "stdout"
    del stream
    gc.collect()
    return pgid


def _callback_raised(conn: rshell.Connection) -> int:
    found: list[int] = []

    def take(data: bytes | memoryview) -> None:
        found.append(int(bytes(data).split()[0]))
        raise ValueError("the consumer gave up")

    with pytest.raises(ValueError, match="gave up"):
        conn.run(TICKER, on_stdout=take)
    return found[0]


@pytest.mark.parametrize("leave", [_break, _close, _with, _raise, _collected, _callback_raised],
                         ids=["break", "close", "with", "exception", "collected", "callback"])
def test_leaving_early_stops_the_command_and_keeps_the_connection(
    target: Target, leave: Callable[[rshell.Connection], int]
) -> None:
    with target.connect() as conn:
        started = time.monotonic()
        pgid = leave(conn)
        try:
            assert time.monotonic() - started < 8
            assert_group_ends(pgid)
            again = conn.run("echo again")
            assert (again.exit_code, again.stdout) == (0, b"again\n")
            stream = conn.stream("echo whole; exit 3")
            assert list(stream) == [("stdout", b"whole\n")]
            assert stream.result is not None and stream.result.exit_code == 3
        finally:
            kill_group(pgid)


@pytest.fixture(params=["native", "rshell-ssh"])
def signalled(request: pytest.FixtureRequest) -> Target:
    """The targets whose server honours ``signal`` requests (OpenSSH refuses
    them for a root login, and a command that neither writes nor reads
    outlives its channel there, as under ssh: not a contract we can test)."""
    found: Target = request.getfixturevalue(request.param.replace("-", "_"))
    return found


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(signalled: Target) -> None:
    """SIGTERM, then SIGKILL a grace later, as the server stops a command."""
    target = signalled
    with target.connect() as conn:
        stream = conn.stream("trap '' TERM INT; echo $$; sleep 30")
        _chunks, pgid = first_pid(stream)
        try:
            started = time.monotonic()
            stream.close()
            elapsed = time.monotonic() - started
            assert_group_ends(pgid)
            assert 0.9 <= elapsed < 8, elapsed
            assert conn.run("echo again").stdout == b"again\n"
        finally:
            kill_group(pgid)


def test_a_finished_stream_closes_as_a_no_op(target: Target) -> None:
    with target.connect() as conn:
        with conn.stream("echo done") as stream:
            assert list(stream) == [("stdout", b"done\n")]
        assert stream.result is not None and stream.result.ok
        stream.close()
        assert list(stream) == []
        assert conn.run("echo next").stdout == b"next\n"


def test_a_held_stream_left_by_break_can_be_resumed(target: Target) -> None:
    """Only the stream's end stops the command: one still held resumes where
    its loop was left (and another command must wait for it)."""
    with target.connect() as conn:
        with conn.stream("echo one; sleep 0.5; echo two") as stream:
            seen = b""
            for _kind, data in stream:
                seen += data
                break
            with pytest.raises(rshell.RshellError, match="still running"):
                conn.run("true")
            seen += b"".join(data for _kind, data in stream)
        assert seen == b"one\ntwo\n"
        assert stream.result is not None and stream.result.ok
        assert conn.run("echo next").stdout == b"next\n"
