"""Where rshell keeps its files, and how targets and addresses are spelled.

Must not import anything from rshell but errors.
"""

from __future__ import annotations

import os
from pathlib import Path

from rshell.errors import UsageError

DEFAULT_PORT = 7722


def rshell_home() -> Path:
    """``$RSHELL_HOME``, or ``~/.config/rshell``."""
    env = os.environ.get("RSHELL_HOME")
    return Path(env) if env else Path.home() / ".config" / "rshell"


def config_file() -> Path:
    """``$RSHELL_HOME/config.toml``: aliases, groups, defaults (client.config)."""
    return rshell_home() / "config.toml"


def parse_hostport(
    text: str, default_port: int = DEFAULT_PORT, *, listen: bool = False
) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port``, ``[v6]`` or a bare IPv6 address.

    Port 0 ("any free port") only makes sense for a listener (``listen``).
    """
    text = text.strip()
    if not text:
        raise UsageError("empty host")
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"unexpected {rest!r} after ']' in {text!r}")
            port = _port(rest[1:], text, listen)
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p, text, listen)
    if not host:
        raise UsageError(f"no host in {text!r}")
    return host, port


def _port(text: str, whole: str, listen: bool) -> int:
    # A length check first: int() of thousands of digits raises ValueError.
    if not (text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 5) \
            or not (0 if listen else 1) <= int(text) <= 65535:
        raise UsageError(f"bad port {text[:20]!r} in {whole[:80]!r}")
    return int(text)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
