"""Message encoding and validation, with no sockets.

``decode`` is the wall between the network and the rest of rshell: whatever a
peer sends, it must return a well-typed message or raise LocalProtocolError
(which the session turns into an Error frame and a clean close).  Any other
exception would be an unhandled crash in a server or client thread.
"""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rshell.errors import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    error_code,
)
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
from rshell.protocol.files import to_json as files_to_json
from rshell.protocol.frames import HEADER_SIZE, encode_frame
from rshell.protocol.messages import (
    PROTOCOL_VERSION,
    Auth,
    Challenge,
    Closed,
    Error,
    Exit,
    Hello,
    Message,
    MessageType,
    Pty,
    Run,
    Signal,
    Stderr,
    Stdin,
    StdinAck,
    StdinEof,
    Stdout,
    Welcome,
    WindowChange,
    _fast_json,
    decode,
    encode,
)

M = MessageType
JSON_KINDS = [M.HELLO, M.CHALLENGE, M.AUTH, M.WELCOME, M.RUN, M.EXIT, M.ERROR, M.PUT, M.GET,
              M.PUT_READY, M.ENTRY, M.ENTRY_END, M.VERDICT, M.TRANSFER_END]
MESSAGE_CLASSES = (
    Hello, Challenge, Auth, Welcome, Run, Stdin, StdinEof, Signal, WindowChange, Stdout,
    Stderr, StdinAck, Exit, Error, Put, Get, PutReady, Entry, FileData, EntryEnd, Done, Verdict,
    TransferEnd,
)


def split_frame(frame: bytes) -> tuple[int, bytes]:
    """(kind, payload) of one encoded frame, checking its length prefix."""
    length, kind = struct.unpack("!IB", frame[:HEADER_SIZE])
    assert length == len(frame) - HEADER_SIZE
    return kind, frame[HEADER_SIZE:]


def normalized(msg: Message) -> Message:
    """Data messages may hold a memoryview; compare them as bytes."""
    if isinstance(msg, (Stdin, Stdout, Stderr, FileData)):
        return type(msg)(bytes(msg.data))
    return msg


def round_trip(msg: Message) -> Message:
    return normalized(decode(*split_frame(encode(msg))))


def as_json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# ---- round trips -------------------------------------------------------------

