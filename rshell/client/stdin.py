"""Local stdin sources for a remote command: bytes, files, pipes, iterables.

A pump hands the client's loop chunks of stdin as credit allows.  One whose
``fd`` is set is watched by the loop's epoll (pipes, terminals, sockets);
the others are always ready (bytes in memory, regular files, iterables) and
are read only while the server grants stdin credit.

Must not import anything above layer 0.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import IO, Any, Union

StdinSource = Union[bytes, bytearray, memoryview, str, IO[Any], Iterable[bytes], "Pump", None]


class Pump:
    """Pulls local stdin for a command; ``fd`` is set when select can watch it."""

    fd: int | None = None
    ready = True

    def read(self, n: int) -> bytes | memoryview | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _BytesPump(Pump):
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def read(self, n: int) -> memoryview | None:
        if self._pos >= len(self._view):
            return None
        chunk = self._view[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


class _FdPump(Pump):
    def __init__(self, fd: int) -> None:
        # epoll cannot watch regular files, nor devices such as /dev/zero and
        # /dev/null (EPERM): they are always readable anyway.
        self.fd = fd if _pollable(fd) else None
        self._fd = fd
        self._was_blocking = os.get_blocking(fd)
        if self.fd is not None:
            os.set_blocking(fd, False)

    def read(self, n: int) -> bytes | None:
        try:
            data = os.read(self._fd, n)
        except BlockingIOError:
            return b""
        return data or None

    def close(self) -> None:
        if self.fd is not None:
            os.set_blocking(self._fd, self._was_blocking)


class _FilePump(Pump):
    def __init__(self, file: IO[Any]) -> None:
        self._file = file
        self._rest = b""  # a text file's n characters can be more than n bytes

    def read(self, n: int) -> bytes | None:
        if not self._rest:
            data = self._file.read(n)
            if isinstance(data, str):
                data = data.encode()
            if not data:
                return None
            self._rest = data
        chunk, self._rest = self._rest[:n], self._rest[n:]
        return chunk


class _IterPump(Pump):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._rest = b""

    def read(self, n: int) -> bytes | None:
        while not self._rest:
            try:
                self._rest = next(self._it)
            except StopIteration:
                return None
        chunk, self._rest = self._rest[:n], self._rest[n:]
        return chunk


def _pollable(fd: int) -> bool:
    """Whether epoll can watch ``fd`` (a pipe, a socket, a terminal)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode):
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    import select

    poller = select.epoll()
    try:
        poller.register(fd, select.EPOLLIN)
    except PermissionError:
        return False
    finally:
        poller.close()
    return True


def pump_for(source: StdinSource) -> Pump | None:
    if source is None or isinstance(source, Pump):
        return source
    if isinstance(source, str):
        return _BytesPump(source.encode())
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _BytesPump(source)
    if hasattr(source, "read"):
        try:
            fd = source.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):
            return _FilePump(source)  # type: ignore[arg-type]
        return _FdPump(fd)
    return _IterPump(source)
