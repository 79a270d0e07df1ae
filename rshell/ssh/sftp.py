"""The ``sftp`` subsystem of the ``--ssh-bind`` listener: paramiko's
``SFTPServer`` over the local filesystem, as OpenSSH's ``sftp-server`` serves it.

Files are those of the server process's own account, without a chroot, as
its commands see them: a relative path resolves against the session's home
(``Login.home``, ``--home``), an absolute one is absolute.  A file is
created with the mode the client asks for (0666 if none), masked by the
process umask, because ``open(2)`` applies it; a directory likewise (0777).
``SSH_FXP_RENAME`` never replaces an existing name (SFTP v3, as sftp-server);
``posix-rename@openssh.com`` does, for clients that send it (paramiko does
not advertise it, so OpenSSH's ``sftp`` sticks to the plain rename).  Errors
are errno mapped to SFTP status codes as sftp-server maps them.

Policy: keys that may not copy files (``exec.policy.transfer_refusal``:
``command=``, ``restrict``) have the subsystem request refused, as sshd
refuses it; the refusal is logged and audited.  Audit: every file handle
that read or wrote is reported once, at its close, through the
connection's ``Recorder.transferred`` (``upload`` into this host,
``download`` out of it, the bytes moved through that handle).

Threads: paramiko's ``SFTPServer`` thread speaks the protocol, blocking on
the channel, and gives the channel's slot back (``--max-sessions``) before
its close; the channel's own thread (ssh/server.py), which holds the slot
and is joined at the connection's end, waits on the channel driver's
wake-up for the session's end and for a stop, and closes the channel when
the stop says so.  Must not import click, the client side or rshell.ssh.server.
"""

from __future__ import annotations

import errno
import functools
import grp
import hashlib
import logging
import os
import pwd
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

import paramiko

from rshell.exec.loop import READ
from rshell.exec.policy import transfer_refusal
from rshell.ssh._paramiko import FAILURES, AnsweringSFTPServer, unwatch_channel

if TYPE_CHECKING:
    from rshell.exec.policy import Login
    from rshell.exec.record import Recorder
    from rshell.ssh.channel import ChannelDriver

#: The most a single read answers, as sftp-server's SFTP_MAX_READ_LENGTH: a
#: client may ask for up to 4 GiB at once, a short read is its to repeat.
MAX_READ = 256 * 1024 - 1024

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Connection(Protocol):
    """What the subsystem needs of its SSH connection (ssh.server.SshConnection)."""

    peer: str
    login: Login
    record: Recorder

    def end(self, reason: str) -> None: ...

    def release(self, chanid: int) -> None: ...


def status(exc: OSError) -> int:
    """An OSError as an SFTP status code, as sftp-server's errno_to_portable."""
    if exc.errno == errno.EPERM:
        return paramiko.SFTP_PERMISSION_DENIED
    if exc.errno in (errno.EBADF, errno.ELOOP):
        return paramiko.SFTP_NO_SUCH_FILE
    if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
        return paramiko.SFTP_OP_UNSUPPORTED
    code: int = paramiko.SFTPServer.convert_errno(exc.errno)  # EACCES, ENOENT, ENOTDIR
    return code


def _answers_errors(method: Callable[_P, _R]) -> Callable[_P, _R | int]:
    """An OSError out of ``method`` becomes its SFTP status code (paramiko's
    interface answers errors by returning them)."""

    @functools.wraps(method)
    def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _R | int:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            return status(exc)

    return guarded


def refused(conn: Connection) -> bool:
    """Whether this login may not have the subsystem (its key may not copy
    files); a refusal is logged and audited, and the request fails, as sshd's."""
    reason = transfer_refusal(conn.login.grant)
    if reason is None:
        return False
    conn.record.log(logging.WARNING, "%s: sftp refused: %s", conn.peer, reason,
                    event="subsystem", subsystem="sftp", error=reason)
    conn.record.event("subsystem", subsystem="sftp", error=reason)
    return True


