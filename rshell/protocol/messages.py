"""The rshell messages: one frozen dataclass per message type.

Control messages carry a small UTF-8 JSON object; data messages (stdin,
stdout, stderr) carry raw bytes; Signal and StdinAck carry a fixed-size
integer.  ``decode`` validates every field's presence and type, so code above
this layer never sees a malformed message.  ``Closed`` is the one event that is
not a frame: the end of the peer's stream, which the session reports.  Error
codes are ``ErrorCode`` (defined with the exceptions in rshell.errors).  See
docs/PROTOCOL.md.

Sans-IO: never imports socket, ssl, threading or subprocess.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from rshell.errors import ErrorCode, LocalProtocolError, error_code
from rshell.protocol.files import (
    Done,
    Entry,
    EntryEnd,
    FieldError,
    FileData,
    FileMessage,
    Get,
    Put,
    PutReady,
    TransferEnd,
    Verdict,
    from_json,
    to_json,
)
from rshell.protocol.frames import encode_frame

PROTOCOL_VERSION = 1
#: What this side offers beyond version 1's commands, announced in Welcome: a
#: client asks for a feature only of a server that announced it, so an older
#: server never sees what it cannot honour (PROTOCOL.md section 11).
FEATURES = ("pty", "files")
_U8 = struct.Struct("!B")
_U32 = struct.Struct("!I")
_SIZE = struct.Struct("!HH")


class MessageType(IntEnum):
    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    WELCOME = 4
    RUN = 10
    STDIN = 11
    STDIN_EOF = 12
    SIGNAL = 13
    WINDOW_CHANGE = 14
    STDOUT = 20
    STDERR = 21
    STDIN_ACK = 22
    EXIT = 23
    ERROR = 30
    PUT = 40
    GET = 41
    PUT_READY = 42
    ENTRY = 43
    FILE_DATA = 44
    ENTRY_END = 45
    DONE = 46
    VERDICT = 47
    TRANSFER_END = 48


@dataclass(frozen=True, slots=True)
class Hello:
    """Client -> server, first message: the protocol version it speaks."""

    version: int = PROTOCOL_VERSION
    client: str = "rshell"


@dataclass(frozen=True, slots=True)
class Challenge:
    """Server -> client: a fresh nonce the client must sign with its key."""

    nonce: bytes
    server: str = "rshell"


@dataclass(frozen=True, slots=True)
class Auth:
    """Client -> server: its public key and a signature over the challenge."""

    public_key: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    """Server -> client: the session is open; commands may follow."""

    server: str
    cwd: str
    user: str
    stdin_window: int
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pty:
    """A terminal for a Run: ``TERM`` and the window in cells."""

    term: str
    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class Run:
    """Client -> server: run one command (while none is running); with
    ``pty``, on a terminal (an empty command: the login shell)."""

    command: str
    cwd: str | None = None
    env: dict[str, str] | None = None
    timeout: float | None = None
    stdin: bool = False
    pty: Pty | None = None


@dataclass(frozen=True, slots=True)
class Stdin:
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class StdinEof:
    pass


@dataclass(frozen=True, slots=True)
class Signal:
    """Client -> server: deliver this signal to the command's process group."""

    signum: int


@dataclass(frozen=True, slots=True)
class WindowChange:
    """Client -> server: the terminal of the running command is this size now."""

    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class Stdout:
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Stderr:
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class StdinAck:
    """Server -> client: this many stdin bytes reached the command; the
    client may send that many more (flow control, like SSH's window)."""

    count: int


@dataclass(frozen=True, slots=True)
class Exit:
    """Server -> client: the command is over and reaped."""

    exit_code: int | None
    signal: int | None = None
    error: str | None = None
    cwd: str = ""
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class Error:
    """Either direction: a fatal protocol-level error; the sender closes.

    ``code`` is an ``ErrorCode`` or any string: a code from a newer peer
    decodes as its raw string (PROTOCOL.md section 11)."""

    code: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Closed:
    """Not a frame: the peer's stream ended cleanly, on a frame boundary.

    After ``receive_eof``, ``next_event`` returns it once every complete
    message before the end has been returned, and on every call after that
    (h11's ConnectionClosed).  It has no type number and is never sent; a
    stream that ends inside a frame is a RemoteProtocolError (``truncated``)
    instead."""


