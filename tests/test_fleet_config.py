"""``config.toml`` (SPEC §11, issue 15): rshell.client.config's parse, load
and resolve, then aliases end to end through ``rshell.connect``, the real
``rshell`` and ``rshell cp`` against a real rshell-server (and an alias with
``transport = "ssh"`` against a real OpenSSH sshd).

What users rely on: every key and value rule, each mistake one
``ConfigError`` line naming the file and the dotted key; a missing default
file is no config, a missing named one an error; the file read again when it
changes; and one precedence everywhere: what the caller gave (``port=``,
``-p``, ``identity=``, a written port), then the host's entry, then
``[defaults]``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rshell
from rshell.client.config import (
    DEFAULT_PARALLEL,
    MAX_PARALLEL,
    Config,
    HostEntry,
    Resolved,
    load,
    parse,
    resolve,
)
from rshell.errors import ConfigError, KeyFileError, UsageError
from rshell.paths import parse_hostport
from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env, cli
from tests.support.cli import one_line_error
from tests.support.sshd import SftpSshd
from tests.support.wire import free_port
from tests.test_ssh_client import SSHD

SOURCE = "/etc/where/config.toml"
StartServer = Callable[..., ServerProcess]


def config(text: str, source: str = SOURCE) -> Config:
    """``text`` as config.toml, parsed and validated."""
    return parse(tomllib.loads(text), source)


def refused(text: str) -> str:
    """The one ConfigError line ``text`` earns."""
    with pytest.raises(ConfigError) as caught:
        config(text)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    return message


# ---- parse: what is accepted ---------------------------------------------------------

SPEC_EXAMPLE = """
[defaults]            # for every host
port = 7722
parallel = 64
[hosts.web1]          # an alias: rshell web1
address = "10.0.0.5"  # host name, IPv4 or IPv6
port = 7722
identity = "~/.config/rshell/id_ed25519"
transport = "ssh"
user = "deploy"       # ssh only
[groups]
web = ["web[01-20]", "web1"]
"""


def test_the_specs_example_parses() -> None:
    c = config(SPEC_EXAMPLE)
    assert c.defaults == HostEntry(port=7722)
    assert c.parallel == 64
    assert dict(c.hosts) == {"web1": HostEntry("10.0.0.5", 7722, "~/.config/rshell/id_ed25519",
                                               "ssh", "deploy")}
    assert dict(c.groups) == {"web": ("web[01-20]", "web1")}
    assert c.source == SOURCE


def test_an_empty_file_is_no_config() -> None:
    c = config("")
    assert (c.defaults, c.parallel, dict(c.hosts), dict(c.groups)) == (
        HostEntry(), DEFAULT_PARALLEL, {}, {})


def test_every_key_at_its_bounds() -> None:
    c = config("""
        [defaults]
        port = 1
        parallel = 1024
        identity = "/k"
        transport = "ssh"
        user = "ops"
        [hosts.a]
        port = 65535
        [hosts.b]
        address = "::1"
        transport = "rshell"
        [hosts.c]
        address = "fe80::1%eth0"
        [hosts.d]
        user = "deploy"
        [hosts."1web"]
        address = "db.example.org"
        [hosts."_x-y.z"]
        address = "10.0.0.1"
        [groups]
        one = "web[01-02]"
        empty = []
        many = ["a", "@one", "ssh://me@h:22"]
    """)
    assert c.defaults == HostEntry(None, 1, "/k", "ssh", "ops")
    assert c.parallel == MAX_PARALLEL == 1024
    assert c.hosts["a"].port == 65535
    assert c.hosts["b"] == HostEntry("::1", transport="rshell")
    assert c.hosts["c"].address == "fe80::1%eth0"
    assert c.hosts["d"].user == "deploy"
    assert c.hosts["1web"].address == "db.example.org"
    assert c.hosts["_x-y.z"].address == "10.0.0.1"
    assert dict(c.groups) == {"one": ("web[01-02]",), "empty": (),
                              "many": ("a", "@one", "ssh://me@h:22")}


def test_a_quoted_dotted_name_is_one_alias() -> None:
    """``[hosts."web1.lan"]`` is an alias with a dot, not a sub-table."""
    c = config('[hosts."web1.lan"]\naddress = "10.0.0.9"\n[groups]\n"db.x" = ["a"]\n')
    assert c.hosts["web1.lan"].address == "10.0.0.9"
    assert c.groups["db.x"] == ("a",)


# ---- parse: every mistake, one line naming the file and the key ------------------------

BAD: list[tuple[str, str, str]] = [
    # (config.toml, the dotted key named, a word of the reason)
    ("[servers]\n", "servers", "unknown key"),
    ("colour = 1\n", "colour", "unknown key"),
    ("defaults = 5\n", "defaults", "table"),
    ("hosts = 5\n", "hosts", "table"),
    ("groups = ['a']\n", "groups", "table"),
    ("[defaults]\naddress = 'x'\n", "defaults.address", "unknown key"),
    ("[defaults]\ncolour = 'x'\n", "defaults.colour", "unknown key"),
    ("[defaults]\nport = true\n", "defaults.port", "integer"),
    ("[defaults]\nport = 0\n", "defaults.port", "integer"),
    ("[defaults]\nport = 65536\n", "defaults.port", "integer"),
    ("[defaults]\nport = '7722'\n", "defaults.port", "integer"),
    ("[defaults]\nparallel = 0\n", "defaults.parallel", "integer"),
    ("[defaults]\nparallel = 1025\n", "defaults.parallel", "integer"),
    ("[defaults]\nparallel = true\n", "defaults.parallel", "integer"),
    ("[defaults]\nparallel = 1.5\n", "defaults.parallel", "integer"),
    ("[defaults]\nparallel = '8'\n", "defaults.parallel", "integer"),
    ("[defaults]\nidentity = 5\n", "defaults.identity", "string"),
    ("[defaults]\nidentity = ['/k']\n", "defaults.identity", "string"),
    ("[defaults]\nidentity = ''\n", "defaults.identity", "string"),
    ("[defaults]\ntransport = 'telnet'\n", "defaults.transport", "ssh"),
    ("[defaults]\nuser = 7\n", "defaults.user", "string"),
    ("[hosts]\nweb1 = '10.0.0.5'\n", "hosts.web1", "table"),
    ("[hosts.web1]\nadress = '10.0.0.5'\n", "hosts.web1.adress", "unknown key"),
    ("[hosts.web1]\nparallel = 4\n", "hosts.web1.parallel", "unknown key"),
    ("[hosts.web1]\nport = true\n", "hosts.web1.port", "integer"),
    ("[hosts.web1]\nport = false\n", "hosts.web1.port", "integer"),
    ("[hosts.web1]\nport = 22.0\n", "hosts.web1.port", "integer"),
    ("[hosts.web1]\nport = -1\n", "hosts.web1.port", "integer"),
    ("[hosts.web1]\nport = [22]\n", "hosts.web1.port", "integer"),
    ("[hosts.web1]\nport = 70000\n", "hosts.web1.port", "integer"),
    ("[hosts.web1]\naddress = ''\n", "hosts.web1.address", "string"),
    ("[hosts.web1]\naddress = '   '\n", "hosts.web1.address", "string"),
    ("[hosts.web1]\naddress = ['10.0.0.5']\n", "hosts.web1.address", "string"),
    ("[hosts.web1]\naddress = 5\n", "hosts.web1.address", "string"),
    ('[hosts.web1]\naddress = "a\\u0000b"\n', "hosts.web1.address", "string"),
    ("[hosts.web1]\naddress = 'web 1'\n", "hosts.web1.address", "host name"),
    ("[hosts.web1]\naddress = 'deploy@web1'\n", "hosts.web1.address", "host name"),
    ("[hosts.web1]\naddress = 'web1/x'\n", "hosts.web1.address", "host name"),
    ("[hosts.web1]\naddress = '[::1]'\n", "hosts.web1.address", "host name"),
    ("[hosts.web1]\naddress = '[::1]:7722'\n", "hosts.web1.address", "host name"),
    ('[hosts.web1]\naddress = "a\\tb"\n', "hosts.web1.address", "host name"),
    ("[hosts.web1]\nidentity = {path = '/k'}\n", "hosts.web1.identity", "string"),
    ("[hosts.web1]\nidentity = true\n", "hosts.web1.identity", "string"),
    ("[hosts.web1]\ntransport = 'SSH'\n", "hosts.web1.transport", "ssh"),
    ("[hosts.web1]\ntransport = 'telnet'\n", "hosts.web1.transport", "ssh"),
    ("[hosts.web1]\ntransport = 1\n", "hosts.web1.transport", "string"),
    ("[hosts.web1]\nuser = ''\n", "hosts.web1.user", "string"),
    ("[hosts.web1]\nuser = ['deploy']\n", "hosts.web1.user", "string"),
    ("[hosts.web1]\ntransport = 'rshell'\nuser = 'deploy'\n", "hosts.web1.user", "ssh"),
    ("[hosts.'web 1']\n", "hosts.web 1", "name"),
    ("[hosts.'a@b']\n", "hosts.a@b", "name"),
    ("[hosts.'web[1-2]']\n", "hosts.web[1-2]", "name"),
    ("[hosts.'a,b']\n", "hosts.a,b", "name"),
    ("[hosts.'a:22']\n", "hosts.a:22", "name"),
    ("[hosts.'-x']\n", "hosts.-x", "name"),
    ("[hosts.'.x']\n", "hosts..x", "name"),
    ("[hosts.'']\n", "hosts.", "name"),
    ("[hosts.'wéb']\n", "hosts.wéb", "name"),
    ("[hosts.'a/b']\n", "hosts.a/b", "name"),
    ("[groups]\n'web 1' = ['a']\n", "groups.web 1", "name"),
    ("[groups]\n'@web' = ['a']\n", "groups.@web", "name"),
    ("[groups]\nweb = [1]\n", "groups.web", "list"),
    ("[groups]\nweb = ['a', 2]\n", "groups.web", "list"),
    ("[groups]\nweb = ['']\n", "groups.web", "list"),
    ("[groups]\nweb = ['  ']\n", "groups.web", "list"),
    ("[groups]\nweb = ''\n", "groups.web", "list"),
    ("[groups]\nweb = 5\n", "groups.web", "list"),
    ("[groups]\nweb = true\n", "groups.web", "list"),
    ("[groups]\nweb = [['a']]\n", "groups.web", "list"),
    ("[groups.web]\nmembers = ['a']\n", "groups.web", "list"),
]


@pytest.mark.parametrize(("text", "key", "reason"), BAD)
def test_each_mistake_is_one_line_naming_file_and_key(text: str, key: str, reason: str) -> None:
    message = refused(text)
    assert message.startswith(f"{SOURCE}: {key}: "), message
    assert reason in message.removeprefix(f"{SOURCE}: {key}: "), message


def test_an_unknown_key_lists_the_known_ones() -> None:
    """So the user sees the spelling that was meant."""
    message = refused("[hosts.web1]\nadress = '10.0.0.5'\n")
    assert all(k in message for k in ("address", "identity", "port", "transport", "user"))


def test_the_whole_file_is_checked_not_only_what_a_target_uses() -> None:
    """A mistake in a host nobody names is still an error (validated whole)."""
    message = refused("[hosts.used]\naddress = 'a'\n[hosts.unused]\nport = 'x'\n")
    assert message.startswith(f"{SOURCE}: hosts.unused.port: ")


def test_user_is_allowed_where_the_transport_may_be_ssh() -> None:
    """In [defaults] (for ssh hosts among others) and with transport "ssh"."""
    c = config("[defaults]\nuser = 'ops'\n[hosts.a]\ntransport = 'ssh'\nuser = 'deploy'\n")
    assert (c.defaults.user, c.hosts["a"].user) == ("ops", "deploy")
    c = config("[defaults]\ntransport = 'ssh'\n[hosts.a]\nuser = 'deploy'\n")
    assert c.hosts["a"].user == "deploy"


def test_user_on_a_host_that_resolves_to_rshell_is_refused() -> None:
    message = refused("[hosts.web1]\naddress = '10.0.0.5'\nuser = 'deploy'\n")
    assert message.startswith(f"{SOURCE}: hosts.web1.user: ")


def test_an_address_with_a_port_is_refused() -> None:
    message = refused("[hosts.web1]\naddress = '10.0.0.5:2222'\n")
    assert message.startswith(f"{SOURCE}: hosts.web1.address: ")


@pytest.mark.parametrize("text", ['"a\\nb" = 1\n', '[hosts."a\\nb"]\n',
                                  '[hosts.web1]\n"x\\ny" = 1\n'])
def test_a_key_with_a_newline_is_still_one_line(text: str) -> None:
    refused(text)


# ---- load: files ------------------------------------------------------------------------


def test_no_default_file_is_an_empty_config(home: Path) -> None:
    assert not (home / "config.toml").exists()
    c = load()
    assert (c.defaults, c.parallel, dict(c.hosts), dict(c.groups)) == (
        HostEntry(), DEFAULT_PARALLEL, {}, {})


def test_the_default_file_is_rshell_homes(home: Path) -> None:
    (home / "config.toml").write_text("[hosts.web1]\naddress = '10.0.0.5'\n")
    c = load()
    assert c.hosts["web1"].address == "10.0.0.5"
    assert c.source == str(home / "config.toml")


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}: no such file"


@pytest.mark.parametrize(("content", "word"), [
    (b"[hosts.web1\naddress = 'x'\n", "line 1"),
    (b"[hosts.web1]\naddress = \n", "line 2"),
    (b"[hosts.web1]\naddress = 'a'\naddress = 'b'\n", "line 3"),
    (b"port = 7722\n\xff\xfe\n", ""),
])
def test_a_file_tomllib_cannot_read_is_one_line_with_its_name(
        tmp_path: Path, content: bytes, word: str) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert word in message


def test_a_directory_or_unreadable_path_is_one_line(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "file" / "under-a-file"):
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError) as caught:
            load(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and "\n" not in message, message


def test_a_files_mistake_names_that_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("[hosts.web1]\nport = 'x'\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: hosts.web1.port: ")


def test_kept_while_unchanged_and_read_again_when_changed(tmp_path: Path) -> None:
    """The same object while the file is as it was; a new size, or a new
    mtime with the same size, is read again."""
    path = tmp_path / "config.toml"
    path.write_text("[hosts.web1]\naddress = 'aaaa'\n")
    first = load(path)
    assert first.hosts["web1"].address == "aaaa"
    assert load(path) is first

    stamp = path.stat().st_mtime_ns
    path.write_text("[hosts.web1]\naddress = 'bbbb'\n")  # same size
    os.utime(path, ns=(stamp + 5_000_000_000, stamp + 5_000_000_000))
    second = load(path)
    assert second.hosts["web1"].address == "bbbb"

    path.write_text("[hosts.web1]\naddress = 'cc'\n")  # another size, the same mtime
    os.utime(path, ns=(stamp + 5_000_000_000, stamp + 5_000_000_000))
    assert load(path).hosts["web1"].address == "cc"

    path.write_text("[hosts.web1]\nport = 'broken'\n")
    with pytest.raises(ConfigError):
        load(path)  # a broken file is an error, not the last good one
    path.unlink()
    with pytest.raises(ConfigError):
        load(path)  # gone: not the cached one either


def test_a_removed_default_file_is_no_config_again(home: Path) -> None:
    (home / "config.toml").write_text("[hosts.web1]\naddress = '10.0.0.5'\n")
    assert "web1" in load().hosts
    (home / "config.toml").unlink()
    assert dict(load().hosts) == {}


# ---- resolve: precedence ------------------------------------------------------------------

FLEET = """
[defaults]
port = 7000
identity = "~/keys/default"
[hosts.web1]
address = "10.0.0.5"
port = 7001
identity = "/keys/web1"
[hosts.bare]
address = "10.0.0.6"
[hosts.v6]
address = "2001:db8::5"
port = 7002
[hosts.box]
address = "10.0.0.7"
transport = "ssh"
user = "deploy"
port = 2222
[hosts.sshbare]
address = "10.0.0.8"
transport = "ssh"
[hosts.noaddr]
port = 7003
"""


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Config:
    monkeypatch.setenv("HOME", str(tmp_path))
    return config(FLEET)


def test_an_alias_takes_its_entry(fleet: Config) -> None:
    assert resolve("web1", fleet) == Resolved("10.0.0.5:7001", None, "/keys/web1")


def test_explicit_port_and_identity_beat_the_entry(fleet: Config) -> None:
    assert resolve("web1", fleet, port=9, identity="/mine") == Resolved("10.0.0.5:9", None,
                                                                        "/mine")


def test_a_written_port_keeps_the_alias_address(fleet: Config) -> None:
    assert resolve("web1:2222", fleet) == Resolved("10.0.0.5:2222", None, "/keys/web1")
    assert resolve("box:22", fleet).target == "ssh://deploy@10.0.0.7:22"


def test_the_defaults_fill_what_the_entry_leaves(fleet: Config, tmp_path: Path) -> None:
    """Port and identity from [defaults], the identity's ~ expanded."""
    default_key = str(tmp_path / "keys" / "default")
    assert resolve("bare", fleet) == Resolved("10.0.0.6:7000", None, default_key)
    assert resolve("noaddr", fleet) == Resolved("noaddr:7003", None, default_key)


