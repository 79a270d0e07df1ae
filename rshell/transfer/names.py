"""Which names and link targets a receiver accepts: the one judge for both
directions and both sides (an upload's server, a download's client).

A name from the other side is one path component: never empty, ``.``,
``..``, never holding ``/`` or NUL (so never absolute).  A link inside a
tree must stay inside it: a relative target whose ``..`` never climbs above
the transfer's root, judged from the link's own depth (rsync's safe links).
This is the scp CVE-2019-6111 / CVE-2018-20685 class: a hostile peer naming
a file outside the destination the user named.

Must not import server/, exec/, client/ or cli/.
"""

from __future__ import annotations

import os


def name_problem(name: str) -> str | None:
    """Why ``name`` may not be created by a receiver, or None."""
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r}"
    if "/" in name:
        return f"a name with '/' ({name!r})"
    if "\0" in name:
        return "a name with a NUL byte"
    return None


def link_problem(target: str, depth: int) -> str | None:
    """Why a link whose target is ``target``, made ``depth`` directories below
    the transfer's root, would point out of the tree, or None."""
    if not target:
        return "a link with an empty target"
    if "\0" in target:
        return "a link target with a NUL byte"
    if target.startswith("/"):
        return f"a link to an absolute path ({target!r})"
    level = depth
    for part in target.split("/"):
        if part == "..":
            level -= 1
            if level < 0:
                return f"a link out of the tree ({target!r})"
        elif part not in ("", "."):
            level += 1
    return None


def umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, a
    race with every other thread creating files)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def home_path(path: str, home: str) -> str:
    """A path as the server reads one from a client: relative to the account's
    home (``''`` is the home), ``~`` and ``~/`` as the home; absolute as is."""
    if path in ("", "~"):
        return home
    if path.startswith("~/"):
        path = path[2:]
    return os.path.join(home, path)
