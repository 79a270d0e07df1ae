"""``--inventory FILE``: an Ansible INI inventory read as rshell hosts and groups.

Owns reading the INI dialect as Ansible's ``ini`` plugin does, into
config.toml's terms: a ``HostEntry`` for each host given an address, port,
user or transport, and groups whose members
``rshell.fleet.targets.expand`` reads (host names, ``@child`` for each
``[g:children]`` entry), so nesting, cycles and unknown groups are judged
where every other group's are.  Ansible's rules: ``#``/``;`` comments;
hosts before any section are ``ungrouped``; ``[g]`` holds host lines
(``PATTERN key=value ...``, split as a shell would), ``[g:children]`` group
names, ``[g:vars]`` one ``key=value`` each; ``host:port``, ``[v6]:port`` and
ranges (``www[01:50].x``, ``db-[a:f]``, ``[0:50:2]``, the begin's zero
padding kept); the implicit ``all`` and ``ungrouped``; a child or a
``[g:vars]`` of a group no ``[g]``/``[g:children]`` declares is an error.

Read: ``ansible_host``, ``ansible_port``, ``ansible_user`` (the old
``ansible_ssh_*`` names winning when set, as in Ansible's ssh plugin) and
rshell's ``rshell_transport`` and ``rshell_port``; every other variable is
ignored.  Ansible's port (and ``host:port``) is sshd's: it is the
``ssh_port``, used only when the host goes over SSH; ``rshell_port`` is
rshell-server's.  Precedence
is Ansible's: the host's own, then its groups' (directly or as a child's
member) applied by depth (longest chain from ``all``), then
``ansible_group_priority``, then name, the later winning; ``all`` first.

Beyond Ansible: every error is one ``ConfigError`` line naming the line;
ranges and the file are capped as in rshell.fleet.targets, nesting too;
names are config.toml's (or an IP address for hosts); a host's own
variables stay its own when a group has its name (Ansible gives them to the
group); YAML is refused, not guessed.

Pure: reads only the file it is given.  Must not import rshell.fleet (the
layer above, which calls it), rshell.server, rshell.exec, click, paramiko.
"""

from __future__ import annotations

import ast
import ipaddress
import itertools
import os
import re
import shlex
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from rshell.client.config import TRANSPORTS, HostEntry
from rshell.errors import ConfigError

# rshell.fleet.targets' limits, repeated because client/ sits below fleet/;
# tests/test_inventory.py checks that the two agree.
#: Most hosts an inventory (and one host line) may name.
MAX_HOSTS = 100_000
#: Most names one ``[a:b:step]`` may give.
MAX_RANGE = 100_000
#: Longest number a range may hold.
MAX_DIGITS = 20
#: Largest inventory read, so ``--inventory /dev/zero`` is an error, not a hang.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Deepest chain of [g:children] (real ones are a few deep): the fleet's
#: expansion of groups recurses.
MAX_DEPTH = 100

Value = str | int
#: HostEntry field -> the variables that set it; of those set, the last wins.
_FIELDS: dict[str, tuple[str, ...]] = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "ssh_port": ("ansible_port", "ansible_ssh_port"),
    "port": ("rshell_port",),
    "user": ("ansible_user", "ansible_ssh_user"),
    "transport": ("rshell_transport",),
}
_PRIORITY = "ansible_group_priority"
_HOST_VARS = frozenset(name for names in _FIELDS.values() for name in names)
_GROUP_VARS = _HOST_VARS | {_PRIORITY}
_IMPLICIT = ("all", "ungrouped")

_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_GROUP_LINE = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: host:port, where the host part has no ':' outside a range's brackets.
_HOSTPORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])+):([0-9]+)")
_BRACKETED = re.compile(r"\[([^\]]+)\](?::([0-9]+))?")
_NUMBER = re.compile(r"[0-9]+")
_INT = re.compile(r"[-+]?[0-9]{1,18}")