def test_a_plain_host_gets_the_default_port_only_when_it_names_none(
        fleet: Config, tmp_path: Path) -> None:
    default_key = str(tmp_path / "keys" / "default")
    assert resolve("plain", fleet) == Resolved("plain", 7000, default_key)
    assert resolve("plain:22", fleet) == Resolved("plain:22", None, default_key)
    assert resolve("plain", fleet, port=5) == Resolved("plain", 5, default_key)
    assert resolve("[::1]:22", fleet).port is None
    assert resolve("::1", fleet).port == 7000
    assert resolve("[::1]", fleet).port == 7000
    assert resolve("10.1.1.1", fleet, identity="/i") == Resolved("10.1.1.1", 7000, "/i")


def test_no_config_changes_nothing() -> None:
    for target in ("plain", "plain:22", "[::1]:7722", "::1", "ssh://me@h:22"):
        assert resolve(target, Config()) == Resolved(target, None, None)
    assert resolve("plain", Config(), port=9, identity="/i") == Resolved("plain", 9, "/i")


def test_ipv6_addresses_get_brackets(fleet: Config) -> None:
    assert resolve("v6", fleet).target == "[2001:db8::5]:7002"
    assert resolve("v6:9", fleet).target == "[2001:db8::5]:9"
    no_port = config("[hosts.v6]\naddress = '2001:db8::5'\n")
    assert resolve("v6", no_port).target == "[2001:db8::5]"
    assert parse_hostport(resolve("v6", no_port).target) == ("2001:db8::5", 7722)
    ssh = config("[hosts.v6]\naddress = '::1'\ntransport = 'ssh'\n")
    assert resolve("v6", ssh).target == "ssh://[::1]"
    assert resolve("v6:2200", ssh).target == "ssh://[::1]:2200"