def serve(conn: Connection, driver: ChannelDriver) -> None:
    """Run the granted ``sftp`` subsystem on the driver's channel until the
    client ends it or the server's stop closes it (from the channel's thread):
    a stop closes it at once when no file is open (as a line session waiting
    for a line), else when the last one closes or at the grace's end."""
    channel = driver.channel
    # The driver made the channel non-blocking and watched it for its loop:
    # the SFTP thread reads and writes it blocking, the loop waits only for
    # the session's end, a file's close and a stop.
    unwatch_channel(channel)
    channel.settimeout(None)
    session = _Session(channel, conn, driver.wake)
    try:
        driver.set(driver.wake_fd, READ, lambda _mask: _drain(driver))
        session.start()
        while not session.over.is_set():
            at = driver.shutdown_at
            if at is not None and (session.idle() or time.monotonic() >= at):
                conn.end("shutdown: server is shutting down")
                conn.record.log(logging.INFO, "%s: sftp session closed: server shutting down",
                                conn.peer, event="subsystem-end", subsystem="sftp")
                channel.close()  # the SFTP thread reads EOF and closes what is open
                break
            driver.poll(None if at is None else max(0.0, at - time.monotonic()))
        session.join(5.0)  # its last audit lines; a thread stuck in the kernel is left
    finally:
        driver.close()
        conn.release(channel.get_id())
        channel.close()


def _drain(driver: ChannelDriver) -> None:
    driver.drain_wake()


class _Session(AnsweringSFTPServer):
    """paramiko's SFTP server over ``LocalFiles``; ``over`` set at its end."""

    def __init__(self, channel: paramiko.Channel, conn: Connection,
                 wake: Callable[[], None]) -> None:
        super().__init__(channel, "sftp", conn, LocalFiles, conn, wake)
        self.name = f"ssh {conn.peer}"  # paramiko's complaints then name the peer
        self.daemon = True
        self.chan, self.chanid = channel, channel.get_id()
        self.conn, self.wake = conn, wake
        self.files: LocalFiles = self.server
        #: Set (and the supervisor woken) once the session is over.
        self.over = threading.Event()

    def idle(self) -> bool:
        """No file open and no request being answered: a stop may close the
        channel now (a file's close is answered before its channel goes)."""
        # In this order: a close in progress has set ``answering`` before it
        # lowers ``open_files``, so seeing no file open and then no answer
        # pending means the close was answered.
        return not self.files.open_files and not self.answering

    def answered(self) -> None:
        self.wake()  # a stop waiting for the last file's close: its answer is out

    def finish_subsystem(self) -> None:
        """Before the client sees the channel close: the files it left open
        closed (each audited as cut off), the channel's slot given back, and
        exit status 0, as sshd sends when sftp-server exits (scp fails
        without it)."""
        try:
            self.files.ended = True
            for handle in list(self.file_table.values()):
                handle.close()
            self.conn.release(self.chanid)
            if not self.chan.closed:  # closed: the client went, or the server's stop
                try:
                    self.chan.send_exit_status(0)
                except FAILURES:
                    pass
            super().finish_subsystem()  # session_ended, the channel's close
        finally:
            self.over.set()
            self.wake()


