"""``$RSHELL_HOME/config.toml``: host aliases, groups and defaults, and how a
target is resolved through them.

Read only when the file exists (a stat on every connect otherwise), parsed
with ``tomllib`` and validated whole: an unknown key or a bad value is one
``ConfigError`` line naming the file and the key (``hosts.web1.port``).
Kept once per process, and read again only when the file changes.

``resolve`` is the one place an alias becomes an address, so a target means
the same in ``rshell HOST``, a fleet, ``rshell cp`` and ``rshell.connect``.
Precedence, as ssh's: what the caller gave explicitly (``-p``, ``-i``, a
port written in the target), then the host's entry (an ``--inventory``'s
over config.toml's), then ``[defaults]``.

Must not import anything above layer 0 nor click, paramiko or cryptography.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rshell.errors import ConfigError, UsageError
from rshell.paths import config_file, format_hostport, parse_hostport

TRANSPORTS = ("rshell", "ssh")
#: How many hosts a fleet runs at once unless told.
DEFAULT_PARALLEL = 64
#: Most hosts at once: each is a thread and a few descriptors.
MAX_PARALLEL = 1024
#: A name an alias or a group may have: what a host name may be, and no more.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class HostEntry:
    """One ``[hosts.NAME]`` (or an inventory's host): every field optional."""

    address: str | None = None
    port: int | None = None
    identity: str | None = None
    transport: str | None = None
    user: str | None = None
    #: sshd's port where it differs from ``port`` (an inventory's ``ansible_port``).
    ssh_port: int | None = None


@dataclass(frozen=True)
class Config:
    """What config.toml (and an inventory) say: defaults, aliases, groups."""

    defaults: HostEntry = HostEntry()
    parallel: int = DEFAULT_PARALLEL
    hosts: Mapping[str, HostEntry] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    def merged(self, hosts: Mapping[str, HostEntry],
               groups: Mapping[str, tuple[str, ...]]) -> Config:
        """This config with ``hosts`` and ``groups`` (an inventory's) taking
        precedence over its own of the same name, field by field for a host
        (an inventory's address keeps config.toml's identity)."""
        merged = dict(self.hosts)
        for name, entry in hosts.items():
            old = merged.get(name)
            merged[name] = entry if old is None else replace(
                old, **{k: v for k, v in vars(entry).items() if v is not None})
        return Config(self.defaults, self.parallel, merged, {**self.groups, **groups},
                      self.source)


@dataclass(frozen=True)
class Resolved:
    """A target after its alias and the defaults: what a backend connects to."""

    target: str  # host[:port], [v6]:port, or ssh://user@host:port
    port: int | None
    identity: str | None


def resolve(target: str, config: Config, *, port: int | None = None,
            identity: str | None = None) -> Resolved:
    """``target`` as ``rshell.connect`` should open it, after ``config``.

    An alias is the whole target or its host part (``web1:2222`` keeps the
    alias's address and takes the written port); ``ssh://`` targets are
    left to ``~/.ssh/config`` (ssh.client), but for the defaults' identity.
    """
    d = config.defaults
    if target.startswith("ssh://"):
        return Resolved(target, port, identity or _expand(d.identity))
    entry = config.hosts.get(target)
    host, written = (target, None) if entry is not None else _split(target)
    if entry is None:
        entry = config.hosts.get(host)
    if entry is not None and port is not None and written is not None and port != written:
        raise UsageError(f"port {port} contradicts the port in {target!r}")
    transport = (entry and entry.transport) or d.transport or "rshell"
    identity = identity or _expand((entry and entry.identity) or d.identity)
    if entry is None and transport == "rshell":
        return Resolved(target, port or _default_port(target, d.port), identity)
    entry = entry or HostEntry()
    address = entry.address or host
    own = entry.ssh_port or entry.port if transport == "ssh" else entry.port
    chosen = port or written or own or (d.port if transport == "rshell" else None)
    hostport = format_hostport(address, chosen) if chosen else _bare(address)
    if transport == "ssh":
        user = entry.user or d.user
        return Resolved(f"ssh://{user + '@' if user else ''}{hostport}", None, identity)
    return Resolved(hostport, None, identity)


def _default_port(target: str, port: int | None) -> int | None:
    """``[defaults] port`` for a target that names none."""
    if port is None:
        return None
    try:
        return port if parse_hostport(target, 0, listen=True)[1] == 0 else None
    except Exception:  # noqa: BLE001 - the backend says what is wrong with it
        return None


def _split(target: str) -> tuple[str, int | None]:
    try:
        host, port = parse_hostport(target, 0, listen=True)
    except Exception:  # noqa: BLE001 - not ours to judge: the backend will
        return target, None
    return host, port or None


def _bare(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path else None


def _is_ipv6(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


# ---- loading ---------------------------------------------------------------------

_cache: dict[str, tuple[tuple[int, int], Config]] = {}


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """The config at ``path`` (default ``$RSHELL_HOME/config.toml``); an empty
    one when the default file does not exist.  Parsed again only when the
    file changes."""
    explicit = path is not None
    where = Path(path) if path is not None else config_file()
    try:
        st = os.stat(where)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{where}: no such file") from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(str(where))
    if cached and cached[0] == stamp:
        return cached[1]
    import tomllib

    try:
        with open(where, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    config = parse(data, str(where))
    _cache[str(where)] = (stamp, config)
    return config


def parse(data: Mapping[str, Any], source: str) -> Config:
    """A parsed TOML document as a Config; every mistake is one line naming the key."""
    check = _Checker(source)
    check.keys(data, "", {"defaults", "hosts", "groups"})
    defaults = data.get("defaults", {})
    check.table(defaults, "defaults")
    check.keys(defaults, "defaults.", {*_ENTRY_KEYS - {"address"}, "parallel"})
    parallel = defaults.get("parallel", DEFAULT_PARALLEL)
    check.integer(parallel, "defaults.parallel", 1, MAX_PARALLEL)
    hosts_table = data.get("hosts", {})
    check.table(hosts_table, "hosts")
    hosts = {}
    default_transport = defaults.get("transport") if isinstance(defaults, dict) else None
    for name, entry in hosts_table.items():
        check.name(name, f"hosts.{name}")
        check.table(entry, f"hosts.{name}")
        hosts[name] = check.entry(entry, f"hosts.{name}.")
        if hosts[name].user and (hosts[name].transport or default_transport) != "ssh":
            check.fail(f"hosts.{name}.user", 'applies only to transport = "ssh" (set it here '
                       "or in [defaults]); an rshell server runs commands as its own account")
    groups_table = data.get("groups", {})
    check.table(groups_table, "groups")
    groups = {}
    for name, members in groups_table.items():
        check.name(name, f"groups.{name}")
        if isinstance(members, str):
            members = [members]
        if not isinstance(members, list) or not all(
                isinstance(m, str) and m.strip() for m in members):
            check.fail(f"groups.{name}", "must be a list of targets (strings)")
        groups[name] = tuple(members)
    return Config(check.entry({k: v for k, v in defaults.items() if k != "parallel"},
                              "defaults."), parallel, hosts, groups, source)


_ENTRY_KEYS = frozenset({"address", "port", "identity", "transport", "user"})


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> None:
        from rshell.client.screen import visible

        raise ConfigError(f"{self.source}: {visible(key)}: {problem}")  # one line, whatever the key

    def table(self, value: object, key: str) -> None:
        if not isinstance(value, dict):
            self.fail(key, "must be a table")

    def keys(self, table: Mapping[str, Any], prefix: str, allowed: set[str] | frozenset[str],
             ) -> None:
        for key in table:
            if key not in allowed:
                self.fail(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(allowed))})")

    def name(self, name: str, key: str) -> None:
        if not _NAME.fullmatch(name):
            self.fail(key, "a name may hold only letters, digits, '_', '.' and '-'")

    def integer(self, value: object, key: str, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be an integer from {low} to {high}")

    def text(self, value: object, key: str) -> None:
        if not isinstance(value, str) or not value.strip() or "\x00" in value:
            self.fail(key, "must be a non-empty string")

    def entry(self, table: Mapping[str, Any], prefix: str) -> HostEntry:
        self.keys(table, prefix, _ENTRY_KEYS if prefix != "defaults." else set(table))
        for key in ("address", "identity", "user", "transport"):
            if key in table:
                self.text(table[key], prefix + key)
        if "port" in table:
            self.integer(table["port"], prefix + "port", 1, 65535)
        transport = table.get("transport")
        if transport is not None and transport not in TRANSPORTS:
            self.fail(prefix + "transport", 'must be "rshell" or "ssh"')
        address = table.get("address")
        if address is not None:
            self._address(address, prefix + "address")
        return HostEntry(address, table.get("port"), table.get("identity"), transport,
                         table.get("user"))

    def _address(self, address: str, key: str) -> None:
        if any(c in address for c in "/@ \t") or address.startswith("[") or (
                ":" in address and not _is_ipv6(address)):
            self.fail(key, "must be a host name or an IP address, without port or user")
