"""The one door to paramiko: every use of its private API, and the mapping of
its exceptions, live here so that a paramiko upgrade breaks one module.

Must not import click, the CLI, or rshell.server.listener / rshell.client.api.
"""

from __future__ import annotations

import signal

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