ROUND_TRIP: list[Message] = [
    Hello(),
    Hello(version=7, client="rshell/0.1 \u00e9\u4e2d"),
    Challenge(nonce=bytes(range(256))),
    Challenge(nonce=b"", server="host.example"),
    Auth(public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host", signature=b"\x00\xff" * 32),
    Welcome(server="rshell 0.1", cwd="/home/u", user="u", stdin_window=2 * 1024 * 1024),
    Welcome(server="", cwd="/", user="root", stdin_window=1),
    Run("echo hi"),
    Run("ls -l 'a b'", cwd="/tmp", env={"LANG": "C", "X": ""}, timeout=2.5, stdin=True),
    Run("true", cwd="rel/dir", env={}, timeout=0, stdin=False),
    Run("sleep 1", timeout=999_999_999),
    Run("printf '\u00e9\\n'", env={"UNICODE_\u00e9": "\u4e2d"}),
    Run("", stdin=True, pty=Pty("xterm-256color", 80, 24)),
    Run("top", pty=Pty("vt100", 0, 65535)),
    Welcome(server="s", cwd="/", user="u", stdin_window=1, features=("pty", "x-new")),
    Run("", stdin=True, pty=Pty("xterm-256color", 80, 24)),
    Run("top", pty=Pty("vt100", 0, 65535)),
    Stdin(b""),
    Stdin(bytes(range(256))),
    StdinEof(),
    Signal(0),
    Signal(2),
    Signal(255),
    WindowChange(80, 24),
    WindowChange(0, 65535),
    Stdout(b""),
    Stdout(b"hello\n"),
    Stdout(b"\x00\xff\xfe" * 1000),
    Stderr(b""),
    Stderr(bytes(range(255, -1, -1))),
    Put("dir/f", recursive=True, preserve=True, many=True),
    Put(""),
    Get(("a", "/b c", "\u00e9")),
    Get(("x",), recursive=True, preserve=True),
    PutReady(True),
    Entry("file", "f", 3, 0o755, 1.5, 2.0),
    Entry("dir", "d \u00e9"),
    Entry("link", "l", target="../x"),
    Entry("end"),
    FileData(b""),
    FileData(bytes(range(256))),
    EntryEnd("ab" * 32),
    EntryEnd(error="file shrank while being read"),
    Done(),
    Verdict("d/f", "Permission denied"),
    TransferEnd(3, 1024, 1),
    TransferEnd(error="refused: file transfer not permitted for this key (restrict)"),
    StdinAck(0),
    StdinAck(65536),
    StdinAck(2**32 - 1),
    Exit(0),
    Exit(3, cwd="/tmp", duration=1.25),
    Exit(None, signal=9, error="killed: output limit", cwd="/", duration=0.0),
    Exit(None, error="timeout", cwd="/srv", duration=10),
    Error("malformed"),
    Error("version", "unsupported protocol version 2"),
]


@pytest.mark.parametrize("msg", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    """decode(encode(m)) == m for every message type and shape."""
    assert round_trip(msg) == msg


@pytest.mark.parametrize("msg", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_frame_kind_names_the_message_type(msg: Message) -> None:
    kind, _ = split_frame(encode(msg))
    assert MessageType(kind).name.replace("_", "").lower() == type(msg).__name__.lower()


def generic_json(msg: Run | Exit) -> bytes:
    """What the reference encoder emits per docs/PROTOCOL.md 3.1, via json.dumps."""
    return json.dumps({name: getattr(msg, name) for name in msg.__slots__
                       if not (name == "pty" and getattr(msg, name) is None)},
                      separators=(",", ":")).encode()


#: Floats whose shortest repr is unusual: json.dumps writes them as repr does.
EDGE_FLOATS = [-0.0, 0.0, 5e-324, 1e16, 1e22, 1.7976931348623157e308, 0.1, 123456789.125]
texts = st.text(max_size=30) | st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF))
numbers = st.none() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
                                                               allow_infinity=False)


@settings(max_examples=300)
@given(
    st.builds(Exit, st.none() | st.integers(-(2**70), 2**70), st.none() | st.integers(0, 255),
              st.none() | texts, texts, st.floats(0, 1e9) | st.sampled_from(EDGE_FLOATS)),
)
@example(Exit(0, None, None, "\ud800\u2028\x00\U0001f600", -0.0))
@example(Exit(2**64, 9, "\udcff", "/", 5e-324))
def test_property_exit_fast_path_is_byte_identical(msg: Exit) -> None:
    """Exit is formatted without json.dumps (it is on every command's path);
    the bytes must be exactly the generic encoder's."""
    assert _fast_json(msg) is not None, "the fast path was not taken"
    assert split_frame(encode(msg))[1] == generic_json(msg)
    assert round_trip(msg) == msg


@settings(max_examples=300)
@given(st.builds(Run, texts, st.none() | texts, st.none(),
                 numbers | st.sampled_from(EDGE_FLOATS), st.booleans()))
@example(Run("\ud800 \U0001f600", "\udc80", None, 0, False))
@example(Run("x", None, None, 2**64, True))
def test_property_run_fast_path_is_byte_identical(msg: Run) -> None:
    assert _fast_json(msg) is not None, "the fast path was not taken"
    assert split_frame(encode(msg))[1] == generic_json(msg)


#: What an Entry may carry (no NUL; a time within what a signed 64-bit time_t holds).
names = texts.filter(lambda text: "\0" not in text)
times = st.floats(-1e12, 1e12) | st.sampled_from([x for x in EDGE_FLOATS if abs(x) < 2**63])


