"""Target lists: what ``web[01-20,33],db1,@web`` and ``-H FILE`` name, and back.

``expand`` turns one target argument into hosts (comma lists, node ranges in
ClusterShell's and pdsh's syntax with the written zero padding kept, ``@group``
from a caller-supplied mapping), in order, duplicates removed; ``expand_all``
does it for several arguments and host files; ``fold`` is the inverse for
display (``web[01-03,07],db1``).  Every limit is checked before anything is
generated, so a typo such as ``[1-99999999]`` is a one-line error, not a
machine out of memory.  Every error is a one-line ``UsageError``.

Pure: no I/O but reading the host files it is given.  Must not import
rshell.server, rshell.exec, rshell.client, rshell.cli or click.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rshell.errors import UsageError

#: Most hosts one argument (or one group) may name, duplicates counted once.
MAX_HOSTS = 100_000
#: Widest one ``a-b`` range may be.
MAX_RANGE = 100_000
#: Longest number a range may hold (a name's longer digit runs are never folded).
MAX_DIGITS = 20
#: Deepest groups may nest (a group of a group of ...): the expansion recurses.
MAX_DEPTH = 100
#: Largest host file read, so ``-H /dev/zero`` is an error, not a hang.
MAX_FILE_BYTES = 16 * 1024 * 1024

_SSH = "ssh://"
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")  # ASCII digits only: int() takes any
_RUN = re.compile(r"[0-9]+")
#: A name holding one of these cannot be written inside a folded set.
_UNFOLDABLE = re.compile(r"[\[\],\s#]")

#: One piece of an item: literal text, or a bracket group's (start, end, pad) spans.
_Span = tuple[int, int, int]
_Piece = str | tuple[_Span, ...]


def expand(text: str, groups: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """One target argument -> its hosts, in order, each once (the first occurrence wins)."""
    return _Expander(groups or {}).expand(text, "")


def names_several(target: str) -> bool:
    """Whether a target is written as hosts rather than a host (a list, a
    range, a group): such a target gets a fleet's output and exit status
    even when it comes to one host, so a script sees one format."""
    return target.startswith("@") or expand(target) != [target]


def expand_all(
    args: Sequence[str],
    groups: Mapping[str, Sequence[str]] | None = None,
    files: Sequence[str] = (),
) -> list[str]:
    """Several target arguments, then each ``-H`` file's lines, as one list without
    duplicates.  A file holds one target per line (each expanded like an
    argument); blank lines and ``#`` comments are skipped."""
    expander = _Expander(groups or {})
    out: dict[str, None] = {}
    for arg in args:
        out.update(dict.fromkeys(expander.expand(arg, "")))
    for path in files:
        for number, line in _file_lines(path):
            out.update(dict.fromkeys(expander.expand(line, f" ({path}, line {number})")))
    return list(out)


def fold(hosts: Sequence[str]) -> str:
    """Hosts -> a ClusterShell-style node set for display: ``web[01-03,07],db1``.

    Names that differ in one run of digits of the same written width share a
    bracket group; each name varies the run it shares with the most others.
    ``expand(fold(hosts))`` gives back exactly the distinct hosts (as a set)."""
    names = list(dict.fromkeys(hosts))
    choices = {name: _runs(name) for name in names}
    counts: dict[tuple[str, str], int] = {}
    for runs in choices.values():
        for key, _ in runs:
            counts[key] = counts.get(key, 0) + 1
    buckets: dict[tuple[str, str], list[str]] = {}
    pieces: list[tuple[tuple[tuple[int, str, int], ...], str]] = []
    for name, runs in choices.items():
        if not runs:
            pieces.append((_natural(name), name))
            continue
        # the run shared with most names; on a tie the last, as ClusterShell folds
        key, run = max(reversed(runs), key=lambda kr: counts[kr[0]])
        buckets.setdefault(key, []).append(run)
    for (prefix, suffix), written in buckets.items():
        for pad, numbers in _by_padding(written).items():
            first = f"{prefix}{min(numbers):0{pad}d}{suffix}"
            if len(numbers) == 1:
                pieces.append((_natural(first), first))
            else:
                pieces.append((_natural(first), f"{prefix}[{_ranges(numbers, pad)}]{suffix}"))
    return ",".join(text for _, text in sorted(pieces))


