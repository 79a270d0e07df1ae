"""What a request may run, decided once for every listener.

A listener turns its wire into a ``Request``; ``decide`` turns the request,
the connection's ``Workspace`` and the key's ``Grant`` into either a
``Launch`` (what to start, where, with which environment and time limit) or
an ``Answer`` (a command that never becomes a process: refused, ``cd``, the
server stopping).  The forced command, ``restrict``, the rules on client
cwd and environment, ``cd`` and ``--max-commands`` live here and nowhere else.

Must not import rshell.protocol, sockets or paramiko.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from rshell.errors import LocalProtocolError
from rshell.exec import cd, variables
from rshell.exec.environment import command_environment
from rshell.exec.record import Outcome
from rshell.exec.terminal import Pty
from rshell.shellwords import reserved

#: Where the server's authorized_keys is, for commands of an unrestricted key.
AUTHORIZED_KEYS_VARIABLE = "RSHELL_AUTHORIZED_KEYS"


@dataclass(frozen=True)
class Grant:
    """What the authenticated key may do: its authorized_keys options.
    ``Grant()`` is a key with no options (or ``--no-auth``)."""

    forced: str | None = None  # command="..."
    restrict: bool = False
    pty: bool = True  # no-pty, or restrict without a later pty, makes it False
    fingerprint: str | None = None  # the key's (SHA256:...); None under --no-auth


@dataclass(frozen=True)
class Limits:
    """The server-wide rules for every command, from the flags."""

    shell: str = "/bin/sh"
    timeout: float = 0.0  # default per-command limit; 0 = none
    max_output: int = 0  # bytes per command; 0 = none
    max_commands: int = 1_000_000  # per connection
    kill_grace: float = 1.0  # SIGTERM -> SIGKILL
    linger: float = 0.25  # how long to drain pipes held open after the leader exits
    #: Where terminal sessions are recorded as asciicast files (exec/cast.py); None: not.
    record_dir: str | None = None
    #: Record what the client types too (--record-input: passwords at prompts included).
    record_input: bool = False


@dataclass(frozen=True)
class Request:
    """One command as a client asked for it, whatever the wire."""

    command: str
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    timeout: float | None = None
    stdin: bool = False
    pty: Pty | None = None  # on a terminal; with no command, the login shell


@dataclass(frozen=True)
class Launch:
    """What to start: ``command`` is what the shell runs (the forced one, if
    any); ``text`` is what was asked for, for the record; ``login``: the
    account's login shell on the terminal instead of a command; ``marker`` and
    ``fingerprint``: the session and the key, which a recording is named after."""

    text: str
    command: str
    cwd: str
    env: dict[str, str]
    timeout: float
    stdin: bool
    forced: bool
    pty: Pty | None = None
    login: bool = False
    marker: str = ""
    fingerprint: str | None = None


@dataclass(frozen=True)
class Answer:
    """A command answered without a process, with what it says on stderr."""

    outcome: Outcome
    stderr: bytes = b""


class Login:
    """One authenticated connection as the engine sees it: the account's home,
    the base environment, the key's grant, the session marker and the process
    groups for the sweep, and how many commands it has run (thread-safe: an
    SSH connection's channels share it)."""

    def __init__(self, home: str, shell: str, peer: str, marker: str,
                 authorized_keys: str | None = None) -> None:
        self.home, self.marker = home, marker
        self.env = command_environment(home, shell, peer, marker)
        self.grant = Grant()
        self.authorized_keys = authorized_keys
        #: Set when the server stops: new commands are answered, not run.
        self.stopping = False
        self.groups: set[int] = set()
        self.commands = 0
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            self.commands += 1
            return self.commands

    def admit(self, grant: Grant) -> None:
        """The authenticated key's grant.  A key with neither ``command=`` nor
        ``restrict`` is told where the server's authorized_keys is
        (``RSHELL_AUTHORIZED_KEYS``, for ``rshell copy-id``): it could run any
        command anyway; a restricted key is not."""
        self.grant = grant
        if self.authorized_keys and grant.forced is None and not grant.restrict:
            self.env[AUTHORIZED_KEYS_VARIABLE] = self.authorized_keys

    def workspace(self) -> Workspace:
        """A fresh working directory state, at home (one per shell or session)."""
        return Workspace(self, self.home, self.home)


@dataclass
class Workspace:
    """Where one session's commands run: ``cd`` moves it; ``export`` and
    ``unset`` change its environment (None: the login's, unchanged)."""

    login: Login
    cwd: str
    previous: str
    env: dict[str, str] | None = None

    @property
    def environment(self) -> dict[str, str]:
        return self.login.env if self.env is None else self.env


def decide(request: Request, ws: Workspace, limits: Limits) -> Launch | Answer:
    """The one decision on a request (see the module docstring).

    Raises LocalProtocolError past ``--max-commands``: the connection must go.
    """
    login = ws.login
    if login.count() > limits.max_commands:
        raise LocalProtocolError(
            f"more than {limits.max_commands} commands on one connection; reconnect", "limit"
        )
    if login.stopping:
        return _answer(request, None, "server shutting down")
    grant = login.grant
    refusal = None
    if grant.restrict and request.env:
        refusal = "environment not permitted for this key (restrict)"
    elif grant.forced is not None and (request.env or request.cwd):
        # The client must not steer a forced command (PATH, LD_PRELOAD, ./script).
        refusal = "environment and cwd not permitted with a forced command"
    elif request.env:
        refusal = reserved(request.env)
    if refusal is None and request.pty is not None:
        refusal = terminal_refusal(grant) or request.pty.problem()
    if refusal is not None:
        return _answer(request, 126, f"refused: {refusal}")
    if grant.forced is None:
        answered = _cd(request.command, ws) or _variables(request.command, ws)
        if answered is not None:
            return answered
    base = ws.environment
    env = base if request.env is None else dict(base, **request.env)
    command = request.command
    cwd = os.path.join(ws.cwd, request.cwd) if request.cwd else ws.cwd
    if grant.forced is not None:
        # As sshd: the forced command runs in the home directory, whatever
        # was asked, which it finds in these variables.
        if command:  # a shell request asked for none: as sshd, the variables stay unset
            env = dict(env, RSHELL_ORIGINAL_COMMAND=command, SSH_ORIGINAL_COMMAND=command)
        command, cwd = grant.forced, login.home
    pty = request.pty
    if pty is not None:
        env = dict(env, TERM=pty.term) if pty.term else env
    return Launch(
        text=request.command, command=command, cwd=cwd, env=env,
        timeout=min([t for t in (limits.timeout, request.timeout) if t] or [0.0]),
        stdin=request.stdin, forced=grant.forced is not None, pty=pty,
        login=pty is not None and not command, marker=login.marker,
        fingerprint=grant.fingerprint,
    )


def terminal_refusal(grant: Grant) -> str | None:
    """Why this key may not have a terminal (authorized_keys ``no-pty``, or
    ``restrict`` without a later ``pty``), or None: asked by both listeners."""
    return None if grant.pty else "no terminal for this key (no-pty, or restrict without pty)"


def transfer_refusal(grant: Grant) -> str | None:
    """Why this key may not copy files (a ``command=`` key may run only its
    command, and ``restrict`` takes every extra; ``from=`` was judged at login),
    or None: asked by the native listener and the SFTP subsystem alike."""
    if grant.forced is not None:
        return "file transfer not permitted for this key (command=)"
    if grant.restrict:
        return "file transfer not permitted for this key (restrict)"
    return None


def _answer(request: Request, code: int | None, reason: str) -> Answer:
    return Answer(Outcome(request.command, code, None, reason))


def _variables(command: str, ws: Workspace) -> Answer | None:
    """A lone ``export``/``unset`` changes the workspace's environment, under
    the same rules as a client's ``env``; anything else is not ours."""
    if not variables.might_be_variables(command):
        return None
    base = ws.environment
    result = variables.change(command, base, ws.login.home)
    if result is None:
        return None
    refusal = ("environment not permitted for this key (restrict)" if ws.login.grant.restrict
               else reserved(result.names))
    if refusal is not None:
        return Answer(Outcome(command, 126, None, f"refused: {refusal}"))
    if result.exit_code == 0:
        env = dict(base, **result.set)
        for name in result.unset:
            env.pop(name, None)
        ws.env = env
    stderr = _os_bytes(result.stderr) if result.stderr else b""
    return Answer(Outcome(command, result.exit_code, None, None, stderr_bytes=len(stderr)), stderr)


def _cd(command: str, ws: Workspace) -> Answer | None:
    """``cd [DIR]`` changes the workspace's directory; anything else is not ours."""
    if not cd.might_be_cd(command):
        return None  # the common case, before the environment is copied
    env = dict(ws.environment, PWD=ws.cwd, OLDPWD=ws.previous)
    result = cd.cd(command, ws.cwd, ws.previous, ws.login.home, env)
    if result is None:
        return None
    ws.cwd, ws.previous = result.cwd, result.previous
    stderr = _os_bytes(result.stderr) if result.stderr else b""
    outcome = Outcome(command, result.exit_code, None, None, stderr_bytes=len(stderr))
    return Answer(outcome, stderr)


def _os_bytes(text: str) -> bytes:
    """Text that came from the client's bytes (``surrogateescape``), as those bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte stands for
        return text.encode("utf-8", "backslashreplace")