def generic_file_json(msg: Entry | EntryEnd) -> bytes:
    """What the reference encoder emits for a file message (protocol/files.py's
    JSON object, via json.dumps)."""
    return json.dumps(files_to_json(msg), separators=(",", ":")).encode()


@settings(max_examples=300)
@given(st.builds(Entry, st.sampled_from(["file", "dir", "link", "end"]), names,
                 st.integers(0, 2**63 - 1), st.integers(0, 0o7777), times, times, names))
@example(Entry("file", "\ud800 \u2028\U0001f600", 0, 0o644, -0.0, 5e-324, ""))
def test_property_entry_fast_path_is_byte_identical(msg: Entry) -> None:
    """Entry and EntryEnd are formatted without json.dumps (two a file: a tree
    of small files is mostly these); the bytes must be the generic encoder's."""
    assert _fast_json(msg) is not None, "the fast path was not taken"
    assert split_frame(encode(msg))[1] == generic_file_json(msg)
    assert round_trip(msg) == msg


@settings(max_examples=200)
@given(st.builds(EntryEnd, texts, st.none() | texts))
def test_property_entry_end_fast_path_is_byte_identical(msg: EntryEnd) -> None:
    assert _fast_json(msg) is not None, "the fast path was not taken"
    assert split_frame(encode(msg))[1] == generic_file_json(msg)
    assert round_trip(msg) == msg


def test_fast_path_leaves_odd_values_to_the_generic_encoder() -> None:
    """A bool where an int belongs goes through json.dumps and stays detectable."""
    for msg in (Exit(True, cwd="/"), Run("x", timeout=True), Run("x", env={"A": "1"})):
        assert split_frame(encode(msg))[1] == generic_json(msg)
    for entry in (Entry("file", size=True), Entry("file", mtime=float("nan"))):
        assert _fast_json(entry) is None
        assert split_frame(encode(entry))[1] == generic_file_json(entry)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_only_utf8_without_bom_is_json(encoding: str) -> None:
    """PROTOCOL.md 3.1: the payload is UTF-8, with no byte order mark (which
    json.loads of bytes would have sniffed and accepted)."""
    payload = generic_json(Run("ls")).decode().encode(encoding)
    with pytest.raises(LocalProtocolError) as info:
        decode(M.RUN, payload)
    assert info.value.code == "malformed"


def test_surrogates_as_raw_bytes_are_not_utf8() -> None:
    """A lone surrogate travels only as a \\uXXXX escape; as raw bytes it is not UTF-8."""
    with pytest.raises(LocalProtocolError):
        decode(M.RUN, b'{"command":"echo \xed\xb2\x80","stdin":false}')
    assert decode(M.RUN, b'{"command":"echo \\udc80","stdin":false}') == Run("echo \udc80")


@pytest.mark.parametrize("kind", [M.RUN, M.EXIT])
def test_surrounding_whitespace_is_accepted(kind: MessageType) -> None:
    """Whitespace carries no meaning (PROTOCOL.md 3.1), around the object too."""
    msg = ROUND_TRIP[7] if kind is M.RUN else ROUND_TRIP[-5]
    payload = b" \n\t" + split_frame(encode(msg))[1] + b"\r\n "
    assert decode(kind, payload) == msg


def test_every_message_type_is_covered() -> None:
    """A new message type must come with a round-trip case here."""
    assert {type(m) for m in ROUND_TRIP} == set(MESSAGE_CLASSES)
    assert len(MESSAGE_CLASSES) == len(MessageType)


def test_hello_defaults_to_current_version() -> None:
    assert round_trip(Hello()) == Hello(PROTOCOL_VERSION, "rshell")


def test_exit_duration_decodes_as_float() -> None:
    decoded = round_trip(Exit(0, duration=2))
    assert isinstance(decoded, Exit) and isinstance(decoded.duration, float)


