"""rshell: a small, fast, secure remote command execution service.

    import rshell
    with rshell.connect("host:7722") as conn:
        r = conn.run("uname -a", timeout=10)
    with rshell.Group("web[01-20],@db") as fleet:
        results = fleet.run("uptime")        # host -> Result, or the error that stopped it

Names are imported lazily (PEP 562) so that ``import rshell`` costs almost
nothing on the CLI's cold path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rshell.client.api import Connection, connect
    from rshell.errors import (
        AuthenticationFailed,
        CommandFailed,
        CommandTimeout,
        ConnectionFailed,
        CopyFailed,
        HostKeyError,
        ProtocolError,
        RshellError,
    )
    from rshell.fleet.group import Group, HostResults
    from rshell.result import Copied, Result

_EXPORTS = {
    "connect": "rshell.client.api",
    "Connection": "rshell.client.api",
    "Result": "rshell.result",
    "RshellError": "rshell.errors",
    "ConnectionFailed": "rshell.errors",
    "AuthenticationFailed": "rshell.errors",
    "HostKeyError": "rshell.errors",
    "ProtocolError": "rshell.errors",
    "CommandFailed": "rshell.errors",
    "CommandTimeout": "rshell.errors",
    "CopyFailed": "rshell.errors",
    "Copied": "rshell.result",
    "Group": "rshell.fleet.group",
    "HostResults": "rshell.fleet.group",
}

__all__ = [
    "AuthenticationFailed", "CommandFailed", "CommandTimeout", "Connection", "ConnectionFailed",
    "Copied", "CopyFailed", "Group", "HostKeyError", "HostResults", "ProtocolError", "Result",
    "RshellError", "connect", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rshell' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
