"""The operands of ``rshell cp`` (SPEC section 10, issue 14): which are remote,
which target each names, and the path as the server is to read it.

scp's rules (OpenSSH scp.c ``colon()``), so that an scp habit means the same
here: an operand is remote when a ``:`` comes before its first ``/``
(``host:path``, ``[v6addr]:path``, ``@group:path``, and ``C:foo``, which is
host ``C``), so ``/abs/a:b``, ``a/b:c`` and ``./a:b`` are local; a remote
path is relative to the account's home (``host:`` is the home itself) unless
absolute.  URIs read as scp reads them: ``rshell://h/p`` and ``ssh://h/p`` are
``~/p``, ``rshell://h//p`` is ``/p``, ``ssh://h/`` is the home.

Where scp guesses, rshell refuses with one line that says what to type
instead, since a guess here copies to the wrong place:

- ``:name`` (scp: a local file) is an empty host; ``./:name`` is the file.
- a ``:`` in the first component that no rule accepts (``[::1]`` with no
  ``:PATH``, an unclosed ``[``, a host with spaces) is a usage error naming
  ``./``, not a local file with a strange name.
- ``user@host:path``: an rshell server has no other accounts, so ``user@``
  is for ``ssh://`` URIs only (the message spells the URI out).
- ``~user`` remote paths (one account); ``~`` and ``~/p`` are the home's.
- a URI with no ``/`` after the authority, another scheme (``scp://``), a
  password in a URI, NUL anywhere.

A local operand starting with ``~`` is local whatever follows (no host name
starts with ``~``).  URIs are taken literally: no percent-decoding (a ``%``
is a ``%``), unlike OpenSSH, which decodes the user and the path.

Must not import anything of rshell but ``errors``, nor click: it is layer 3
(``rshell.transfer``), pure, and the CLI and the API both parse with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rshell.errors import UsageError

__all__ = ["Operand", "parse_operand", "split_operands"]

_SCHEMES = ("rshell://", "ssh://")
_ANY_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_LOCAL = "a local path with ':' in its first component needs ./ in front"


@dataclass(frozen=True)
class Operand:
    """One operand of ``rshell cp``, parsed.

    ``target`` is None for a local path; else what the client connects to,
    spelled as ``connect`` takes it (``host``, ``[v6addr]``, ``host:port``,
    ``[v6addr]:port``, ``ssh://[user@]host[:port]``), or ``@group`` for a
    fleet (issue 15 expands it).  ``path`` is the local path as typed, or the
    remote one as the server reads it: relative to the account's home (``''``
    is the home itself) or absolute.  ``text`` is the operand as typed.
    """

    path: str
    target: str | None
    text: str

    @property
    def is_remote(self) -> bool:
        return self.target is not None


def parse_operand(text: str) -> Operand:
    """``text`` as ``rshell cp`` reads an operand; a malformed one is a
    one-line ``UsageError`` that names it."""
    if not text:
        raise UsageError("empty operand")
    if "\0" in text:
        raise UsageError(f"{text!r}: a path cannot contain NUL")
    for scheme in _SCHEMES:
        if text.startswith(scheme):
            return _uri(text, scheme)
    if _ANY_SCHEME.match(text):
        raise UsageError(f"{text!r}: unknown scheme (rshell:// or ssh://); {_LOCAL}")
    if text.startswith("~") or ":" not in text.partition("/")[0]:
        return Operand(path=text, target=None, text=text)
    split = _colon(text)
    if split is None:  # the ':' is inside a '[' that no ']:' closes
        if "]" not in text.partition("/")[0]:
            raise UsageError(f"{text!r}: unclosed '['")
        raise UsageError(f"{text!r}: ':' must follow ']' ([v6addr]:PATH); {_LOCAL}")
    where, path = text[:split], text[split + 1 :]
    return Operand(path=_remote_path(path, text), target=_scp_target(where, path, text),
                   text=text)


def split_operands(args: Sequence[str]) -> tuple[list[Operand], Operand]:
    """``SRC... DEST`` -> (sources, destination): one side local, the other
    remote (uploads to one target, downloads from any number of them)."""
    if len(args) < 2:
        raise UsageError("cp needs a source and a destination: rshell cp SRC... DEST")
    *sources, dest = (parse_operand(arg) for arg in args)
    if dest.is_remote:
        for source in sources:
            if source.is_remote:
                raise UsageError(
                    "remote-to-remote copies are not supported; copy through here "
                    f"({source.text!r} -> {dest.text!r})"
                )
        return sources, dest
    local = [source for source in sources if not source.is_remote]
    if len(local) == len(sources):
        raise UsageError("no remote operand: use cp")
    if local:
        raise UsageError(f"{local[0].text!r} and the destination are both local: use cp")
    return sources, dest


def _colon(text: str) -> int | None:
    """Where scp splits TARGET:PATH: the first ':' before any '/', a ':' inside
    ``[...]`` (at the start or after ``user@``) not counting."""
    bracket = text.startswith("[")
    for i, ch in enumerate(text):
        if ch == "@" and text.startswith("[", i + 1):
            bracket = True
        elif ch == "]" and bracket and text.startswith(":", i + 1):
            return i + 1
        elif ch == ":" and not bracket:
            return i
        elif ch == "/":
            return None
    return None


def _scp_target(where: str, path: str, text: str) -> str:
    """The TARGET of TARGET:PATH: ``host``, ``[v6addr]`` or ``@group``."""
    if where.startswith("@"):
        _check_name(where[1:], "group", text)
        return where
    if "@" in where:
        # As cli.common.open_client says it for commands: not "cannot resolve".
        raise UsageError(
            f"{text!r}: user@ applies only to ssh:// operands (ssh://{where}/{path}); "
            "an rshell server has no other accounts"
        )
    if where.startswith("["):  # _colon split it at the ':' after its ']'
        _check_name(where[1:-1], "host", text, brackets=True)
    else:
        _check_name(where, "host", text)
    return where


def _uri(text: str, scheme: str) -> Operand:
    """``rshell://HOST[:PORT]/PATH`` or ``ssh://[USER@]HOST[:PORT]/PATH``."""
    authority, slash, path = text[len(scheme):].partition("/")
    if not slash:
        raise UsageError(
            f"{text!r}: no path ({text}/ is the home, {text}/NAME a path in it, "
            f"{text}//PATH an absolute path)"
        )
    user, at, hostport = authority.rpartition("@")
    if at and scheme == "rshell://":
        what = "@group goes as @group:PATH, not in a URI" if not user else (
            "user@ applies only to ssh:// operands; an rshell server has no other accounts")
        raise UsageError(f"{text!r}: {what}")
    if at:
        if ":" in user:
            raise UsageError(f"{text!r}: no passwords in URIs (rshell logs in with keys)")
        _check_name(user, "user", text, uri=True)
    _check_hostport(hostport, text)
    target = f"ssh://{authority}" if scheme == "ssh://" else hostport
    return Operand(path=_remote_path(path, text), target=target, text=text)