class LocalFiles(paramiko.SFTPServerInterface):
    """SFTP requests as calls on the local filesystem, as sftp-server makes them."""

    def __init__(self, server: object, conn: Connection, wake: Callable[[], None]) -> None:
        super().__init__(server)
        self.conn = conn
        #: Told when a file closes (a stop waits for open files, no longer).
        self.wake = wake
        self.home = conn.login.home
        #: The session is over: a file still open was cut off, not closed.
        self.ended = False
        self.open_files = 0  # files open now (read by the supervisor's thread)
        #: Files, bytes and failures by direction, logged at the session's end.
        self.totals: dict[str, list[int]] = {}

    def path(self, name: str) -> str:
        """Where ``name`` is: relative to the session's home, or absolute."""
        return os.path.join(self.home, name) if name else self.home

    def session_ended(self) -> None:
        for direction, (files, size, failed) in sorted(self.totals.items()):
            self.conn.record.copied(direction, self.home, files, size, failed)

    def session_started(self) -> None:
        self.conn.record.log(logging.INFO, "%s: sftp session in %s", self.conn.peer, self.home,
                             event="subsystem", subsystem="sftp", error=None)
        self.conn.record.event("subsystem", subsystem="sftp", error=None)

    @_answers_errors
    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> OpenFile:
        mode = attr.st_mode & 0o7777 if attr.st_mode is not None else 0o666
        where = self.path(path)
        fd = os.open(where, flags | os.O_CLOEXEC | os.O_NOCTTY, mode)  # the umask applies
        self.open_files += 1
        return OpenFile(self, fd, where, flags)

    @_answers_errors
    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes]:
        entries: list[paramiko.SFTPAttributes] = []
        with os.scandir(self.path(path)) as names:
            for entry in names:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone since the listing
                entries.append(_Entry.of(st, entry.name))
        return entries

    @_answers_errors
    def stat(self, path: str) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.stat(self.path(path)))

    @_answers_errors
    def lstat(self, path: str) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.lstat(self.path(path)))

    @_answers_errors
    def remove(self, path: str) -> int:
        os.unlink(self.path(path))
        return paramiko.SFTP_OK

    @_answers_errors
    def rename(self, oldpath: str, newpath: str) -> int:
        """SFTP v3's rename, as sftp-server's: an existing target is an error,
        never replaced (checked, then renamed: the account is the server's
        own, so the window between crosses no privilege)."""
        new = self.path(newpath)
        if os.path.lexists(new):
            return paramiko.SFTP_FAILURE
        return self._rename(self.path(oldpath), new)

    @_answers_errors
    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._rename(self.path(oldpath), self.path(newpath))

    def _rename(self, old: str, new: str) -> int:
        """Renamed, and audited: a file is audited under the name it was
        written as, so a client that writes a part file and renames it into
        place (rshell's ssh:// copies, sftp's resumable puts) leaves the final
        name in the audit too."""
        os.rename(old, new)
        self.conn.record.event("rename", old=old, new=new)
        return paramiko.SFTP_OK

    @_answers_errors
    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        os.mkdir(self.path(path), attr.st_mode & 0o7777 if attr.st_mode is not None else 0o777)
        return paramiko.SFTP_OK

    @_answers_errors
    def rmdir(self, path: str) -> int:
        os.rmdir(self.path(path))
        return paramiko.SFTP_OK

    @_answers_errors
    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return change(self.path(path), attr)

    @_answers_errors
    def symlink(self, target_path: str, path: str) -> int:
        os.symlink(target_path, self.path(path))  # the target as given: relative to the link
        return paramiko.SFTP_OK

    @_answers_errors
    def readlink(self, path: str) -> bytes:
        return os.readlink(os.fsencode(self.path(path)))

    def canonicalize(self, path: str) -> bytes:
        """realpath, the last components allowed not to exist (as sftp-server's);
        bytes, so that a name that is not UTF-8 crosses unchanged."""
        return os.fsencode(os.path.realpath(self.path(path)))


def change(target: str | int, attr: paramiko.SFTPAttributes) -> int:
    """SETSTAT / FSETSTAT on a path or a descriptor, in sftp-server's order:
    size, permissions, times, owner (only what the client sent)."""
    if attr.st_size is not None:
        os.truncate(target, attr.st_size)
    if attr.st_mode is not None:
        os.chmod(target, attr.st_mode & 0o7777)
    if attr.st_atime is not None and attr.st_mtime is not None:
        os.utime(target, (attr.st_atime, attr.st_mtime))
    if attr.st_uid is not None and attr.st_gid is not None:
        os.chown(target, attr.st_uid, attr.st_gid)
    return paramiko.SFTP_OK


