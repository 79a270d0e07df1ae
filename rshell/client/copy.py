"""``Connection.put`` and ``Connection.get``, written once for both backends:
the local half of a copy (transfer.send, transfer.receive), the backend's
``put``/``get`` for the wire, and what the caller gets back (``Copied``,
or ``CopyFailed`` naming each file that failed).

Must not import click, paramiko, or the server side.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rshell.errors import CopyFailed, UsageError
from rshell.protocol.frames import HEADER_SIZE
from rshell.result import Copied
from rshell.transfer.receive import Receiver
from rshell.transfer.send import Progress, Sender, source_name

if TYPE_CHECKING:
    from rshell.client.backend import Backend

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _paths(given: Paths, what: str) -> list[str]:
    items = [given] if isinstance(given, (str, os.PathLike)) else list(given)
    paths = [os.fspath(p) for p in items]
    if not paths or any(not p or "\0" in p for p in paths):
        raise UsageError(f"{what}: a path is empty or holds a NUL byte")
    return paths


def _outcome(files: int, size: int, start: float,
             failures: list[tuple[str, str]]) -> Copied:
    copied = Copied(files, size, time.monotonic() - start, tuple(failures))
    if failures:
        first = f"{failures[0][0]}: {failures[0][1]}"
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise CopyFailed(first + more, copied)
    return copied


def _asked_name(path: str) -> str | None:
    """The top-level name a remote path arrives as; None where only the server
    knows it (``.``, ``..``, the home)."""
    name = posixpath.basename(path.rstrip("/"))
    return None if name in ("", ".", "..", "~") else name


def upload(backend: Backend, local: Paths, remote: str, *, recursive: bool,
           preserve: bool, progress: Progress | None) -> Copied:
    sources = _paths(local, "put")
    if "\0" in remote:
        raise UsageError("put: the remote path holds a NUL byte")
    start = time.monotonic()
    sender = Sender([(p, source_name(p)) for p in sources], recursive=recursive,
                    preserve=preserve, headroom=HEADER_SIZE, progress=progress)
    tally = backend.put(sender, remote, recursive=recursive, preserve=preserve,
                        many=len(sources) > 1)
    return _outcome(tally.files, tally.size, start, sender.failures + tally.failures)


def download(backend: Backend, remote: Paths, local: str | os.PathLike[str], *,
             recursive: bool, preserve: bool, progress: Progress | None) -> Copied:
    sources = _paths(remote, "get")
    start = time.monotonic()
    receiver = Receiver(os.fspath(local), preserve=preserve, many=len(sources) > 1,
                        progress=progress, asked=[_asked_name(p) for p in sources])
    receiver.open()
    try:
        tally = backend.get(sources, receiver, recursive=recursive, preserve=preserve)
    finally:
        receiver.close()
    return _outcome(receiver.files, receiver.size, start, tally.failures + receiver.failures)
