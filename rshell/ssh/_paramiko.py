"""The one door to paramiko: every use of its private API, and the mapping of
its exceptions, live here so that a paramiko upgrade breaks one module.

Must not import click, the CLI, or rshell.server.listener / rshell.client.api.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import paramiko

#: SSH signal names (RFC 4254 6.9, 6.10) for the signals a command may get or die of.
SIGNAL_NAMES: dict[int, str] = {
    signal.SIGABRT: "ABRT", signal.SIGALRM: "ALRM", signal.SIGFPE: "FPE", signal.SIGHUP: "HUP",
    signal.SIGILL: "ILL", signal.SIGINT: "INT", signal.SIGKILL: "KILL", signal.SIGPIPE: "PIPE",
    signal.SIGQUIT: "QUIT", signal.SIGSEGV: "SEGV", signal.SIGTERM: "TERM",
    signal.SIGUSR1: "USR1", signal.SIGUSR2: "USR2",
}
SIGNAL_NUMBERS: dict[str, int] = {name: int(num) for num, name in SIGNAL_NAMES.items()}

#: The exceptions paramiko raises for a broken or refused transport.
FAILURES = (paramiko.SSHException, OSError, EOFError)

_MSG_CHANNEL_REQUEST = 98


def channel_request(channel: paramiko.Channel, kind: str, *fields: str | bool) -> None:
    """Send a channel request paramiko has no public call for (``signal``,
    ``exit-signal``), wanting no reply."""
    msg = paramiko.Message()
    msg.add_byte(bytes([_MSG_CHANNEL_REQUEST]))
    msg.add_int(channel.remote_chanid)
    msg.add_string(kind)
    msg.add_boolean(False)
    for field in fields:
        if isinstance(field, bool):
            msg.add_boolean(field)
        else:
            msg.add_string(field)
    channel.transport._send_user_message(msg)


def intercept_request(transport: paramiko.Transport, kind: str,
                      handle: Callable[[paramiko.Channel, paramiko.Message], None]) -> None:
    """Channel requests named ``kind`` go to ``handle(channel, message)``, the
    message read past the want-reply flag; every other request as before."""
    table = dict(transport._channel_handler_table)
    original = table[_MSG_CHANNEL_REQUEST]

    def route(channel: paramiko.Channel, m: paramiko.Message) -> None:
        where = m.packet.tell()
        if m.get_text() == kind:
            m.get_boolean()
            handle(channel, m)
            return
        m.packet.seek(where)
        original(channel, m)

    table[_MSG_CHANNEL_REQUEST] = route
    transport._channel_handler_table = table


# ---- the server side's hooks ------------------------------------------------------


class _NotifyingCondition(threading.Condition):
    """A channel's ``out_buffer_cv`` that also tells our loop: paramiko
    notifies it when the peer opens the send window and when the channel
    closes (``_set_closed``), the two events a non-blocking sender waits for."""

    def __init__(self, lock: Any, notify: Callable[[], None]) -> None:
        super().__init__(lock)
        self._rshell_notify = notify

    def notify_all(self) -> None:
        super().notify_all()
        self._rshell_notify()


def watch_channel(channel: paramiko.Channel, notify: Callable[[], None]) -> None:
    """Call ``notify`` (from paramiko's thread) whenever ``channel``'s send
    window opens or the channel closes; makes sends non-blocking."""
    with channel.lock:
        channel.out_buffer_cv = _NotifyingCondition(channel.lock, notify)
    channel.settimeout(0.0)


def unwatch_channel(channel: paramiko.Channel) -> None:
    """No more calls from ``watch_channel``, and no more writes to the pipe
    ``channel.fileno()`` made: call it before closing the channel.

    paramiko's transport thread writes a byte to that pipe whenever data or
    EOF arrives, under the buffer's lock, while ``close()`` closes the pipe
    under the channel's: a close racing a delivery wrote to a closed
    descriptor (EBADF, which kills the whole transport: seen under load) or
    to a number another session had just been given.  A plain Event set
    under the buffer's own lock ends those writes before the pipe goes."""
    with channel.lock:
        cv = channel.out_buffer_cv
        if isinstance(cv, _NotifyingCondition):
            cv._rshell_notify = _nothing
    for buffer in (channel.in_buffer, channel.in_stderr_buffer):
        buffer.set_event(threading.Event())


def _nothing() -> None:
    pass


def hear_signals(transport: paramiko.Transport, deliver: Callable[[int, int], None]) -> None:
    """RFC 4254 6.9 ``signal`` requests, which paramiko drops, handed to
    ``deliver(channel id, signal number)`` (the RFC wants no reply)."""

    def signalled(channel: paramiko.Channel, m: paramiko.Message) -> None:
        signum = SIGNAL_NUMBERS.get(m.get_text())
        if signum is not None:
            deliver(channel.get_id(), signum)

    intercept_request(transport, "signal", signalled)


def send_exit(channel: paramiko.Channel, code: int | None, signum: int | None) -> None:
    """``exit-signal`` (RFC 4254 6.10, no public call for it) or ``exit-status``."""
    if signum:
        channel_request(channel, "exit-signal", SIGNAL_NAMES.get(signum, f"SIG{signum}"),
                        False, "", "")
    else:
        channel.send_exit_status(code if code is not None else 255)


def silence_logging() -> None:
    """paramiko logs tracebacks of failed negotiations; users get one line from us."""
    logger = logging.getLogger("paramiko")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


#: C0 controls (but tab) and DEL, escaped: a peer's text must not start a log line.
_ONE_LINE = {c: f"\\x{c:02x}" for c in (*range(9), *range(10, 32), 127)}


class _Routed(logging.Handler):
    """paramiko's warnings and errors as one warning each on our logger,
    naming the thread (``ssh <peer>`` for a transport ``route_transport``
    named), so the server's own format (text or JSON) applies to them."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__(logging.WARNING)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        name = record.threadName or "?"
        self.target.warning("%s: %s", name if name.startswith("ssh ") else f"ssh {name}",
                            text.translate(_ONE_LINE))


def route_logging(target: logging.Logger) -> None:
    """paramiko's records at WARNING and above go to ``target``, one line
    each (see route_transport for its tracebacks); lower levels are dropped.
    Before, paramiko's complaints either vanished or reached stderr raw,
    breaking ``--log-format json``."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, _Routed) for h in logger.handlers):
        logger.addHandler(_Routed(target))
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def route_transport(transport: paramiko.Transport, peer: str) -> None:
    """Name ``transport``'s thread after ``peer`` (its log lines then say
    which connection), and drop the tracebacks it logs.

    paramiko logs a traceback as one record per line (``_log(ERROR,
    util.tb_strings())`` after "Exception (server): ..." or "Unknown
    exception: ..."), and every such list goes through ``Transport._log``,
    which its auth handler uses too: a list is dropped there, whole, so the
    one-line complaint before it is all that is left."""
    transport.name = f"ssh {peer}"
    original = transport._log

    def log_line(level: int, msg: Any, *args: Any) -> None:
        if not isinstance(msg, list):
            original(level, msg, *args)

    transport._log = log_line


# ---- the client side's hooks ------------------------------------------------------


def hear_exit_signals(transport: paramiko.Transport) -> None:
    """paramiko drops ``exit-signal`` (RFC 4254 6.10) and never sets the
    status: record the signal (``exit_signal``) and end the wait as
    ``exit-status`` would, with ``exit_status`` -1."""

    def record(channel: paramiko.Channel, m: paramiko.Message) -> None:
        channel._rshell_exit_signal = SIGNAL_NUMBERS.get(m.get_text(), int(signal.SIGTERM))
        channel.exit_status = -1
        channel.status_event.set()

    intercept_request(transport, "exit-signal", record)


def exit_signal(channel: paramiko.Channel) -> int | None:
    """The signal ``channel``'s command died of, as ``hear_exit_signals`` heard it."""
    signum: int | None = getattr(channel, "_rshell_exit_signal", None)
    return signum


class _NotifyingEvent(threading.Event):
    """A channel's ``status_event`` that also tells our loop when it is set:
    on ``exit-status``, on ``exit-signal`` (above) and when the channel closes."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._rshell_notify = notify

    def set(self) -> None:
        super().set()
        self._rshell_notify()


def watch_exit(channel: paramiko.Channel, notify: Callable[[], None]) -> None:
    """Call ``notify`` (from paramiko's thread) once ``channel``'s exit status
    arrives or it closes; before ``exec_command``, so none is missed."""
    channel.status_event = _NotifyingEvent(notify)


def unwatch_exit(channel: paramiko.Channel) -> None:
    """No more calls from ``watch_exit``: before what it calls goes away."""
    event = channel.status_event
    if isinstance(event, _NotifyingEvent):
        event._rshell_notify = _nothing


#: Rekey after this many bytes each way: OpenSSH's default for a 128-bit block
#: cipher (RFC 4344: 2**32 blocks), where paramiko's own is 512 MiB.
REKEY_BYTES = 1 << 36


def rekey_as_openssh(transport: paramiko.Transport) -> None:
    """Rekey as seldom as OpenSSH does.  paramiko's own rekey at 512 MiB can
    deadlock its thread for 30 s and then fail the command ("Key-exchange
    timed out"): a channel close that crosses our KEXINIT is answered from
    the transport thread, which waits for the key exchange it alone can
    finish (paramiko issue #822, open since 2016)."""
    transport.packetizer.REKEY_BYTES = REKEY_BYTES


class AnsweringSFTPServer(paramiko.SFTPServer):
    """paramiko's SFTP server, knowing when a request is being answered
    (its private ``_process``): a stop must not close the channel between a
    file's close and the answer to it.  ``answering`` is written by the SFTP
    thread only; ``answered()`` is called after each answer went out."""

    answering = False

    def _process(self, t: int, request_number: int, msg: paramiko.Message) -> None:
        self.answering = True
        try:
            super()._process(t, request_number, msg)
        finally:
            self.answering = False
            self.answered()

    def answered(self) -> None:
        """After each request's answer (or failure)."""