def test_transport_ssh_makes_an_ssh_target(fleet: Config, tmp_path: Path) -> None:
    assert resolve("box", fleet) == Resolved("ssh://deploy@10.0.0.7:2222", None,
                                             str(tmp_path / "keys" / "default"))
    assert resolve("box", fleet, port=2200).target == "ssh://deploy@10.0.0.7:2200"
    # [defaults] port is rshell's: an ssh host without one is left to ssh (22, ~/.ssh/config)
    assert resolve("sshbare", fleet).target == "ssh://10.0.0.8"
    ops = config(FLEET.replace("[defaults]\n", "[defaults]\nuser = \"ops\"\n"))
    assert resolve("sshbare", ops).target == "ssh://ops@10.0.0.8"
    assert resolve("box", ops).target == "ssh://deploy@10.0.0.7:2222"  # the host's user wins


def test_defaults_transport_ssh_applies_to_plain_hosts() -> None:
    c = config("[defaults]\ntransport = 'ssh'\nuser = 'ops'\nport = 7722\n")
    assert resolve("h", c).target == "ssh://ops@h"
    assert resolve("h:2222", c).target == "ssh://ops@h:2222"


def test_ssh_targets_are_untouched_but_get_the_default_identity(fleet: Config,
                                                                tmp_path: Path) -> None:
    default_key = str(tmp_path / "keys" / "default")
    assert resolve("ssh://me@web1:22", fleet) == Resolved("ssh://me@web1:22", None, default_key)
    assert resolve("ssh://web1", fleet, port=2, identity="/i") == Resolved("ssh://web1", 2, "/i")