def test_data_payload_is_not_interpreted() -> None:
    """Data bytes pass through untouched, whatever they look like (JSON, UTF-8 or not)."""
    for payload in (b'{"code":"x"}', b"\xff\xfe\xfd", b"\x00" * 10):
        for kind, cls in ((M.STDIN, Stdin), (M.STDOUT, Stdout), (M.STDERR, Stderr)):
            msg = decode(kind, payload)
            assert type(msg) is cls and bytes(msg.data) == payload


def test_fixed_size_payloads_are_big_endian() -> None:
    assert split_frame(encode(StdinAck(258))) == (M.STDIN_ACK, b"\x00\x00\x01\x02")
    assert split_frame(encode(Signal(15))) == (M.SIGNAL, b"\x0f")
    assert split_frame(encode(WindowChange(258, 24))) == (M.WINDOW_CHANGE, b"\x01\x02\x00\x18")
    assert split_frame(encode(StdinEof())) == (M.STDIN_EOF, b"")


# ---- malformed payloads --------------------------------------------------------

#: A valid JSON object per kind; each malformed case spoils exactly one thing.
VALID: dict[MessageType, dict[str, Any]] = {
    M.HELLO: {"version": 1, "client": "rshell"},
    M.CHALLENGE: {"nonce": "AAEC", "server": "rshell"},
    M.AUTH: {"public_key": "ssh-ed25519 AAAA", "signature": "AAEC"},
    M.WELCOME: {"server": "s", "cwd": "/", "user": "u", "stdin_window": 1024},
    M.RUN: {"command": "ls", "cwd": None, "env": None, "timeout": None, "stdin": False},
    M.EXIT: {"exit_code": 0, "signal": None, "error": None, "cwd": "/", "duration": 0.5},
    M.ERROR: {"code": "x", "message": "y"},
    M.PUT: {"path": "d", "recursive": False, "preserve": False, "many": False},
    M.GET: {"paths": ["a"], "recursive": False, "preserve": False},
    M.PUT_READY: {"directory": True},
    M.ENTRY: {"kind": "file", "name": "f", "size": 1, "mode": 420, "mtime": 0, "atime": 0,
              "target": ""},
    M.ENTRY_END: {"sha256": "00", "error": None},
    M.VERDICT: {"path": "f", "error": "no"},
    M.TRANSFER_END: {"files": 1, "size": 2, "failed": 0, "error": None},
}


def with_field(kind: MessageType, **changes: Any) -> bytes:
    """VALID[kind] with fields replaced; the value ``...`` deletes the field."""
    obj = dict(VALID[kind])
    for name, value in changes.items():
        if value is ...:
            obj.pop(name, None)
        else:
            obj[name] = value
    return as_json(obj)


@pytest.mark.parametrize("kind", JSON_KINDS, ids=lambda k: k.name)
def test_valid_fixtures_decode(kind: MessageType) -> None:
    """Guard for the malformed cases below: each spoils a payload that is otherwise good."""
    assert isinstance(decode(kind, as_json(VALID[kind])), MESSAGE_CLASSES)


GENERIC_BAD: dict[str, bytes] = {
    "empty": b"",
    "not-json": b"not json",
    "truncated": b'{"version":',
    "array": b"[1, 2]",
    "string": b'"hello"',
    "number": b"42",
    "null": b"null",
    "invalid-utf8": b'{"client":"\xff\xfe"}',
    "empty-object": b"{}",
    "trailing-garbage": b'{"code":"x","message":"y"} x',
}


@pytest.mark.parametrize("shape", GENERIC_BAD)
@pytest.mark.parametrize("kind", JSON_KINDS, ids=lambda k: k.name)
def test_generic_malformed_json(kind: MessageType, shape: str) -> None:
    payload = GENERIC_BAD[shape]
    if shape == "trailing-garbage":
        payload = as_json(VALID[kind]) + b" x"
    with pytest.raises(LocalProtocolError) as info:
        decode(kind, payload)
    assert info.value.code == "malformed"
    assert kind.name in str(info.value)


