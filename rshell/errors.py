"""The one exception tree of rshell.

Every error a user or a caller of the API can see is an ``RshellError``; each
class knows the exit code the CLI turns it into, so exactly one place (the CLI)
maps errors to exit codes.  Foreign exceptions (``OSError``, ``ssl.SSLError``)
are translated at the transport edge and never leak above it.

Must not import anything from rshell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rshell.result import Result

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


class ProtocolError(RshellError):
    """The byte stream broke the rshell protocol.

    ``code`` is the short machine-readable reason that is sent to, or came
    from, the peer in an Error message.
    """

    def __init__(self, message: str, code: str = "protocol") -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """The peer sent something we cannot accept; we tell it and close."""


class RemoteProtocolError(ProtocolError):
    """The peer reported an error and closed; nothing is sent back."""


class AuthenticationFailed(RshellError):
    """The server did not accept our key, or we could not prove it."""


class HostKeyError(RshellError):
    """The server's host key is unknown (and may not be trusted) or changed."""


class KeyFileError(ConfigError):
    """A private key could not be loaded (format, passphrase, permissions)."""


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
