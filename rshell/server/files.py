"""A file transfer on a native connection: the server's half of ``Put`` and
``Get`` (protocol/files.py), between the session's loop and transfer/.

An upload feeds each entry to a ``transfer.receive.Receiver`` as its frame
is decoded: the disk write is done before the next frame is read, so TCP's
own window bounds what the client can have in flight, and no credit is
needed.  A download is pumped by the session's loop while fewer than
``HIGH_WATER`` bytes wait in the socket (as command output is), its chunks
read straight into frame buffers.  Both report every file through the
connection's ``Recorder`` (the same audit event the SFTP subsystem writes),
and both are refused for keys ``exec.policy.transfer_refusal`` names.

Never imports client/ or cli/.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Protocol

from rshell.errors import LocalProtocolError
from rshell.exec.command import HIGH_WATER
from rshell.exec.policy import Login, transfer_refusal
from rshell.exec.record import Recorder
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
from rshell.protocol.frames import HEADER_SIZE
from rshell.protocol.messages import Message
from rshell.transfer.names import home_path
from rshell.transfer.receive import DestinationError, Receiver
from rshell.transfer.send import Event, Sender, send_event, source_name
from rshell.transport import Stream


class Send(Protocol):
    """The session's way to send a message: now, or (``flush`` False) queued
    to go out with the ones after it."""

    def __call__(self, msg: Message, flush: bool = True) -> None: ...


def refused(login: Login, record: Recorder, send: Send, direction: str, what: str) -> bool:
    """True if this connection may not copy files now: said (TransferEnd with
    the reason) and audited here, once for both directions."""
    reason = transfer_refusal(login.grant)
    if login.stopping:
        reason = "server shutting down"
    elif reason is not None:
        reason = f"refused: {reason}"
    if reason is None:
        return False
    record.transferred(direction, what, 0, None, reason)
    send(TransferEnd(error=reason))
    return True


class Upload:
    """A ``Put``: entries from the client written under its destination."""

    def __init__(self, put: Put, login: Login, record: Recorder, send: Send) -> None:
        self.send, self.record = send, record
        self.receiver = Receiver(home_path(put.path, login.home), preserve=put.preserve,
                                 many=put.many, on_file=self._on_file, shown=put.path or "~")
        self.reported = False

    def start(self) -> bool:
        """PutReady, or the TransferEnd that refuses the destination: True if open."""
        try:
            directory = self.receiver.open()
        except DestinationError as exc:
            self.record.transferred("upload", self.receiver.dest, 0, None, str(exc))
            self.send(TransferEnd(error=str(exc)))
            return False
        self.send(PutReady(directory))
        return True

    def _on_file(self, rel: str, size: int, sha256: str | None, error: str | None) -> None:
        self.record.transferred("upload", os.path.join(self.receiver.root, rel), size, sha256,
                                error)
        if error is not None:
            self.send(Verdict(rel, error))

    def on_message(self, msg: Message) -> bool:
        """One frame of the upload; True once it is over (TransferEnd sent)."""
        receiver = self.receiver
        try:
            if isinstance(msg, FileData):
                receiver.data(msg.data)
            elif isinstance(msg, Entry):
                receiver.entry(msg)
            elif isinstance(msg, EntryEnd):
                receiver.end(msg)
            else:
                assert isinstance(msg, Done)
                self.close()
                self.send(TransferEnd(receiver.files, receiver.size, len(receiver.failures)))
                return True
        except DestinationError as exc:  # a stream out of order: the client's bug
            raise LocalProtocolError(str(exc), "unexpected") from None
        return False

    def close(self) -> None:
        """Files that arrived whole are committed; one half-received is dropped.
        The totals are logged once."""
        receiver = self.receiver
        receiver.close()
        if not self.reported:
            self.reported = True
            self.record.copied("upload", receiver.dest, receiver.files, receiver.size,
                               len(receiver.failures))

    def abort(self, reason: str) -> None:
        """The server stops it: closed, and the client told why."""
        self.close()
        self.send(TransferEnd(self.receiver.files, self.receiver.size,
                              len(self.receiver.failures), reason))


class Download:
    """A ``Get``: entries read here, sent as frames while the socket takes them."""

    def __init__(self, get: Get, login: Login, record: Recorder, send: Send,
                 stream: Stream) -> None:
        self.send, self.record, self.stream = send, record, stream
        sources = [(home_path(p, login.home), source_name(p), p or "~") for p in get.paths]
        self.sender = Sender(sources, recursive=get.recursive, preserve=get.preserve,
                             headroom=HEADER_SIZE, on_file=self._on_file)
        self.events: Generator[Event, None, None] = self.sender.events()
        self.where = " ".join(path for path, _, _ in sources)
        self.reported = False

    def _on_file(self, path: str, size: int, sha256: str | None, error: str | None) -> None:
        self.record.transferred("download", path, size, sha256, error)

    def _queue(self, msg: Message) -> None:
        self.send(msg, flush=False)

    def pump(self) -> bool:
        """Send entries until the socket holds HIGH_WATER bytes; True once the
        download is over (TransferEnd sent)."""
        stream, sender = self.stream, self.sender
        for event in self.events:
            send_event(stream, sender, event, self._queue)
            if stream.queued >= HIGH_WATER:
                return False
        self.close()
        self.send(TransferEnd(sender.files, sender.size, len(sender.failures)))
        return True

    def close(self) -> None:
        """The file being read is closed (the generator's own ``finally``); the
        totals are logged once."""
        self.events.close()
        if not self.reported:
            self.reported = True
            sender = self.sender
            self.record.copied("download", self.where, sender.files, sender.size,
                               len(sender.failures))

    def abort(self, reason: str) -> None:
        """The server stops it: closed, and the client told why."""
        self.close()
        self.send(TransferEnd(self.sender.files, self.sender.size,
                              len(self.sender.failures), reason))
