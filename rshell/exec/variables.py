"""``export NAME=VALUE`` and ``unset NAME``, answered by the session itself.

A process's environment dies with it, as its directory does, so a lone
``export``/``unset`` changes the session's environment for the commands
after it, as ``cd`` changes its directory (exec/cd.py).  Values expand
``$NAME``/``${NAME}`` from the session's environment and a leading ``~``;
anything the shell alone can evaluate (``$(...)``, backquotes, operators)
makes it an ordinary command, which runs and changes nothing after it.

Must not import anything above layer 0 (cd is its sibling in layer 1).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from rshell.exec.cd import expand
from rshell.shellwords import ASSIGNMENT_VERBS, lone_assignment

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_VERBS = ASSIGNMENT_VERBS


@dataclass(frozen=True)
class Change:
    """What a lone export/unset does: variables set, names removed, and the
    shell-style outcome (a bad name fails the whole command, as in dash)."""

    set: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    exit_code: int = 0
    stderr: str = ""

    @property
    def names(self) -> list[str]:
        return [*self.set, *self.unset]


def might_be_variables(command: str) -> bool:
    """The cheap test that rules out nearly every command."""
    return command.lstrip().startswith(_VERBS)


def change(command: str, env: Mapping[str, str], home: str) -> Change | None:
    """The change ``command`` makes if it is a lone export/unset, else None."""
    text = command.strip()
    if lone_assignment(text) is None:  # the one lexical rule, the ssh:// backend's too
        return None
    try:
        lexer = shlex.shlex(expand(text, env), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv = list(lexer)
    except ValueError:
        return None
    if len(argv) < 2 or argv[0] not in _VERBS or any(
        a and set(a) <= set("();<>|&") for a in argv
    ):
        return None  # bare `export` lists, options and operators: the shell's
    verb, words = argv[0], argv[1:]
    if any(w.startswith("-") for w in words):
        return None
    if verb == "unset":
        bad = next((w for w in words if not _NAME.match(w)), None)
        if bad is not None:
            return Change(exit_code=2, stderr=f"unset: {bad}: bad variable name\n")
        return Change(unset=tuple(words))
    values: dict[str, str] = {}
    for word in words:
        name, eq, value = word.partition("=")
        if not _NAME.match(name):
            return Change(exit_code=2, stderr=f"export: {name}: bad variable name\n")
        if not eq:
            if name in env:
                values[name] = env[name]
            continue  # a shell variable that no longer exists: nothing to export
        if value.startswith("~") and re.search(rf"(^|\s){name}=~", text):
            value = home + value[1:] if value in ("~",) or value.startswith("~/") \
                else os.path.expanduser(value)
        values[name] = value
    return Change(set=values)
