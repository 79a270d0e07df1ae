"""The operands of ``rshell cp`` (rshell.transfer.operands, issue 14): scp's
reading of TARGET:PATH, the URIs, the remote path as the server reads it, the
one-line refusals, and the targets handed on being the ones the client's
connect accepts unchanged.  Pure functions: no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rshell.client.options import host_and_port
from rshell.errors import EXIT_USAGE, UsageError
from rshell.paths import DEFAULT_PORT, parse_hostport
from rshell.transfer.operands import Operand, parse_operand, split_operands


def local(text: str) -> Operand:
    return Operand(path=text, target=None, text=text)


def remote(text: str, target: str, path: str) -> Operand:
    return Operand(path=path, target=target, text=text)


PARSED = [
    # local: no ':' before the first '/', or one of ./ ../ / ~ in front
    local("file.txt"),
    local("./a:b"),
    local("../a:b"),
    local("/abs/a:b"),
    local("a/b:c"),
    local("dir/"),
    local("."),
    local("~"),
    local("~/notes:v2.txt"),
    local("~x:y"),
    local("user@host"),  # no ':': a file name with an '@'
    local("[draft].txt"),  # brackets but no ':': a file name
    local("my file.txt"),
    local("résumé ü.txt"),
    local("-"),
    # TARGET:PATH, scp's reading
    remote("host:", "host", ""),
    remote("host:p", "host", "p"),
    remote("host:dir/sub/", "host", "dir/sub/"),
    remote("host:/etc/hosts", "host", "/etc/hosts"),
    remote("host:~", "host", ""),
    remote("host:~/", "host", ""),
    remote("host:~/p", "host", "p"),
    remote("host:~//p", "host", "p"),
    remote("host:a:b", "host", "a:b"),  # the first ':' splits, as scp
    remote("host:7000:p", "host", "7000:p"),  # no port in TARGET:PATH: -P or config
    remote("host:/tmp/a@b", "host", "/tmp/a@b"),
    remote("10.0.0.5:/srv", "10.0.0.5", "/srv"),
    remote("C:foo", "C", "foo"),  # scp's reading of a Windows-like path
    remote("web1.example.org:x", "web1.example.org", "x"),
    remote("web[01-03]:/tmp", "web[01-03]", "/tmp"),  # a node range, for the fleet
    remote("@web:/tmp/", "@web", "/tmp/"),
    remote("@web:", "@web", ""),
    remote("@web:logs/", "@web", "logs/"),
    # IPv6 in brackets
    remote("[::1]:p", "[::1]", "p"),
    remote("[::1]:", "[::1]", ""),
    remote("[fe80::1%eth0]:/tmp", "[fe80::1%eth0]", "/tmp"),
    remote("[2001:db8::7]:/a:b", "[2001:db8::7]", "/a:b"),
    # unicode and spaces in remote paths
    remote("host:/tmp/my file.txt", "host", "/tmp/my file.txt"),
    remote("host:résumé ü.txt", "host", "résumé ü.txt"),
    remote("host:日本語/ファイル", "host", "日本語/ファイル"),
    remote("host: leading space", "host", " leading space"),
    remote("host:line\nbreak", "host", "line\nbreak"),
    # rshell:// URIs: /p is ~/p, //p is /p, / the home
    remote("rshell://h/p", "h", "p"),
    remote("rshell://h//p", "h", "/p"),
    remote("rshell://h/", "h", ""),
    remote("rshell://h/~/p", "h", "p"),
    remote("rshell://h///p", "h", "//p"),
    remote("rshell://h:7000/p", "h:7000", "p"),
    remote("rshell://h:1//srv/naïve dir/", "h:1", "/srv/naïve dir/"),
    remote("rshell://[::1]:7722/p", "[::1]:7722", "p"),
    remote("rshell://[::1]/p", "[::1]", "p"),
    remote("rshell://h/a%20b", "h", "a%20b"),  # no percent-decoding
    # ssh:// URIs, with and without a user and a port
    remote("ssh://h/p", "ssh://h", "p"),
    remote("ssh://h//etc/hosts", "ssh://h", "/etc/hosts"),
    remote("ssh://h/", "ssh://h", ""),
    remote("ssh://user@h/p", "ssh://user@h", "p"),
    remote("ssh://user@h:2222/p", "ssh://user@h:2222", "p"),
    remote("ssh://user@h:2222//tmp/x", "ssh://user@h:2222", "/tmp/x"),
    remote("ssh://h:65535/p", "ssh://h:65535", "p"),
    remote("ssh://user@[::1]:2222/p", "ssh://user@[::1]:2222", "p"),
    remote("ssh://[::1]/p", "ssh://[::1]", "p"),
    remote("ssh://h/a@b", "ssh://h", "a@b"),  # an '@' in the path is no user
    remote("ssh://u@h/日本 語", "ssh://u@h", "日本 語"),
]


@pytest.mark.parametrize("expected", PARSED, ids=[op.text for op in PARSED])
def test_parses(expected: Operand) -> None:
    got = parse_operand(expected.text)
    assert got == expected
    assert got.is_remote == (expected.target is not None)


REFUSED = [
    ("", "empty operand"),
    ("a\0b", "NUL"),
    ("host:/tmp/a\0b", "NUL"),
    ("ssh://h/a\0", "NUL"),
    # empty host: scp's leading-':' file is refused, with the way to name it
    (":foo", "empty host"),
    (":", "empty host"),
    ("rshell:///p", "empty host"),
    ("ssh:///p", "empty host"),
    ("ssh://u@/p", "empty host"),
    ("ssh://[]/p", "empty host"),
    ("[]:p", "empty host"),
    ("@:p", "empty group"),
    # brackets
    ("[::1", "unclosed '['"),
    ("[::1/x", "unclosed '['"),
    ("rshell://[::1/p", "unclosed '['"),
    ("ssh://u@[::1:22/p", "unclosed '['"),
    ("[::1]", "':' must follow ']'"),
    ("[::1]x:y", "':' must follow ']'"),
    ("rshell://[::1]x/p", "unexpected 'x' after ']'"),
    ("ssh://::1/p", "in brackets"),
    ("rshell://fe80::1:22/p", "in brackets"),
    # ports
    ("rshell://h:0/p", "bad port '0'"),
    ("rshell://h:65536/p", "bad port '65536'"),
    ("ssh://h:/p", "bad port ''"),
    ("ssh://h:ssh/p", "bad port 'ssh'"),
    ("ssh://h:-1/p", "bad port '-1'"),
    ("ssh://h:²/p", "bad port"),
    ("ssh://h:" + "9" * 5000 + "/p", "bad port"),
    ("rshell://[::1]:99999/p", "bad port"),
    # URIs without a path, other schemes, passwords, users on rshell://
    ("ssh://h", "no path"),
    ("ssh://u@h:2222", "no path"),
    ("rshell://h", "no path"),
    ("rshell://h:7000", "no path"),
    ("scp://h/p", "unknown scheme"),
    ("sftp://h/p", "unknown scheme"),
    ("ssh://u:secret@h/p", "no passwords"),
    ("ssh://@h/p", "empty user"),
    ("ssh://a b@h/p", "not a user name"),
    ("rshell://u@h/p", "user@ applies only to ssh://"),
    ("rshell://@web/p", "@group:PATH"),
    # user@ on a native operand: said with the URI to type
    ("root@host:p", "(ssh://root@host/p)"),
    ("root@host:/etc", "(ssh://root@host//etc)"),
    ("root@host:", "(ssh://root@host/)"),
    ("root@[::1]:p", "(ssh://root@[::1]/p)"),
    ("a@@web:p", "user@ applies only to ssh://"),
    # names that are no host
    ("a b:c", "'a b' is not a host name"),
    ("-oProxyCommand=x:y", "is not a host name"),
    ("tab\there:x", "is not a host name"),
    ("[a[b]:c", "is not a host name"),
    ("@@web:p", "is not a group name"),
    ("@my group:p", "is not a group name"),
    # ~user remote paths
    ("host:~root/x", "~user paths are not supported"),
    ("rshell://h/~root", "~user paths are not supported"),
]


@pytest.mark.parametrize(("text", "words"), REFUSED, ids=[repr(t)[:40] for t, _ in REFUSED])
def test_refuses_with_one_line(text: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_operand(text)
    message = str(info.value)
    assert words in message, message
    assert "\n" not in message and "\0" not in message
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("text", [":foo", "a b:c", "[::1]", "-x:y", "@:p"])
def test_a_refused_local_looking_operand_says_how_to_write_it(text: str) -> None:
    with pytest.raises(UsageError, match=r"needs \./ in front"):
        parse_operand(text)
    assert not parse_operand("./" + text).is_remote


@pytest.mark.parametrize("text", ["ssh:///p", "ssh://u@h:x/p", "ssh://a b@h/p"])
def test_uri_errors_do_not_talk_of_local_paths(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_operand(text)
    assert "./" not in str(info.value)


# ---- the targets are the client's own spelling ---------------------------------------

NATIVE = [op for op in PARSED if op.target and not op.target.startswith(("ssh://", "@"))]


@pytest.mark.parametrize("op", NATIVE, ids=[op.text for op in NATIVE])
def test_native_targets_are_what_connect_takes(op: Operand) -> None:
    """The native backend's own parse (client.options.host_and_port) accepts
    the target unchanged; ``-P`` applies when the operand gave no port."""
    assert op.target is not None
    host, port = host_and_port(op.target, None, DEFAULT_PORT)
    assert host and not host.startswith("[") and host in op.text
    given = parse_hostport(op.target, 0, listen=True)[1]  # 0: the operand named none
    if given:
        assert port == given and op.text.startswith("rshell://")
    else:
        assert port == DEFAULT_PORT
        assert host_and_port(op.target, 2200, DEFAULT_PORT) == (host, 2200)


@pytest.mark.parametrize(("text", "expected"), [
    ("rshell://h:7000/p", ("h", 7000)),
    ("rshell://[::1]:7722/p", ("::1", 7722)),
    ("rshell://[::1]/p", ("::1", DEFAULT_PORT)),
    ("[::1]:p", ("::1", DEFAULT_PORT)),
    ("[fe80::1%eth0]:/tmp", ("fe80::1%eth0", DEFAULT_PORT)),
    ("host:7000:p", ("host", DEFAULT_PORT)),
    ("C:foo", ("C", DEFAULT_PORT)),
])
def test_native_host_and_port(text: str, expected: tuple[str, int]) -> None:
    target = parse_operand(text).target
    assert target is not None
    assert host_and_port(target, None, DEFAULT_PORT) == expected


@pytest.mark.parametrize(("text", "user", "host", "port"), [
    ("ssh://h/p", None, "h", 22),
    ("ssh://user@h/p", "user", "h", 22),
    ("ssh://user@h:2222//tmp/x", "user", "h", 2222),
    ("ssh://user@[::1]:2222/p", "user", "::1", 2222),
    ("ssh://[::1]/p", None, "::1", 22),
])
def test_ssh_targets_are_what_the_ssh_backend_takes(
    text: str, user: str | None, host: str, port: int
) -> None:
    from rshell.ssh.client import parse_ssh_target

    target = parse_operand(text).target
    assert target is not None and target.startswith("ssh://")
    got_user, got_host, got_port = parse_ssh_target(target, None)
    assert (got_host, got_port) == (host, port)
    if user is not None:
        assert got_user == user


# ---- sources and destination ---------------------------------------------------------


def test_upload_of_several_sources() -> None:
    sources, dest = split_operands(["a", "./b:c", "/d", "host:dir/"])
    assert [s.path for s in sources] == ["a", "./b:c", "/d"]
    assert not any(s.is_remote for s in sources)
    assert dest == remote("host:dir/", "host", "dir/")


def test_download_from_several_hosts_and_a_group() -> None:
    sources, dest = split_operands(["h1:/var/log/syslog", "ssh://u@h2//etc/hosts",
                                    "@web:/var/log/syslog", "logs/"])
    assert [s.target for s in sources] == ["h1", "ssh://u@h2", "@web"]
    assert [s.path for s in sources] == ["/var/log/syslog", "/etc/hosts", "/var/log/syslog"]
    assert dest == local("logs/")


def test_upload_to_a_group() -> None:
    sources, dest = split_operands(["FILE", "@web:/tmp/"])
    assert sources == [local("FILE")] and dest.target == "@web"


def test_operands_stay_in_order_and_as_typed() -> None:
    args = ["z", "y", "x", "rshell://h//srv/"]
    sources, dest = split_operands(args)
    assert [s.text for s in [*sources, dest]] == args


@pytest.mark.parametrize(("args", "words"), [
    ([], "needs a source and a destination"),
    (["host:p"], "needs a source and a destination"),
    (["a"], "needs a source and a destination"),
    (["h1:a", "h2:b"], "remote-to-remote copies are not supported; copy through here"),
    (["a", "h1:a", "h2:b"], "remote-to-remote copies are not supported; copy through here"),
    (["ssh://h/a", "rshell://h//b"], "remote-to-remote"),
    (["a", "b"], "no remote operand: use cp"),
    (["a", "./b:c", "/d:e"], "no remote operand: use cp"),
    (["h:a", "b", "dest/"], "'b' and the destination are both local"),
    (["h:a", ":bad"], "empty host"),  # every operand is parsed
])
def test_split_refuses(args: list[str], words: str) -> None:
    with pytest.raises(UsageError) as info:
        split_operands(args)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


# ---- properties ----------------------------------------------------------------------

TEXT = st.text(min_size=0, max_size=40)


@settings(max_examples=500, deadline=None)
@given(text=TEXT)
def test_anything_parses_or_is_one_usage_line(text: str) -> None:
    """No input reaches a traceback: an Operand that keeps the text, or a UsageError."""
    try:
        op = parse_operand(text)
    except UsageError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        return
    assert op.text == text
    if not op.is_remote:
        assert op.path == text


@settings(max_examples=300, deadline=None)
@given(text=TEXT.filter(lambda t: "\0" not in t))
def test_dot_slash_and_absolute_are_always_local(text: str) -> None:
    assert parse_operand("./" + text) == local("./" + text)
    assert parse_operand("/" + text) == local("/" + text)


@settings(max_examples=300, deadline=None)
@given(path=TEXT.filter(lambda t: "\0" not in t and not t.startswith("~")))
def test_a_remote_path_is_kept_as_typed(path: str) -> None:
    assert parse_operand("host:" + path) == remote("host:" + path, "host", path)
    assert parse_operand("rshell://host/" + path).path == path
    assert parse_operand("ssh://u@host//" + path).path == "/" + path
