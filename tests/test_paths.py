"""Addresses as users spell them (rshell.paths): ``host``, ``host:port``,
``[v6]:port``, ``[v6]``, a bare IPv6 address; port 0 for listeners only;
and the spelling back.  Pure functions: no sockets."""

from __future__ import annotations

import pytest

from rshell.errors import UsageError
from rshell.paths import DEFAULT_PORT, format_hostport, parse_hostport, rshell_home


@pytest.mark.parametrize(("text", "expected"), [
    ("example.org", ("example.org", DEFAULT_PORT)),
    ("127.0.0.1:2222", ("127.0.0.1", 2222)),
    ("  127.0.0.1:1  ", ("127.0.0.1", 1)),
    ("[::1]:65535", ("::1", 65535)),
    ("[::1]", ("::1", DEFAULT_PORT)),
    ("::1", ("::1", DEFAULT_PORT)),
    ("fe80::1:2", ("fe80::1:2", DEFAULT_PORT)),
])
def test_parses(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


def test_the_default_port_is_the_callers() -> None:
    assert parse_hostport("h", 22) == ("h", 22)
    assert parse_hostport("[::1]", 22) == ("::1", 22)


def test_port_zero_is_for_listeners_only() -> None:
    assert parse_hostport("127.0.0.1:0", listen=True) == ("127.0.0.1", 0)
    assert parse_hostport("[::1]:0", listen=True) == ("::1", 0)
    with pytest.raises(UsageError, match="bad port"):
        parse_hostport("127.0.0.1:0")


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty host"),
    ("   ", "empty host"),
    ("[::1", "unclosed"),
    ("[::1]x", "unexpected"),
    ("[::1]:", "bad port"),
    ("[]:22", "no host"),
    (":22", "no host"),
    ("h:", "bad port"),
    ("h:65536", "bad port"),
    ("h:-1", "bad port"),
    ("h:abc", "bad port"),
    ("h: 22", "bad port"),
    ("h:\u0663", "bad port"),  # ARABIC-INDIC DIGIT THREE: isdigit, not a port
    ("h:" + "9" * 5000, "bad port"),  # int() refuses over 4300 digits: still one line
])
def test_refuses(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        parse_hostport(text)


@pytest.mark.parametrize(("host", "port", "text"), [
    ("127.0.0.1", 7722, "127.0.0.1:7722"),
    ("example.org", 22, "example.org:22"),
    ("::1", 22, "[::1]:22"),
])
def test_formats_and_round_trips(host: str, port: int, text: str) -> None:
    assert format_hostport(host, port) == text
    assert parse_hostport(text) == (host, port)


def test_home_is_rshell_home_or_the_config_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSHELL_HOME", "/somewhere/else")
    assert str(rshell_home()) == "/somewhere/else"
    monkeypatch.delenv("RSHELL_HOME")
    monkeypatch.setenv("HOME", "/home/someone")
    assert str(rshell_home()) == "/home/someone/.config/rshell"