def read_inventory(
    path: str | os.PathLike[str],
) -> tuple[dict[str, HostEntry], dict[str, tuple[str, ...]]]:
    """The inventory at ``path`` as (host -> its entry, group -> its members).

    Hosts with nothing rshell reads get no entry (so config.toml's alias of
    the same name still applies); every host is in ``groups["all"]``.
    """
    where = os.fspath(path)
    parser = _Parser(where)
    parser.parse(_read_lines(where))
    return parser.result()


def _read_lines(path: str) -> list[str]:
    """The file's lines as text; a comment line that is not UTF-8 is skipped,
    as Ansible does, any other is an error."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB, not an inventory")
    lines: list[str] = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            if raw.lstrip()[:1] not in (b"#", b";"):
                raise ConfigError(f"{path}, line {number}: not UTF-8 text") from None
            lines.append("")
    return lines


@dataclass
class _Group:
    declared: bool = False  # by [g] or [g:children]; [g:vars] alone does not
    vars_line: int = 0  # the first [g:vars] header: an undeclared group's error
    hosts: dict[str, None] = field(default_factory=dict)
    children: dict[str, int] = field(default_factory=dict)  # child -> its line
    variables: dict[str, Value] = field(default_factory=dict)


class _Parser:
    """One pass over the lines, Ansible's way; the checks that need the whole
    file (undeclared groups, cycles) and the variables' precedence after."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.line = 0
        self.groups: dict[str, _Group] = {name: _Group(declared=True) for name in _IMPLICIT}
        self.hosts: dict[str, dict[str, Value]] = {}  # host -> its own variables

    def fail(self, problem: str) -> NoReturn:
        raise ConfigError(f"{self.path}, line {self.line}: {problem}")

    def parse(self, lines: Sequence[str]) -> None:
        group, kind, first = "ungrouped", "hosts", True
        for self.line, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if first and (line == "---" or line.startswith("all:")):
                self.fail("this looks like a YAML inventory; only Ansible's INI format is read")
            first = False
            match = _SECTION.fullmatch(line)
            if match:
                group, kind = self.section(match.group(1), match.group(2) or "hosts")
            elif line.startswith("[") and (line.endswith("]") or line.split()[0].endswith("]")):
                self.fail(f"bad section header {_show(line)}: expected [group], "
                          "[group:children] or [group:vars], without spaces")
            elif kind == "hosts":
                self.host_line(line, group)
            elif kind == "children":
                self.child(line, group)
            else:
                self.variable(line, group)

    # ---- one line ----------------------------------------------------------------

    def section(self, name: str, kind: str) -> tuple[str, str]:
        if kind not in ("hosts", "children", "vars"):
            self.fail(f"section [{name}:{kind}] has unknown type {kind!r} "
                      "(hosts, children or vars)")
        self.check_group_name(name)
        group = self.groups.setdefault(name, _Group())
        if kind == "vars":
            group.vars_line = group.vars_line or self.line
        else:
            group.declared = True
        return name, kind

    def host_line(self, line: str, group: str) -> None:
        tokens = self.tokens(line)
        names, port = self.host_pattern(tokens[0])
        own: dict[str, Value] = {}
        for token in tokens[1:]:
            key, eq, value = token.partition("=")
            if not eq:
                self.fail(f"expected key=value after the host, got {_show(token)}")
            if key in _HOST_VARS:
                own[key] = self.value(key, value, in_section=False)
        members = self.groups[group].hosts
        for name in names:
            if name not in self.hosts:  # as Ansible: host:port counts where a host is new
                self.hosts[name] = {} if port is None else {"ansible_port": port}
            self.hosts[name].update(own)
            members[name] = None
        if len(self.hosts) > MAX_HOSTS:
            self.fail(f"the inventory names more than {MAX_HOSTS:,} hosts")

    def child(self, line: str, group: str) -> None:
        match = _GROUP_LINE.fullmatch(line)
        if match is None:
            self.fail(f"expected a group name in [{group}:children], got {_show(line)}")
        name = match.group(1)
        self.check_group_name(name)
        if name == "all":
            self.fail(f"the group 'all' cannot be a child (of {group!r}): it holds every host")
        self.groups[group].children.setdefault(name, self.line)

    def variable(self, line: str, group: str) -> None:
        key, eq, value = line.partition("=")
        if not eq:
            self.fail(f"expected key=value in [{group}:vars], got {_show(line)}")
        key = key.strip()
        if key in _GROUP_VARS:
            self.groups[group].variables[key] = self.value(key, value, in_section=True)

    def tokens(self, line: str) -> list[str]:
        """A host line's words, as Ansible splits them (shlex, '#' comments)."""
        if not any(quote in line for quote in "'\"\\"):
            words = line.partition("#")[0].split()  # the same, without shlex's cost
        else:
            try:
                words = shlex.split(line, comments=True)
            except ValueError as exc:
                self.fail(f"bad host line: {str(exc).lower()}")
        if not words or not words[0]:
            self.fail("empty host name")
        return words

    # ---- names and values ------------------------------------------------------

    def check_group_name(self, name: str) -> None:
        if not _NAME.fullmatch(name):
            self.fail(f"bad group name {_show(name)}: a name may hold only letters, digits, "
                      "'_', '.' and '-'")

    def host_pattern(self, token: str) -> tuple[list[str], int | None]:
        """``PATTERN`` -> its host names and the port it writes, if any."""
        bracketed = _BRACKETED.fullmatch(token)
        if bracketed and _is_ipv6(bracketed.group(1)):
            names, port = [bracketed.group(1)], bracketed.group(2)
        else:
            hostport = _HOSTPORT.fullmatch(token)
            if hostport:
                pattern, port = hostport.group(1), hostport.group(2)
            elif token.endswith(":"):
                self.fail(f"bad host {_show(token)}: ':' must be followed by a port")
            else:
                pattern, port = token, None
            names = self.expand(pattern)
        for name in names:
            if not (_NAME.fullmatch(name) or _is_ipv6(name)):
                self.fail(f"bad host name {_show(name)}: a host is a name (letters, digits, "
                          "'_', '.', '-') or an IP address")
        return names, None if port is None else self.port(port, f"port in {_show(token)}")

    def expand(self, pattern: str) -> list[str]:
        """Ansible's ranges: each ``[begin:end[:step]]`` a choice, leftmost
        slowest; the count is checked before anything is generated."""
        choices: list[Sequence[str] | tuple[range, int]] = []
        rest, total = pattern, 1
        while rest:
            start, end = rest.find("["), rest.find("]")
            if end >= 0 and not 0 <= start < end:
                self.fail(f"bad host pattern {_show(pattern)}: ']' without '['")
            if start < 0:
                choices.append([rest])
                break
            if end < 0:
                self.fail(f"bad host pattern {_show(pattern)}: '[' without ']'")
            choice = self.range(rest[start + 1 : end], pattern)
            total *= len(choice[0]) if isinstance(choice, tuple) else len(choice)
            if total > MAX_HOSTS:
                self.fail(f"host pattern {_show(pattern)} names more than {MAX_HOSTS:,} hosts")
            choices += [[rest[:start]], choice]
            rest = rest[end + 1 :]
        texts = [
            [f"{n:0{c[1]}d}" for n in c[0]] if isinstance(c, tuple) else c for c in choices
        ]
        return ["".join(parts) for parts in itertools.product(*texts)]

    def range(self, spec: str, pattern: str) -> str | tuple[range, int]:
        """``01:10`` -> (range(1, 11), width 2); ``a:f`` -> 'abcdef'."""
        bad = f"bad range [{_show(spec, quote=False)}] in {_show(pattern)}"
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            self.fail(f"{bad}: expected [begin:end] or [begin:end:step]")
        begin, end = parts[0] or "0", parts[1]
        step = parts[2] if len(parts) == 3 else "1"
        if not end:
            self.fail(f"{bad}: no end")
        if not _NUMBER.fullmatch(step) or len(step) > MAX_DIGITS or int(step) < 1:
            self.fail(f"{bad}: the step must be a positive integer")
        letters = string.ascii_letters
        if len(begin) == 1 == len(end) and begin in letters and end in letters:
            first, last = letters.index(begin), letters.index(end)
            if first > last:
                self.fail(f"{bad}: {begin!r} comes after {end!r}")
            return letters[first : last + 1 : int(step)]
        if not (_NUMBER.fullmatch(begin) and _NUMBER.fullmatch(end)):
            self.fail(f"{bad}: expected numbers or single letters")
        if max(len(begin), len(end)) > MAX_DIGITS:
            self.fail(f"{bad}: numbers of at most {MAX_DIGITS} digits")
        width = len(begin) if len(begin) > 1 and begin.startswith("0") else 0
        if width and len(end) != width:
            self.fail(f"{bad}: both ends must be written with the same zero padding")
        if int(begin) > int(end):
            self.fail(f"{bad}: {int(begin)} > {int(end)}")
        numbers = range(int(begin), int(end) + 1, int(step))
        if len(numbers) > MAX_RANGE:
            self.fail(f"{bad}: more than {MAX_RANGE:,} names")
        return numbers, width

    def value(self, key: str, raw: str, *, in_section: bool) -> Value:
        """A variable rshell reads, checked now so its error names its line."""
        text = _scalar(raw, in_section)
        if key.endswith("_port"):
            return self.port(text, key)
        if key == _PRIORITY:
            if not _INT.fullmatch(text):
                self.fail(f"{key} must be an integer, not {_show(text)}")
            return int(text)
        if key == "rshell_transport" and text not in TRANSPORTS:
            self.fail(f"{key} must be one of {', '.join(TRANSPORTS)}, not {_show(text)}")
        if not text or any(c.isspace() or not c.isprintable() for c in text):
            self.fail(f"{key} must be a non-empty value without spaces, not {_show(text)}")
        if key.endswith("_host") and (any(c in text for c in "/@[]") or (
                ":" in text and not _is_ipv6(text))):
            self.fail(f"{key} must be a host name or an IP address, without port or user, "
                      f"not {_show(text)}")
        return text

    def port(self, text: str, what: str) -> int:
        if not (_NUMBER.fullmatch(text) and len(text) <= 5 and 1 <= int(text) <= 65535):
            self.fail(f"bad {what}: {_show(text)} is not a port (1 to 65535)")
        return int(text)

    # ---- the whole file ---------------------------------------------------------

    def result(self) -> tuple[dict[str, HostEntry], dict[str, tuple[str, ...]]]:
        self.check_declared()
        order = self.topological()
        depth = dict.fromkeys(self.groups, 1) | {"all": 0}
        with_vars: dict[str, frozenset[str]] = {name: frozenset() for name in self.groups}
        for name in order:  # parents before their children
            group = self.groups[name]
            mine = with_vars[name] | ({name} if group.variables else set())
            with_vars[name] = mine
            for child, line in group.children.items():
                depth[child] = max(depth[child], depth[name] + 1)
                with_vars[child] |= mine
                if depth[child] > MAX_DEPTH:
                    self.line = line
                    self.fail(f"groups nested more than {MAX_DEPTH} deep (at {child!r})")
        direct: dict[str, list[str]] = {host: [] for host in self.hosts}
        for name, group in self.groups.items():
            if name not in _IMPLICIT:
                for host in group.hosts:
                    direct[host].append(name)
        merged: dict[frozenset[str], dict[str, Value]] = {}
        hosts: dict[str, HostEntry] = {}
        for host, own in self.hosts.items():
            key = frozenset().union(*(with_vars[g] for g in direct[host] or ["ungrouped"]))
            if key not in merged:
                merged[key] = self.group_variables(key, depth)
            entry = _entry({**merged[key], **own})
            if entry is not None:
                hosts[host] = entry
        groups = {
            name: (*group.hosts, *(f"@{child}" for child in group.children))
            for name, group in self.groups.items() if name not in _IMPLICIT
        }
        groups["ungrouped"] = (*(host for host, names in direct.items() if not names),
                               *(f"@{child}" for child in self.groups["ungrouped"].children))
        groups["all"] = tuple(self.hosts)
        return hosts, groups

    def group_variables(self, names: frozenset[str], depth: dict[str, int]) -> dict[str, Value]:
        """The variables of these groups, the later in Ansible's order winning."""
        def rank(name: str) -> tuple[int, int, str]:
            priority = self.groups[name].variables.get(_PRIORITY, 1)
            return depth[name], int(priority), name

        out = dict(self.groups["all"].variables)
        for name in sorted(names - {"all"}, key=rank):
            out.update(self.groups[name].variables)
        return out

    def check_declared(self) -> None:
        """A child or a [g:vars] must name a group some [g] or [g:children]
        declares: the first such mistake, by line, is the error."""
        mistakes: list[tuple[int, str]] = []
        for name, group in self.groups.items():
            for child, line in group.children.items():
                if not self.groups.get(child, _Group()).declared:
                    mistakes.append((line, f"[{name}:children] names the group {child!r}, "
                                           f"never declared as [{child}] or [{child}:children]"))
            if not group.declared:
                mistakes.append((group.vars_line, f"[{name}:vars] for the group {name!r}, never "
                                                  f"declared as [{name}] or [{name}:children]"))
        if mistakes:
            self.line, problem = min(mistakes)
            self.fail(problem)

    def topological(self) -> list[str]:
        """The groups, each before its children (an iterative depth-first walk,
        so a long chain cannot overflow the stack); a cycle is an error at
        the line that closes it."""
        state: dict[str, bool] = {}  # False: on the current path; True: done
        done: list[str] = []
        for root in self.groups:
            if root in state:
                continue
            state[root] = False
            path, stack = [root], [iter(self.groups[root].children.items())]
            while stack:
                for child, line in stack[-1]:
                    if child not in state:
                        state[child] = False
                        path.append(child)
                        stack.append(iter(self.groups[child].children.items()))
                        break
                    if state[child] is False:
                        self.line = line
                        loop = " -> ".join([*path[path.index(child):], child])
                        self.fail(f"the group {child!r} includes itself: {loop}")
                else:
                    stack.pop()
                    state[path[-1]] = True
                    done.append(path.pop())
        return done[::-1]