Message = (
    Hello | Challenge | Auth | Welcome | Run | Stdin | StdinEof | Signal | WindowChange
    | Stdout | Stderr | StdinAck | Exit | Error | Closed | FileMessage
)

_DATA: dict[MessageType, type[Stdin | Stdout | Stderr]] = {
    MessageType.STDIN: Stdin, MessageType.STDOUT: Stdout, MessageType.STDERR: Stderr,
}
#: Type byte -> MessageType, without the enum constructor's cost on every frame.
_TYPES = {int(t): t for t in MessageType}
_KIND = {
    Hello: MessageType.HELLO, Challenge: MessageType.CHALLENGE, Auth: MessageType.AUTH,
    Welcome: MessageType.WELCOME, Run: MessageType.RUN, Stdin: MessageType.STDIN,
    StdinEof: MessageType.STDIN_EOF, Signal: MessageType.SIGNAL,
    WindowChange: MessageType.WINDOW_CHANGE, Stdout: MessageType.STDOUT,
    Stderr: MessageType.STDERR, StdinAck: MessageType.STDIN_ACK, Exit: MessageType.EXIT,
    Error: MessageType.ERROR, Put: MessageType.PUT, Get: MessageType.GET,
    PutReady: MessageType.PUT_READY, Entry: MessageType.ENTRY,
    FileData: MessageType.FILE_DATA, EntryEnd: MessageType.ENTRY_END, Done: MessageType.DONE,
    Verdict: MessageType.VERDICT, TransferEnd: MessageType.TRANSFER_END,
}
#: The file messages whose payload is a JSON object (files.py's codec).
_FILE_JSON: dict[MessageType, type[FileMessage]] = {
    MessageType.PUT: Put, MessageType.GET: Get, MessageType.PUT_READY: PutReady,
    MessageType.ENTRY: Entry, MessageType.ENTRY_END: EntryEnd, MessageType.VERDICT: Verdict,
    MessageType.TRANSFER_END: TransferEnd,
}


#: Members that belong to a feature (FEATURES): left out when unused.
_FEATURE_MEMBERS = frozenset({"pty"})
_FIXED = {MessageType.SIGNAL: _U8, MessageType.STDIN_ACK: _U32,
          MessageType.WINDOW_CHANGE: _SIZE}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


#: json's own C string escaper (ASCII output, lone surrogates as \\udcXX) and a
#: decoder made once: what ``json.dumps``/``json.loads`` do, without building an
#: encoder per call or sniffing the encoding of bytes.
_json_str = json.encoder.encode_basestring_ascii
_raw_decode = json.JSONDecoder().raw_decode
#: ``json.dumps(obj, separators=(",", ":"))`` without a new encoder per call
#: (dumps makes one whenever an option is given: a tree's two entries a file).
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_JSON_SPACE = " \t\n\r"


def _json_opt(value: object) -> str | None:
    """``value`` as compact JSON if it is None, a str, or an exact int or float;
    None if the generic encoder must decide (bool, NaN, subclasses, ...)."""
    if value is None:
        return "null"
    kind = type(value)  # exact types: subclasses may format themselves differently
    if isinstance(value, str) and kind is str:
        return _json_str(value)
    if kind is int or (isinstance(value, float) and kind is float and math.isfinite(value)):
        return repr(value)
    return None


def _fast_json(msg: Run | Exit | Entry | EntryEnd) -> bytes | None:
    """The messages sent most, formatted directly: the two every command
    sends, and the two every file copied sends.  Byte for byte what the
    generic paths below emit (tests/test_messages.py checks), but cheaper on
    the path between one command and the next, and per file of a tree."""
    if type(msg) is Entry:
        kind, name, size, mode, mtime, atime, target = (
            msg.kind, msg.name, msg.size, msg.mode, msg.mtime, msg.atime, msg.target)
        if not (type(kind) is str and type(name) is str and type(target) is str
                and type(size) is int and type(mode) is int and type(mtime) is float
                and type(atime) is float and math.isfinite(mtime + atime)):
            return None
        return (f'{{"kind":{_json_str(kind)},"name":{_json_str(name)},"size":{size},'
                f'"mode":{mode},"mtime":{mtime!r},"atime":{atime!r},'
                f'"target":{_json_str(target)}}}').encode("ascii")
    elif type(msg) is EntryEnd:
        parts = [_json_opt(msg.sha256), _json_opt(msg.error)]
        template = '{"sha256":%s,"error":%s}'
    elif type(msg) is Exit:
        parts = [_json_opt(msg.exit_code), _json_opt(msg.signal), _json_opt(msg.error),
                 _json_opt(msg.cwd), _json_opt(msg.duration)]
        template = '{"exit_code":%s,"signal":%s,"error":%s,"cwd":%s,"duration":%s}'
    elif type(msg) is Run and msg.env is None and type(msg.stdin) is bool and msg.pty is None:
        parts = [_json_opt(msg.command), _json_opt(msg.cwd), "null", _json_opt(msg.timeout),
                 "true" if msg.stdin else "false"]
        template = '{"command":%s,"cwd":%s,"env":%s,"timeout":%s,"stdin":%s}'
    else:
        return None
    if None in parts:
        return None
    return (template % tuple(parts)).encode("ascii")


