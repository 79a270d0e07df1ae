"""The audit trail: one JSON object per line, one line per event, flushed as written.

Each line is handed to the kernel with a single ``write`` on an ``O_APPEND``
descriptor, so lines from concurrent sessions never interleave and nothing
is lost when the server is killed: what was logged is on disk (or in the
page cache) already.  Events: ``server-start``, ``server-stop``, ``connect``,
``auth`` (ok or failed, with the key fingerprint), ``command-start``,
``command-end`` (exit, signal, error, bytes, duration), ``disconnect``,
``reject`` (busy), ``sweep`` (escaped processes killed).

Must not import anything above layer 0.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rshell.errors import ConfigError


class AuditLog:
    """Append-only JSON-lines file; thread-safe because each line is one write."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open audit log {path}: {exc.strerror}") from None

    def event(self, kind: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 6), "event": kind, **fields}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            os.write(self._fd, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass  # a full disk must not take the server down; the text log still has it

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