# ---- expansion -------------------------------------------------------------------


@dataclass
class _Expander:
    """One expansion's state: the groups, those already expanded, and the chain
    of groups being expanded now (a cycle is a name met again on it)."""

    groups: Mapping[str, Sequence[str]]
    done: dict[str, list[str]] = field(default_factory=dict)
    chain: list[str] = field(default_factory=list)

    def expand(self, text: str, where: str) -> list[str]:
        out: dict[str, None] = {}
        for item in _split_items(text, where):
            if item.startswith("@"):
                names: Iterable[str] = self.group(item[1:], where)
            else:
                names = _expand_item(item, where)
            out.update(dict.fromkeys(names))
            if len(out) > MAX_HOSTS:
                raise UsageError(f"target {text!r}{where} names more than {MAX_HOSTS:,} hosts")
        return list(out)

    def group(self, name: str, where: str) -> list[str]:
        if name in self.done:
            return self.done[name]
        if not name:
            raise UsageError(f"empty group name '@'{where}")
        if len(self.chain) >= MAX_DEPTH:
            raise UsageError(f"group @{name}{where} is nested more than {MAX_DEPTH} deep")
        if name in self.chain:
            loop = " -> ".join(f"@{n}" for n in [*self.chain[self.chain.index(name):], name])
            raise UsageError(f"group @{name} includes itself: {loop}")
        if name not in self.groups:
            known = "" if self.groups else " (no groups are defined)"
            raise UsageError(f"unknown group @{name}{where}{known}")
        members = self.groups[name]
        if isinstance(members, str):  # a config's `web = "web1"` means one member
            members = [members]
        self.chain.append(name)
        out: dict[str, None] = {}
        for member in members:
            out.update(dict.fromkeys(self.expand(member, f" (in group @{name})")))
            if len(out) > MAX_HOSTS:
                raise UsageError(f"group @{name} names more than {MAX_HOSTS:,} hosts")
        self.chain.pop()
        self.done[name] = list(out)
        return self.done[name]


def _split_items(text: str, where: str) -> list[str]:
    """Split on the commas outside brackets; brackets must pair and not nest."""
    items: list[str] = []
    depth = start = 0
    for i, char in enumerate(text):
        if char == "[":
            if depth:
                raise UsageError(f"bad target {text!r}{where}: nested '['")
            depth = 1
        elif char == "]":
            if not depth:
                raise UsageError(f"bad target {text!r}{where}: ']' without '['")
            depth = 0
        elif char == "," and not depth:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise UsageError(f"bad target {text!r}{where}: '[' without ']'")
    items.append(text[start:])
    items = [item.strip() for item in items]
    if not all(items):
        raise UsageError(f"empty target in {text!r}{where}")
    for item in items:
        if any(char.isspace() for char in item):
            raise UsageError(f"bad target {item!r}{where}: contains white space")
    return items


def _expand_item(item: str, where: str) -> list[str]:
    """One item (no top-level commas) -> its names: the cross product of its
    bracket groups, leftmost slowest."""
    pieces = _parse_item(item, where)
    total = 1
    for piece in pieces:
        if not isinstance(piece, str):
            total *= sum(end - start + 1 for start, end, _ in piece)
            if total > MAX_HOSTS:
                raise UsageError(f"target {item!r}{where} names more than {MAX_HOSTS:,} hosts")
    choices = [
        [piece] if isinstance(piece, str)
        else [f"{n:0{pad}d}" for start, end, pad in piece for n in range(start, end + 1)]
        for piece in pieces
    ]
    return ["".join(parts) for parts in itertools.product(*choices)]


def _parse_item(item: str, where: str) -> list[_Piece]:
    """Literal text and bracket groups.  ``ssh://user@`` is literal; so is a
    leading ``[...]`` holding a ':' (an IPv6 literal: ``[::1]:7722``)."""
    head = ""
    rest = item
    if rest.startswith(_SSH):
        user, at, host = rest[len(_SSH):].rpartition("@")
        head, rest = f"{_SSH}{user}{at}", host
    close = rest.find("]") + 1
    if rest.startswith("[") and ":" in rest[:close]:
        head, rest = head + rest[:close], rest[close:]
    pieces: list[_Piece] = [head] if head else []
    while rest:
        open_ = rest.find("[")
        if open_ < 0:
            pieces.append(rest)
            break
        close = rest.find("]", open_)
        if close < 0:  # only after an ssh:// user@ cut a pair
            raise UsageError(f"bad target {item!r}{where}: '[' without ']'")
        if open_:
            pieces.append(rest[:open_])
        pieces.append(_parse_group(rest[open_ + 1 : close], item, where))
        rest = rest[close + 1 :]
    return pieces