def _check_hostport(hostport: str, text: str) -> None:
    """HOST[:PORT] of a URI, with an IPv6 address in brackets."""
    port: str | None = None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise UsageError(f"{text!r}: unclosed '['")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UsageError(f"{text!r}: unexpected {rest!r} after ']'")
        _check_name(host, "host", text, brackets=True, uri=True)
        port = rest[1:] if rest else None
    elif hostport.count(":") > 1:
        raise UsageError(f"{text!r}: an IPv6 address goes in brackets: [v6addr]:PORT")
    else:
        host, colon, after = hostport.partition(":")
        _check_name(host, "host", text, uri=True)
        port = after if colon else None
    # At most five digits before int(): a long run of digits must not reach
    # int()'s own limit (a ValueError, not a usage error).
    if port is not None and not (
        port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535
    ):
        raise UsageError(f"{text!r}: bad port {port!r}")


def _check_name(
    name: str, what: str, text: str, *, brackets: bool = False, uri: bool = False
) -> None:
    """A host, group or user name: present, one printable word, no option
    look-alike (``-oProxyCommand=...`` is no host), no stray brackets.  Outside
    a URI, the operand may have been meant as a local path: say how to write one."""
    hint = "" if uri else f"; {_LOCAL}"
    if not name:
        raise UsageError(f"{text!r}: empty {what}{hint}")
    bad = (
        name.startswith("-") or "@" in name
        or (brackets and ("[" in name or "]" in name))
        or any(ch.isspace() or not ch.isprintable() for ch in name)
    )
    if bad:
        raise UsageError(f"{text!r}: {name!r} is not a {what} name{hint}")


def _remote_path(path: str, text: str) -> str:
    """The path as the server reads it: ``~`` and ``~/p`` are the home's
    (``''`` and ``p``); anything else unchanged."""
    if path == "~":
        return ""
    if path.startswith("~/"):
        return path[2:].lstrip("/")
    if path.startswith("~"):
        raise UsageError(
            f"{text!r}: ~user paths are not supported (the server has one account); "
            f"write ~/PATH, an absolute path, or ./{path} for a name that starts with '~'"
        )
    return path
