"""How a command ended, and the one place its log line and audit events are written.

Both listeners report through ``Recorder``, so a command leaves the same log
line and the same audit fields whichever wire it came by; only ``via``
(``rshell`` or ``ssh``) tells them apart.

Must not import rshell.protocol, sockets or paramiko.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from rshell.result import silent_failure

log = logging.getLogger("rshell.server")


class Audit(Protocol):
    """What the engine needs of an audit log (server.audit.AuditLog is one)."""

    def event(self, kind: str, **fields: Any) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """One command's end: ``reason`` is set when the server refused or stopped
    it (timed out, output limit, cannot start, shutting down); ``error`` adds
    the reason for a failure that said nothing (result.silent_failure)."""

    command: str
    exit_code: int | None
    signal: int | None
    reason: str | None
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    duration: float = 0.0

    @property
    def error(self) -> str | None:
        return self.reason or silent_failure(
            self.exit_code, self.signal, self.stdout_bytes + self.stderr_bytes
        )


class Recorder:
    """The log and audit trail of one connection: who (``peer``), by which
    wire (``via``), under which session marker.

    Each log line also carries its facts as fields (``record.fields``), the
    audit event's names and values, which ``--log-format json`` writes as
    keys of their own: a log shipper then needs no parsing of the text."""

    __slots__ = ("peer", "via", "session", "audit")

    def __init__(self, peer: str, via: str, session: str, audit: Audit | None) -> None:
        self.peer, self.via, self.session, self.audit = peer, via, session, audit

    def log(self, level: int, text: str, *args: object, **fields: Any) -> None:
        """A log line about this connection, with its fields."""
        if log.isEnabledFor(level):
            log.log(level, text, *args, extra={"fields": {
                "peer": self.peer, "via": self.via, "session": self.session, **fields}})

    def event(self, kind: str, **fields: Any) -> None:
        """An audit event with the connection's fields (no log line)."""
        if self.audit is not None:
            self.audit.event(kind, peer=self.peer, via=self.via, session=self.session,
                             **fields)

    def connected(self) -> None:
        self.log(logging.INFO, "%sconnection from %s",
                 "" if self.via == "rshell" else f"{self.via} ", self.peer, event="connect")
        self.event("connect")

    def disconnected(self, commands: int, reason: str) -> None:
        self.log(logging.INFO, "%s: disconnected after %d command(s)%s", self.peer, commands,
                 f" ({reason})" if reason else "", event="disconnect", commands=commands,
                 reason=reason or None)
        self.event("disconnect", commands=commands, reason=reason or None)

    def started(self, text: str, cwd: str, pid: int, forced: bool,
                recording: str | None = None) -> None:
        """A command began; a recorded terminal session (exec/cast.py) also
        gets a log line, and both name the file (``recording``)."""
        fields: dict[str, Any] = {"command": text, "cwd": cwd, "pid": pid, "forced": forced}
        if recording is not None:
            fields["recording"] = recording
            self.log(logging.INFO, "%s: terminal session %r recorded in %s", self.peer, text,
                     recording, event="command-start", **fields)
        self.event("command-start", **fields)

    def finished(self, outcome: Outcome) -> None:
        error = outcome.error
        fields = {
            "command": outcome.command, "exit_code": outcome.exit_code,
            "signal": outcome.signal, "error": error, "stdout_bytes": outcome.stdout_bytes,
            "stderr_bytes": outcome.stderr_bytes, "duration": round(outcome.duration, 6),
        }
        self.log(
            logging.INFO,
            "%s: command %r exit=%s signal=%s error=%s duration=%.3fs stdout=%d stderr=%d "
            "via=%s", self.peer, outcome.command, outcome.exit_code, outcome.signal, error,
            outcome.duration, outcome.stdout_bytes, outcome.stderr_bytes, self.via,
            event="command-end", **fields,
        )
        self.event("command-end", **fields)

    def transferred(self, direction: str, path: str, size: int, sha256: str | None,
                    error: str | None = None) -> None:
        """One file copied (``direction``: ``upload`` into this host, ``download``
        out of it), or refused or failed (``error``), whichever wire carried it.
        Every file is an audit event; in the log a failure is a warning, a file
        copied a debug line (a tree is thousands: ``copied`` says the totals)."""
        fields = {"direction": direction, "path": path, "bytes": size, "sha256": sha256,
                  "error": error}
        self.log(logging.DEBUG if error is None else logging.WARNING,
                 "%s: %s %r %d bytes%s via=%s", self.peer, direction, path, size,
                 f" failed: {error}" if error else "", self.via, event="transfer", **fields)
        self.event("transfer", **fields)

    def copied(self, direction: str, where: str, files: int, size: int, failed: int) -> None:
        """A copy's totals, one log line: what ``transferred`` reported file by
        file (a native transfer at its end, an SFTP session at its close)."""
        self.log(logging.INFO, "%s: %s %r: %d file(s), %d bytes%s via=%s", self.peer,
                 direction, where, files, size, f", {failed} failed" if failed else "",
                 self.via, event="copy", direction=direction, path=where, files=files,
                 bytes=size, failed=failed)

    def swept(self, escaped: list[int]) -> None:
        """Processes that left their command's group, killed as the session ended."""
        if escaped:
            self.log(logging.WARNING, "%s: killed %d process(es) that left their command's "
                     "group: %s", self.peer, len(escaped), escaped, event="sweep", pids=escaped)
            self.event("sweep", pids=escaped)
