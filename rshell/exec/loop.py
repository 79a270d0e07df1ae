"""One epoll loop per connection (or SSH channel): its wire, its wake-up, its command.

A driver (the native session, an SSH channel) registers its own descriptors
here and the running command registers the child's pipes and pidfd on the
same loop, so output, stdin, signals and deadlines all flow in one thread
and nothing blocks on a slow peer.  epoll is used directly, not through
selectors: its per-event objects cost real time at thousands of commands a
second.

Must not import rshell.protocol, sockets or paramiko.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

READ, WRITE = select.EPOLLIN, select.EPOLLOUT
#: A hang-up or error is news for whoever waits to read or to write.
_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR

Handler = Callable[[int], None]


class Loop:
    """Descriptors, their interest masks and handlers, and a thread-safe wake-up.

    Methods for the driver: ``set`` (register, change or drop interest),
    ``poll`` (wait and dispatch once), ``wake`` (from any thread), ``close``.
    Subclasses set ``closing`` to stop dispatching mid-batch.
    """

    closing = False

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._masks: dict[int, int] = {}
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Held to write to wake_fd and to close it: a number closed under a
        # waker's feet could be reused by another thread's descriptor.
        self._wake_lock = threading.Lock()

    def set(self, fd: int, mask: int, handler: Handler | None) -> None:
        """Interest in ``fd``: ``mask`` 0 (or no handler) drops it.  Drop a
        descriptor before closing it: a closed number is soon reused."""
        old = self._masks.get(fd, 0)
        if mask == old:
            return
        if not old:
            self._epoll.register(fd, mask)
        elif not mask:
            self._epoll.unregister(fd)
        else:
            self._epoll.modify(fd, mask)
        if mask and handler is not None:
            self._masks[fd] = mask
            self._handlers[fd] = handler
        else:
            self._masks.pop(fd, None)
            self._handlers.pop(fd, None)

    def poll(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` seconds (None: for ever) and run the handlers."""
        for fd, events in self._epoll.poll(-1 if timeout is None else timeout):
            handler = self._handlers.get(fd)
            if handler is None:
                continue  # unregistered by an earlier handler in this batch
            mask = (READ if events & _READABLE else 0) | (WRITE if events & _WRITABLE else 0)
            handler(mask)
            if self.closing:
                return

    def wake(self) -> None:
        """Make ``poll`` return soon; safe from any thread."""
        with self._wake_lock:
            if self.wake_fd >= 0:
                os.eventfd_write(self.wake_fd, 1)

    def drain_wake(self) -> bool:
        """Consume a wake-up; False if there was none."""
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self._epoll.close()
        with self._wake_lock:
            wake, self.wake_fd = self.wake_fd, -1
            if wake >= 0:
                os.close(wake)
