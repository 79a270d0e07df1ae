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
from pathlib import Path

#: As the kernel's limit on nested symbolic links.
_MAX_LINKS = 40


def problem(path: str | Path, *, private: bool = False, uid: int | None = None) -> str:
    """'' when ``path`` (if it exists) and every directory leading to it can
    be trusted; otherwise one line naming the offending path and what is wrong."""
    uid = os.geteuid() if uid is None else uid
    checked: set[str] = set()
    current = os.path.abspath(path)
    for _ in range(_MAX_LINKS):
        parent = os.path.realpath(os.path.dirname(current))
        found = _directories(parent, uid, checked)
        if found:
            return found
        leaf = os.path.join(parent, os.path.basename(current))
        try:
            st = os.lstat(leaf)
        except FileNotFoundError:
            return ""  # nothing there yet: whoever creates it is checked next time
        except OSError as exc:
            return f"{leaf}: {exc.strerror}"
        if stat.S_ISLNK(st.st_mode):
            current = os.path.join(parent, os.readlink(leaf))
            continue
        return _unsafe(leaf, st, uid, private=private, directory=False)
    return f"{path}: too many levels of symbolic links"


def _directories(directory: str, uid: int, checked: set[str]) -> str:
    """Check a real (link-free) directory and each one above it, from ``/``
    down, so that the step that lets others in is named, not what they did
    below it."""
    chain = []
    while directory not in checked:
        checked.add(directory)
        chain.append(directory)
        above = os.path.dirname(directory)
        if above == directory:
            break
        directory = above
    for step in reversed(chain):
        try:
            st = os.stat(step)
        except FileNotFoundError:
            return ""  # not there (yet): nothing below it to judge
        except OSError as exc:
            return f"{step}: {exc.strerror}"
        found = _unsafe(step, st, uid, private=False, directory=True)
        if found:
            return found
    return ""


def _unsafe(where: str, st: os.stat_result, uid: int, *, private: bool, directory: bool) -> str:
    if st.st_uid not in (0, uid):
        allowed = "root" if uid == 0 else f"root or {_user(uid)}"
        return f"{where} is owned by {_user(st.st_uid)}, not by {allowed}"
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
    """The owner's own group (named as the owner, no other members): group
    write there gives nobody else anything."""
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        return False
    if group.gr_name != owner or not set(group.gr_mem) <= {owner}:
        return False
    return all(p.pw_gid != st.st_gid or p.pw_uid == st.st_uid for p in pwd.getpwall())


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
