"""known_hosts: the host keys a client has pinned, one ``host:port fingerprint`` a line.

Lines are ``HOST:PORT SHA256:...`` (IPv6 as ``[addr]:port``); ``#`` starts a
comment.  Lookups report the line number so a changed-key warning can say
exactly which line to remove.

Must not import anything above layer 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pin:
    address: str
    fingerprint: str
    line: int


def lookup(path: Path, address: str) -> Pin | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == address:
            return Pin(address, fields[1], number)
    return None


def add(path: Path, address: str, fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f"{address} {fingerprint}\n")
