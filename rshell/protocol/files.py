"""The file-transfer messages (feature ``files``, issue 14): one frozen
dataclass each, and their codec.

A transfer is a stream of entries in scp's order: a directory's ``Entry``,
the entries inside it, then an ``Entry`` of kind ``end`` that leaves it; a
file's ``Entry`` (its size known in advance), its ``FileData`` chunks, and
an ``EntryEnd`` with the SHA-256 the sender computed while reading (or the
reason it could not finish).  The same stream goes up (``Put``) and down
(``Get``); the server alone ends a transfer, with ``TransferEnd``.  A name
is one path component: the receiver refuses any other (transfer.names).
See docs/PROTOCOL.md section 7.9.

Sans-IO: never imports socket, ssl, threading or subprocess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Entry kinds: a regular file, a directory, a symbolic link, and the end of
#: the directory last entered.
FILE, DIR, LINK, END = "file", "dir", "link", "end"
KINDS = frozenset({FILE, DIR, LINK, END})
#: The largest file size and time an entry may carry (what a signed 64-bit
#: off_t and time_t hold).
MAX_SIZE = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Put:
    """Client -> server: files follow, for ``path`` (relative: to the account's
    home); ``many``: more than one top-level entry, so ``path`` must be a
    directory."""

    path: str
    recursive: bool = False
    preserve: bool = False
    many: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    """Client -> server: send these paths (relative: to the account's home)."""

    paths: tuple[str, ...]
    recursive: bool = False
    preserve: bool = False


@dataclass(frozen=True, slots=True)
class PutReady:
    """Server -> client: the destination is there; send the entries."""

    directory: bool  # the destination is a directory (entries go inside it)


@dataclass(frozen=True, slots=True)
class Entry:
    """Sender -> receiver: the next entry (``name`` one path component)."""

    kind: str
    name: str = ""
    size: int = 0
    mode: int = 0o644
    mtime: float = 0.0
    atime: float = 0.0
    target: str = ""  # a link's


@dataclass(frozen=True, slots=True)
class FileData:
    """Sender -> receiver: the next bytes of the current file."""

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class EntryEnd:
    """Sender -> receiver: the current file is complete (``sha256``, hex), or
    was not (``error``: the receiver discards it)."""

    sha256: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """Client -> server: no more entries in this Put."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Server -> client: ``path`` (relative to the transfer) failed, and why."""

    path: str
    error: str


@dataclass(frozen=True, slots=True)
class TransferEnd:
    """Server -> client: the transfer is over (``error``: refused or stopped
    as a whole); files and bytes as the server counted them."""

    files: int = 0
    size: int = 0
    failed: int = 0
    error: str | None = None


FileMessage = Put | Get | PutReady | Entry | FileData | EntryEnd | Done | Verdict | TransferEnd


class FieldError(ValueError):
    """A field is missing, of the wrong type or out of range (messages.py turns
    it into the protocol's ``malformed``)."""


def to_json(msg: FileMessage) -> dict[str, Any]:
    """The JSON object of a control message (FileData and Done have none)."""
    obj = {name: getattr(msg, name) for name in msg.__slots__}
    if isinstance(msg, Get):
        obj["paths"] = list(msg.paths)
    return obj


def _get(obj: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = obj.get(name, default)
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        raise FieldError(f"field {name!r} is missing or of the wrong type")
    return value


def _text(obj: dict[str, Any], name: str, default: Any = None) -> str:
    value: str = _get(obj, name, str, default)
    if "\0" in value:
        raise FieldError(f"field {name!r} contains a NUL byte")
    return value


def _count(obj: dict[str, Any], name: str, default: int | None = 0) -> int:
    value: int = _get(obj, name, int, default)
    if not 0 <= value <= MAX_SIZE:
        raise FieldError(f"field {name!r} out of range")
    return value


def _time(obj: dict[str, Any], name: str) -> float:
    value: float = _get(obj, name, float, 0.0)
    if not -MAX_SIZE <= value <= MAX_SIZE:  # NaN fails too
        raise FieldError(f"field {name!r} out of range")
    return value


def from_json(cls: type[FileMessage], obj: dict[str, Any]) -> FileMessage:
    """The message of type ``cls`` from its JSON object; FieldError if malformed."""
    if cls is Put:
        return Put(_text(obj, "path"), _get(obj, "recursive", bool, False),
                   _get(obj, "preserve", bool, False), _get(obj, "many", bool, False))
    if cls is Get:
        paths = obj.get("paths")
        if not isinstance(paths, list) or not paths or not all(
                type(p) is str and "\0" not in p for p in paths):
            raise FieldError("field 'paths' must be a non-empty list of paths")
        return Get(tuple(paths), _get(obj, "recursive", bool, False),
                   _get(obj, "preserve", bool, False))
    if cls is PutReady:
        return PutReady(_get(obj, "directory", bool))
    if cls is Entry:
        kind = _get(obj, "kind", str)
        if kind not in KINDS:
            raise FieldError(f"unknown entry kind {kind!r}")
        mode = _get(obj, "mode", int, 0o644)
        if not 0 <= mode <= 0o7777:
            raise FieldError("field 'mode' out of range")
        return Entry(kind, _text(obj, "name", ""), _count(obj, "size"), mode,
                     _time(obj, "mtime"), _time(obj, "atime"), _text(obj, "target", ""))
    if cls is EntryEnd:
        error = obj.get("error")
        if error is not None and type(error) is not str:
            raise FieldError("field 'error' must be a string")
        return EntryEnd(_get(obj, "sha256", str), error)
    if cls is Verdict:
        return Verdict(_get(obj, "path", str), _get(obj, "error", str))
    assert cls is TransferEnd
    error = obj.get("error")
    if error is not None and type(error) is not str:
        raise FieldError("field 'error' must be a string")
    return TransferEnd(_count(obj, "files", None), _count(obj, "size", None),
                       _count(obj, "failed", None), error)