def test_deeply_nested_json_is_malformed() -> None:
    """A 1 MiB frame of '[' must not blow the JSON parser's recursion into a crash."""
    for kind in JSON_KINDS:
        with pytest.raises(LocalProtocolError) as info:
            decode(kind, b"[" * 100_000)
        assert info.value.code == "malformed"


FIELD_BAD: list[tuple[MessageType, dict[str, Any]]] = [
    (M.HELLO, {"version": "1"}),
    (M.HELLO, {"version": True}),
    (M.HELLO, {"version": 1.0}),
    (M.HELLO, {"version": None}),
    (M.HELLO, {"version": ...}),
    (M.HELLO, {"client": 5}),
    (M.HELLO, {"client": ...}),
    (M.CHALLENGE, {"nonce": 5}),
    (M.CHALLENGE, {"nonce": ...}),
    (M.CHALLENGE, {"nonce": "!!!!"}),
    (M.CHALLENGE, {"nonce": "AAE"}),
    (M.CHALLENGE, {"nonce": "AA EC"}),
    (M.CHALLENGE, {"nonce": "\u00e9\u00e9\u00e9\u00e9"}),
    (M.CHALLENGE, {"server": None}),
    (M.AUTH, {"public_key": 1}),
    (M.AUTH, {"public_key": ...}),
    (M.AUTH, {"signature": "***"}),
    (M.AUTH, {"signature": ["AAEC"]}),
    (M.AUTH, {"signature": "\u4e2d\u4e2d\u4e2d\u4e2d"}),
    (M.WELCOME, {"stdin_window": True}),
    (M.WELCOME, {"stdin_window": "1024"}),
    (M.WELCOME, {"stdin_window": 1.5}),
    (M.WELCOME, {"stdin_window": ...}),
    (M.WELCOME, {"stdin_window": 0}),
    (M.WELCOME, {"stdin_window": 1 << 32}),
    (M.WELCOME, {"cwd": None}),
    (M.WELCOME, {"user": []}),
    (M.WELCOME, {"server": {}}),
    (M.RUN, {"command": None}),
    (M.RUN, {"command": ...}),
    (M.RUN, {"command": 5}),
    (M.RUN, {"command": ["ls"]}),
    (M.RUN, {"command": "ls\0-l"}),
    (M.RUN, {"cwd": "/tmp\0"}),
    (M.RUN, {"cwd": 5}),
    (M.RUN, {"env": []}),
    (M.RUN, {"env": "A=1"}),
    (M.RUN, {"env": {"A": 1}}),
    (M.RUN, {"env": {"A": None}}),
    (M.RUN, {"env": {"": "x"}}),
    (M.RUN, {"env": {"A=B": "x"}}),
    (M.RUN, {"env": {"A": "x\0y"}}),
    (M.RUN, {"env": {"A\0": "x"}}),
    (M.RUN, {"timeout": -1}),
    (M.RUN, {"timeout": -0.001}),
    (M.RUN, {"timeout": 1e9}),
    (M.RUN, {"timeout": 10**30}),
    (M.RUN, {"timeout": float("nan")}),
    (M.RUN, {"timeout": float("inf")}),
    (M.RUN, {"timeout": "5"}),
    (M.RUN, {"timeout": True}),
    (M.RUN, {"stdin": "yes"}),
    (M.RUN, {"stdin": 1}),
    (M.RUN, {"stdin": None}),
    (M.RUN, {"pty": "xterm"}),
    (M.RUN, {"pty": {"term": "xterm", "cols": 80}}),
    (M.RUN, {"pty": {"term": 5, "cols": 80, "rows": 24}}),
    (M.RUN, {"pty": {"term": "xterm", "cols": -1, "rows": 24}}),
    (M.RUN, {"pty": {"term": "xterm", "cols": 80, "rows": 65536}}),
    (M.RUN, {"pty": {"term": "xterm", "cols": 80.0, "rows": 24}}),
    (M.RUN, {"pty": {"term": "xterm", "cols": True, "rows": 24}}),
    (M.WELCOME, {"features": "pty"}),
    (M.WELCOME, {"features": ["pty", 1]}),
    (M.RUN, {"stdin": ...}),
    (M.EXIT, {"exit_code": True}),
    (M.EXIT, {"exit_code": "0"}),
    (M.EXIT, {"exit_code": 1.5}),
    (M.EXIT, {"signal": False}),
    (M.EXIT, {"signal": "9"}),
    (M.EXIT, {"error": 5}),
    (M.EXIT, {"cwd": ...}),
    (M.EXIT, {"cwd": None}),
    (M.EXIT, {"duration": "1"}),
    (M.EXIT, {"duration": True}),
    (M.EXIT, {"duration": ...}),
    (M.EXIT, {"duration": 10**400}),
    (M.EXIT, {"duration": float("nan")}),
    (M.EXIT, {"duration": float("inf")}),
    (M.EXIT, {"duration": -1}),
    (M.ERROR, {"code": None}),
    (M.ERROR, {"code": 5}),
    (M.ERROR, {"code": ...}),
    (M.ERROR, {"message": ...}),
    (M.ERROR, {"message": ["x"]}),
]


