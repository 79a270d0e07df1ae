"""Local stdin sources for a remote command (rshell.client.stdin): every kind
``run(stdin=...)`` accepts becomes a pump that hands out at most ``n`` bytes
a read, ``b""`` for "nothing yet" and None at the end; pipes are watched
(``fd`` set), what is always readable is not.

Real pipes and files; no server.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rshell.client.stdin import Pump, pump_for
from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env


def drain(pump: Pump, n: int) -> bytes:
    """Everything ``pump`` hands out, ``n`` bytes a read at most."""
    out = bytearray()
    while (chunk := pump.read(n)) is not None:
        assert len(chunk) <= n, (len(chunk), n)
        out += chunk
    return bytes(out)


def test_no_source_is_no_pump() -> None:
    assert pump_for(None) is None


@pytest.mark.parametrize("source", [
    b"hello world", bytearray(b"hello world"), memoryview(b"hello world"), "hello world",
])
def test_bytes_in_memory_in_bounded_reads(source: bytes | bytearray | memoryview | str) -> None:
    pump = pump_for(source)
    assert pump is not None and pump.fd is None and pump.ready
    assert drain(pump, 4) == b"hello world"
    assert pump.read(4) is None  # stays at the end


def test_text_is_utf8() -> None:
    pump = pump_for("é€")
    assert pump is not None and drain(pump, 1) == "é€".encode()


def test_a_multidimensional_view_is_read_as_bytes() -> None:
    view = memoryview(bytearray(range(6))).cast("B", (2, 3))
    pump = pump_for(view)
    assert pump is not None and drain(pump, 4) == bytes(range(6))


def test_empty_source_ends_at_once() -> None:
    for source in (b"", "", io.BytesIO(b""), iter([])):
        pump = pump_for(source)  # type: ignore[arg-type]
        assert pump is not None and pump.read(10) is None, source


def test_file_like_without_descriptor() -> None:
    pump = pump_for(io.BytesIO(b"abcdef"))
    assert pump is not None and pump.fd is None
    assert drain(pump, 4) == b"abcdef"


def test_a_text_file_like_is_sent_as_utf8() -> None:
    pump = pump_for(io.StringIO("abc€"))
    assert pump is not None and pump.fd is None
    out = bytearray()
    while (chunk := pump.read(4)) is not None:
        assert len(chunk) <= 4, "more bytes than the credit asked for"
        out += chunk
    assert bytes(out) == "abc€".encode()


def test_chunks_of_an_iterable_are_split_to_fit_and_empty_ones_skipped() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"abcdefg"
        yield b""
        yield b"hi"

    pump = pump_for(chunks())
    assert pump is not None and pump.fd is None
    assert [pump.read(3) for _ in range(5)] == [b"abc", b"def", b"g", b"hi", None]


def test_a_regular_file_is_read_not_watched(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(os.urandom(100_000))
    with open(path, "rb") as f:
        pump = pump_for(f)
        assert pump is not None and pump.fd is None  # epoll cannot watch a regular file
        assert drain(pump, 65536) == path.read_bytes()
        pump.close()


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_epoll_cannot_watch_is_read_not_watched(device: str) -> None:
    """epoll refuses /dev/zero and /dev/null (EPERM): ``rshell h -c 'head -c
    5' < /dev/zero`` ended in 'Operation not permitted' when the client
    tried to watch it; it is read as a regular file is."""
    with open(device, "rb") as f:
        pump = pump_for(f)
        assert pump is not None and pump.fd is None
        assert pump.read(5) == (b"\0" * 5 if device == "/dev/zero" else None)
        pump.close()


def test_the_client_reads_stdin_from_dev_zero(server: ServerProcess, home: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run([RSHELL, *CLIENT_MODE, server.address, "-c",
                               "head -c 3000000 | wc -c"], stdin=zero, capture_output=True,
                              env=base_env(home), timeout=60)
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, b"3000000", b"")


def test_a_pipe_is_watched_nonblocking_and_restored() -> None:
    r, w = os.pipe()
    try:
        with open(r, "rb", buffering=0, closefd=False) as reader:
            pump = pump_for(reader)
            assert pump is not None and pump.fd == r
            assert not os.get_blocking(r)
            assert pump.read(10) == b""  # nothing yet, but not the end
            os.write(w, b"abc")
            assert pump.read(2) == b"ab"
            assert pump.read(10) == b"c"
            os.close(w)
            w = -1
            assert pump.read(10) is None  # the writer is gone: the end
            pump.close()
            assert os.get_blocking(r)  # the caller's descriptor as it was
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
