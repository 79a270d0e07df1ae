"""The commands a session answers itself instead of running: ``cd``.

A process's directory dies with it, so ``cd`` must change the session's
own; anything more than ``cd [DIR]`` (``cd /x && make``) runs in the shell
as usual.  Must not import anything above layer 0.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from rshell.shellwords import lone_cd


@dataclass(frozen=True)
class CdResult:
    """Where the session now is (unchanged on failure), and the shell-style outcome."""

    cwd: str
    previous: str
    exit_code: int
    stderr: str = ""


_VARIABLE = re.compile(r"\$(\w+|\{\w+\})")


def expand(command: str, env: Mapping[str, str]) -> str:
    """``$NAME``/``${NAME}`` replaced as a shell would: not inside single
    quotes; values quoted so that shlex keeps each one a single word."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(command):
        ch = command[i]
        if ch == "\\" and quote != "'" and i + 1 < len(command):
            out.append(command[i : i + 2])
            i += 2
            continue
        if ch in "'\"" and quote in ("", ch):
            quote = "" if quote == ch else ch
        elif ch == "$" and quote != "'":
            match = _VARIABLE.match(command, i)
            if match:
                value = env.get(match.group(1).strip("{}"), "")
                if quote == '"':
                    out.append(re.sub(r'(["\\$`])', r"\\\1", value))
                else:
                    out.append(shlex.quote(value) if value else "")  # unquoted: gone
                i = match.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def might_be_cd(command: str) -> bool:
    """The cheap test that rules out nearly every command before ``cd`` parses."""
    return command.lstrip().startswith("cd")


def cd(
    command: str, cwd: str, previous: str, home: str, env: Mapping[str, str] | None = None
) -> CdResult | None:
    """The outcome of ``command`` if it is ``cd [DIR]``, else None.

    ``$NAME`` and ``${NAME}`` expand from the command environment, ``~`` to a
    home, as a shell would (quoting as in ``shlex``)."""
    if not might_be_cd(command):
        return None  # the common case, without the cost of shlex
    argv = lone_cd(expand(command, env) if env is not None else command)
    if argv is None:
        return None
    target = argv[1] if len(argv) == 2 else home
    if target == "-":
        target = previous
    tilde = command.lstrip()[2:].lstrip().startswith("~")  # unquoted, as a shell wants it
    try:
        path = os.path.normpath(os.path.join(cwd, os.path.expanduser(target) if tilde
                                             else target))
    except ValueError:  # ~user that cannot be encoded: there is no such user
        path = os.path.normpath(os.path.join(cwd, target))
    try:
        is_dir = os.path.isdir(path)
    except ValueError:
        is_dir = False
    if not is_dir:
        problem = "No such file or directory" if not os.path.exists(path) else "Not a directory"
    elif not os.access(path, os.X_OK):
        problem = "Permission denied"
    else:
        return CdResult(path, cwd, 0)
    return CdResult(cwd, previous, 1, f"cd: {target}: {problem}\n")