def test_a_written_port_contradicting_port_is_the_same_usage_error_for_an_alias(
        home: Path) -> None:
    closed = free_port()
    (home / "config.toml").write_text(f"[hosts.web1]\naddress = '127.0.0.1'\nport = {closed}\n")
    with pytest.raises(UsageError, match="contradicts"):
        rshell.connect(f"127.0.0.1:{closed}", port=closed + 1, connect_timeout=5).close()
    with pytest.raises(UsageError, match="contradicts"):
        rshell.connect(f"web1:{closed}", port=closed + 1, connect_timeout=5).close()


# ---- resolve: properties ------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,12}", fullmatch=True)
ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True))
PORTS = st.integers(1, 65535)


@settings(max_examples=300, deadline=None)
@given(name=NAMES, address=ADDRESSES, entry_port=st.none() | PORTS,
       default_port=st.none() | PORTS, written=st.none() | PORTS, explicit=st.none() | PORTS)
def test_an_alias_resolves_to_its_address_and_the_first_port_given(
        name: str, address: str, entry_port: int | None, default_port: int | None,
        written: int | None, explicit: int | None) -> None:
    """The address survives (brackets and all) and the port is, in order:
    port=, the written one, the entry's, [defaults]'s; else the backend's."""
    c = Config(HostEntry(port=default_port), hosts={name: HostEntry(address, entry_port)})
    target = name if written is None else f"{name}:{written}"
    if explicit is not None and written is not None and explicit != written:
        return  # a contradiction: a UsageError (test_a_written_port_contradicting_...)
    got = resolve(target, c, port=explicit)
    assert got.port is None
    host, port = parse_hostport(got.target, 0, listen=True)
    assert host == address
    expected = explicit or written or entry_port or default_port or 0
    assert port == expected
    if ":" in address:
        assert got.target.startswith(f"[{address}]")


