"""A native reader reads on after a whole TLS record (transport.READ_ON).

A big frame is many 16 KiB records; once they are all in the kernel, the
native client's ``poll`` returns the frame's message from one call, rather
than one record per wait.  Real TLS over loopback; the client's protocol in
RUNNING by the ordinary conversation (tests.test_transitions.pair_in).
"""

from __future__ import annotations

import fcntl
import select
import socket
import ssl
import struct
import termios
import threading
import time
from pathlib import Path

from rshell.client.native import NativeBackend
from rshell.protocol.messages import Stdout
from rshell.protocol.states import State
from rshell.transport import READ_ON, READS, Stream
from rshell.trust import tls
from tests.test_stream_join import tls_peer
from tests.test_transitions import pair_in

DEADLINE = 20.0


def _buffered(sock: socket.socket) -> int:
    """Bytes waiting in the kernel's receive queue of ``sock``."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD,
                                              b"\0\0\0\0"))[0])


def test_a_big_frame_already_received_comes_from_one_poll(tmp_path: Path) -> None:
    pair = pair_in(State.RUNNING)
    payload = b"x" * (READ_ON * READS // 2)  # 33 records: many reads, fewer than READS
    frame = pair.server.send(Stdout(payload))
    # What the socket holds once all has come: each TLS 1.3 record is its
    # plaintext and 22 bytes (header, content type, tag); no session tickets
    # (tls_peer sends none here).
    records = -(-len(frame) // READ_ON)
    expected = len(frame) + records * 22
    sent = threading.Event()
    done = threading.Event()

    def serve(peer: ssl.SSLSocket) -> None:
        peer.sendall(frame)
        sent.set()
        done.wait(DEADLINE)

    listener, thread = tls_peer(tmp_path, serve, tickets=0)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # the whole frame fits
    raw.settimeout(DEADLINE)
    raw.connect(listener.getsockname())
    sock = tls.client_context().wrap_socket(raw)
    backend = NativeBackend("127.0.0.1", listener.getsockname()[1])
    try:
        backend.proto = pair.client
        backend.attach(Stream(sock))
        assert sent.wait(DEADLINE)
        # Wait (bounded) until every record is in this socket's queue.
        deadline = time.monotonic() + DEADLINE
        while _buffered(sock) < expected and time.monotonic() < deadline:
            select.select([sock], [], [], 0.05)
        assert _buffered(sock) == expected
        msg = backend.poll(time.monotonic() + DEADLINE)
        assert isinstance(msg, Stdout) and bytes(msg.data) == payload
    finally:
        done.set()
        backend.close()
        thread.join(DEADLINE)
        listener.close()
