"""The receiving side of a copy: the entry stream of protocol/files.py
written under the destination the user named, and nowhere else.

One ``Receiver`` serves an upload's server and a download's client.

- Nothing half-written: a file is written to an unnamed temporary file in
  its directory (``O_TMPFILE``: a crash or kill leaves nothing behind), its
  SHA-256 and size checked against the sender's, fsynced, then linked in
  under a temporary name and renamed over the target in one step (in a
  directory the copy made, where no target can be, linked in under its own
  name at once: as atomic, one call fewer).  Where
  the filesystem has no ``O_TMPFILE``, a named ``.NAME.rshell-XXXX.part``
  is used and removed on every failure.  The old file stays whole until the
  rename.
- Only under the destination: every entry name is one path component
  (transfer.names), every directory is opened relative to its parent's
  descriptor with ``O_NOFOLLOW`` (a link in the tree, or one planted
  meanwhile, is never followed), and links pointing out of the tree are
  refused.  The destination itself is followed when it is a link: the user
  named it.
- Modes: with ``preserve``, the sender's permission bits and times; without,
  a new file gets the sender's bits less the umask, a replaced one keeps its
  own (as scp).  Set-id and sticky bits never travel.

A failed entry (a refused name, a full disk, a bad digest) is skipped to its
end and reported through ``on_file``; the rest of the stream goes on.

Must not import server/, exec/, client/ or cli/.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from typing import Any

from rshell.errors import CopyFailed
from rshell.protocol.files import DIR, END, FILE, LINK, Entry, EntryEnd
from rshell.transfer.names import link_problem, name_problem, umask
from rshell.transfer.send import OnFile, Progress

_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)
#: How much of a file is written before its writeback to disk is started.
_WRITEBACK = 8 << 20
#: Small files synced together: at most this many, or this many bytes, at once
#: (each holds a descriptor until then).
_BATCH_FILES = 64
_BATCH_BYTES = 32 << 20
#: Space is reserved up front (a full disk says so at once) for files this big;
#: a smaller one gets its blocks as it is written, which fails as early.
_ALLOCATE_FROM = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DestinationError(CopyFailed):
    """The destination cannot take this copy at all (missing, not a directory),
    or the stream broke the order of entries."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@dataclass(slots=True)
class _Level:
    fd: int
    rel: str  # path within the transfer ('' at the root)
    entry: Entry | None  # the directory's own entry (None at the root)
    new: bool  # created by this copy (its mode is ours to set)


@dataclass(slots=True)
class _File:
    fd: int
    dir_fd: int
    name: str
    rel: str
    entry: Entry
    temp: str | None  # the named temporary file, where O_TMPFILE is missing
    digest: hashlib._Hash
    #: In a directory this copy made: no old file to keep the mode of, nothing
    #: to rename over (the file is linked in under its own name).
    fresh: bool = False
    #: Made with its final mode (see _begin): no fchmod at the end.
    moded: bool = False
    got: int = 0
    flushed: int = 0  # bytes handed to the disk's writeback so far
    sha256: str = ""


