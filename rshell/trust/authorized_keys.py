"""authorized_keys in OpenSSH's syntax: ``[options] keytype base64 [comment]``.

Honoured options: ``command="..."`` (a forced command), ``from="pattern-list"``
(client address patterns with ``*``/``?`` wildcards, CIDR, ``!`` negation),
``restrict`` (no client-supplied environment, no terminal, no forwarding),
``no-pty`` and ``pty`` (a terminal refused or allowed again; the last of
``restrict``/``no-pty``/``pty`` wins, as with sshd), and the other ``no-*``
options that only narrow what is allowed.  A
line with an unknown option or a malformed key is skipped with a warning
naming the file and line: never a crash, never a grant.  The file is re-read
whenever its content changes, so edits apply without a restart, and only
while it and the path to it are safe from other accounts (trust/modes.py).

Must not import anything above layer 1 (keys is layer 1 too).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from rshell.trust import keys, modes

log = logging.getLogger("rshell.server")

_FLAG_OPTIONS = frozenset({
    "restrict", "no-pty", "pty", "no-port-forwarding", "no-agent-forwarding", "no-x11-forwarding",
    "no-user-rc", "no-touch-required", "verify-required",
})
_VALUE_OPTIONS = frozenset({"command", "from"})


@dataclass(frozen=True)
class Entry:
    """One usable line: the key, and what its options allow."""

    blob: bytes
    key: keys.PublicKey
    fingerprint: str
    comment: str
    line: int
    command: str | None = None
    from_patterns: tuple[str, ...] | None = None
    restrict: bool = False
    pty: bool = True

    def allows_address(self, address: str) -> bool:
        return self.from_patterns is None or match_address(address, self.from_patterns)


def _split_options(text: str) -> tuple[list[tuple[str, str | None]], str]:
    """Parse the options field; return (options, rest of line)."""
    options: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        start = i
        while i < n and text[i] not in ',=" \t':
            i += 1
        name = text[start:i].lower()
        if not name:
            raise ValueError("empty option")
        value: str | None = None
        if i < n and text[i] == "=":
            i += 1
            if i >= n or text[i] != '"':
                raise ValueError(f"option {name} needs a quoted value")
            i += 1
            chars = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] == '"':
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= n:
                raise ValueError(f"unterminated quote in option {name}")
            i += 1
            value = "".join(chars)
        options.append((name, value))
        if i < n and text[i] == ",":
            i += 1
            continue
        if i < n and text[i] in " \t":
            return options, text[i:].strip()
        if i < n:
            raise ValueError(f"unexpected {text[i]!r} after option {name}")
    raise ValueError("options but no key")


def parse_line(text: str, number: int) -> Entry:
    """One non-blank, non-comment line -> Entry; ValueError says why not."""
    first = text.split(None, 1)[0]
    known_type = first.startswith(("ssh-", "ecdsa-", "sk-"))
    options, rest = ([], text) if known_type else _split_options(text)
    key, comment = keys.parse_public(rest)
    command = None
    patterns = None
    restrict = False
    pty = True
    seen: set[str] = set()
    for name, value in options:
        if name in _VALUE_OPTIONS:
            if value is None:
                raise ValueError(f"option {name} needs a value")
            if name in seen:  # as sshd: which one was meant is not ours to guess
                raise ValueError(f"option {name} given twice")
            seen.add(name)
            if name == "command":
                command = value
            else:
                patterns = tuple(p.strip() for p in value.split(",") if p.strip())
                if not patterns:
                    raise ValueError("empty from= pattern list")
        elif name in _FLAG_OPTIONS:
            if value is not None:
                raise ValueError(f"option {name} takes no value")
            restrict = restrict or name == "restrict"
            if name in ("restrict", "no-pty", "pty"):  # in order, as sshd: the last one wins
                pty = name == "pty"
        else:
            raise ValueError(f"unsupported option {name!r}")
    return Entry(keys.public_blob(key), key, keys.fingerprint(key), comment, number,
                 command, patterns, restrict, pty)


def match_address(address: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH's rule: any matching negated pattern denies; else any match allows."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    allowed = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if _matches(ip, body):
            if negated:
                return False
            allowed = True
    return allowed


def _matches(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, pattern: str) -> bool:
    if "/" in pattern:
        try:
            return ip in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    return _wildcard(pattern.lower()).fullmatch(str(ip)) is not None


@functools.lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """OpenSSH's pattern language (match.c): ``*`` any run, ``?`` one
    character, everything else literal (no ``[...]`` classes, unlike fnmatch)."""
    return re.compile("".join(
        ".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern
    ), re.DOTALL)


class AuthorizedKeys:
    """The file, re-parsed whenever it changes; thread-safe.

    ``strict`` (sshd's StrictModes, see trust/modes.py): before each read, the
    file and the path to it must be safe from other accounts; when they are
    not, the last list read while they were stays in force (neither granting
    what an intruder may have written nor locking everyone out), and the
    problem is logged once.
    """

    def __init__(self, path: Path, *, strict: bool = True) -> None:
        self.path = path
        self.strict = strict
        self._stamp: str | None = None  # content digest, or "missing"
        self._unsafe = ""  # the problem last logged, while it lasts
        self._entries: dict[bytes, Entry] = {}
        self._lock = threading.Lock()

    def problem(self) -> str:
        """What makes the file untrustworthy now ('' if nothing, or not strict)."""
        return modes.problem(self.path) if self.strict else ""

    def find(self, blob: bytes) -> Entry | None:
        with self._lock:
            self._refresh()
            return self._entries.get(blob)

    def _refresh(self) -> None:
        """Re-parse when the content changed: read every time, as sshd does, but
        parse only on a new digest (a same-size edit within one mtime tick counts)."""
        examined = modes.examine(self.path) if self.strict else None
        unsafe = examined.problem if examined is not None else ""
        if unsafe != self._unsafe:
            if unsafe:
                log.error("not re-reading %s: %s; the %d key(s) read before stay in force "
                          "until it is fixed", self.path, unsafe, len(self._entries))
            else:
                log.info("%s is safe again: re-reading it", self.path)
            self._unsafe = unsafe
        if unsafe:
            return
        try:
            # The file judged, not whatever the path names a moment later.
            data = modes.read(examined) if examined is not None else self.path.read_bytes()
        except modes.Changed as exc:
            log.warning("not re-reading %s: %s; the keys read before stay in force",
                        self.path, exc)
            return
        except FileNotFoundError:
            if self._stamp != "missing":
                log.warning("authorized keys file %s does not exist: nobody can log in",
                            self.path)
            self._stamp, self._entries = "missing", {}
            return
        except OSError as exc:
            log.warning("cannot read %s: %s: nobody can log in", self.path, exc.strerror)
            self._stamp, self._entries = None, {}
            return
        stamp = hashlib.sha256(data).hexdigest()
        if stamp == self._stamp:
            return
        entries: dict[bytes, Entry] = {}
        text = data.decode("utf-8", errors="replace")
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = parse_line(line, number)
            except ValueError as exc:
                log.warning("%s line %d skipped: %s", self.path, number, exc)
                continue
            entries.setdefault(entry.blob, entry)  # the first line for a key wins, as in sshd
        if self._stamp is not None:
            log.info("re-read %s: %d key(s)", self.path, len(entries))
        self._stamp, self._entries = stamp, entries
