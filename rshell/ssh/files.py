"""``rshell cp`` and ``put``/``get`` to ``ssh://`` targets: the same entry
stream as the native wire (transfer.send, transfer.receive), carried by
SFTP (paramiko's ``SFTPClient``), as OpenSSH's scp does since 9.0.

An upload writes each file to a hidden ``.NAME.rshell-XXXX.part`` beside
its target and renames it into place (``posix-rename@openssh.com``, which
replaces, where the server has it), so a cut connection leaves the old file
whole; the part file is removed on every failure we live through.  SFTP
carries no digest, so the SHA-256 check is the receiving side's own
(downloads) or none (uploads): SSH's MAC already guards each packet.  A
download walks the remote tree with ``lstat``, never following a link
inside it, and every name goes through the same Receiver checks as the
native wire's.

The one door to paramiko for files: its exceptions become CopyFailed here.
"""

from __future__ import annotations

import hashlib
import posixpath
import secrets
import stat
from collections.abc import Iterator
from typing import Any

import paramiko

from rshell.client.backend import Tally
from rshell.errors import ConnectionFailed, CopyFailed
from rshell.protocol.files import DIR, END, FILE, LINK, Entry, EntryEnd
from rshell.transfer.names import link_problem
from rshell.transfer.receive import Receiver
from rshell.transfer.send import Chunk, Sender, source_name

_READ = 1 << 20


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def _open(client: Any) -> Any:
    try:
        return client.open_sftp()
    except (paramiko.SSHException, OSError) as exc:
        # SSH carries no reason: no sftp subsystem there, or this key may not copy.
        raise CopyFailed("the server refused SFTP (it serves none, or this key may not "
                         f"copy files): {_reason(exc)}") from None


def _is_dir(sftp: Any, path: str) -> bool | None:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode)
    except OSError:
        return None


def put(client: Any, sender: Sender, remote: str, *, preserve: bool, many: bool) -> Tally:
    """Upload ``sender``'s entries to ``remote`` (relative: to the login directory)."""
    tally = Tally()
    sftp = _open(client)
    try:
        remote = remote or "."
        directory = _is_dir(sftp, remote)
        if not directory:
            if many or remote.endswith("/"):
                raise CopyFailed(f"{remote}: not a directory")
            parent = posixpath.dirname(remote) or "."
            if not _is_dir(sftp, parent):
                raise CopyFailed(f"{parent}: no such directory")
        _Upload(sftp, remote, bool(directory), preserve, tally).run(sender)
    except (paramiko.SSHException, EOFError) as exc:
        raise ConnectionFailed(f"copy interrupted: {_reason(exc)}") from None
    finally:
        sftp.close()
    return tally


class _Upload:
    def __init__(self, sftp: Any, remote: str, directory: bool, preserve: bool,
                 tally: Tally) -> None:
        self.sftp, self.preserve, self.tally = sftp, preserve, tally
        self.root = remote if directory else posixpath.dirname(remote) or "."
        self.rename = None if directory else posixpath.basename(remote)
        self.dirs: list[tuple[str, Entry | None]] = [(self.root, None)]
        self.file: Any = None
        self.part = self.target = ""
        self.entry = Entry(FILE)
        self.written = 0  # bytes of the current file
        #: The server's umask, read off the first part file created (SFTP does not tell).
        self.umask: int | None = None
        self.skip_dirs = 0

    def run(self, sender: Sender) -> None:
        for event in sender.events():
            if isinstance(event, Chunk):
                if self.file is not None:
                    self.file.write(event.data)
                    self.written += event.n
                sender.recycle(event.buf)
            elif isinstance(event, Entry):
                self._entry(event)
            elif isinstance(event, EntryEnd):
                self._end(event)
            # a Verdict: a local source that could not be read, kept by the sender

    def _path(self, name: str) -> str:
        if len(self.dirs) == 1 and self.rename is not None:
            return posixpath.join(self.root, self.rename)
        return posixpath.join(self.dirs[-1][0], name)

    def _entry(self, e: Entry) -> None:
        if self.skip_dirs:
            self.skip_dirs += 1 if e.kind == DIR else -1 if e.kind == END else 0
            return
        if e.kind == END:
            path, entry = self.dirs.pop()
            if entry is not None and self.preserve:
                self._try(path, lambda: self._attrs(path, entry))
            return
        path = self._path(e.name)
        if e.kind == DIR:
            if self._try(path, lambda: self._mkdir(path, e)):
                self.dirs.append((path, e))
            else:
                self.skip_dirs = 1
        elif e.kind == LINK:
            # The remote sftp-server judges no names: the receiver's link rule, here.
            problem = link_problem(e.target, len(self.dirs) - 1)
            if problem is not None:
                self._failed(path, f"refused: {problem}")
            else:
                self._try(path, lambda: self.sftp.symlink(e.target, path))
        else:
            self.target, self.entry, self.written = path, e, 0
            self.part = posixpath.join(posixpath.dirname(path),
                                       f".{posixpath.basename(path)[:200]}.rshell-"
                                       f"{secrets.token_hex(6)}.part")
            try:
                self.file = self.sftp.open(self.part, "wb")
                self.file.set_pipelined(True)
                if self.umask is None and not self.preserve:  # once: it is the session's
                    masked = 0o666 & ~stat.S_IMODE(self.file.stat().st_mode or 0o644)
                    self.umask = masked | (masked & 0o444) >> 2  # exec bits as read bits
            except OSError as exc:
                self.file = None
                self._failed(path, _reason(exc))

    def _mkdir(self, path: str, e: Entry) -> None:
        if _is_dir(self.sftp, path):
            return
        self.sftp.mkdir(path, e.mode & 0o777)

    def _end(self, e: EntryEnd) -> None:
        f, self.file = self.file, None
        if f is None:
            return
        try:
            f.close()
            if e.error is not None:
                raise OSError(0, e.error)
            if self.preserve:
                self._attrs(self.part, self.entry)
            else:
                self.sftp.chmod(self.part, self._mode())
            self._replace(self.part, self.target)
        except (OSError, paramiko.SSHException) as exc:
            self._quietly_remove(self.part)
            self._failed(self.target, _reason(exc))
            return
        self.tally.files += 1
        self.tally.size += self.written

    def _mode(self) -> int:
        """A replaced file keeps its mode (as scp's does); a new one gets the
        source's bits less the server's umask (read off the first part file,
        created as 0666 less it)."""
        try:
            return stat.S_IMODE(self.sftp.stat(self.target).st_mode) & 0o777
        except OSError:
            return self.entry.mode & 0o777 & ~(self.umask or 0)

    def _attrs(self, path: str, entry: Entry) -> None:
        self.sftp.chmod(path, entry.mode & 0o777)
        self.sftp.utime(path, (entry.atime, entry.mtime))

    def _replace(self, part: str, target: str) -> None:
        try:
            self.sftp.posix_rename(part, target)
        except OSError:  # no posix-rename@openssh.com: a plain rename
            self.sftp.rename(part, target)

    def _try(self, path: str, call: Any) -> bool:
        try:
            call()
            return True
        except (OSError, paramiko.SSHException) as exc:
            self._failed(path, _reason(exc))
            return False

    def _failed(self, path: str, reason: str) -> None:
        self.tally.failures.append((path, reason))

    def _quietly_remove(self, path: str) -> None:
        try:
            self.sftp.remove(path)
        except (OSError, paramiko.SSHException):
            pass


