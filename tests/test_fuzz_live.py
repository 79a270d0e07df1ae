"""Live fuzz: hostile scripts against one real ``rshell-server`` (TLS 1.3 and
key authentication on, as deployed), many connections at a time.

The codec properties (test_frames, test_messages) prove the parser alone; this
proves the whole path a hostile byte travels -- TLS, admission, handshake,
authentication, the session loop, process start, cleanup.  Each connection
plays one script of one category (random bytes, random frames, truncated
frames, frames out of order, oversized lengths, bad text in commands and
paths, stdin beyond the window, bad signals, huge environments, a fuzzed
handshake, garbage in place of TLS).  Scripts that need a session authenticate by
hand with the test key, on the same server.

Every connection must end with an Error frame whose code the script allows,
or a clean close, within a deadline (never a hang); the server must never
die, never log a traceback or an internal error, still serve a real client
afterwards, and give back every descriptor, thread and child process.

Reproducible: every script draws from ``random.Random(f"{seed}:{index}")``;
the seed is printed and ``RSHELL_FUZZ_SEED`` replays it.  ``RSHELL_SOAK=N``
runs N times the connections.  Figures go to ``fuzz.json`` (tests/figures.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rshell.protocol.frames import MAX_PAYLOAD
from rshell.protocol.messages import MessageType as T
from rshell.protocol.signing import signed_data
from rshell.trust import keys, tls
from tests.conftest import ServerProcess, connect
from tests.figures import soak, write_figures
from tests.support.procs import children, fd_count, fd_targets, thread_count, wait_until
from tests.support.wire import HEADER, frame, raw_connect

SEED = int(os.environ.get("RSHELL_FUZZ_SEED") or 20240917)
CONNECTIONS = max(1, round(200 * soak()))
PARALLEL = 20
#: Everything one connection does, server answers included, fits in this.
CONN_DEADLINE = 20.0
#: How long the server may take to give back descriptors and threads.
SETTLE = 20.0

#: Message types a server may send; anything else from it is a bug.
SERVER_KINDS = {T.CHALLENGE, T.WELCOME, T.STDOUT, T.STDERR, T.STDIN_ACK, T.EXIT, T.ERROR}
#: Codes for bad frames, whatever the state (PROTOCOL.md section 9).
PROTOCOL_CODES = {"frame-too-large", "unknown-type", "malformed", "unexpected", "version"}
#: Linux numbers of the signals PROTOCOL.md 7.4 lets a client deliver.  SIGPIPE
#: (13) is left out of the "invalid" ones: the server delivers it on purpose
#: (service.ALLOWED_SIGNALS) although 7.4 says it is ignored.
DELIVERED = {1, 2, 3, 9, 10, 12, 13, 15, 18, 19, 20}
INVALID_SIGNALS = [n for n in range(256) if n not in DELIVERED]
#: Commands random frames may run once authenticated: harmless whatever the
#: arguments, cwd or environment a fuzzer pairs them with.
SAFE_COMMANDS = [
    "true", "false", "echo fuzz", "exit 7", "cat", "head -c 100", "printf %s x", "sleep 0.2",
    "zzfuzz-no-such-command", "cd", "cd /", "cd ..", "cd /nonexistent-fuzz", "kill -9 $$",
    "yes fuzz | head -c 300000", "echo err >&2",
]


def js(obj: Any) -> bytes:
    """JSON as the reference encoder writes it (lone surrogates escaped)."""
    return json.dumps(obj, separators=(",", ":")).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Hang(AssertionError):
    """The server neither answered nor closed within the connection's deadline."""


