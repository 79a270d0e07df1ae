"""The one exception tree of rshell.

Every error a user or a caller of the API can see is an ``RshellError``; each
class knows the exit code the CLI turns it into, so exactly one place (the CLI)
maps errors to exit codes.  Foreign exceptions (``OSError``, ``ssl.SSLError``)
are translated at the transport edge and never leak above it.

Must not import anything from rshell.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rshell.result import Copied, Result

EXIT_USAGE = 2
EXIT_CONNECTION = 255


class RshellError(Exception):
    """Root of every rshell error."""

    exit_code: int = EXIT_CONNECTION


class UsageError(RshellError):
    """The caller asked for something malformed (bad target, bad option)."""

    exit_code = EXIT_USAGE


class ConfigError(RshellError):
    """A file rshell reads (key, known_hosts, config) is missing or unusable."""


class ConnectionFailed(RshellError):
    """The connection could not be made, or was lost."""


class ConnectionClosed(ConnectionFailed):
    """The peer closed the connection while something was still expected."""


class ErrorCode(StrEnum):
    """The ``code`` of an Error message: every code rshell sends or raises.

    A ``StrEnum``, so ``exc.code == "auth-failed"`` holds and the bytes on the
    wire are the plain strings of docs/PROTOCOL.md section 9.  A peer may send
    a code not listed here (a newer peer's): it is kept as the raw string, see
    ``error_code``.  Defined here, not in rshell.protocol, because the
    execution engine (which may not import the protocol) raises ``LIMIT``.
    """

    # the peer's bytes broke the protocol (PROTOCOL.md sections 2-5)
    FRAME_TOO_LARGE = "frame-too-large"
    UNKNOWN_TYPE = "unknown-type"
    MALFORMED = "malformed"
    UNEXPECTED = "unexpected"
    VERSION = "version"
    FLOW_CONTROL = "flow-control"
    # the server's verdicts and states (section 9)
    AUTH_TIMEOUT = "auth-timeout"
    AUTH_FAILED = "auth-failed"
    BUSY = "busy"
    IDLE_TIMEOUT = "idle-timeout"
    LIMIT = "limit"
    SHUTDOWN = "shutdown"
    INTERNAL = "internal"
    # never sent: the generic default, and a stream that ended inside a frame
    PROTOCOL = "protocol"
    TRUNCATED = "truncated"


_CODES: dict[str, ErrorCode] = {code.value: code for code in ErrorCode}


def error_code(code: str) -> str:
    """``code`` as an ErrorCode if it is one, else the raw string unchanged
    (forward compatibility: a newer peer may send codes we do not know)."""
    return _CODES.get(code, code)


class ProtocolError(RshellError):
    """The rshell protocol was broken, or the peer ended the session with an Error.

    ``code`` is the short machine-readable reason that is sent to, or came
    from, the peer in an Error message: an ``ErrorCode`` when it is a known
    one (still equal to its string), else the peer's raw string.
    """

    def __init__(self, message: str, code: str = ErrorCode.PROTOCOL) -> None:
        super().__init__(message)
        self.code: str = error_code(code)


class LocalProtocolError(ProtocolError):
    """Decided on this side, not by the peer.

    Raised by ``send`` when *we* try something the protocol forbids (h11's
    meaning of the name): nothing was sent and the session is unchanged.  Also
    raised by ``next_event`` when we refuse what the peer sent (a bad frame, a
    message out of order, stdin past the window), and by the server for its
    own verdicts (``auth-failed``, ``limit``, ...): then the session is over,
    and the server sends ``Error{code}`` (if it still can) before it closes.
    Unlike h11, which calls an
    invalid *received* message a RemoteProtocolError, rshell splits the two by
    who speaks next, as wsproto's ParseFailed does: a LocalProtocolError
    carries the code this side would send to the peer.
    """


class RemoteProtocolError(ProtocolError):
    """Decided by the peer: it sent ``Error{code}``, or its stream ended in the
    middle of a frame (``truncated``).  The session is over and nothing is
    sent back."""


class AuthenticationFailed(RshellError):
    """The server did not accept our key, or we could not prove it."""


class HostKeyError(RshellError):
    """The server's host key is unknown (and may not be trusted) or changed."""


class KeyFileError(ConfigError):
    """A private key could not be loaded (format, passphrase, permissions)."""


class SignatureRefused(KeyFileError):
    """The agent would not sign with this key (a confirmation declined, a key
    removed meanwhile): the next key may still log in, as ssh goes on."""


class CommandTimeout(RshellError):
    """The server stopped answering within the command's time limit."""


class CommandFailed(RshellError):
    """Raised by ``run(check=True)`` when the command did not succeed."""

    def __init__(self, result: Result) -> None:
        reason = result.error or f"exit status {result.exit_status}"
        super().__init__(f"command {result.command!r} failed: {reason}")
        self.result = result

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.result.exit_status or 1


class CopyFailed(RshellError):
    """A copy (``put``, ``get``, ``rshell cp``) was refused as a whole, or some
    of its files failed: ``copied`` says what did arrive and what did not
    (None when nothing started)."""

    exit_code = 1

    def __init__(self, message: str, copied: Copied | None = None) -> None:
        super().__init__(message)
        self.copied = copied