def encode(msg: Message) -> bytes:
    """The frame for one message (``Closed`` has none: close the stream instead)."""
    kind = _KIND.get(type(msg))
    if kind is None:
        raise ValueError(f"{type(msg).__name__} is not a message on the wire")
    if isinstance(msg, (Run, Exit, Entry, EntryEnd)):
        fast = _fast_json(msg)
        if fast is not None:
            return encode_frame(kind, fast)
    if isinstance(msg, (Stdin, Stdout, Stderr, FileData)):
        return encode_frame(kind, bytes(msg.data))
    if isinstance(msg, (StdinEof, Done)):
        return encode_frame(kind)
    if kind in _FILE_JSON:
        return encode_frame(kind, _dumps(to_json(msg)).encode())  # type: ignore[arg-type]
    if isinstance(msg, Signal):
        return encode_frame(kind, _U8.pack(msg.signum))
    if isinstance(msg, StdinAck):
        return encode_frame(kind, _U32.pack(msg.count))
    if isinstance(msg, WindowChange):
        return encode_frame(kind, _SIZE.pack(msg.cols, msg.rows))
    obj: dict[str, Any] = {}
    for name in msg.__slots__:
        value = getattr(msg, name)
        if value is None and name in _FEATURE_MEMBERS:
            continue  # a feature's member, unused: the bytes a server without it knows
        if isinstance(value, bytes):
            value = _b64(value)
        elif isinstance(value, Pty):
            value = {"term": value.term, "cols": value.cols, "rows": value.rows}
        elif isinstance(value, tuple):
            value = list(value)
        obj[name] = value
    return encode_frame(kind, _dumps(obj).encode())