class Wire:
    """One raw connection: frames out, frames in, every wait bounded; keeps a
    transcript for failure messages."""

    def __init__(self, sock: socket.socket, deadline: float, raw: bool = False) -> None:
        self.sock = sock
        self.deadline = deadline
        self.raw = raw  # not speaking frames (garbage in place of TLS): bytes only
        self.buf = bytearray()
        self.received: list[tuple[int, bytes]] = []
        self.transcript: list[str] = []
        self.variant = "?"
        self.bytes_sent = 0
        self.frames_sent = 0
        self.eof = False
        self.reset = False
        self.send_failed = False
        self.half_closed = False

    def _left(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Hang(f"{what}: no answer and no close within {CONN_DEADLINE}s")
        return left

    def send(self, data: bytes, frames: int = 1) -> bool:
        """Send everything; False (and no more sending) once the server has hung up."""
        if self.send_failed:
            return False
        self.transcript.append(f"> {len(data)}B {data[:24].hex()}")
        try:
            self.sock.settimeout(self._left("send"))
            self.sock.sendall(data)
        except TimeoutError:
            raise Hang("send blocked: the server stopped reading") from None
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            self.send_failed = True
            self.transcript.append("> (peer gone)")
            return False
        self.bytes_sent += len(data)
        self.frames_sent += frames
        return True

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            self.sock.settimeout(self._left("recv"))
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise Hang("no answer and no close") from None
        except ConnectionResetError:
            self.reset = self.eof = True
            return False
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            chunk = b""
        except ssl.SSLError:
            # OpenSSL 3 answers an EOF without close_notify (our half-close)
            # with a fatal decode_error alert: that is the server closing.
            if not self.half_closed:
                raise
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def frame(self) -> tuple[int, bytes] | None:
        """The next frame from the server, None at end of stream."""
        while True:
            if len(self.buf) >= HEADER.size:
                length, kind = HEADER.unpack_from(self.buf)
                assert length <= MAX_PAYLOAD, f"server sent a {length}-byte frame"
                if len(self.buf) >= HEADER.size + length:
                    payload = bytes(self.buf[HEADER.size : HEADER.size + length])
                    del self.buf[: HEADER.size + length]
                    self.received.append((kind, payload))
                    self.transcript.append(f"< {kind} {payload[:80]!r}")
                    return kind, payload
            if not self._fill():
                assert not self.buf, f"server closed mid-frame: {bytes(self.buf)!r}"
                return None

    def expect(self, kind: int) -> bytes:
        got = self.frame()
        assert got is not None and got[0] == kind, f"expected frame {kind}, got {got!r}"
        return got[1]

    def until_exit(self) -> tuple[bytes, bytes, dict[str, Any]]:
        """Output and Exit of the running command (acks skipped)."""
        out, err = bytearray(), bytearray()
        while True:
            got = self.frame()
            assert got is not None, "connection closed before Exit"
            kind, payload = got
            if kind == T.STDOUT:
                out += payload
            elif kind == T.STDERR:
                err += payload
            elif kind == T.EXIT:
                return bytes(out), bytes(err), json.loads(payload)
            else:
                assert kind == T.STDIN_ACK, f"unexpected frame {kind} {payload!r} before Exit"

    def abort(self) -> None:
        """Vanish: RST instead of FIN, as a killed peer or a cut network looks."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.eof = True

    def finish(self) -> str:
        """Half-close, read until the server closes; how the connection ended."""
        try:  # the base method: SSLSocket.shutdown would drop the TLS layer first
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass
        self.half_closed = True
        if self.raw:
            while self._fill():
                self.buf.clear()
        else:
            while self.frame() is not None:
                pass
        kinds = [kind for kind, _ in self.received]
        stray = [k for k in kinds if k not in SERVER_KINDS]
        assert not stray, f"server sent message types a server never sends: {stray}"
        if T.ERROR in kinds:
            assert kinds.index(T.ERROR) == len(kinds) - 1, f"frames after an Error: {kinds}"
            body = json.loads(self.received[-1][1])
            assert isinstance(body.get("message"), str), body
            return f"error:{body['code']}"
        return "reset" if self.reset else "close"


def errors(*codes: str) -> set[str]:
    return {f"error:{code}" for code in codes}


@dataclass
class Ctx:
    """What scripts share: the server, the authorized key, a key that is not,
    and a file that no pre-authentication Run may ever create."""

    server: ServerProcess
    identity: keys.Identity
    stranger: keys.Identity
    marker: Path

    def host_blob(self, sock: socket.socket) -> bytes:
        if not isinstance(sock, ssl.SSLSocket):
            return b""
        return keys.public_blob(tls.peer_key(sock))

    def touch(self) -> str:
        return f"touch {self.marker}"


def hello(version: Any = 1) -> bytes:
    return frame(T.HELLO, js({"version": version, "client": "rshell-fuzz"}))


def auth_frame(ctx: Ctx, sock: socket.socket, nonce: bytes, ident: keys.Identity | None = None,
               host_blob: bytes | None = None) -> bytes:
    ident = ident or ctx.identity
    blob = ctx.host_blob(sock) if host_blob is None else host_blob
    data = signed_data(nonce, blob, ident.public_blob)
    return frame(T.AUTH, js({"public_key": ident.public_line, "signature": b64(ident.sign(data))}))


def challenge(w: Wire) -> bytes:
    """Send Hello, return the Challenge's nonce."""
    w.send(hello())
    return base64.b64decode(json.loads(w.expect(T.CHALLENGE))["nonce"])


def handshake(w: Wire, ctx: Ctx) -> dict[str, Any]:
    """Hello, Challenge, Auth, Welcome by hand; the Welcome fields."""
    w.send(hello())
    kind, payload = w.frame() or (0, b"")
    if kind == T.CHALLENGE:
        nonce = base64.b64decode(json.loads(payload)["nonce"])
        w.send(auth_frame(ctx, w.sock, nonce))
        payload = w.expect(T.WELCOME)
    else:
        assert kind == T.WELCOME, f"no Challenge or Welcome after Hello: {kind} {payload!r}"
    welcome: dict[str, Any] = json.loads(payload)
    return welcome


def run_frame(command: str, stdin: bool = False, **fields: Any) -> bytes:
    return frame(T.RUN, js({"command": command, "stdin": stdin, **fields}))


def assert_alive(w: Wire, rng: random.Random) -> None:
    """The session still runs commands after what the script did to it."""
    token = f"alive-{rng.randrange(1 << 30)}"
    w.send(run_frame(f"echo {token}"))
    out, err, exit_ = w.until_exit()
    assert (out, err, exit_["exit_code"]) == (f"{token}\n".encode(), b"", 0), (out, err, exit_)


class Dice(random.Random):
    """The script's random source.  ``variant`` deals a category's main variants
    round-robin (from a seeded offset), so a CI-sized run covers every one of
    them; everything else about the script is drawn at random."""

    def __init__(self, seed: str, turn: int, offset: int) -> None:
        super().__init__(seed)
        self.turn = turn
        self.offset = offset

    def variant(self, options: list[str]) -> str:
        return options[(self.turn + self.offset) % len(options)]


# ---- random material -------------------------------------------------------------------

FIELDS = ["version", "client", "nonce", "server", "public_key", "signature", "cwd", "user",
          "stdin_window", "command", "env", "timeout", "stdin", "exit_code", "signal", "error",
          "duration", "code", "message"]


def rand_text(rng: random.Random, n: int = 12) -> str:
    pools = ["abcXYZ019 -_/.~", "\u00e9\u4e2d\U0001f600", "\ud800\udc80\udcff\udfff",
             "\x00\x01\n\t\x7f", "'\"\\$`;|&<>*?"]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(n + 1)))


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    makers: list[Callable[[], Any]] = [
        lambda: None, lambda: rng.choice([True, False]), lambda: rng.randrange(-5, 300),
        lambda: rng.choice([0.0, -1.5, 1e300, 2**64, -(2**63), 1e9]),
        lambda: rand_text(rng), lambda: b64(rng.randbytes(rng.randrange(40))),
        lambda: rng.choice(["", "x" * 1000]),
        lambda: [rand_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {rand_text(rng, 4): rand_value(rng, depth + 1) for _ in range(rng.randrange(4))},
        lambda: rand_env(rng),
    ]
    return makers[rng.randrange(10 if depth < 3 else 7)]()


def rand_env(rng: random.Random) -> dict[str, str]:
    return {f"FZ_{rand_text(rng, 4)}": rand_text(rng) for _ in range(rng.randrange(5))}


def rand_object(rng: random.Random) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for _ in range(rng.randrange(7)):
        name = rng.choice(FIELDS) if rng.random() < 0.8 else rand_text(rng, 6)
        obj[name] = rand_value(rng)
    if "command" in obj:  # whatever else is random, only harmless commands may run
        obj["command"] = rng.choice(SAFE_COMMANDS)
    if "env" in obj and isinstance(obj["env"], dict):
        obj["env"] = rand_env(rng)
    return obj


def plausible(kind: int, rng: random.Random, ctx: Ctx) -> bytes:
    """A payload shaped for ``kind`` with random field values."""
    if kind in (T.STDIN, T.STDOUT, T.STDERR):
        return rng.randbytes(rng.randrange(64))
    if kind == T.STDIN_EOF:
        return b""
    if kind == T.SIGNAL:
        return bytes([rng.randrange(256)])
    if kind == T.STDIN_ACK:
        return rng.randbytes(4)
    shapes: dict[int, Callable[[], dict[str, Any]]] = {
        T.HELLO: lambda: {"version": rng.choice([1, 1, 0, 2, -1, "1", None, 1.0, True]),
                          "client": rng.choice(["fuzz", 7, None, "\ud800"])},
        T.AUTH: lambda: {"public_key": rng.choice([ctx.identity.public_line, rand_text(rng)]),
                         "signature": b64(rng.randbytes(rng.choice([0, 64, 71, 300])))},
        T.RUN: lambda: {"command": rng.choice(SAFE_COMMANDS),
                        "cwd": rng.choice([None, rand_text(rng), "/", "/tmp", ".."]),
                        "env": rng.choice([None, rand_env(rng)]),
                        "timeout": rng.choice([None, 0, 0.5, 5, -1, 1e9, "x"]),
                        "stdin": rng.choice([True, False, None, 1])},
        T.ERROR: lambda: {"code": rand_text(rng), "message": rand_text(rng)},
    }
    return js(shapes.get(kind, lambda: rand_object(rng))())


def random_frame(rng: random.Random, ctx: Ctx) -> bytes:
    kind = rng.choice([*T, *T, rng.randrange(256)])
    style = rng.random()
    if style < 0.25:
        payload = rng.randbytes(rng.randrange(64))
    elif style < 0.5:
        payload = js(rand_object(rng))
    else:
        payload = plausible(kind, rng, ctx)
    return frame(int(kind), payload)


# ---- the scripts: each sets w.variant, acts, and returns the endings it allows ------------

Script = Callable[[Wire, Dice, Ctx], set[str]]
ANY_ERROR = errors(*PROTOCOL_CODES, "auth-failed", "flow-control")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random bit flips, byte replacements, insertions and deletions."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(len(out))
        op = rng.randrange(4)
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at] = rng.randrange(256)
        elif op == 2:
            out.insert(at, rng.randrange(256))
        elif len(out) > 1:
            del out[at]
    return bytes(out)