def get(client: Any, paths: list[str], receiver: Receiver, *, recursive: bool,
        preserve: bool) -> Tally:
    """Download ``paths`` into ``receiver`` (open), walking with lstat below
    each operand."""
    tally = Tally()
    sftp = _open(client)
    try:
        for path in paths:
            try:
                st = sftp.stat(path)  # an operand is followed, as scp does
            except OSError as exc:
                tally.failures.append((path, _reason(exc)))
                continue
            if stat.S_ISDIR(st.st_mode or 0) and not recursive:
                tally.failures.append((path, "is a directory (use -r)"))
                continue
            for event in _walk(sftp, path, source_name(path), st, tally):
                if isinstance(event, Entry):
                    receiver.entry(event)
                elif isinstance(event, EntryEnd):
                    receiver.end(event)
                else:
                    receiver.data(event)
    except (paramiko.SSHException, EOFError) as exc:
        raise ConnectionFailed(f"copy interrupted: {_reason(exc)}") from None
    finally:
        sftp.close()
    return tally


def _meta(kind: str, name: str, st: Any, **more: Any) -> Entry:
    return Entry(kind, name, mode=stat.S_IMODE(st.st_mode or 0), mtime=float(st.st_mtime or 0),
                 atime=float(st.st_atime or 0), **more)


def _walk(sftp: Any, path: str, name: str, st: Any,
          tally: Tally) -> Iterator[Entry | EntryEnd | bytes]:
    mode = st.st_mode or 0
    if stat.S_ISDIR(mode):
        try:
            children = sorted(sftp.listdir_attr(path), key=lambda a: a.filename)
        except OSError as exc:
            tally.failures.append((path, _reason(exc)))
            return
        yield _meta(DIR, name, st)
        for child in children:  # listdir_attr's attributes are lstat's
            yield from _walk(sftp, posixpath.join(path, child.filename), child.filename,
                             child, tally)
        yield Entry(END)
    elif stat.S_ISLNK(mode):
        try:
            yield _meta(LINK, name, st, target=sftp.readlink(path) or "")
        except OSError as exc:
            tally.failures.append((path, _reason(exc)))
    elif stat.S_ISREG(mode):
        yield from _file(sftp, path, name, st, tally)
    else:
        tally.failures.append((path, "not a regular file, directory or link"))


def _file(sftp: Any, path: str, name: str, st: Any,
          tally: Tally) -> Iterator[Entry | EntryEnd | bytes]:
    try:
        f = sftp.open(path, "rb")
    except OSError as exc:
        tally.failures.append((path, _reason(exc)))
        return
    with f:
        size = st.st_size or 0
        yield _meta(FILE, name, st, size=size)
        digest = hashlib.sha256()
        got = 0
        try:
            f.prefetch(size)
            while got < size:
                data = f.read(min(_READ, size - got))
                if not data:
                    break
                digest.update(data)
                got += len(data)
                yield data
        except OSError as exc:
            yield EntryEnd("", f"read error: {_reason(exc)}")
            return
        if got < size:
            yield EntryEnd("", f"file shrank while being read ({got} of {size} bytes)")
            return
        tally.files += 1
        tally.size += got
        yield EntryEnd(digest.hexdigest())