def _field_id(case: tuple[MessageType, dict[str, Any]]) -> str:
    kind, changes = case
    return f"{kind.name}-" + "-".join(
        f"{k}=del" if v is ... else f"{k}={v!r}"[:30] for k, v in changes.items()
    )


@pytest.mark.parametrize("case", FIELD_BAD, ids=_field_id)
def test_bad_field_is_malformed(case: tuple[MessageType, dict[str, Any]]) -> None:
    """Missing fields, wrong types (bool is not an int), NULs, bad base64, out of range."""
    kind, changes = case
    with pytest.raises(LocalProtocolError) as info:
        decode(kind, with_field(kind, **changes))
    assert info.value.code == "malformed"


BINARY_BAD: list[tuple[MessageType, bytes]] = [
    (M.STDIN_EOF, b"x"),
    (M.STDIN_EOF, b"\x00"),
    (M.SIGNAL, b""),
    (M.SIGNAL, b"\x00\x02"),
    (M.STDIN_ACK, b""),
    (M.STDIN_ACK, b"\x00\x00\x01"),
    (M.STDIN_ACK, b"\x00\x00\x00\x00\x01"),
    (M.WINDOW_CHANGE, b""),
    (M.WINDOW_CHANGE, b"\x00\x50\x00"),
    (M.WINDOW_CHANGE, b"\x00\x50\x00\x18\x00"),
]


@pytest.mark.parametrize(("kind", "payload"), BINARY_BAD)
def test_fixed_size_payload_of_wrong_length(kind: MessageType, payload: bytes) -> None:
    with pytest.raises(LocalProtocolError) as info:
        decode(kind, payload)
    assert info.value.code == "malformed"


@pytest.mark.parametrize("number", [0, 5, 15, 24, 29, 31, 99, 255])
def test_unknown_message_type(number: int) -> None:
    assert number not in {int(k) for k in MessageType}
    with pytest.raises(LocalProtocolError) as info:
        decode(number, b"{}")
    assert info.value.code == "unknown-type"
    assert str(number) in str(info.value)


def test_memoryview_payloads_are_accepted() -> None:
    """The frame decoder hands out memoryviews; decode must take them for every kind."""
    for msg in ROUND_TRIP:
        kind, payload = split_frame(encode(msg))
        assert normalized(decode(kind, memoryview(payload))) == msg


# ---- error codes -----------------------------------------------------------------