def s_random_bytes(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Random bytes inside TLS at any stage, or a valid frame mutated, then EOF."""
    w.variant = rng.variant(["pre-hello", "after-hello", "after-auth", "mutated-hello",
                             "mutated-auth", "mutated-run"])
    nonce = b""
    if w.variant in ("after-hello", "mutated-auth"):
        nonce = challenge(w)
    elif w.variant in ("after-auth", "mutated-run"):
        handshake(w, ctx)
    if w.variant == "mutated-hello":
        w.send(mutate(hello(), rng))
    elif w.variant == "mutated-auth":
        w.send(mutate(auth_frame(ctx, w.sock, nonce), rng))
    elif w.variant == "mutated-run":  # "true" mutated stays harmless
        w.send(mutate(run_frame("true", cwd=None, env=None, timeout=None), rng))
    else:
        w.send(rng.randbytes(rng.randrange(1, 4096)))
    return {"close"} | ANY_ERROR


def s_random_frames(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Well-formed frames of random types with random or plausible payloads."""
    w.variant = rng.variant(["pre-auth", "after-auth"])
    if w.variant == "after-auth":
        handshake(w, ctx)
    frames = [random_frame(rng, ctx) for _ in range(rng.randrange(1, 7))]
    if rng.random() < 0.5:
        w.send(b"".join(frames), len(frames))
    else:
        for f in frames:
            w.send(f)
    return {"close"} | ANY_ERROR


def s_truncated(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """A frame cut short, then end of stream -- or a vanishing peer (RST)."""
    stage = rng.variant(["header", "hello", "auth", "run", "stdin"])
    abrupt = rng.random() < 0.4
    w.variant = f"{stage}-{'rst' if abrupt else 'eof'}"
    if stage == "header":
        whole = HEADER.pack(rng.randrange(MAX_PAYLOAD), rng.randrange(256))
    elif stage == "hello":
        whole = hello()
    elif stage == "auth":
        whole = auth_frame(ctx, w.sock, challenge(w))
    else:
        handshake(w, ctx)
        if stage == "run":
            whole = run_frame("cat", stdin=True)
        else:
            w.send(run_frame("cat", stdin=True))
            whole = frame(T.STDIN, rng.randbytes(rng.randrange(1, 100_000)))
    w.send(whole[: rng.randrange(1, len(whole))])
    if abrupt:
        w.abort()
        return {"aborted"}
    return {"close"}


def s_out_of_order(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Valid messages in the wrong state or the wrong direction."""
    welcome_body = js({"server": "x", "cwd": "/", "user": "x", "stdin_window": 4096})
    exit_body = js({"exit_code": 0, "signal": None, "error": None, "cwd": "/", "duration": 0.0})
    wrong_way = {
        "exit": frame(T.EXIT, exit_body), "welcome": frame(T.WELCOME, welcome_body),
        "challenge": frame(T.CHALLENGE, js({"nonce": b64(bytes(32)), "server": "x"})),
        "stdout": frame(T.STDOUT, b"x"), "stderr": frame(T.STDERR, b"x"),
        "stdin-ack": frame(T.STDIN_ACK, b"\0\0\0\1"),
    }
    variant = rng.variant([
        "run-before-hello", "stdin-before-hello", "signal-before-hello", "eof-before-hello",
        "auth-before-hello", "hello-twice", "run-before-auth", "stdin-before-auth",
        "auth-twice", "auth-twice-pipelined", "hello-after-welcome", "run-while-running",
        "client-error", "ready-stdin-ignored", *(f"client-sends-{k}" for k in wrong_way),
    ])
    w.variant = variant
    unexpected = errors("unexpected")
    if variant == "run-before-hello":
        w.send(run_frame(ctx.touch()))
    elif variant == "stdin-before-hello":
        w.send(frame(T.STDIN, b"data"))
    elif variant == "signal-before-hello":
        w.send(frame(T.SIGNAL, b"\x02"))
    elif variant == "eof-before-hello":
        w.send(frame(T.STDIN_EOF, b""))
    elif variant == "auth-before-hello":
        w.send(auth_frame(ctx, w.sock, bytes(32)))
    elif variant == "hello-twice":
        w.send(hello() + hello(), 2)
    elif variant == "run-before-auth":
        challenge(w)
        w.send(run_frame(ctx.touch()))
    elif variant == "stdin-before-auth":
        challenge(w)
        w.send(frame(T.STDIN, b"data"))
    elif variant == "auth-twice":
        handshake(w, ctx)
        w.send(auth_frame(ctx, w.sock, bytes(32)))
    elif variant == "auth-twice-pipelined":
        nonce = challenge(w)
        w.send(auth_frame(ctx, w.sock, nonce) * 2, 2)
    elif variant == "hello-after-welcome":
        handshake(w, ctx)
        w.send(hello())
    elif variant == "run-while-running":
        handshake(w, ctx)
        w.send(run_frame("cat", stdin=True) + run_frame("echo second"), 2)
    elif variant == "client-error":  # the server must not answer an Error
        if rng.random() < 0.5:
            handshake(w, ctx)
        w.send(frame(T.ERROR, js({"code": "fuzz", "message": "bye"})))
        return {"close"}
    elif variant == "ready-stdin-ignored":  # PROTOCOL.md 5: the READY race is tolerated
        handshake(w, ctx)
        w.send(frame(T.STDIN, b"late") + frame(T.STDIN_EOF, b"") + frame(T.SIGNAL, b"\x02"), 3)
        assert_alive(w, rng)
        return {"close"}
    else:
        stage = rng.choice(["pre-hello", "after-auth", "running"])
        w.variant = f"{variant}-{stage}"
        if stage != "pre-hello":
            handshake(w, ctx)
        if stage == "running":
            w.send(run_frame("cat", stdin=True))
        w.send(wrong_way[variant.removeprefix("client-sends-")])
    return unexpected


def s_oversized(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Headers announcing more than MAX_PAYLOAD, at every stage; and exactly MAX."""
    stage = rng.variant(["pre-hello", "after-hello", "after-auth", "running"])
    if stage == "after-hello":
        challenge(w)
    elif stage != "pre-hello":
        handshake(w, ctx)
        if stage == "running":
            w.send(run_frame("cat", stdin=True))
    if rng.random() < 0.15:  # the largest legal frame is read whole, then judged
        w.variant = f"exactly-max-{stage}"
        w.send(frame(T.STDOUT, rng.randbytes(MAX_PAYLOAD)))  # never legal from a client
        return errors("unexpected")
    length = rng.choice([0xFFFFFFFF, MAX_PAYLOAD + 1, rng.randrange(MAX_PAYLOAD + 1, 1 << 32)])
    w.variant = f"{'max+1' if length == MAX_PAYLOAD + 1 else 'huge'}-{stage}"
    kind = rng.choice([*T, rng.randrange(256)])
    w.send(HEADER.pack(length, kind) + rng.randbytes(rng.randrange(1024)))
    return errors("frame-too-large")


#: variant -> (Run payload, what must come of it: an error code, or a check of
#: the command's (stdout, stderr, Exit) after which the session must still work).
Check = Callable[[bytes, bytes, dict[str, Any]], None]


def _cannot_start(out: bytes, err: bytes, exit_: dict[str, Any]) -> None:
    assert exit_["exit_code"] == 127 and str(exit_["error"]).startswith("cannot start"), exit_


def _prints(expected: bytes) -> Check:
    def check(out: bytes, err: bytes, exit_: dict[str, Any]) -> None:
        assert (out, exit_["exit_code"], exit_["error"]) == (expected, 0, None), (out, err, exit_)
    return check


def _cd_fails(out: bytes, err: bytes, exit_: dict[str, Any]) -> None:
    """PROTOCOL.md 8: a failed cd is a Stderr line and exit status 1."""
    assert (exit_["exit_code"], exit_["error"]) == (1, None), (out, err, exit_)
    assert err.startswith(b"cd: ") and out == b"", (out, err)


BAD_TEXT: dict[str, tuple[bytes, str | Check]] = {
    "command-invalid-utf8": (b'{"command":"echo \xff\xfe","stdin":false}', "malformed"),
    "command-overlong-utf8": (b'{"command":"echo \xc0\xaf","stdin":false}', "malformed"),
    "cwd-invalid-utf8": (b'{"command":"true","cwd":"\xc3\x28","stdin":false}', "malformed"),
    "command-nul": (js({"command": "echo a\0b", "stdin": False}), "malformed"),
    "cwd-nul": (js({"command": "true", "cwd": "a\0b", "stdin": False}), "malformed"),
    "env-nul": (js({"command": "true", "env": {"FZ": "a\0b"}, "stdin": False}), "malformed"),
    "command-not-a-string": (js({"command": ["echo", "x"], "stdin": False}), "malformed"),
    "command-lone-surrogate": (js({"command": "echo \ud800", "stdin": False}), _cannot_start),
    "command-escaped-bytes": (js({"command": "printf %s \udcff\udc80", "stdin": False}),
                              _prints(b"\xff\x80")),
    "cwd-lone-surrogate": (js({"command": "true", "cwd": "\ud800", "stdin": False}),
                           _cannot_start),
    "cwd-escaped-missing": (js({"command": "true", "cwd": "/fuzz-\udcff-none", "stdin": False}),
                            _cannot_start),
    "env-escaped-bytes": (js({"command": 'printf %s "$FZ"', "env": {"FZ": "\udcff"},
                              "stdin": False}), _prints(b"\xff")),
    "env-lone-surrogate-name": (js({"command": "true", "env": {"FZ\ud800": "x"},
                                    "stdin": False}), _cannot_start),
    "unknown-field-surrogate": (js({"command": "echo ok", "\ud800": "\udfff", "stdin": False}),
                                _prints(b"ok\n")),
    "cd-escaped-bytes": (js({"command": "cd /fuzz-\udcff-none", "stdin": False}), _cd_fails),
    "cd-lone-surrogate": (js({"command": "cd /fuzz-\ud800", "stdin": False}), _cd_fails),
    "cd-tilde-surrogate": (js({"command": "cd ~\ud800", "stdin": False}), _cd_fails),
}


def s_bad_text(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Invalid UTF-8, lone surrogates and NUL in commands, paths and environment."""
    w.variant = rng.variant(sorted(BAD_TEXT))
    payload, outcome = BAD_TEXT[w.variant]
    handshake(w, ctx)
    w.send(frame(T.RUN, payload))
    if isinstance(outcome, str):
        return errors(outcome)
    outcome(*w.until_exit())
    assert_alive(w, rng)
    return {"close"}


def s_stdin_window(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Stdin past the granted window is fatal; exactly the window is not; and
    stdin while READY is tolerated (it never counts)."""
    w.variant = rng.variant(["over-1MiB-frames", "over-256KiB-frames", "exact-window",
                            "ready-overflow-ignored"])
    window = int(handshake(w, ctx)["stdin_window"])
    if w.variant == "ready-overflow-ignored":
        w.send(frame(T.STDIN, rng.randbytes(MAX_PAYLOAD)) * (window // MAX_PAYLOAD + 1))
        assert_alive(w, rng)
        return {"close"}
    # sleep never reads: only its pipe's 64 KiB get written, far below the
    # window/4 that triggers an ack, so no credit comes back meanwhile.
    w.send(run_frame("sleep 30", stdin=True))
    step = MAX_PAYLOAD if w.variant == "over-1MiB-frames" else 256 * 1024
    sent = 0
    while sent < window:
        n = min(step, window - sent)
        w.send(frame(T.STDIN, rng.randbytes(n)))
        sent += n
    if w.variant == "exact-window":
        w.send(frame(T.SIGNAL, bytes([15])))
        out, err, exit_ = w.until_exit()
        assert exit_["signal"] == 15, (out, err, exit_)
        return {"close"}
    w.send(frame(T.STDIN, b"!"))
    return errors("flow-control")


def s_bad_signal(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Signals outside the allowed set are ignored; malformed ones are fatal."""
    w.variant = rng.variant(["invalid-numbers", "ready-signals", "wrong-length", "before-hello"])
    if w.variant == "before-hello":
        w.send(frame(T.SIGNAL, bytes([rng.randrange(256)])))
        return errors("unexpected")
    handshake(w, ctx)
    if w.variant == "ready-signals":
        w.send(b"".join(frame(T.SIGNAL, bytes([rng.randrange(256)])) for _ in range(8)), 8)
        assert_alive(w, rng)
        return {"close"}
    w.send(run_frame("sleep 30"))
    if w.variant == "wrong-length":
        w.send(frame(T.SIGNAL, rng.choice([b"", b"\x0f\x00", rng.randbytes(8)])))
        return errors("malformed")
    numbers = [rng.choice(INVALID_SIGNALS) for _ in range(rng.randrange(1, 12))]
    w.send(b"".join(frame(T.SIGNAL, bytes([n])) for n in numbers), len(numbers))
    w.send(frame(T.SIGNAL, bytes([15])))  # the one that counts: sleep must die of it
    out, err, exit_ = w.until_exit()
    assert exit_["signal"] == 15 and exit_["exit_code"] is None, (numbers, out, err, exit_)
    return {"close"}


def s_huge_env(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Big and bad environment maps: up to the frame limit, past exec's limits,
    past the frame limit, and malformed ones."""
    w.variant = rng.variant(["many-vars", "value-over-exec-limit", "frame-over-max",
                            "invalid-map"])
    handshake(w, ctx)
    if w.variant == "many-vars":
        count = rng.randrange(2_000, 20_000)
        env = {f"FZ_{j}": "".join(rng.choices("abcdefXYZ0123", k=rng.randrange(8, 25)))
               for j in range(count)}
        pick = f"FZ_{rng.randrange(count)}"
        w.send(run_frame(f'printf %s "${pick}"', env=env))
        _prints(env[pick].encode())(*w.until_exit())
        assert_alive(w, rng)
        return {"close"}
    if w.variant == "value-over-exec-limit":  # one string past MAX_ARG_STRLEN (128 KiB)
        w.send(run_frame("true", env={"FZ_BIG": "x" * 200_000}))
        _cannot_start(*w.until_exit())
        assert_alive(w, rng)
        return {"close"}
    if w.variant == "frame-over-max":
        body = js({"command": "true", "stdin": False,
                   "env": {f"FZ_{j}": "v" * 100 for j in range(12_000)}})
        assert len(body) > MAX_PAYLOAD
        w.send(frame(T.RUN, body)[: 64 * 1024])
        return errors("frame-too-large")
    bad = rng.choice([{"": "x"}, {"A=B": "x"}, {"A": 1}, {"A": None}, ["A", "B"], "A=B",
                      {"A": ["x"]}])
    w.send(frame(T.RUN, js({"command": "true", "env": bad, "stdin": False})))
    return errors("malformed")


def s_handshake(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """The authentication path itself: bad Hellos, bad keys, bad signatures."""
    w.variant = rng.variant([
        "hello-bad-version", "hello-bad-types", "hello-not-object", "hello-extra-fields",
        "auth-garbage-key", "auth-surrogate-key", "auth-huge-key", "auth-unauthorized-key",
        "auth-wrong-nonce", "auth-wrong-host-key", "auth-random-signature",
        "auth-bad-base64", "auth-missing-signature", "auth-not-object",
    ])
    v = w.variant
    if v == "hello-bad-version":
        w.send(hello(rng.choice([0, 2, -1, 255, 2**31, 2**63, 10**30])))
        return errors("version")
    if v == "hello-bad-types":
        body = rng.choice([{"version": "1", "client": "x"}, {"version": 1.0, "client": "x"},
                           {"version": True, "client": "x"}, {"version": None, "client": "x"},
                           {"client": "x"}, {"version": 1}, {"version": 1, "client": 5}])
        w.send(frame(T.HELLO, js(body)))
        return errors("malformed")
    if v == "hello-not-object":
        w.send(frame(T.HELLO, rng.choice([b"", b"[]", b'"hi"', b"1", b"null", b"{",
                                          b"[" * 100_000, b"\xef\xbb\xbf{}"])))
        return errors("malformed")
    if v == "hello-extra-fields":
        w.send(frame(T.HELLO, js({"version": 1, "client": "x", "extra": rand_value(rng),
                                  "\ud800": [1, {"a": None}]})))
        w.expect(T.CHALLENGE)
        return {"close"}
    nonce = challenge(w)
    key, sig = ctx.identity.public_line, b64(ctx.identity.sign(
        signed_data(nonce, ctx.host_blob(w.sock), ctx.identity.public_blob)))
    failed = errors("auth-failed")
    if v == "auth-garbage-key":
        key = rng.choice([rand_text(rng, 40), "ssh-ed25519", "ssh-ed25519 AAAA",
                          "ssh-rsa " + b64(rng.randbytes(300)), "x " * 50])
    elif v == "auth-surrogate-key":
        key = "ssh-ed25519 \ud800\udcff AAAA"
    elif v == "auth-huge-key":
        key = "ssh-ed25519 " + "A" * 500_000
    elif v == "auth-unauthorized-key":
        w.send(auth_frame(ctx, w.sock, nonce, ident=ctx.stranger))
        return failed
    elif v == "auth-wrong-nonce":
        w.send(auth_frame(ctx, w.sock, rng.randbytes(32)))
        return failed
    elif v == "auth-wrong-host-key":
        w.send(auth_frame(ctx, w.sock, nonce, host_blob=rng.choice([b"", rng.randbytes(51)])))
        return failed
    elif v == "auth-random-signature":
        sig = b64(rng.randbytes(rng.choice([0, 1, 63, 64, 65, 512])))
    elif v == "auth-bad-base64":
        sig = rng.choice(["-_-_", "abc", "====", "\u00e9", "AAAA AAAA"])
        failed = errors("malformed")
    elif v == "auth-missing-signature":
        w.send(frame(T.AUTH, js({"public_key": key})))
        return errors("malformed")
    elif v == "auth-not-object":
        w.send(frame(T.AUTH, js([key, sig])))
        return errors("malformed")
    w.send(frame(T.AUTH, js({"public_key": key, "signature": sig})))
    return failed


def s_pre_tls(w: Wire, rng: Dice, ctx: Ctx) -> set[str]:
    """Garbage where the TLS handshake should be (raw TCP): the server drops it."""
    w.variant = rng.variant(["random", "tls-record-huge", "http", "empty-eof"])
    data = {
        "random": rng.randbytes(rng.randrange(1, 2048)),
        "tls-record-huge": b"\x16\x03\x01\xff\xff" + rng.randbytes(rng.randrange(600)),
        "http": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "empty-eof": b"",
    }[w.variant]
    if data:
        w.send(data)
    return {"close", "reset"}


CATEGORIES: dict[str, Script] = {
    "random_bytes": s_random_bytes, "random_frames": s_random_frames, "truncated": s_truncated,
    "out_of_order": s_out_of_order, "oversized": s_oversized, "bad_text": s_bad_text,
    "stdin_window": s_stdin_window, "bad_signal": s_bad_signal, "huge_env": s_huge_env,
    "handshake": s_handshake, "pre_tls": s_pre_tls,
}
#: Connection i plays SCHEDULE[i % len]: the categories with the most variants
#: come up twice as often, so 200 connections deal every variant at least once.
SCHEDULE = [*sorted(CATEGORIES), "out_of_order", "bad_text"]


@dataclass
class Outcome:
    index: int
    category: str
    variant: str
    ending: str
    frames_sent: int
    bytes_sent: int
    failure: str | None = None


def play(index: int, ctx: Ctx) -> Outcome:
    """One connection, one script; never raises (a failure is in the Outcome)."""
    slot = index % len(SCHEDULE)
    category = SCHEDULE[slot]
    turn = index // len(SCHEDULE) * SCHEDULE.count(category) + SCHEDULE[:slot].count(category)
    rng = Dice(f"{SEED}:{index}", turn, random.Random(f"{SEED}:{category}").randrange(1000))
    deadline = time.monotonic() + CONN_DEADLINE
    w: Wire | None = None
    try:
        if category == "pre_tls":
            sock = socket.create_connection(("127.0.0.1", ctx.server.port), timeout=CONN_DEADLINE)
            w = Wire(sock, deadline, raw=True)
        else:
            w = Wire(raw_connect(ctx.server, timeout=CONN_DEADLINE), deadline)
        allowed = CATEGORIES[category](w, rng, ctx)
        ending = "aborted" if "aborted" in allowed else w.finish()
        assert ending in allowed, f"ended with {ending}, allowed {sorted(allowed)}"
        assert ctx.server.proc.poll() is None, "the server died"
        return Outcome(index, category, w.variant, ending, w.frames_sent, w.bytes_sent)
    except Exception as exc:  # reported with the transcript below
        transcript = "\n    ".join(w.transcript[-12:]) if w else ""
        failure = (f"connection {index} ({category}/{w.variant if w else '?'}, seed {SEED}): "
                   f"{type(exc).__name__}: {exc}\n    {transcript}")
        return Outcome(index, category, w.variant if w else "?", "failed",
                       w.frames_sent if w else 0, w.bytes_sent if w else 0, failure)
    finally:
        if w is not None:
            w.sock.close()


def legit_session(server: ServerProcess) -> None:
    """A real client through the API: output, stdin, exit status, big output."""
    with connect(server, connect_timeout=20) as conn:
        r = conn.run("echo legit", timeout=30)
        assert (r.exit_code, r.stdout, r.stderr) == (0, b"legit\n", b""), r
        data = random.Random(SEED).randbytes(300_000)
        r = conn.run("cat", stdin=data, timeout=30)
        assert (r.exit_code, r.stdout) == (0, data), (r.exit_code, len(r.stdout))
        r = conn.run("exit 42", timeout=30)
        assert (r.exit_code, r.error) == (42, "exit status 42 with no output"), r
        r = conn.run("head -c 1048576 /dev/zero | tr '\\0' z", timeout=30)
        assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(b"z" * (1 << 20)).digest()


def test_live_fuzz_server_survives_and_leaks_nothing(
    home: Path, start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Hundreds of hostile connections, twenty at a time: each ends in an allowed
    Error or a clean close, and the server stays up, clean and leak-free.  (All
    from one address: per-source penalties would refuse most of them before
    the parser they are meant to reach.)"""
    server = start_server("--per-source-penalties", "no")
    print(f"\nlive fuzz seed {SEED} (replay: RSHELL_FUZZ_SEED={SEED})")
    pid = server.proc.pid
    stranger_key = keys.generate()
    ctx = Ctx(
        server, keys.load_identity(home / "id_ed25519"),
        keys.Identity(stranger_key, keys.public_line(stranger_key.public_key(), "stranger"),
                      "(memory)"),
        tmp_path / "pre-auth-run-happened",
    )
    threads_start = thread_count(pid)
    legit_session(server)  # warm-up: whatever the first session creates lazily
    server.wait_for_log(r"disconnected after")
    assert wait_until(lambda: thread_count(pid) <= threads_start, SETTLE)
    fds_base, threads_base = fd_count(pid), thread_count(pid)
    fds_listing = fd_targets(pid)

    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(lambda i: play(i, ctx), range(CONNECTIONS),
                                 timeout=(CONNECTIONS / PARALLEL + 2) * CONN_DEADLINE))
    fuzz_seconds = time.monotonic() - started
    crashes = 0 if server.proc.poll() is None else 1

    legit_error = None
    if not crashes:
        try:
            legit_session(server)
        except Exception as exc:  # asserted below, after the figures
            legit_error = f"{type(exc).__name__}: {exc}"
    settled = not crashes and wait_until(
        lambda: fd_count(pid) <= fds_base and thread_count(pid) <= threads_base
        and not children(pid), SETTLE, interval=0.1)
    fds_after = fd_count(pid) if not crashes else -1
    threads_after = thread_count(pid) if not crashes else -1
    kids = children(pid) if not crashes else []
    log = server.log
    tracebacks = log.count("Traceback")
    internal = log.count("internal error")

    failures = [o.failure for o in outcomes if o.failure]
    per_category: dict[str, dict[str, Any]] = {}
    for o in outcomes:
        cat = per_category.setdefault(
            o.category, {"connections": 0, "variants": Counter(), "endings": Counter()})
        cat["connections"] += 1
        cat["variants"][o.variant] += 1
        cat["endings"][o.ending] += 1
    endings = Counter(o.ending for o in outcomes)
    figures = {
        "seed": SEED, "soak": soak(), "connections": CONNECTIONS, "parallel": PARALLEL,
        "seconds": round(fuzz_seconds, 2),
        "inputs_per_category": {k: {"connections": v["connections"],
                                    "variants": dict(sorted(v["variants"].items())),
                                    "endings": dict(sorted(v["endings"].items()))}
                                for k, v in sorted(per_category.items())},
        "frames_sent": sum(o.frames_sent for o in outcomes),
        "bytes_sent": sum(o.bytes_sent for o in outcomes),
        "errors_by_code": {k.removeprefix("error:"): n for k, n in sorted(endings.items())
                           if k.startswith("error:")},
        "endings": dict(sorted(endings.items())),
        "failed_connections": len(failures), "crashes": crashes,
        "log_tracebacks": tracebacks, "log_internal_errors": internal,
        "legit_client_after": legit_error or "ok",
        "server": {"fds_baseline": fds_base, "fds_after": fds_after,
                   "threads_baseline": threads_base, "threads_after": threads_after,
                   "children_after": len(kids)},
    }
    path = write_figures("fuzz.json", figures)
    print(f"fuzz: seed={SEED} connections={CONNECTIONS} in {fuzz_seconds:.1f}s "
          f"frames={figures['frames_sent']} bytes={figures['bytes_sent']} "
          f"endings={dict(endings)} failed={len(failures)} crashes={crashes} "
          f"fds {fds_base}->{fds_after} threads {threads_base}->{threads_after} -> {path}")

    assert not crashes, "the server died:\n" + log[-3000:]
    assert not failures, f"{len(failures)} connection(s) misbehaved:\n" + "\n".join(failures[:15])
    assert not ctx.marker.exists(), "a Run sent before authentication was executed"
    assert legit_error is None, f"a real client failed after the fuzz: {legit_error}"
    assert tracebacks == 0 and internal == 0, "server log has tracebacks/internal errors"
    assert settled, (
        f"resources not back to baseline within {SETTLE}s: fds {fds_base}->{fds_after}, "
        f"threads {threads_base}->{threads_after}, children {kids}\n"
        f"fds before: {fds_listing}\nfds after: {fd_targets(pid)}"
    )