class _Fields:
    """Typed access to a decoded JSON object; every miss is a protocol error."""

    def __init__(self, kind: MessageType, payload: bytes | memoryview) -> None:
        self.kind = kind
        try:
            text = str(payload, "utf-8").strip(_JSON_SPACE)
            obj, end = _raw_decode(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # RecursionError: deeply nested arrays are valid JSON but hostile.
            raise self.error("is not valid UTF-8 JSON") from exc
        if end != len(text):
            raise self.error("is not valid UTF-8 JSON")
        if not isinstance(obj, dict):
            raise self.error("is not a JSON object")
        self.obj: dict[str, Any] = obj

    def error(self, what: str) -> LocalProtocolError:
        return LocalProtocolError(
            f"malformed {self.kind.name} message: {what}", ErrorCode.MALFORMED
        )

    def get(self, name: str, types: type | tuple[type, ...], *, optional: bool = False) -> Any:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        # bool is an int in Python; never accept it where a number is meant.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise self.error(f"field {name!r} is missing or of the wrong type")
        return value

    def b64(self, name: str) -> bytes:
        try:
            return base64.b64decode(self.get(name, str), validate=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII text
            raise self.error(f"field {name!r} is not base64") from exc


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _env(value: Any, f: _Fields) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in value.items()
    ):
        raise f.error("field 'env' must map names to strings")
    return value


def _pty(value: Any, f: _Fields) -> Pty | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise f.error("field 'pty' must be an object")
    term, cols, rows = value.get("term"), value.get("cols"), value.get("rows")
    if (not isinstance(term, str) or type(cols) is not int or type(rows) is not int
            or not (0 <= cols <= 0xFFFF and 0 <= rows <= 0xFFFF)):
        raise f.error("field 'pty' needs term (a string), cols and rows (0..65535)")
    return Pty(term, cols, rows)


def _features(value: Any, f: _Fields) -> tuple[str, ...]:
    if value is None:  # a server older than features
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise f.error("field 'features' must be a list of strings")
    return tuple(value)


def _duration(f: _Fields) -> float:
    try:
        value = float(f.get("duration", (int, float)))
    except OverflowError:
        raise f.error("duration out of range") from None
    if not math.isfinite(value) or value < 0:
        raise f.error("duration out of range")
    return value


def decode(kind_number: int, payload: bytes | memoryview) -> Message:
    """The message in one frame; LocalProtocolError if it is not one."""
    kind = _TYPES.get(kind_number)
    if kind is None:
        raise LocalProtocolError(f"unknown message type {kind_number}", ErrorCode.UNKNOWN_TYPE)
    data_cls = _DATA.get(kind)
    if data_cls is not None:
        return data_cls(payload)
    if kind is MessageType.FILE_DATA:
        return FileData(payload)
    if kind is MessageType.STDIN_EOF or kind is MessageType.DONE:
        if payload:
            raise LocalProtocolError(f"{kind.name} carries no payload", ErrorCode.MALFORMED)
        return StdinEof() if kind is MessageType.STDIN_EOF else Done()
    if kind in (MessageType.SIGNAL, MessageType.STDIN_ACK, MessageType.WINDOW_CHANGE):
        fmt = _FIXED[kind]
        if len(payload) != fmt.size:
            raise LocalProtocolError(
                f"{kind.name} payload must be {fmt.size} bytes", ErrorCode.MALFORMED
            )
        if kind is MessageType.WINDOW_CHANGE:
            return WindowChange(*_SIZE.unpack(payload))
        (number,) = fmt.unpack(payload)
        return Signal(number) if kind is MessageType.SIGNAL else StdinAck(number)
    f = _Fields(kind, payload)
    file_cls = _FILE_JSON.get(kind)
    if file_cls is not None:
        try:
            return from_json(file_cls, f.obj)
        except FieldError as exc:
            raise f.error(str(exc)) from None
    number = (int, float)
    if kind is MessageType.HELLO:
        return Hello(f.get("version", int), f.get("client", str))
    if kind is MessageType.CHALLENGE:
        return Challenge(f.b64("nonce"), f.get("server", str))
    if kind is MessageType.AUTH:
        return Auth(f.get("public_key", str), f.b64("signature"))
    if kind is MessageType.WELCOME:
        window = f.get("stdin_window", int)
        if not 0 < window < 1 << 32:  # a StdinAck (u32) must be able to refill it
            raise f.error("stdin_window out of range")
        return Welcome(f.get("server", str), f.get("cwd", str), f.get("user", str), window,
                       _features(f.obj.get("features"), f))
    if kind is MessageType.RUN:
        command = f.get("command", str)
        if "\0" in command:
            raise f.error("command contains a NUL byte")
        cwd = f.get("cwd", str, optional=True)
        if cwd is not None and "\0" in cwd:
            raise f.error("cwd contains a NUL byte")
        timeout = f.get("timeout", number, optional=True)
        if timeout is not None and not 0 <= timeout < 1e9:
            raise f.error("timeout out of range")
        return Run(command, cwd, _env(f.obj.get("env"), f), timeout, f.get("stdin", bool),
                   _pty(f.obj.get("pty"), f))
    if kind is MessageType.EXIT:
        return Exit(
            f.get("exit_code", int, optional=True), f.get("signal", int, optional=True),
            f.get("error", str, optional=True), f.get("cwd", str), _duration(f),
        )
    assert kind is MessageType.ERROR
    return Error(error_code(f.get("code", str)), f.get("message", str))


__all__ = [
    "FEATURES", "PROTOCOL_VERSION", "MessageType", "Message", "ErrorCode", "encode", "decode",
    "Hello", "Challenge", "Auth", "Welcome", "Pty", "Run", "Stdin", "StdinEof", "Signal",
    "WindowChange", "Stdout", "Stderr", "StdinAck", "Exit", "Error", "Closed", "Put", "Get",
    "PutReady", "Entry", "FileData", "EntryEnd", "Done", "Verdict", "TransferEnd",
]
