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


#: path -> ((inode, mtime, size), address -> its first pin): a fleet looks up
#: a thousand hosts in one file, which is read again only when it changes.
_parsed: dict[str, tuple[tuple[int, int, int], dict[str, Pin]]] = {}


def lookup(path: Path, address: str) -> Pin | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _parsed.get(str(path))
    if cached is None or cached[0] != stamp:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        pins: dict[str, Pin] = {}
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and fields[0] not in pins:
                pins[fields[0]] = Pin(fields[0], fields[1], number)
        cached = _parsed[str(path)] = (stamp, pins)
    return cached[1].get(address)


def add(path: Path, address: str, fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f"{address} {fingerprint}\n")
