"""Peers for tests/test_copy_faults.py, each a thing no rshell component is:

- ``CopyClient``: ``Connection.put``/``get`` in a subprocess of its own (so
  it can be SIGKILLed), which stops inside its progress callback at a chosen
  byte offset until the test lets it go on, and reports how the copy ended
  as one JSON line;
- ``CutProxy``: a TCP relay on 127.0.0.1 that cuts both sides once a chosen
  number of bytes has passed in one direction (a link that fails);
- ``HostileServer``: a fake rshell server built from rshell's own sans-IO
  protocol (plain TCP, no authentication), which answers a ``Get`` with
  whatever entry stream the test scripted.

Every wait is bounded by ``DEADLINE``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from rshell.protocol.messages import FEATURES, Get, Hello, Message, Welcome
from rshell.protocol.states import DEFAULT_STDIN_WINDOW, ServerProtocol
from tests.support.cli import base_env, read_line

#: The longest any single step of these tests may take.
DEADLINE = 20.0

_CLIENT = r"""
import json, sys
import rshell
from rshell.errors import RshellError

op, address, src, dst, pause_at = sys.argv[1:6]
pause_at = int(pause_at)
paused = False

def progress(path, done, size):
    global paused
    if not paused and 0 <= pause_at <= done:
        paused = True
        print(f"at {done}", flush=True)
        sys.stdin.readline()  # the test kills us here, or lets us go on

try:
    with rshell.connect(address) as conn:
        getattr(conn, op)(src, dst, progress=progress)
except BaseException as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                      "rshell": isinstance(exc, RshellError),
                      "exit": getattr(exc, "exit_code", None)}), flush=True)
else:
    print(json.dumps({"error": None}), flush=True)
"""


class CopyClient:
    """``conn.put``/``conn.get`` (``op``) of ``src`` to ``dst`` in a Python
    subprocess using ``home`` as its RSHELL_HOME; with ``pause_at`` >= 0 it
    stops in its progress callback once that many bytes have gone."""

    def __init__(self, home: Path, op: str, address: str, src: str, dst: str,
                 pause_at: int = -1) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, op, address, src, dst, str(pause_at)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=base_env(home))

    def paused(self) -> int:
        """The offset the client stopped at (it waits there until ``resume``)."""
        assert self.proc.stdout is not None
        line = read_line(self.proc.stdout.fileno(), DEADLINE)
        if not line.startswith(b"at "):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=DEADLINE)
            raise AssertionError(f"the client never paused: {line!r}; stderr: {err!r}")
        return int(line.split()[1])

    def resume(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL (if it still runs), reaped, its pipes closed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def outcome(self) -> dict[str, Any]:
        """How the copy ended, as the client reported it; its stderr must be empty
        (no traceback, no warning)."""
        try:
            out, err = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=DEADLINE)
            raise AssertionError("the client did not finish in time") from None
        assert self.proc.returncode == 0, (self.proc.returncode, out, err)
        assert err == b"", err
        lines = out.decode().splitlines()
        assert lines, "the client reported nothing"
        result: dict[str, Any] = json.loads(lines[-1])
        return result


class CutProxy:
    """A TCP relay from ``address`` to ``127.0.0.1:upstream`` for one
    connection, which closes both sides as soon as ``limit`` bytes have gone
    ``upward`` (client to server) or downward, having relayed exactly those."""

    def __init__(self, upstream: int, limit: int, *, upward: bool) -> None:
        self.upstream, self.limit, self.upward = upstream, limit, upward
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(DEADLINE)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.relayed = 0
        self.cut = threading.Event()
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.upstream), timeout=DEADLINE)
        client.settimeout(DEADLINE)
        self._socks = [client, server]
        up = threading.Thread(target=self._pump, args=(client, server, self.upward), daemon=True)
        up.start()
        self._pump(server, client, not self.upward)
        up.join(DEADLINE)
        for sock in self._socks:
            sock.close()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while not self.cut.is_set():
                data = src.recv(1 << 16)
                if not data:
                    break
                if counted:
                    data = data[:self.limit - self.relayed]
                    self.relayed += len(data)
                dst.sendall(data)
                if counted and self.relayed >= self.limit:
                    break
        except OSError:
            pass
        if counted or not self.cut.is_set():
            self.cut.set()
            for sock in self._socks:  # wakes the other pump; both peers see the end
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        self._thread.join(DEADLINE)


class HostileServer:
    """A fake rshell server for one connection: Welcome (with the ``files``
    feature) to any Hello, then ``script`` sent as is in answer to a Get;
    it holds the connection until the client hangs up."""

    def __init__(self, script: list[Message]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(DEADLINE)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.asked: Get | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
            with sock:
                sock.settimeout(DEADLINE)
                proto = ServerProtocol()
                hello = _next(sock, proto)
                assert isinstance(hello, Hello), hello
                sock.sendall(proto.send(Welcome("hostile", "/", "nobody", DEFAULT_STDIN_WINDOW,
                                                FEATURES)))
                get = _next(sock, proto)
                assert isinstance(get, Get), get
                self.asked = get
                for msg in self.script:
                    sock.sendall(proto.send(msg))
                while sock.recv(1 << 16):  # until the client hangs up
                    pass
        except OSError:
            pass
        except BaseException as exc:  # seen by close(): the test fails on it
            self.failure = exc

    def close(self) -> None:
        """Stop; fail if the conversation went other than scripted."""
        self.listener.close()
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), "the hostile server is still talking"
        if self.failure is not None:
            raise self.failure


def _next(sock: socket.socket, proto: ServerProtocol) -> Message:
    while True:
        msg = proto.next_event()
        if msg is not None:
            return msg
        data = sock.recv(1 << 16)
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()


def entries(root: Path) -> dict[str, str]:
    """Everything under ``root`` (not followed through links): relative path ->
    ``dir``, ``link:TARGET`` or ``file:CONTENT`` (first 40 bytes)."""
    found: dict[str, str] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = f"file:{path.read_bytes()[:40].decode(errors='replace')}"
    return found