@pytest.mark.parametrize("code", list(ErrorCode), ids=str)
def test_every_error_code_round_trips_byte_for_byte(code: ErrorCode) -> None:
    """The enum changes nothing on the wire: the plain string's exact bytes,
    and decoding gives back the enum member (still equal to the string)."""
    as_enum = encode(Error(code, "why"))
    assert as_enum == encode(Error(code.value, "why"))
    assert split_frame(as_enum)[1] == b'{"code":"%s","message":"why"}' % code.value.encode()
    decoded = decode(*split_frame(as_enum))
    assert isinstance(decoded, Error)
    assert decoded.code is code and decoded.code == code.value


def test_unknown_error_code_decodes_as_the_raw_string() -> None:
    """A newer peer's code is kept, not refused (PROTOCOL.md section 11)."""
    frame = encode_frame(MessageType.ERROR, b'{"code":"quota-exceeded","message":"m"}')
    msg = decode(*split_frame(frame))
    assert msg == Error("quota-exceeded", "m")
    assert isinstance(msg, Error) and type(msg.code) is str
    assert encode(msg) == frame


def test_protocol_errors_carry_the_enum_and_compare_as_strings() -> None:
    exc = LocalProtocolError("too many", "limit")
    assert exc.code is ErrorCode.LIMIT and exc.code == "limit"
    assert f"{exc.code}: {exc}" == "limit: too many"  # how the server logs it
    assert RemoteProtocolError("?", "bye").code == "bye"
    assert ProtocolError("generic").code is ErrorCode.PROTOCOL
    assert error_code("busy") is ErrorCode.BUSY and error_code("new") == "new"


CODE_TAKERS = {"LocalProtocolError": 1, "RemoteProtocolError": 1, "ProtocolError": 1, "Error": 0}


def code_argument(call: ast.Call) -> ast.expr | None:
    """The ``code`` argument of ``*ProtocolError(message, code)`` or ``Error(code, ...)``."""
    position = CODE_TAKERS.get(getattr(call.func, "id", getattr(call.func, "attr", "")))
    if position is None:
        return None
    for keyword in call.keywords:
        if keyword.arg == "code":
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def codes_in_source() -> set[tuple[str, str]]:
    """(file, code) for every string literal passed as a code anywhere in rshell."""
    found = set()
    for path in (Path(__file__).resolve().parents[1] / "rshell").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            arg = code_argument(node) if isinstance(node, ast.Call) else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add((path.name, arg.value))
    return found


def test_every_code_in_the_tree_is_an_error_code() -> None:
    """A new code is added to ErrorCode (and PROTOCOL.md section 9), not just used."""
    found = codes_in_source()
    assert found, "the scan found no codes at all: it is broken"
    assert {(f, c) for f, c in found if c not in set(ErrorCode)} == set()


def test_closed_is_an_event_not_a_frame() -> None:
    with pytest.raises(ValueError, match="Closed"):
        encode(Closed())


# ---- property -------------------------------------------------------------------

FIELD_NAMES = sorted({name for obj in VALID.values() for name in obj})
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
#: JSON objects that use the real field names, so validation is reached, not just parsing.
json_objects = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values, max_size=8
).map(lambda obj: json.dumps(obj).encode())
payloads = st.binary(max_size=64) | json_objects
kinds = st.sampled_from(list(MessageType)) | st.integers(0, 255)


@settings(max_examples=200, deadline=None)
@given(kind=kinds, payload=payloads)
def test_property_decode_returns_message_or_protocol_error(kind: int, payload: bytes) -> None:
    """No payload, for any kind number, may escape as anything but LocalProtocolError."""
    try:
        msg = decode(kind, payload)
    except LocalProtocolError as exc:
        assert exc.code in {"malformed", "unknown-type"}
        return
    assert isinstance(msg, MESSAGE_CLASSES)
    assert int(MessageType(kind)) == kind
