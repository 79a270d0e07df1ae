"""Length-prefixed framing: the answer to TCP's "sticky packets".

A frame is a 4-byte big-endian unsigned payload length, a 1-byte message
type, then the payload.  The length is checked against the decoder's maximum
*before* anything is buffered for the payload, so a hostile prefix cannot make
us allocate.  Received data is kept as the immutable ``bytes`` objects it
arrived in; a payload that lies inside one of them is handed out as a
zero-copy ``memoryview``, and only a payload split across reads is joined.

Sans-IO: never imports socket, ssl, threading or subprocess.
"""

from __future__ import annotations

import struct
from collections import deque

from rshell.errors import LocalProtocolError

HEADER = struct.Struct("!IB")
HEADER_SIZE = HEADER.size
#: Largest payload either side accepts; data messages are chunked below it.
MAX_PAYLOAD = 1 << 20
#: Size of the output and stdin chunks we send (well below MAX_PAYLOAD).
CHUNK_SIZE = 256 * 1024

pack_header = HEADER.pack
pack_header_into = HEADER.pack_into


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    """One frame as bytes; callers on the hot path use ``pack_header_into``."""
    return HEADER.pack(len(payload), kind) + payload


class FrameDecoder:
    """Bytes in, ``(kind, payload)`` frames out, whatever the read boundaries."""

    __slots__ = ("_chunks", "_offset", "_size", "max_payload")

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # consumed bytes of _chunks[0]
        self._size = 0  # unconsumed bytes in all chunks
        self.max_payload = max_payload

    @property
    def buffered(self) -> int:
        return self._size

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def next_frame(self) -> tuple[int, memoryview | bytes] | None:
        """The next whole frame, or None until more data is fed.

        Raises LocalProtocolError for a length above the maximum; the decoder
        is then unusable and the connection must be closed.
        """
        if self._size < HEADER_SIZE:
            return None
        first = self._chunks[0]
        off = self._offset
        if len(first) - off >= HEADER_SIZE:
            length, kind = HEADER.unpack_from(first, off)
        else:
            length, kind = HEADER.unpack(self._peek(HEADER_SIZE))
        if length > self.max_payload:
            raise LocalProtocolError(
                f"frame of {length} bytes exceeds the {self.max_payload} byte limit",
                "frame-too-large",
            )
        total = HEADER_SIZE + length
        if self._size < total:
            return None
        if len(first) - off >= total:
            payload: memoryview | bytes = memoryview(first)[off + HEADER_SIZE : off + total]
            self._advance(total)
        else:
            payload = memoryview(self._take(total))[HEADER_SIZE:]
        return kind, payload

    def _peek(self, n: int) -> bytes:
        out = bytearray()
        off = self._offset
        for chunk in self._chunks:
            out += chunk[off : off + n - len(out)]
            off = 0
            if len(out) == n:
                break
        return bytes(out)

    def _advance(self, n: int) -> None:
        self._size -= n
        self._offset += n
        while self._chunks and self._offset >= len(self._chunks[0]):
            self._offset -= len(self._chunks.popleft())

    def _take(self, n: int) -> bytes:
        parts = []
        need = n
        while need:
            chunk = self._chunks[0]
            avail = len(chunk) - self._offset
            if avail <= need:
                parts.append(memoryview(chunk)[self._offset :])
                self._chunks.popleft()
                self._offset = 0
                need -= avail
            else:
                parts.append(memoryview(chunk)[self._offset : self._offset + need])
                self._offset += need
                need = 0
        self._size -= n
        return b"".join(parts)