def _parse_group(group: str, item: str, where: str) -> tuple[_Span, ...]:
    """``01-10,33`` -> spans; a number written with leading zeros sets the width."""
    if not group:
        raise UsageError(f"bad target {item!r}{where}: empty '[]'")
    spans: list[_Span] = []
    for part in group.split(","):
        match = _RANGE.fullmatch(part)
        if match is None:
            raise UsageError(
                f"bad range {part!r} in target {item!r}{where}: expected N or N-M"
            )
        first, last = match.group(1), match.group(2) or match.group(1)
        if max(len(first), len(last)) > MAX_DIGITS:
            raise UsageError(
                f"bad range {part!r} in target {item!r}{where}: numbers of at most "
                f"{MAX_DIGITS} digits"
            )
        pad = len(first) if _padded(first) else 0
        if _padded(last) and len(last) != pad:
            raise UsageError(
                f"bad range {part!r} in target {item!r}{where}: both ends must be "
                "written with the same zero padding"
            )
        start, end = int(first), int(last)
        if start > end:
            raise UsageError(f"bad range {part!r} in target {item!r}{where}: {start} > {end}")
        if end - start + 1 > MAX_RANGE:
            raise UsageError(
                f"bad range {part!r} in target {item!r}{where}: wider than {MAX_RANGE:,}"
            )
        spans.append((start, end, pad))
    return tuple(spans)


def _padded(number: str) -> bool:
    return len(number) > 1 and number.startswith("0")


def _file_lines(path: str) -> list[tuple[int, str]]:
    """A host file's targets with their line numbers: '#' to the end of a line
    is a comment, blank lines are skipped."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read host file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"host file {path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"host file {path} is not UTF-8 text (byte {exc.start})") from exc
    lines = ((n, line.partition("#")[0].strip()) for n, line in enumerate(text.splitlines(), 1))
    return [(n, line) for n, line in lines if line]


# ---- folding ---------------------------------------------------------------------


def _runs(name: str) -> list[tuple[tuple[str, str], str]]:
    """Each digit run of name that could vary in a folded set: ((prefix, suffix), run)."""
    if _UNFOLDABLE.search(name) or name.startswith("@") or not name:
        return []
    # an ssh:// target's ranges are read in its host part only, after user@
    floor = len(_SSH) + name[len(_SSH) :].rfind("@") + 1 if name.startswith(_SSH) else 0
    return [
        ((name[: m.start()], name[m.end() :]), m.group())
        for m in _RUN.finditer(name, floor)
        if len(m.group()) <= MAX_DIGITS
    ]


def _by_padding(runs: list[str]) -> dict[int, set[int]]:
    """Runs -> numbers by the zero padding they are written in.  An unpadded
    run at least as wide as a padded width present joins it (``10`` reads
    the same padded to 2), so ``web09,web10`` folds to ``web[09-10]``."""
    widths = {len(run) for run in runs if _padded(run)}
    out: dict[int, set[int]] = {}
    for run in runs:
        pad = len(run) if _padded(run) else max((w for w in widths if w <= len(run)), default=0)
        out.setdefault(pad, set()).add(int(run))
    return out


def _ranges(numbers: set[int], pad: int) -> str:
    """{1, 2, 3, 7} -> '1-3,7', each number zero-padded to pad."""
    ordered = sorted(numbers)
    parts: list[str] = []
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start:0{pad}d}" if start == prev else f"{start:0{pad}d}-{prev:0{pad}d}")
        if n is not None:
            start = prev = n
    return ",".join(parts)


def _natural(name: str) -> tuple[tuple[int, str, int], ...]:
    """A sort key that puts web2 before web10 and web7 before web07 (digit runs
    compared by value, then width; no int(), so any length is fine)."""
    return tuple(
        (len(part.lstrip("0")), part.lstrip("0"), len(part)) if i % 2 else (-1, part, 0)
        for i, part in enumerate(re.split(r"([0-9]+)", name))
    )
