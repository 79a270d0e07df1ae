"""How a client connection is opened: ``ConnectOptions``, the one home of
every default (the connect timeout included), for both backends and both
halves of the command line.

Also the client's debug log (``rshell -v``): ``debug``.

Must not import anything above layer 0, nor click, paramiko, cryptography
or logging: the CLI's fast path reads ``CONNECT_TIMEOUT`` from here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from rshell.errors import UsageError
from rshell.paths import parse_hostport

#: Connect + handshake + authentication, in seconds: ``--connect-timeout``'s
#: default and ``rshell.connect``'s.
CONNECT_TIMEOUT = 10.0

#: The logger of ``debug``'s lines; ``rshell -v`` gives it a handler to stderr.
LOGGER = "rshell.client"

#: Asked about an unknown host key: (address, fingerprint) -> trust it?
AskHost = Callable[[str, str], bool]
#: A passphrase, or a callback asked for one with a prompt (None: none to be had).
Passphrase = str | Callable[[str], str | None] | None


class ConnectOptions:
    """What ``rshell.connect`` was asked for, handed as one value to a backend.

    ``known_hosts`` None means the backend's own file (``$RSHELL_HOME/known_hosts``
    natively, ``~/.ssh/known_hosts`` over SSH); ``tls`` and ``auth`` concern
    only the native protocol (SSH is always encrypted and authenticated).
    A plain class with slots: it is defined on every cold start, where a
    dataclass costs half a millisecond and a NamedTuple a quarter.
    """

    __slots__ = ("port", "identity", "passphrase", "known_hosts", "strict_host_keys",
                 "accept_new", "ask", "connect_timeout", "tls", "auth", "on_warning")

    def __init__(
        self, *, port: int | None = None, identity: str | os.PathLike[str] | None = None,
        passphrase: Passphrase = None, known_hosts: str | os.PathLike[str] | None = None,
        strict_host_keys: bool = False, accept_new: bool = False, ask: AskHost | None = None,
        connect_timeout: float = CONNECT_TIMEOUT, tls: bool = True, auth: bool = True,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.port, self.identity, self.passphrase = port, identity, passphrase
        self.known_hosts, self.strict_host_keys = known_hosts, strict_host_keys
        self.accept_new, self.ask, self.connect_timeout = accept_new, ask, connect_timeout
        self.tls, self.auth, self.on_warning = tls, auth, on_warning

    def passphrase_callback(self) -> Callable[[str], str | None] | None:
        """The passphrase as a callback, whichever form it was given in."""
        given = self.passphrase
        if isinstance(given, str):
            return lambda _prompt: given
        return given


def host_and_port(hostport: str, port: int | None, default: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` with ``-p``'s ``port``: the
    port written in the target, else ``port``, else ``default``; a target's
    port that contradicts ``-p`` is a usage error, for both backends."""
    host, parsed = parse_hostport(hostport, port or default)
    if port is not None and parse_hostport(hostport, 0, listen=True)[1] not in (0, port):
        # Named by value, not by flag: -p for rshell, -P for rshell cp, port= in the API.
        raise UsageError(f"port {port} contradicts the port in {hostport!r}")
    return host, parsed


def debug(level: int, message: str, *args: object) -> None:
    """A debug line of ``level`` (1 for ``-v``, 2 for ``-vv``, 3 for ``-vvv``)
    on the ``rshell.client`` logger, at logging level ``11 - level`` (so
    DEBUG is ``-v``), formatted only if someone listens.

    Free when nobody does: ``logging`` is never imported for it (a cold
    one-shot does not load it), and if nothing imported it, nothing can
    have configured a handler, so there is nothing to say.
    """
    logging = _logging()
    if logging is not None:
        logger = logging.getLogger(LOGGER)
        if logger.isEnabledFor(11 - level):
            logger.log(11 - level, message, *args)


def debugging(level: int = 1) -> bool:
    """Whether ``debug(level, ...)`` would say anything: for lines whose
    arguments cost something to gather."""
    logging = _logging()
    return logging is not None and bool(logging.getLogger(LOGGER).isEnabledFor(11 - level))


def _logging() -> Any:
    """``logging`` if something imported it, and it is done importing: in a
    fleet, one thread may peek while another (a first ssh:// host, whose
    paramiko imports it) is still inside its import, and a half-made
    module has no ``getLogger`` yet.  Half-made, nobody configured it:
    nothing to say."""
    logging = sys.modules.get("logging")
    if logging is None or getattr(getattr(logging, "__spec__", None), "_initializing", False):
        return None
    return logging
