"""The local terminal while a remote one is in use: raw mode, size, signals.

``RawTerminal`` puts the local terminal in raw mode (as ssh's
``enter_raw_mode``: no echo, no line editing, no signals from keys, no
output processing: the remote terminal does all of that) and restores it on
every way out: a normal end, an error, an exception, SIGTERM or SIGHUP
(turned into an exception here, so the same ``finally`` runs), and it
forwards window changes (SIGWINCH) while it is in force.

Must not import anything above layer 3, nor click.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

DEFAULT_SIZE = (80, 24)


class Hangup(BaseException):  # noqa: N818  # as KeyboardInterrupt: a signal, not an error
    """SIGTERM or SIGHUP arrived while the terminal was raw."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def window_size(fd: int) -> tuple[int, int]:
    """(cols, rows) of the terminal on ``fd``, else 80x24."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return (size.columns or DEFAULT_SIZE[0], size.lines or DEFAULT_SIZE[1])


class RawTerminal:
    """Raw mode on ``fd`` while in the ``with`` block (nothing if it is None
    or not a terminal: only a keyboard goes raw, as with ssh);
    ``on_resize(cols, rows)`` hears of the window changes of ``size_fd``'s
    terminal (default ``fd``'s)."""

    def __init__(self, fd: int | None, on_resize: Callable[[int, int], None] | None = None,
                 size_fd: int | None = None) -> None:
        self.fd = fd
        self.size_fd = fd if size_fd is None else size_fd
        self.on_resize = on_resize
        self._saved: list[Any] | None = None
        self._handlers: dict[int, Any] = {}

    def __enter__(self) -> RawTerminal:
        import termios
        import tty

        if self.fd is not None and os.isatty(self.fd):
            self._saved = termios.tcgetattr(self.fd)
            self._handle(signal.SIGTERM, self._hangup)
            self._handle(signal.SIGHUP, self._hangup)
            try:
                tty.setraw(self.fd, termios.TCSADRAIN)
            except BaseException:
                self._restore()
                raise
        if self.on_resize is not None:
            self._handle(signal.SIGWINCH, self._resized)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        import termios

        for signum, previous in self._handlers.items():
            signal.signal(signum, previous)
        self._handlers.clear()
        if self._saved is not None and self.fd is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass  # the terminal is gone (a hang-up): nothing to restore
            self._saved = None

    def _handle(self, signum: int, handler: Callable[[int, FrameType | None], None]) -> None:
        self._handlers[signum] = signal.signal(signum, handler)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        raise Hangup(signum)

    def _resized(self, signum: int, frame: FrameType | None) -> None:
        if self.on_resize is not None and self.size_fd is not None:
            self.on_resize(*window_size(self.size_fd))
