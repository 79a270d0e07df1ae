"""Recording a terminal session as an asciicast v2 file (``--record-dir``).

``Cast`` writes one recording: a header line (the window, ``TERM``, the
shell, the start time), then one JSON array per event, one a line:
``[seconds, "o", text]`` for output, ``[seconds, "r", "COLSxROWS"]`` for a
window change and, with ``--record-input`` only, ``[seconds, "i", text]``
for what the client typed (passwords typed at prompts included: sensitive).
Text is decoded from UTF-8 incrementally, so a character split across two
reads is written whole; bytes that are not UTF-8 become U+FFFD, as a
terminal would show them.  ``asciinema play FILE`` replays it.

The file is created in the record directory with ``O_CREAT|O_EXCL|
O_NOFOLLOW``, mode 0600, named ``YYYYmmddTHHMMSS-<session>-<key>.cast``
(UTC; session: the session marker's ``pid.connection`` and a serial number
of this process, so two recordings of one connection in one second differ;
key: the key's fingerprint as a file name, ``/`` as ``_``, ``+`` as ``-``,
``nokey`` under ``--no-auth``).

Writing costs the command no more than a buffered write: events gather in
a 64 KiB buffer, written when it fills or a second after the last write,
and at the end.  Recording never ends a session: if the file cannot be
created, or a write fails (a full disk), the error is logged once, the
recording ends there (what was written stays), and the command goes on
unrecorded.

``Recorded`` is the ``Sink`` a recorded command's output goes through: it
writes each chunk to the cast, then hands it on unchanged.

Must not import rshell.protocol, sockets or paramiko (nor exec.command,
which imports this module).
"""

from __future__ import annotations

import codecs
import itertools
import json
import logging
import os
import re
import time
from typing import IO, Protocol

from rshell.exec.policy import Launch, Limits

log = logging.getLogger("rshell.server")

#: Bytes of events gathered before one write to the file.
BUFFER = 1 << 16
#: Events are on disk at most this long after they happened (if more follow).
FLUSH_EVERY = 1.0
#: A window with an unknown side (0) is recorded as this, the usual default.
DEFAULT_SIZE = (80, 24)
#: Recordings this process made: makes names unique within a second.
_SERIAL = itertools.count(1)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class Delivers(Protocol):
    """What a sink is to ``Recorded`` (structurally exec.command.Sink, not
    imported: command imports this module)."""

    headroom: int

    @property
    def queued(self) -> int: ...

    def output(self, kind: int, buf: bytearray, n: int) -> bool: ...


def file_name(marker: str, fingerprint: str | None, when: float | None = None) -> str:
    """``YYYYmmddTHHMMSS-<pid>.<connection>.<serial>-<key>.cast`` (see the
    module docstring); no ``-`` before the key's part, so the name splits back."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if when is None else when))
    session = _UNSAFE.sub("_", marker.replace(":", ".").replace("-", "_"))
    key = "nokey" if fingerprint is None else _UNSAFE.sub(
        "_", fingerprint.replace(":", "_").replace("/", "_").replace("+", "-").rstrip("="))
    return f"{stamp}-{session}.{next(_SERIAL)}-{key[:100]}.cast"


class Cast:
    """One recording being written; see the module docstring."""

    __slots__ = ("path", "_file", "_started", "_flushed", "_out", "_in", "_size")

    def __init__(self, path: str, file: IO[bytes], size: tuple[int, int]) -> None:
        self.path = path
        self._file: IO[bytes] | None = file
        self._started = self._flushed = time.monotonic()
        self._out = codecs.getincrementaldecoder("utf-8")("replace")
        self._in = codecs.getincrementaldecoder("utf-8")("replace")
        self._size = size

    @classmethod
    def start(cls, launch: Launch, limits: Limits, cols: int, rows: int) -> Cast | None:
        """A new recording of ``launch`` in ``limits.record_dir``, its header
        written; None (logged) when the file cannot be made."""
        from rshell.exec.terminal import login_shell

        assert limits.record_dir is not None and launch.pty is not None
        path = os.path.join(limits.record_dir, file_name(launch.marker, launch.fingerprint))
        shell = login_shell(limits.shell)[0] if launch.login else launch.env.get(
            "SHELL", limits.shell)
        size = (cols or DEFAULT_SIZE[0], rows or DEFAULT_SIZE[1])
        header: dict[str, object] = {
            "version": 2, "width": size[0], "height": size[1], "timestamp": int(time.time()),
            "env": {"TERM": launch.pty.term, "SHELL": shell},
            "command": shell if launch.login else launch.command,
        }
        if launch.text:
            header["title"] = launch.text
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.error("cannot record the terminal session in %s: %s; it runs unrecorded",
                      path, exc.strerror or exc)
            return None
        file = os.fdopen(fd, "wb", buffering=BUFFER)
        cast = cls(path, file, size)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask took away
        except OSError as exc:
            cast._failed(exc)
            return cast
        cast._write(json.dumps(header, ensure_ascii=False).encode() + b"\n")
        return cast

    @property
    def recording(self) -> bool:
        """False once the recording ended (closed, or a write failed)."""
        return self._file is not None

    def output(self, data: bytes | memoryview) -> None:
        """What the terminal showed."""
        if self._file is not None:
            self._event("o", self._out.decode(data))

    def input(self, data: bytes | memoryview) -> None:
        """What the client typed (only called with ``--record-input``)."""
        if self._file is not None:
            self._event("i", self._in.decode(data))

    def resize(self, cols: int, rows: int) -> None:
        """The window is now ``cols`` x ``rows`` (recorded when it changed)."""
        if self._file is not None and cols > 0 and rows > 0 and (cols, rows) != self._size:
            self._size = (cols, rows)
            self._event("r", f"{cols}x{rows}")

    def close(self) -> None:
        """End the recording: what the decoder still holds (a character cut
        short at the very end) is written as U+FFFD, then the file is closed."""
        file = self._file
        if file is None:
            return
        self._event("o", self._out.decode(b"", final=True))
        if self._file is None:
            return  # that write failed, and closed it
        self._file = None
        try:
            file.close()
        except OSError as exc:
            self._file = file
            self._failed(exc)

    def _event(self, kind: str, text: str) -> None:
        if not text:
            return  # half a character: it comes whole with the next chunk
        now = time.monotonic()
        line = json.dumps([round(now - self._started, 6), kind, text], ensure_ascii=False)
        self._write(line.encode() + b"\n")
        if self._file is not None and now - self._flushed >= FLUSH_EVERY:
            self._flushed = now
            try:
                self._file.flush()
            except OSError as exc:
                self._failed(exc)

    def _write(self, line: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(line)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        """Log once, close, record nothing more: the session goes on."""
        file, self._file = self._file, None
        log.error("recording %s stopped: %s; the session goes on unrecorded",
                  self.path, exc.strerror or exc)
        if file is not None:
            try:
                file.close()
            except OSError:
                pass  # the buffer's rest is lost with the disk's room; the fd is closed


class Recorded:
    """A sink that writes each chunk to its ``Cast``, then delivers it."""

    __slots__ = ("inner", "cast", "headroom")

    def __init__(self, inner: Delivers, cast: Cast) -> None:
        self.inner, self.cast, self.headroom = inner, cast, inner.headroom

    @property
    def queued(self) -> int:
        return self.inner.queued

    def output(self, kind: int, buf: bytearray, n: int) -> bool:
        # First: once delivered, the buffer may be the inner sink's to change.
        self.cast.output(memoryview(buf)[self.headroom:self.headroom + n])
        return self.inner.output(kind, buf, n)
