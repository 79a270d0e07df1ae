"""ssh's escape sequences, read out of the keystrokes bound for a remote terminal.

After a newline (or at the very start), the escape character (``~`` unless
told otherwise) begins a sequence: ``~.`` disconnects, ``~?`` lists the
escapes, ``~~`` sends one ``~``; any other character after it is sent with
the ``~`` in front, as ssh does.  ``Escapes`` is sans-IO (bytes in, bytes
to send and actions out); ``KeyboardPump`` applies it to a terminal's
keystrokes as the stdin of a remote command.

The prompt also gives up on a command at the third Ctrl-C within its
window (cli.common's rule, unchanged for a command on a terminal): on a
terminal, Ctrl-C is a keystroke (the remote line discipline makes it
SIGINT), so it is counted here, on the way.

Must not import anything above layer 3, nor click.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from rshell.client.stdin import Pump
from rshell.errors import ConnectionClosed

DISCONNECT, HELP = "disconnect", "help"
_NEWLINES = b"\r\n"
_CTRL_C = 0x03

HELP_TEXT = (
    "Supported escape sequences:\r\n"
    " {c}.   - terminate connection\r\n"
    " {c}?   - this message\r\n"
    " {c}{c}   - send the escape character by typing it twice\r\n"
    "(Note that escapes are only recognized immediately after newline.)\r\n"
)


def escape_char(text: str) -> int | None:
    """``-e``'s argument: a single character, ``^X`` for a control one, or
    ``none`` (no escapes); ValueError otherwise."""
    if text == "none":
        return None
    if len(text) == 2 and text[0] == "^" and 0x40 <= ord(text[1].upper()) <= 0x5F:
        return ord(text[1].upper()) & 0x1F
    if len(text) == 1 and ord(text) < 0x80:
        return ord(text)
    raise ValueError(f"bad escape character {text!r} (one ASCII character, ^X, or none)")


class Escapes:
    """The escape state machine over a stream of keystrokes."""

    def __init__(self, char: int | None = ord("~")) -> None:
        self.char = char
        self._line_start = True  # the very first keystroke counts as after a newline
        self._pending = False  # an escape character seen, its sequence not yet complete

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """The bytes to send for ``data``, and the actions it asked for (in order;
        nothing after a disconnect matters)."""
        if self.char is None:
            return data, []
        out = bytearray()
        actions: list[str] = []
        for byte in data:
            if self._pending:
                self._pending = False
                if byte == ord("."):
                    actions.append(DISCONNECT)
                    return bytes(out), actions
                if byte == ord("?"):
                    actions.append(HELP)
                    continue  # still at a line's start, as with ssh: ~? then ~. works
                if byte != self.char:
                    out.append(self.char)  # not a sequence: the escape goes too
                out.append(byte)
            elif self._line_start and byte == self.char:
                self._pending = True
                continue
            else:
                out.append(byte)
            self._line_start = byte in _NEWLINES
        return bytes(out), actions


class KeyboardPump(Pump):
    """A terminal's keystrokes as a remote command's stdin, escapes applied.

    ``~.`` raises ConnectionClosed (the backend then drops the connection at
    once, which hangs the remote terminal up); ``~?`` writes the help through
    ``say``.  With ``ctrl_c_window``, the third Ctrl-C within it raises
    KeyboardInterrupt (the command is given up on, as at the prompt)."""

    def __init__(self, fd: int, escapes: Escapes, say: Callable[[str], None],
                 address: str, ctrl_c_window: float | None = None) -> None:
        self.fd = fd
        self._escapes, self._say, self._address = escapes, say, address
        self._window = ctrl_c_window
        self._presses: list[float] = []
        self._was_blocking = os.get_blocking(fd)
        os.set_blocking(fd, False)

    def read(self, n: int) -> bytes | None:
        try:
            data = os.read(self._fd(), n)
        except BlockingIOError:
            return b""
        if not data:
            return None
        if self._window is not None and _CTRL_C in data:
            self._count_ctrl_c(data.count(_CTRL_C))
        send, actions = self._escapes.feed(data)
        for action in actions:
            if action == DISCONNECT:
                raise ConnectionClosed(f"connection to {self._address} closed (~.)")
            char = self._escapes.char
            self._say(HELP_TEXT.format(c=chr(char) if char is not None else "~"))
        return send

    def _count_ctrl_c(self, presses: int) -> None:
        assert self._window is not None
        now = time.monotonic()
        self._presses = [t for t in self._presses if now - t < self._window]
        self._presses += [now] * presses
        if len(self._presses) >= 3:
            self._presses.clear()
            raise KeyboardInterrupt

    def _fd(self) -> int:
        assert self.fd is not None
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.set_blocking(self.fd, self._was_blocking)