class Receiver:
    """Writes one transfer under ``dest``.  ``open()`` first (it says whether
    ``dest`` is a directory), then ``entry``/``data``/``end`` as they come,
    then ``close()`` (which also undoes a file cut short)."""

    def __init__(self, dest: str, *, preserve: bool = False, many: bool = False,
                 on_file: OnFile | None = None, progress: Progress | None = None,
                 shown: str | None = None, asked: list[str | None] | None = None) -> None:
        self.dest, self.preserve, self.many = dest, preserve, many
        #: The destination as the user wrote it, for messages.
        self.shown = dest if shown is None else shown
        self.on_file, self.progress = on_file, progress
        self.files = self.size = 0
        self.failures: list[tuple[str, str]] = []
        self._stack: list[_Level] = []
        self._file: _File | None = None
        self._skip_file = False  # the current file failed: drop its data
        self._skip_dirs = 0  # inside a directory that failed: drop everything
        self._rename_to: str | None = None  # the one top entry's name (dest not a dir)
        #: The directory the transfer's paths are relative to.
        self.root = dest
        self._tops = 0
        self._umask = umask()
        #: A download's top-level names, as asked (None: a path whose name the
        #: server decides, such as "."); anything else at the top is refused.
        self._asked = asked
        #: Paths (within the transfer) some accepted link's target passes through:
        #: none of them may become a link.
        self._traversed: set[str] = set()
        #: Files complete and checked, waiting to be synced and renamed (_flush).
        self._pending: list[_File] = []
        self._pending_bytes = 0

    # ---- the destination ------------------------------------------------------------

    def open(self) -> bool:
        """Open the destination; True if it is a directory the entries go into.
        DestinationError if it cannot take them."""
        dest, shown = self.dest, self.shown
        try:
            fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise DestinationError(f"{shown}: {_reason(exc)}") from None
            if self.many or dest.endswith("/"):
                raise DestinationError(f"{shown}: not a directory") from None
            parent, name = os.path.split(dest)
            try:
                fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc2:
                raise DestinationError(f"{shown}: {_reason(exc2)}") from None
            self._rename_to = name
            self.root = parent or "."
            self._stack.append(_Level(fd, "", None, False))
            return False
        self._stack.append(_Level(fd, "", None, False))
        return True

    def close(self) -> None:
        """The end, or the connection's: the files that arrived whole (checked)
        are synced and renamed into place; one cut short is discarded."""
        if self._file is not None:
            self._discard(self._file)
            self._file = None
        self._flush()
        while self._stack:
            os.close(self._stack.pop().fd)

    # ---- the stream -----------------------------------------------------------------

    def entry(self, e: Entry) -> None:
        if self._file is not None or self._skip_file:
            raise DestinationError("protocol: an entry inside a file")
        if self._skip_dirs:
            self._skip_dirs += 1 if e.kind == DIR else -1 if e.kind == END else 0
            if e.kind == FILE:
                self._skip_file = True
            return
        if e.kind == END:
            self._leave()
            return
        level = self._stack[-1]
        name = e.name
        problem = name_problem(name)
        if len(self._stack) == 1:
            self._tops += 1
            if problem is None and self._asked is not None:
                problem = self._unasked(name)
            if self._rename_to is not None:
                if self._tops > 1:
                    problem = f"{self.shown}: not a directory"
                else:
                    name = self._rename_to  # the user's name for it: not judged
                    problem = None
        rel = f"{level.rel}/{name or repr(name)}" if level.rel else name or repr(name)
        if problem is None and e.kind == LINK:
            problem = link_problem(e.target, len(self._stack) - 1) or self._through(level, rel,
                                                                                    e.target)
        if problem is not None:
            self._refuse(e, rel, f"refused: {problem}" if not problem.startswith(self.shown)
                         else problem)
            return
        try:
            if e.kind == DIR:
                self._enter(level, name, rel, e)
            elif e.kind == FILE:
                self._begin(level, name, rel, e)
            else:
                self._link(level, name, rel, e)
        except OSError as exc:
            self._refuse(e, rel, _reason(exc))

    def data(self, data: bytes | memoryview) -> None:
        f = self._file
        if f is None:
            if self._skip_file:
                return
            raise DestinationError("protocol: file data outside a file")
        f.digest.update(data)
        f.got += len(data)
        if f.got > f.entry.size:
            self._fail_file(f, f"more bytes than announced ({f.entry.size})")
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(f.fd, view):]
            if f.got - f.flushed >= _WRITEBACK:
                # Start writing this part to disk now, as the rest arrives: the
                # fsync at the end then waits for the tail, not the whole file
                # (and a big copy does not crowd the page cache).
                os.posix_fadvise(f.fd, f.flushed, f.got - f.flushed, os.POSIX_FADV_DONTNEED)
                f.flushed = f.got
        except OSError as exc:
            self._fail_file(f, _reason(exc))
            return
        if self.progress is not None:
            self.progress(f.rel, f.got, f.entry.size)

    def end(self, e: EntryEnd) -> None:
        f, self._file = self._file, None
        if f is None:
            if self._skip_file:
                self._skip_file = False
                return
            raise DestinationError("protocol: the end of a file that did not begin")
        problem = e.error
        if problem is None and f.got != f.entry.size:
            problem = f"{f.got} of {f.entry.size} bytes arrived"
        if problem is None and f.digest.hexdigest() != e.sha256:
            problem = "SHA-256 mismatch"
        if problem is None:
            f.sha256 = e.sha256
            try:
                self._settle(f)
            except OSError as exc:
                problem = _reason(exc)
        if problem is not None:
            self._discard(f)
            self._failed(f.rel, problem, f.got)
            return
        if self.progress is not None and not f.got:  # an empty file sends no data
            self.progress(f.rel, 0, 0)
        self._pending.append(f)
        self._pending_bytes += f.got
        if len(self._pending) >= _BATCH_FILES or self._pending_bytes >= _BATCH_BYTES:
            self._flush()

    def _unasked(self, name: str) -> str | None:
        """A top-level name a download did not ask for (scp's CVE-2019-6111:
        ``scp host:notes.txt ~`` answered with ``.bashrc``)."""
        asked = self._asked
        assert asked is not None
        for slot in (name, None):
            if slot in asked:
                asked.remove(slot)
                return None
        return f"{name!r} was not asked for"

    def _through(self, level: _Level, rel: str, target: str) -> str | None:
        """A link whose target passes through a link (made by this copy or
        already there) could lead anywhere, and a link may not be made where
        an accepted target passes: either is a link out of the tree."""
        if rel in self._traversed:
            return f"a link where another link's target passes ({rel!r})"
        parts = level.rel.split("/") if level.rel else []
        crossed: list[str] = []
        root = self._stack[0].fd
        for part in target.split("/")[:-1]:
            if part == "..":
                parts.pop()
                continue
            if part in ("", "."):
                continue
            parts.append(part)
            here = "/".join(parts)
            try:
                if stat.S_ISLNK(os.stat(here, dir_fd=root, follow_symlinks=False).st_mode):
                    return f"a link through another link ({target!r})"
            except OSError:
                pass  # not there (yet): remembered below
            crossed.append(here)
        self._traversed.update(crossed)
        return None

    # ---- directories -----------------------------------------------------------------

    def _enter(self, level: _Level, name: str, rel: str, e: Entry) -> None:
        new = True
        try:
            os.mkdir(name, 0o700, dir_fd=level.fd)
        except FileExistsError:
            new = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=level.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OSError(exc.errno, "exists and is not a directory") from None
            raise
        self._stack.append(_Level(fd, rel, e, new))

    def _leave(self) -> None:
        if len(self._stack) < 2:
            raise DestinationError("protocol: the end of a directory never entered")
        self._flush()  # the directory's files first: their renames change its times
        level = self._stack.pop()
        e = level.entry
        assert e is not None
        try:
            if self.preserve:
                os.chmod(level.fd, e.mode & 0o777)
                os.utime(level.fd, (e.atime, e.mtime))
            elif level.new:
                os.chmod(level.fd, e.mode & 0o777 & ~self._umask)
        except OSError as exc:
            self._failed(level.rel, _reason(exc), 0)
        finally:
            os.close(level.fd)

    # ---- files and links -------------------------------------------------------------

    def _begin(self, level: _Level, name: str, rel: str, e: Entry) -> None:
        temp = None
        # An unnamed file has no path anyone could open it by, so in a
        # directory this copy made it is created with its final mode (the
        # sender's bits less the umask, which open applies): one call fewer.
        moded = level.new and not self.preserve
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC,
                         e.mode & 0o777 if moded else 0o600, dir_fd=level.fd)
        except OSError as exc:
            moded = False
            if exc.errno not in _NO_TMPFILE:
                raise
            temp = _temp_name(name)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=level.fd)
        f = _File(fd, level.fd, name, rel, e, temp, hashlib.sha256(), level.new, moded)
        self._file = f
        if e.size >= _ALLOCATE_FROM:
            try:
                os.posix_fallocate(fd, 0, e.size)  # a full disk says so now, not at 99 %
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    self._fail_file(f, _reason(exc))

    def _fail_file(self, f: _File, reason: str) -> None:
        """The current file cannot be written: dropped now, its data skipped."""
        self._file = None
        self._skip_file = True
        self._discard(f)
        self._failed(f.rel, reason, f.got)

    def _mode(self, f: _File) -> int:
        e = f.entry
        if self.preserve:
            return e.mode & 0o777
        if f.fresh:
            return e.mode & 0o777 & ~self._umask
        dir_fd, name = f.dir_fd, f.name
        try:
            old = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(old.st_mode):
                return stat.S_IMODE(old.st_mode) & 0o777  # a replaced file keeps its mode
        except OSError:
            pass
        return e.mode & 0o777 & ~self._umask

    def _settle(self, f: _File) -> None:
        """A complete, checked file gets its mode and times (before it is synced)."""
        if not f.moded:
            os.fchmod(f.fd, self._mode(f))
        if self.preserve:
            os.utime(f.fd, (f.entry.atime, f.entry.mtime))

    def _flush(self) -> None:
        """The waiting files reach the disk, then their names: small files are
        synced together (one ``syncfs`` for a batch, not an fsync each, which
        made a tree of small files wait on the disk per file; a big file ends
        a batch), a lone one by its own fsync.  Only then is each renamed over
        its target."""
        pending = self._pending
        if not pending:
            return
        together = len(pending) > 1 and _syncfs(pending[0].fd)
        for f in pending:
            try:
                if not together:
                    os.fsync(f.fd)
                self._rename(f)
            except OSError as exc:
                self._discard(f)
                self._failed(f.rel, _reason(exc), f.got)
                continue
            self.files += 1
            self.size += f.got
            if self.on_file is not None:
                self.on_file(f.rel, f.got, f.sha256, None)
        pending.clear()
        self._pending_bytes = 0

    def _rename(self, f: _File) -> None:
        temp = f.temp
        if temp is None and f.fresh:  # an unnamed file where no target can be yet
            try:
                os.link(f"/proc/self/fd/{f.fd}", f.name, dst_dir_fd=f.dir_fd,
                        follow_symlinks=True)
            except FileExistsError:
                pass  # the same name twice in one directory: replaced, as anywhere
            else:
                os.close(f.fd)
                f.fd = -1
                return
        if temp is None:  # an unnamed file: give it a name beside the target first
            temp = _temp_name(f.name)
            os.link(f"/proc/self/fd/{f.fd}", temp, dst_dir_fd=f.dir_fd, follow_symlinks=True)
            f.temp = temp
        os.rename(temp, f.name, src_dir_fd=f.dir_fd, dst_dir_fd=f.dir_fd)
        f.temp = None
        os.close(f.fd)
        f.fd = -1

    def _discard(self, f: _File) -> None:
        if f.fd >= 0:
            os.close(f.fd)
            f.fd = -1
        if f.temp is not None:
            try:
                os.unlink(f.temp, dir_fd=f.dir_fd)
            except OSError:
                pass
            f.temp = None

    def _link(self, level: _Level, name: str, rel: str, e: Entry) -> None:
        temp = _temp_name(name)
        os.symlink(e.target, temp, dir_fd=level.fd)
        try:
            if self.preserve:
                os.utime(temp, (e.atime, e.mtime), dir_fd=level.fd, follow_symlinks=False)
            os.rename(temp, name, src_dir_fd=level.fd, dst_dir_fd=level.fd)
        except OSError:
            try:
                os.unlink(temp, dir_fd=level.fd)
            except OSError:
                pass
            raise
        if self.on_file is not None:
            self.on_file(rel, 0, None, None)

    # ---- failures --------------------------------------------------------------------

    def _refuse(self, e: Entry, rel: str, reason: str) -> None:
        if e.kind == DIR:
            self._skip_dirs = 1
        elif e.kind == FILE:
            self._skip_file = True
        self._failed(rel, reason, 0)

    def _failed(self, rel: str, reason: str, size: int) -> None:
        self.failures.append((rel, reason))
        if self.on_file is not None:
            self.on_file(rel, size, None, reason)


_LIBC: Any = None


def _syncfs(fd: int) -> bool:
    """``syncfs(2)`` on the filesystem holding ``fd`` (os has no call for it);
    False where it is missing or fails, and the caller fsyncs each file."""
    global _LIBC
    try:
        if _LIBC is None:
            import ctypes  # only a receiver of many files pays for it

            _LIBC = ctypes.CDLL(None, use_errno=True)
        return bool(_LIBC.syncfs(fd) == 0)
    except (OSError, AttributeError):
        return False


def _temp_name(name: str) -> str:
    """A name beside ``name`` that no one else uses (a hidden ``.part``)."""
    return f".{name[:200]}.rshell-{secrets.token_hex(6)}.part"
