"""How a command line reads to a POSIX shell, as far as rshell must know it.

A lone ``cd [DIR]`` changes the session's directory, natively (exec/cd.py)
and over ``ssh://`` (ssh/client.py); anything more (``cd /x && make``,
``cd a;b``) runs in the shell.  Both sides ask this module, so a line is
never a ``cd`` on one path and a command on the other.

Must not import anything of rshell.
"""

from __future__ import annotations

import shlex


def lone_cd(command: str) -> list[str] | None:
    """``["cd"]`` or ``["cd", DIR]`` when ``command`` is nothing but that
    (shell operators such as ``;``, ``&&`` or ``|`` make it a command); None
    otherwise, or when its quoting is unbalanced."""
    text = command.strip()
    if not text.startswith("cd"):
        return None  # the common case, without the cost of a lexer
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        argv = list(lexer)
    except ValueError:
        return None
    if not argv or argv[0] != "cd" or len(argv) > 2:
        return None
    return argv
