"""The sending side of a copy: local files and trees as the entry stream of
protocol/files.py, each file's SHA-256 computed while it is read.

One ``Sender`` serves an upload's client and a download's server.  It reads
straight into buffers that keep ``headroom`` bytes in front, so the native
wire frames a chunk in place (as the engine frames command output); a
consumer that is done with a chunk's buffer hands it back (``recycle``), so
a copy of any size holds one or two buffers.  Top-level sources are
followed when they are links (as scp and cp follow their operands); inside a
tree a link is sent as a link, never followed.

Must not import server/, exec/, client/ or cli/.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rshell.protocol.files import DIR, END, FILE, LINK, Entry, EntryEnd, Verdict
from rshell.protocol.frames import HEADER_SIZE, pack_header_into
from rshell.protocol.messages import MessageType

if TYPE_CHECKING:
    from rshell.transport import Stream

#: Bytes read per chunk: the largest frame's payload.
CHUNK = 1 << 20
#: A transfer's frames are sent each time this much more is queued
#: (transport.Stream.flush_every), so that a tree's small frames go out
#: joined (transport._JOIN); the end of the transfer sends the rest.
SEND_AT = 64 << 10
_FILE_DATA = int(MessageType.FILE_DATA)


@dataclass(slots=True)
class Chunk:
    """The next bytes of the current file: ``buf[head:head + n]``."""

    buf: bytearray
    head: int
    n: int

    @property
    def data(self) -> memoryview:
        return memoryview(self.buf)[self.head:self.head + self.n]

    def frame(self) -> memoryview:
        """The chunk as a FileData frame, its header written into the headroom
        in front (a Sender made with ``headroom=HEADER_SIZE``): no copy."""
        start = self.head - HEADER_SIZE
        pack_header_into(self.buf, start, self.n, _FILE_DATA)
        return memoryview(self.buf)[start:self.head + self.n]


Event = Entry | Chunk | EntryEnd | Verdict
#: (path within the transfer, bytes so far, the file's size): after each chunk
#: (and once for an empty file), on either side of a copy.
Progress = Callable[[str, int, int], None]
#: (path, bytes, sha256 or None, error or None): once per file sent, written or
#: failed (the receiver's path is within the transfer, the sender's the one read).
OnFile = Callable[[str, int, "str | None", "str | None"], None]


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class Sender:
    """Yields the entries of ``sources`` (a path, the name it is sent as, and
    optionally how the user wrote it, for messages); counts files and bytes
    sent, and what could not be."""

    def __init__(self, sources: list[tuple[str, str]] | list[tuple[str, str, str]], *,
                 recursive: bool = False,
                 preserve: bool = False, headroom: int = 0, chunk: int = CHUNK,
                 progress: Progress | None = None, on_file: OnFile | None = None) -> None:
        self.sources, self.recursive, self.preserve = sources, recursive, preserve
        self.headroom, self.chunk, self.progress = headroom, chunk, progress
        self.on_file = on_file
        self.files = self.size = 0
        self.failures: list[tuple[str, str]] = []
        self._spare: bytearray | None = None

    def recycle(self, buf: bytearray) -> None:
        """A chunk's buffer the consumer no longer needs: the next read may use it."""
        self._spare = buf

    def events(self) -> Generator[Event, None, None]:
        for path, name, *given in self.sources:
            shown = given[0] if given else path
            try:
                st = os.stat(path)  # an operand is followed, as scp does
            except OSError as exc:
                yield self._fail(shown, _reason(exc), path)
                continue
            if stat.S_ISDIR(st.st_mode) and not self.recursive:
                yield self._fail(shown, "is a directory (use -r)", path)
                continue
            yield from self._entry(path, name, name, st, follow=True)

    def _fail(self, where: str, reason: str, path: str | None = None, size: int = 0) -> Verdict:
        self.failures.append((where, reason))
        if self.on_file is not None:
            self.on_file(path or where, size, None, reason)
        return Verdict(where, reason)

    def _meta(self, kind: str, name: str, st: os.stat_result, **more: object) -> Entry:
        return Entry(kind, name, mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime,
                     atime=st.st_atime, **more)  # type: ignore[arg-type]

    def _entry(self, path: str, name: str, rel: str, st: os.stat_result,
               follow: bool = False) -> Iterator[Event]:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            yield from self._tree(path, name, rel, st)
        elif stat.S_ISREG(mode):
            yield from self._file(path, name, rel, follow)
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                yield self._fail(rel, _reason(exc))
                return
            yield self._meta(LINK, name, st, target=target)
        else:
            yield self._fail(rel, "not a regular file, directory or link")

    def _tree(self, path: str, name: str, rel: str, st: os.stat_result) -> Iterator[Event]:
        try:
            with os.scandir(path) as it:
                children = sorted((e.name, e.path) for e in it)
        except OSError as exc:
            yield self._fail(rel, _reason(exc))
            return
        yield self._meta(DIR, name, st)
        for child, child_path in children:
            try:
                child_st = os.lstat(child_path)  # inside a tree: never followed
            except OSError as exc:
                yield self._fail(f"{rel}/{child}", _reason(exc))
                continue
            yield from self._entry(child_path, child, f"{rel}/{child}", child_st)
        yield Entry(END)

    def _file(self, path: str, name: str, rel: str, follow: bool) -> Iterator[Event]:
        flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            yield self._fail(rel, _reason(exc))
            return
        try:
            st = os.fstat(fd)  # what was opened, not what the name said a moment ago
            if not stat.S_ISREG(st.st_mode):
                yield self._fail(rel, "not a regular file")
                return
            size = st.st_size
            yield self._meta(FILE, name, st, size=size)
            digest = hashlib.sha256()
            sent = 0
            while True:
                want = min(self.chunk, size - sent)
                if want <= 0:
                    break
                buf = self._buffer(want)
                try:
                    n = os.readv(fd, [memoryview(buf)[self.headroom:self.headroom + want]])
                except OSError as exc:
                    self._spare = buf
                    yield EntryEnd("", self._fail(rel, f"read error: {_reason(exc)}", path,
                                                  sent).error)
                    return
                if n == 0:
                    self._spare = buf
                    reason = f"file shrank while being read ({sent} of {size} bytes)"
                    yield EntryEnd("", self._fail(rel, reason, path, sent).error)
                    return
                chunk = Chunk(buf, self.headroom, n)
                digest.update(chunk.data)
                sent += n
                yield chunk
                if self.progress is not None:
                    self.progress(rel, sent, size)
            self.files += 1
            self.size += sent
            if self.progress is not None and size == 0:
                self.progress(rel, 0, 0)
            sha = digest.hexdigest()
            if self.on_file is not None:
                self.on_file(path, sent, sha, None)
            yield EntryEnd(sha)
        finally:
            os.close(fd)

    def _buffer(self, want: int) -> bytearray:
        """A buffer for ``want`` bytes after the headroom: the spare one if it
        is big enough, else one of the size needed (a tree of small files
        must not zero a megabyte per file)."""
        buf, self._spare = self._spare, None
        if buf is None or len(buf) < self.headroom + want:
            buf = bytearray(self.headroom + want)
        return buf


def send_event(stream: Stream, sender: Sender, event: Event,
               queue: Callable[[Entry | EntryEnd | Verdict], None]) -> None:
    """One event of a transfer (native wire, either direction) onto ``stream``:
    a chunk framed in place, a message through ``queue`` (framed and queued,
    not sent).  They are sent each time SEND_AT more is queued, so a tree's
    small frames go out joined; a chunk's buffer goes back to ``sender`` only
    once the kernel has taken everything."""
    if isinstance(event, Chunk):
        stream.write(event.frame())
        if stream.flush_every(SEND_AT):
            sender.recycle(event.buf)
    else:
        queue(event)
        stream.flush_every(SEND_AT)


def source_name(path: str) -> str:
    """The name a source is sent as: its last component (``/a/b/`` -> ``b``;
    ``.`` and ``..`` by what they name)."""
    stripped = path.rstrip("/")
    name = os.path.basename(stripped)
    if name in ("", ".", ".."):
        name = os.path.basename(os.path.realpath(path))
    return name
