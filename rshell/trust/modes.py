"""sshd's StrictModes: whether a file the server trusts could have been
written by another account.

A file decides who logs in (authorized_keys), who the server is (the host
key), or what the record says (the audit log), so it is only as safe as the
least safe step of the path to it: whoever can write the file, or rename or
replace any directory on the way to it, can let themselves in.  ``problem``
resolves symbolic links (each link's own directory counts too, since
whoever can write there can re-point it) and checks the file and every
directory up to ``/``:

- owned by root or the server's account;
- not writable by group or others, with two exceptions: a root-owned sticky
  directory such as ``/tmp`` (others cannot rename or delete what they do
  not own in it, and the owner check of what lies below catches an entry
  another account created first), and group write through the owner's own
  private group (the group named after the owner, with no other members:
  Debian's sshd allows this for umask 002 systems);
- for a private key, not readable by group or others either.

Must not import anything above layer 0.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

#: As the kernel's limit on nested symbolic links.
_MAX_LINKS = 40


class Changed(OSError):
    """The file read is not the one that was judged (replaced in between)."""


@dataclass(frozen=True)
class Examined:
    """A path judged: ``problem`` ('' if none), the real path it resolved to,
    and what was judged there (None: nothing there yet)."""

    problem: str
    real: str
    stat: os.stat_result | None


def problem(path: str | Path, *, private: bool = False, uid: int | None = None) -> str:
    """'' when ``path`` (if it exists) and every directory leading to it can
    be trusted; otherwise one line naming the offending path and what is wrong."""
    return examine(path, private=private, uid=uid).problem


def examine(path: str | Path, *, private: bool = False, uid: int | None = None) -> Examined:
    """Resolve ``path`` one component at a time, as the kernel does, judging
    every directory actually passed through and every link met on the way
    (its owner; its directory was judged as it was passed)."""
    uid = os.geteuid() if uid is None else uid
    root = os.stat("/")
    found = _unsafe("/", root, uid, private=False, directory=True)
    if found:
        return Examined(found, "/", None)
    parts = deque(p for p in os.path.abspath(path).split("/") if p)
    current, links, judged = "/", 0, root
    while parts:
        name = parts.popleft()
        if name in (".", ""):
            continue
        if name == "..":
            current = os.path.dirname(current)  # current holds no link: this is its parent
            continue
        step = os.path.join(current, name)
        try:
            st = os.lstat(step)
        except FileNotFoundError:
            return Examined("", step, None)  # nothing there yet: checked when it is
        except OSError as exc:
            return Examined(f"{step}: {exc.strerror}", step, None)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return Examined(f"{path}: too many levels of symbolic links", step, None)
            if st.st_uid not in (0, uid):
                return Examined(f"{step} is a link owned by {_user(st.st_uid)}, "
                                f"not by {_allowed(uid)}", step, None)
            target = os.readlink(step)
            if target.startswith("/"):
                current = "/"
            parts.extendleft(reversed(target.split("/")))
            continue
        last = not parts
        found = _unsafe(step, st, uid, private=private and last, directory=not last)
        if found:
            return Examined(found, step, None)
        if not last and not stat.S_ISDIR(st.st_mode):
            return Examined(f"{step}: Not a directory", step, None)
        current, judged = step, st
    return Examined("", current, judged)


def read(examined: Examined) -> bytes:
    """The judged file's content, read from the file that was judged: opened
    without following a link and compared by device and inode, so a swap
    between the judgement and the read is caught, not believed."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(examined.real, flags)
    try:
        st = os.fstat(fd)
        judged = examined.stat
        if judged is None or (st.st_dev, st.st_ino) != (judged.st_dev, judged.st_ino):
            raise Changed(f"{examined.real} changed while it was being checked")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _unsafe(where: str, st: os.stat_result, uid: int, *, private: bool, directory: bool) -> str:
    if st.st_uid not in (0, uid):
        return f"{where} is owned by {_user(st.st_uid)}, not by {_allowed(uid)}"
    mode = stat.S_IMODE(st.st_mode)
    if directory and st.st_uid == 0 and mode & stat.S_ISVTX:
        return ""  # /tmp-style: others cannot rename or remove what they do not own
    loose = mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _private_group(st))
    if loose:
        return f"{where} is writable by {'others' if mode & stat.S_IWOTH else 'its group'} " \
               f"(mode {mode:04o})"
    if private and mode & 0o077:
        return f"{where} is a private key accessible by others (mode {mode:04o})"
    return ""


def _private_group(st: os.stat_result) -> bool:
    """The owner's own group (named as the owner, no other members, nobody
    else's primary group): group write there gives nobody else anything.
    Asked at every authentication a group-writable step is met, so the
    answer is kept until /etc/passwd or /etc/group changes (walking every
    account of a networked database each time would be a client's to order)."""
    stamp = _account_files_stamp()
    key = (st.st_uid, st.st_gid)
    cached = _PRIVATE_GROUPS.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        answer = False
    else:
        answer = group.gr_name == owner and set(group.gr_mem) <= {owner} and all(
            p.pw_gid != st.st_gid or p.pw_uid == st.st_uid for p in pwd.getpwall())
    if len(_PRIVATE_GROUPS) > 1024:
        _PRIVATE_GROUPS.clear()
    _PRIVATE_GROUPS[key] = (stamp, answer)
    return answer


#: (owner uid, gid) -> (account files' stamp, is the owner's private group)
_PRIVATE_GROUPS: dict[tuple[int, int], tuple[tuple[float, ...], bool]] = {}


def _account_files_stamp() -> tuple[float, ...]:
    stamp = []
    for name in ("/etc/passwd", "/etc/group"):
        try:
            stamp.append(os.stat(name).st_mtime)
        except OSError:
            stamp.append(-1.0)
    return tuple(stamp)


def _allowed(uid: int) -> str:
    return "root" if uid == 0 else f"root or {_user(uid)}"


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
