"""ssh.channel.ChannelSink: a loop turn's small stdout chunks go to the SSH
channel as one send at the turn's end, in order with stderr, within the
channel's window.

The channel is a stand-in recording what paramiko's ``Channel.send`` and
``send_stderr`` were given (the sink's whole use of it); the real channel
runs in the SSH tests (test_ssh_terminal.py: ``ssh -tt`` against
``--ssh-bind``, whose output would never arrive if a held chunk were never
sent).
"""

from __future__ import annotations

import pytest

from rshell.exec.command import STDERR, STDOUT
from rshell.ssh.channel import _HOLD, ChannelSink


class Channel:
    """What ChannelSink calls: each send takes up to ``window`` bytes, then
    times out (paramiko's shut window) until ``window`` is raised again."""

    def __init__(self, window: int = 1 << 30) -> None:
        self.window = window
        self.sent: list[tuple[str, bytes]] = []

    def _take(self, kind: str, data: memoryview) -> int:
        if not self.window:
            raise TimeoutError
        n = min(len(data), self.window)
        self.window -= n
        self.sent.append((kind, bytes(data[:n])))
        return n

    def send(self, data: memoryview) -> int:
        return self._take("out", data)

    def send_stderr(self, data: memoryview) -> int:
        return self._take("err", data)


def chunk(data: bytes) -> tuple[bytearray, int]:
    return bytearray(data), len(data)


def test_a_turns_small_chunks_go_as_one_send_at_its_end() -> None:
    channel = Channel()
    sink = ChannelSink(channel)  # type: ignore[arg-type]
    for piece in (b"a" * 4096, b"b" * 4096, b"c" * 100):
        assert sink.output(STDOUT, *chunk(piece)) is True
    assert channel.sent == [] and sink.queued == 8292  # held, and counted as queued
    sink.flush()
    assert channel.sent == [("out", b"a" * 4096 + b"b" * 4096 + b"c" * 100)]
    assert sink.queued == 0


def test_stderr_and_big_chunks_keep_their_order() -> None:
    channel = Channel()
    sink = ChannelSink(channel)  # type: ignore[arg-type]
    sink.output(STDOUT, *chunk(b"first "))
    sink.output(STDERR, *chunk(b"oops "))  # what was held goes before it
    sink.output(STDOUT, *chunk(b"second "))
    big = b"x" * (_HOLD + 1)
    sink.output(STDOUT, *chunk(big))  # too big to hold: sent at once, after the held
    sink.flush()
    assert channel.sent == [("out", b"first "), ("err", b"oops "), ("out", b"second "),
                            ("out", big)]
    assert sink.queued == 0


def test_held_bytes_wait_for_a_shut_window() -> None:
    channel = Channel(window=3)
    sink = ChannelSink(channel)  # type: ignore[arg-type]
    sink.output(STDOUT, *chunk(b"hello"))
    sink.flush()
    assert channel.sent == [("out", b"hel")] and sink.queued == 2
    sink.output(STDOUT, *chunk(b"!"))  # held behind what still waits
    channel.window = 100
    sink.flush()
    assert b"".join(data for _, data in channel.sent) == b"hello!"
    assert sink.queued == 0


@pytest.mark.parametrize("size", [_HOLD - 1, _HOLD])
def test_up_to_hold_bytes_are_held(size: int) -> None:
    channel = Channel()
    sink = ChannelSink(channel)  # type: ignore[arg-type]
    sink.output(STDOUT, *chunk(b"y" * size))
    assert channel.sent == []
    sink.output(STDOUT, *chunk(b"z"))  # past _HOLD when size is _HOLD: the held go first
    sink.flush()
    assert b"".join(data for _, data in channel.sent) == b"y" * size + b"z"