def _entry(variables: dict[str, Value]) -> HostEntry | None:
    """The HostEntry these variables make, or None if they set nothing rshell reads."""
    got = {name: variables[v] for name, names in _FIELDS.items() for v in names if v in variables}
    if not got:
        return None
    text = {name: value for name, value in got.items() if isinstance(value, str)}
    port, ssh_port = got.get("port"), got.get("ssh_port")
    return HostEntry(address=text.get("address"), port=port if isinstance(port, int) else None,
                     transport=text.get("transport"), user=text.get("user"),
                     ssh_port=ssh_port if isinstance(ssh_port, int) else None)


def _scalar(raw: str, in_section: bool) -> str:
    """A value as Ansible would read it for the variables rshell uses: a
    quoted Python string literal unquoted; in a [g:vars] line, a "#" or ";"
    after a space starts a comment (Ansible's literal_eval drops it for numbers)."""
    text = raw.strip()
    if in_section:
        texts = [text, re.split(r"\s[#;]", text, maxsplit=1)[0].rstrip()]
    else:
        texts = [text]
    for candidate in texts:
        if candidate[:1] in ("'", '"'):
            try:
                value = ast.literal_eval(candidate)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(value, str):
                return value
    return texts[-1]


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _show(text: str, *, quote: bool = True) -> str:
    """Text from the file for an error line: shortened, escaped, one line."""
    short = text if len(text) <= 60 else text[:57] + "..."
    return repr(short) if quote else repr(short)[1:-1]