@settings(max_examples=300, deadline=None)
@given(host=ADDRESSES, written=st.none() | PORTS, default_port=st.none() | PORTS,
       explicit=st.none() | PORTS)
def test_a_plain_target_is_passed_on_as_written(
        host: str, written: int | None, default_port: int | None, explicit: int | None) -> None:
    """Not an alias: the target itself, and a port only when it names none."""
    assume(host != "alias")
    c = Config(HostEntry(port=default_port), hosts={"alias": HostEntry("10.9.9.9", 1)})
    if written is not None:
        target = f"[{host}]:{written}" if ":" in host else f"{host}:{written}"
    else:
        target = host
    got = resolve(target, c, port=explicit)
    assert got.target == target
    assert got.port == (explicit or (default_port if written is None else None))


# ---- end to end: a real server ------------------------------------------------------------


def write_config(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture
def served(home: Path, start_server: StartServer, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose sessions start in tmp_path/files (relative remote paths)."""
    files = tmp_path / "files"
    files.mkdir()
    yield start_server("--home", str(files))


def test_connect_by_alias(home: Path, served: ServerProcess) -> None:
    write_config(home, f"[hosts.web1]\naddress = '127.0.0.1'\nport = {served.port}\n")
    with rshell.connect("web1", strict_host_keys=True) as conn:
        result = conn.run("echo ok")
        assert (result.stdout, conn.port) == (b"ok\n", served.port)


def test_connect_precedence_against_a_closed_port(home: Path, served: ServerProcess) -> None:
    """The entry's port is closed; port= or a written port reach the server,
    so the one that wins is the one that works."""
    closed = free_port()
    write_config(home, f"[defaults]\nport = {closed}\n"
                       f"[hosts.web1]\naddress = '127.0.0.1'\nport = {closed}\n")
    with pytest.raises(rshell.ConnectionFailed):
        rshell.connect("web1", connect_timeout=5)
    with rshell.connect("web1", port=served.port, strict_host_keys=True) as conn:
        assert conn.run("echo a").stdout == b"a\n"
    with rshell.connect(f"web1:{served.port}", strict_host_keys=True) as conn:
        assert conn.run("echo b").stdout == b"b\n"
    with rshell.connect("127.0.0.1", port=served.port, strict_host_keys=True) as conn:
        assert conn.run("echo c").stdout == b"c\n"  # port= beats [defaults]


def test_defaults_port_reaches_a_plain_host(home: Path, served: ServerProcess) -> None:
    write_config(home, f"[defaults]\nport = {served.port}\n")
    with rshell.connect("127.0.0.1", strict_host_keys=True) as conn:
        assert (conn.run("echo ok").stdout, conn.port) == (b"ok\n", served.port)


def test_an_explicit_config_object_is_used_instead_of_the_file(
        home: Path, served: ServerProcess) -> None:
    write_config(home, "[hosts.web1]\nport = 'broken'\n")  # never read
    c = config(f"[hosts.web1]\naddress = '127.0.0.1'\nport = {served.port}\n")
    with rshell.connect("web1", config=c, strict_host_keys=True) as conn:
        assert conn.run("echo ok").stdout == b"ok\n"
    with pytest.raises(ConfigError, match=r"hosts\.web1\.port"):
        rshell.connect("web1")


def test_the_cli_runs_on_an_alias(home: Path, served: ServerProcess) -> None:
    write_config(home, f"[hosts.web1]\naddress = '127.0.0.1'\nport = {served.port}\n")
    proc = cli(home, "--strict-host-keys", "web1", "-c", "echo ok")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"ok\n", b"")
    closed = free_port()
    write_config(home, f"[hosts.web1]\naddress = '127.0.0.1'\nport = {closed}\n")
    proc = cli(home, "-p", str(served.port), "web1", "-c", "echo p")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"p\n", b"")
    proc = cli(home, f"web1:{served.port}", "-c", "echo written")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"written\n", b"")
    proc = cli(home, "web1", "-c", "echo never")
    assert proc.returncode == 255
    assert str(closed) in one_line_error(proc.stderr)


def test_the_cli_says_a_config_mistake_in_one_line(home: Path, served: ServerProcess) -> None:
    path = write_config(home, "[hosts.web1]\naddress = '127.0.0.1'\nport = 'x'\n")
    proc = cli(home, served.address, "-c", "echo never")
    assert proc.returncode == 255 and proc.stdout == b""
    line = one_line_error(proc.stderr)
    assert line.startswith(f"rshell: {path}: hosts.web1.port: "), line
    path.write_text("[hosts.web1\n")
    proc = cli(home, served.address, "-c", "echo never")
    assert proc.returncode == 255
    assert one_line_error(proc.stderr).startswith(f"rshell: {path}: ")


def test_defaults_identity_elsewhere(home: Path, served: ServerProcess, tmp_path: Path) -> None:
    """The only key that logs in lives outside RSHELL_HOME and ~/.ssh: the
    alias works through [defaults] identity (with ~), and fails without it."""
    user_home = tmp_path / "user"
    (user_home / "vault").mkdir(parents=True)
    key = user_home / "vault" / "fleet_key"
    shutil.move(home / "id_ed25519", key)
    shutil.move(home / "id_ed25519.pub", f"{key}.pub")
    env = {"HOME": str(user_home)}
    entry = f"[hosts.web1]\naddress = '127.0.0.1'\nport = {served.port}\n"

    write_config(home, entry)
    proc = cli(home, "web1", "-c", "echo ok", env=env)
    assert proc.returncode == 255, proc.stderr  # no key to offer: not authenticated
    assert proc.stdout == b""
    one_line_error(proc.stderr)

    write_config(home, "[defaults]\nidentity = '~/vault/fleet_key'\n" + entry)
    proc = cli(home, "web1", "-c", "echo ok", env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"ok\n", b"")
    proc = cli(home, served.address, "-c", "echo plain", env=env)  # not only aliases
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"plain\n", b"")

    write_config(home, "[defaults]\nidentity = '/nowhere/key'\n"
                       f"[hosts.web1]\naddress = '127.0.0.1'\nport = {served.port}\n"
                       f"identity = '{key}'\n")
    proc = cli(home, "web1", "-c", "echo host", env=env)  # the host's beats [defaults]
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"host\n", b"")
    proc = cli(home, "-i", "/nowhere/either", "web1", "-c", "echo never", env=env)
    assert proc.returncode == 255  # -i beats the host's
    assert "/nowhere/either" in one_line_error(proc.stderr)


def test_the_api_without_the_identity_is_refused(home: Path, served: ServerProcess,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "elsewhere_key"
    shutil.move(home / "id_ed25519", key)
    shutil.move(home / "id_ed25519.pub", f"{key}.pub")
    monkeypatch.setenv("HOME", str(tmp_path / "empty"))
    entry = f"[hosts.web1]\naddress = '127.0.0.1'\nport = {served.port}\n"
    write_config(home, entry)
    with pytest.raises(KeyFileError, match="no identity found"):
        rshell.connect("web1", connect_timeout=10)
    write_config(home, f"[defaults]\nidentity = '{key}'\n" + entry + "# longer: re-read\n")
    with rshell.connect("web1", connect_timeout=10) as conn:
        assert conn.run("echo ok").stdout == b"ok\n"


def rcp(home: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([RSHELL, "cp", *CLIENT_MODE, *args], cwd=cwd, capture_output=True,
                          env=base_env(home), stdin=subprocess.DEVNULL, timeout=30)


def test_cp_to_and_from_an_alias(home: Path, served: ServerProcess, tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "dir").mkdir()
    local = tmp_path / "local"
    local.mkdir()
    (local / "notes.txt").write_bytes(b"fleet notes\n" * 1000)
    write_config(home, f"[hosts.web1]\naddress = '127.0.0.1'\nport = {served.port}\n")

    proc = rcp(home, "notes.txt", "web1:dir/", cwd=local)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert (files / "dir" / "notes.txt").read_bytes() == b"fleet notes\n" * 1000

    (files / "dir" / "back.txt").write_bytes(b"from the server\n")
    proc = rcp(home, "web1:dir/back.txt", ".", cwd=local)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert (local / "back.txt").read_bytes() == b"from the server\n"

    closed = free_port()
    write_config(home, f"[hosts.web1]\naddress = '127.0.0.1'\nport = {closed}\n")
    proc = rcp(home, "-P", str(served.port), "notes.txt", "web1:dir/second.txt", cwd=local)
    assert proc.returncode == 0, proc.stderr  # -P beats the entry's port
    assert (files / "dir" / "second.txt").exists()
    proc = rcp(home, "notes.txt", "web1:dir/third.txt", cwd=local)
    assert proc.returncode == 255 and not (files / "dir" / "third.txt").exists()
    one_line_error(proc.stderr, "rshell")


# ---- an alias with transport "ssh" against OpenSSH's sshd ------------------------------------


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SftpSshd]:
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server missing (.ci/run installs it)")
    server = SftpSshd(tmp_path / "sshd")
    yield server
    server.stop()


def test_an_ssh_alias_reaches_sshd(home: Path, sshd: SftpSshd, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``transport = "ssh"`` with address, port, user and identity: the CLI
    and the API reach OpenSSH as ``ssh://user@address:port``."""
    user_home = tmp_path / "user"
    (user_home / ".ssh").mkdir(parents=True)
    known = user_home / ".ssh" / "known_hosts"
    monkeypatch.setenv("HOME", str(user_home))  # no one's ~/.ssh/config but this one's
    rshell.connect(sshd.address, identity=sshd.key, known_hosts=known, accept_new=True).close()
    assert known.read_text().strip()
    write_config(home, f"[hosts.box]\naddress = '127.0.0.1'\nport = {sshd.port}\n"
                       f"transport = 'ssh'\nuser = '{getpass.getuser()}'\n"
                       f"identity = '{sshd.key}'\n")
    proc = cli(home, "box", "-c", "echo via sshd; echo $SSH_CONNECTION >&2",
               env={"HOME": str(user_home)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"via sshd\n"
    assert proc.stderr.split()[-1] == str(sshd.port).encode()  # sshd's own variable

    with rshell.connect("box", strict_host_keys=True, known_hosts=known) as conn:
        assert conn.run("echo api").stdout == b"api\n"
