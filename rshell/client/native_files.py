"""File transfer over the native backend: the client's half of ``Put`` and
``Get`` (protocol/files.py), over the backend's one socket and epoll loop.

An upload streams a ``transfer.send.Sender``'s entries with no round trip
per file: the server's verdicts are read whenever the socket's queue is
full and at the end.  A download feeds each frame to a
``transfer.receive.Receiver`` as it is decoded, so the disk's pace is
TCP's window and memory stays bounded.  Either way, an interruption
(KeyboardInterrupt, a failure) closes the connection: the server then drops
its half-written file, and ours is dropped by the Receiver.

Must not import click, paramiko, or the server side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from rshell.client.backend import Tally
from rshell.errors import ConnectionFailed, CopyFailed, RshellError
from rshell.protocol.files import (
    Done,
    Entry,
    EntryEnd,
    FileData,
    Get,
    Put,
    PutReady,
    TransferEnd,
    Verdict,
)
from rshell.protocol.messages import Message
from rshell.protocol.states import ClientProtocol, State
from rshell.transfer.send import send_event
from rshell.transport import Stream

if TYPE_CHECKING:
    from rshell.transfer.receive import Receiver
    from rshell.transfer.send import Sender

class NativeBackend(Protocol):
    """What a copy uses of client.native.NativeBackend (named here, not
    imported: native imports this module)."""

    address: str
    features: frozenset[str]
    stream: Stream | None
    proto: ClientProtocol

    def write(self, msg: Message, flush: bool = True) -> None: ...
    def poll(self, deadline: float | None, busy: bool = False, what: str = "command",
             on_wake: Callable[[], object] | None = None,
             until: float | None = None) -> Message | None: ...
    def until_message(self, deadline: float | None, what: str) -> Message: ...
    def _check_usable(self) -> Stream: ...
    def _abandon(self, exc: RshellError) -> None: ...


#: Stop reading files while this much waits for the socket.
HIGH_WATER = 4 << 20


def _usable(b: NativeBackend) -> None:
    b._check_usable()  # noqa: SLF001  # the backend's own rule, asked once
    if "files" not in b.features:
        raise RshellError(f"{b.address} cannot copy files: its rshell-server predates "
                          "file transfer (upload it with -c 'cat > FILE', or upgrade it)")


def _ended(msg: TransferEnd, tally: Tally) -> None:
    if msg.error is not None:
        raise CopyFailed(msg.error)
    tally.files, tally.size = msg.files, msg.size


def put(b: NativeBackend, sender: Sender, remote: str, *, recursive: bool,
        preserve: bool, many: bool) -> Tally:
    """Upload ``sender``'s entries to ``remote``; what the server wrote."""
    _usable(b)
    tally = Tally()
    with _cut_short(b):
        b.write(Put(remote, recursive, preserve, many))
        msg = b.until_message(None, "copy")
        if isinstance(msg, TransferEnd):
            _ended(msg, tally)
            return tally
        assert isinstance(msg, PutReady)
        stream = b.stream
        assert stream is not None

        def queue(msg: Message) -> None:
            b.write(msg, flush=False)

        for event in sender.events():
            if isinstance(event, Verdict):
                continue  # a local source that could not be read: the sender keeps it
            send_event(stream, sender, event, queue)
            while stream.queued >= HIGH_WATER:  # the server's pace; its verdicts meanwhile
                waited = b.poll(None, what="copy")
                if waited is not None and _early(waited, tally):
                    return tally
        b.write(Done())
        while True:
            msg = b.until_message(None, "copy")
            if _early(msg, tally):
                return tally


def _early(msg: Message, tally: Tally) -> bool:
    """A verdict (kept), or the end (True)."""
    if isinstance(msg, Verdict):
        tally.failures.append((msg.path, msg.error))
        return False
    if isinstance(msg, TransferEnd):
        _ended(msg, tally)
        return True
    raise ConnectionFailed(f"unexpected {type(msg).__name__} during a copy")


def get(b: NativeBackend, paths: list[str], receiver: Receiver, *, recursive: bool,
        preserve: bool) -> Tally:
    """Download ``paths`` into ``receiver`` (already open); the server's count
    and the sources it could not send."""
    _usable(b)
    tally = Tally()
    with _cut_short(b):
        b.write(Get(tuple(paths), recursive, preserve))
        while True:
            msg = b.until_message(None, "copy")
            if isinstance(msg, FileData):
                receiver.data(msg.data)
            elif isinstance(msg, Entry):
                receiver.entry(msg)
            elif isinstance(msg, EntryEnd):
                receiver.end(msg)
            elif _early(msg, tally):
                return tally


@contextmanager
def _cut_short(b: NativeBackend) -> Iterator[None]:
    """A copy cut short mid-transfer (a refusal at the end leaves the session
    READY): the connection's state is unknown, so nobody may use it again
    (the server then drops what it was writing), and the error says so."""
    try:
        yield
    except BaseException as exc:
        if b.proto.state is not State.READY:
            b._abandon(ConnectionFailed(  # noqa: SLF001
                f"copy interrupted: {exc}" if isinstance(exc, RshellError)
                else "copy interrupted"))
        if isinstance(exc, RshellError) and not isinstance(exc, CopyFailed):
            raise ConnectionFailed(f"{b.address}: copy interrupted: {exc}") from None
        raise
