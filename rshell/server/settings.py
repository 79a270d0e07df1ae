"""The server's settings, frozen, built from the flags in one place.

Must not import rshell.client, rshell.cli or paramiko.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from rshell.exec.environment import login_home
from rshell.exec.policy import Limits
from rshell.protocol.states import DEFAULT_STDIN_WINDOW

if TYPE_CHECKING:
    from rshell.exec.sweep import Sweeper
    from rshell.server.audit import AuditLog
    from rshell.server.auth import Authorizer
    from rshell.trust.authorized_keys import AuthorizedKeys

#: Numbers for session markers (see exec/sweep.py), unique in this process.
_SESSION_IDS = itertools.count(1)


def new_marker() -> str:
    """``<server pid>:<n>``: what every command of one connection carries."""
    return f"{os.getpid()}:{next(_SESSION_IDS)}"


@dataclass(frozen=True)
class Settings:
    """What every connection of one server shares, whichever its listener."""

    limits: Limits = field(default_factory=Limits)
    auth_timeout: float = 10.0
    stdin_window: int = DEFAULT_STDIN_WINDOW
    server_name: str = "rshell/0.1.0"
    #: The account's home (password database): where sessions start.
    home: str = field(default_factory=login_home)
    #: None means --no-auth: every connection is welcomed without a key.
    authorized: AuthorizedKeys | None = None
    #: The host key (SSH wire format) clients bind their signatures to; b"" without TLS.
    host_key_blob: bytes = b""
    #: Seconds a failed authentication waits before it is answered.
    auth_failure_delay: float = 1.0
    #: Seconds without any frame, between commands, before the session is closed (0: never).
    idle_timeout: float = 3600.0
    #: Concurrent channels on one SSH connection (sshd's MaxSessions).
    max_sessions: int = 10
    audit: AuditLog | None = None
    #: Sweeps escaped processes for every session in one thread (None: each
    #: session sweeps for itself as it ends).
    sweeper: Sweeper | None = None

    @property
    def authorized_keys_file(self) -> str | None:
        """The authorized_keys path, as unrestricted keys' commands are told it."""
        return None if self.authorized is None else str(self.authorized.path)

    @cached_property
    def authorizer(self) -> Authorizer | None:
        """The one authorizer of both listeners (None: --no-auth)."""
        if self.authorized is None:
            return None
        from rshell.server.auth import Authorizer

        return Authorizer(self.authorized, self.host_key_blob, self.auth_failure_delay)