class OpenFile(paramiko.SFTPHandle):
    """One open file: reads and writes at the client's offsets, and the one
    audit event of the handle at its close.

    SFTP reads and writes at offsets, so the bytes that crossed need not be
    the file: the SHA-256 is given only when they were one run from offset 0
    (what ``sftp``/``scp`` do), and is None otherwise (a resumed or sparse
    transfer, an append), rather than a digest of something else."""

    def __init__(self, files: LocalFiles, fd: int, path: str, flags: int) -> None:
        super().__init__(flags)
        self.files, self.fd, self.where = files, fd, path
        self.append = bool(flags & os.O_APPEND)
        #: Opened to write: an upload even at 0 bytes (it created or truncated).
        self.writes = bool(flags & (os.O_WRONLY | os.O_RDWR))
        self.reads = False
        self.moved = 0
        self.digest = None if self.append else hashlib.sha256()
        self.error: str | None = None

    def read(self, offset: int, length: int) -> bytes | int:
        self.reads = True
        try:
            data = os.pread(self.fd, min(length, MAX_READ), offset)
        except OSError as exc:
            self.error = exc.strerror
            return status(exc)
        if data:
            self._count(offset, data)
        return data

    def write(self, offset: int, data: bytes) -> int:
        self.writes = True
        try:
            view = memoryview(data)
            while view:
                done = (os.write(self.fd, view) if self.append
                        else os.pwrite(self.fd, view, offset + len(data) - len(view)))
                view = view[done:]
        except OSError as exc:
            self.error = exc.strerror
            return status(exc)
        self._count(offset, data)
        return paramiko.SFTP_OK

    def _count(self, offset: int, data: bytes) -> None:
        if self.digest is not None and offset == self.moved:
            self.digest.update(data)
        else:
            self.digest = None
        self.moved += len(data)

    @_answers_errors
    def stat(self) -> paramiko.SFTPAttributes:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.fd))

    @_answers_errors
    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        return change(self.fd, attr)

    def close(self) -> None:
        """Close the file and report it, once (paramiko closes what the client
        left open at the session's end: such a file was cut off)."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        try:
            os.close(fd)
        except OSError as exc:
            self.error = self.error or exc.strerror
        self.files.open_files -= 1  # the supervisor is woken once the close is answered
        if self.files.ended:
            self.error = self.error or "session ended before the file was closed"
        if not (self.writes or self.reads):
            return  # opened, never read: nothing crossed
        direction = "upload" if self.writes else "download"
        self.files.conn.record.transferred(
            direction, self.where, self.moved,
            self.digest.hexdigest() if self.digest is not None else None, self.error)
        totals = self.files.totals.setdefault(direction, [0, 0, 0])
        totals[0 if self.error is None else 2] += 1
        totals[1] += self.moved


class _Entry(paramiko.SFTPAttributes):
    """A directory entry: its name as bytes (a name that is not UTF-8 crosses
    unchanged) and its ``ls -l`` line, which ``sftp``'s ``ls -l`` prints."""

    longname = b""

    @classmethod
    def of(cls, st: os.stat_result, name: str) -> _Entry:
        entry: _Entry = cls.from_stat(st, os.fsencode(name))
        when = time.localtime(st.st_mtime)
        recent = abs(time.time() - st.st_mtime) < 182 * 86400
        date = time.strftime("%b %e %H:%M" if recent else "%b %e  %Y", when)
        entry.longname = b"%s %3d %-8s %-8s %8d %s %s" % (
            stat.filemode(st.st_mode).encode(), st.st_nlink, _owner(st.st_uid),
            _group(st.st_gid), st.st_size, date.encode(), os.fsencode(name))
        return entry

    def asbytes(self) -> bytes:
        return self.longname


@functools.lru_cache(maxsize=64)
def _owner(uid: int) -> bytes:
    try:
        return pwd.getpwuid(uid).pw_name.encode()
    except KeyError:
        return str(uid).encode()


@functools.lru_cache(maxsize=64)
def _group(gid: int) -> bytes:
    try:
        return grp.getgrgid(gid).gr_name.encode()
    except KeyError:
        return str(gid).encode()
