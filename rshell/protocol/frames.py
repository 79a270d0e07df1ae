"""Length-prefixed framing: the answer to TCP's "sticky packets".

A frame is a 4-byte big-endian unsigned payload length, a 1-byte message
type, then the payload.  The length is checked against the decoder's maximum
*before* anything is buffered for the payload, so a hostile prefix cannot make
us allocate.  The one decoder receives in place into a reusable buffer and
hands payloads out as zero-copy views (see BufferDecoder).

Sans-IO: never imports socket, ssl, threading or subprocess.
"""

from __future__ import annotations

import mmap
import struct

from rshell.errors import ErrorCode, LocalProtocolError

HEADER = struct.Struct("!IB")
HEADER_SIZE = HEADER.size
#: Largest payload either side accepts; data messages are chunked below it.
MAX_PAYLOAD = 1 << 20
#: Size of the output chunks the server reads and frames (at most MAX_PAYLOAD):
#: big, so that a gigabyte costs few passes through Python.
CHUNK_SIZE = 1 << 20
#: Size of the stdin chunks a client sends (small enough to interleave with signals).
STDIN_CHUNK = 256 * 1024

pack_header = HEADER.pack
pack_header_into = HEADER.pack_into


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    """One frame as bytes; callers on the hot path use ``pack_header_into``."""
    return HEADER.pack(len(payload), kind) + payload


class BufferDecoder:
    """Frames decoded in place from one reusable buffer that the caller reads into.

    For the receiving hot path: ``recv_into(decoder.writable())``, then
    ``commit(n)``, then ``next_frame()`` until None.  No allocation and no
    copy per frame; in exchange a payload view is valid only until the next
    ``writable()`` call, which may move the one partial frame to the front.
    The capacity holds several maximal frames, so that move is rare and never
    overlaps itself.
    """

    __slots__ = ("_buf", "_view", "_start", "_end", "_peak", "max_payload")

    def __init__(self, max_payload: int = MAX_PAYLOAD, frames: int = 4) -> None:
        self.max_payload = max_payload
        # Anonymous memory, not bytearray: bytearray(n) zero-fills (and so makes
        # resident) every page at once, while these pages cost nothing until a
        # big frame touches them, and ``release`` hands them back.
        self._buf = mmap.mmap(-1, max(frames * (HEADER_SIZE + max_payload), 1 << 16))
        self._view = memoryview(self._buf)
        self._start = 0  # first byte not yet handed out
        self._end = 0  # end of the bytes received
        self._peak = 0  # highest offset written since the last release

    @property
    def buffered(self) -> int:
        return self._end - self._start

    def writable(self) -> memoryview:
        """Free space to receive into (at least one maximal frame's worth)."""
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
        elif len(self._buf) - start < HEADER_SIZE + self.max_payload:
            n = end - start
            self._buf.move(0, start, n)  # memmove: overlap is fine
            self._start, self._end = 0, n
        return self._view[self._end :]

    def commit(self, n: int) -> None:
        """``n`` bytes were written at the start of the last ``writable()``."""
        self._end += n
        if self._end > self._peak:
            self._peak = self._end

    def release(self, keep: int = 1 << 16) -> None:
        """Return the pages a burst of big frames touched, if nothing is buffered.

        For the end of a command: idle connections then cost only ``keep`` bytes.
        """
        if self._start == self._end and self._peak > keep:
            self._start = self._end = 0
            self._buf.madvise(mmap.MADV_DONTNEED, keep, len(self._buf) - keep)
            self._peak = keep

    def feed(self, data: bytes) -> None:
        """Copy ``data`` in (for callers that already hold bytes, and tests)."""
        view = memoryview(data)
        while view:
            space = self.writable()
            if not space:  # only if the caller never drains next_frame()
                raise LocalProtocolError("receive buffer full", ErrorCode.FRAME_TOO_LARGE)
            n = min(len(space), len(view))
            space[:n] = view[:n]
            self.commit(n)
            view = view[n:]

    def partial(self) -> tuple[int, int | None]:
        """The incomplete frame held: (bytes buffered, whole frame size or None
        while its header is incomplete).  For describing a stream cut short."""
        start, end = self._start, self._end
        if end - start < HEADER_SIZE:
            return end - start, None
        length, _kind = HEADER.unpack_from(self._view, start)
        return end - start, HEADER_SIZE + length

    def next_frame(self) -> tuple[int, memoryview] | None:
        start, end = self._start, self._end
        if end - start < HEADER_SIZE:
            return None
        length, kind = HEADER.unpack_from(self._view, start)
        if length > self.max_payload:
            raise LocalProtocolError(
                f"frame of {length} bytes exceeds the {self.max_payload} byte limit",
                ErrorCode.FRAME_TOO_LARGE,
            )
        stop = start + HEADER_SIZE + length
        if stop > end:
            return None
        self._start = stop
        return kind, self._view[start + HEADER_SIZE : stop]
