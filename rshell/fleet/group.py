"""``rshell.Group``: one command, or one copy, on many hosts from one process.

Hosts are run ``parallel`` at a time by as many threads, each opening its
host's ``Connection`` through the one client contract (so aliases, keys,
host-key pinning and both backends behave exactly as for one host), never a
process per host.  What stopped a host (it could not be reached or
authenticated, its connection broke) is that host's value, an
``RshellError``, and never stops the others.

Must not import rshell.server, rshell.exec, rshell.cli or click.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from rshell.client.api import Connection, connect, preload
from rshell.client.config import Config, load, resolve
from rshell.errors import ConnectionFailed, RshellError, UsageError
from rshell.fleet.targets import expand_all
from rshell.result import Copied, Result

if TYPE_CHECKING:
    from rshell.client.copy import Paths



class Outcome(Protocol):
    """What a host's work returns: a ``Result``, a ``Copied``, or the like."""

    @property
    def ok(self) -> bool: ...


T = TypeVar("T", bound=Outcome)
#: ``on_stdout(host, data)`` / ``on_stderr(host, data)``: output as it comes.
HostCallback = Callable[[str, bytes | memoryview], object]
#: ``on_done(host, value)``: a host's result (or its error), as soon as it has one.
OnDone = Callable[[str, Any], object]


class HostResults(dict[str, T | RshellError]):
    """host -> its ``Result`` (or ``Copied``), or the ``RshellError`` that stopped it;
    in the order the hosts were named."""

    @property
    def ok(self) -> bool:
        """Every host reached, and everything it ran succeeded."""
        return all(not isinstance(v, RshellError) and v.ok for v in self.values())

    @property
    def succeeded(self) -> list[str]:
        return [h for h, v in self.items() if not isinstance(v, RshellError) and v.ok]

    @property
    def failed(self) -> list[str]:
        """Hosts reached where the command (or a file) failed."""
        return [h for h, v in self.items() if not isinstance(v, RshellError) and not v.ok]

    @property
    def unreachable(self) -> list[str]:
        """Hosts that could not be reached or authenticated, or whose connection broke."""
        return [h for h, v in self.items() if isinstance(v, RshellError)]


class Group:
    """Many hosts, one interface: ``run``, ``put``, ``get``, as ``Connection`` has.

    ``targets`` is a target argument or a list of them (comma lists, node
    ranges, ``@group``, aliases, ``ssh://``); ``hosts_files`` add ``-H``
    files.  ``connect_options`` are ``rshell.connect``'s, for every host.
    Connections are opened on first use and kept until ``close`` (or the
    ``with`` block's end).
    """

    def __init__(self, targets: str | Sequence[str], *, parallel: int | None = None,
                 hosts_files: Sequence[str] = (), inventory: str | os.PathLike[str] | None = None,
                 config: Config | None = None, **connect_options: Any) -> None:
        config = config or load()
        if inventory is not None:
            from rshell.client.inventory import read_inventory

            config = config.merged(*read_inventory(inventory))
        self.config = config
        args = [targets] if isinstance(targets, str) else list(targets)
        self.hosts: list[str] = expand_all(args, config.groups, hosts_files)
        if not self.hosts:
            raise UsageError("no hosts to run on")
        self.parallel = parallel or config.parallel
        if self.parallel < 1:
            raise UsageError(f"parallel must be at least 1, not {self.parallel}")
        self._options = connect_options
        self._conns: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._preloaded = False
        raise_descriptor_limit(len(self.hosts) * 6 + 64)  # kept open: four a host

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (a command still running on one is terminated)."""
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()

    def send_signal(self, signum: int) -> None:
        """Deliver a signal to the command running on every host (Ctrl-C);
        safe from a signal handler."""
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            conn.send_signal(signum)

    def connection(self, host: str) -> Connection:
        """``host``'s open connection, made now if it has none (or lost it)."""
        with self._lock:
            conn = self._conns.get(host)
        if conn is not None and not conn.closed:
            return conn
        conn = connect(host, config=self.config, **self._options)
        with self._lock:
            self._conns[host] = conn
        return conn

    def each(self, work: Callable[[str, Connection], T], *, keep: bool = True,
             on_done: OnDone | None = None) -> HostResults[T]:
        """``work(host, connection)`` on every host, ``parallel`` at a time.

        ``keep=False`` closes each connection once its work is done, so a
        thousand hosts never hold more than ``parallel`` connections.
        """

        def one(host: str) -> T:
            try:
                conn = self.connection(host)
            except OSError as exc:  # a local failure (EMFILE): this host's, not all of them
                hint = (" (this client's limit: ulimit -n, or fewer hosts at once)"
                        if exc.errno in (errno.EMFILE, errno.ENFILE) else "")
                raise ConnectionFailed(
                    f"cannot connect to {host}: {exc.strerror or exc}{hint}") from None
            try:
                return work(host, conn)
            finally:
                if not keep:
                    with self._lock:
                        self._conns.pop(host, None)
                    conn.close()

        self._preload()
        return HostResults(fan_out(self.hosts, one, self.parallel, on_done))

    def _preload(self) -> None:
        """The backends' modules, imported here before the threads start."""
        if self._preloaded:
            return
        targets = [resolve(h, self.config).target for h in self.hosts]
        ssh = [t.startswith("ssh://") for t in targets]
        preload(native=not all(ssh), ssh=any(ssh))
        self._preloaded = True

    def run(self, command: str, *, on_stdout: HostCallback | None = None,
            on_stderr: HostCallback | None = None, on_done: OnDone | None = None,
            stdin: bytes | None = None, **run_options: Any) -> HostResults[Result]:
        """``command`` on every host (``Connection.run``'s options; ``stdin``
        only as bytes, since every host reads it).  Callbacks get the host
        first; each Result's ``host`` is the host as named here."""
        if stdin is not None and not isinstance(stdin, bytes | bytearray):
            raise UsageError("a group's stdin must be bytes: every host reads it")
        if run_options.get("check"):
            raise UsageError("check= is per host: look at the results' .failed")

        def work(host: str, conn: Connection) -> Result:
            result = conn.run(command, stdin=stdin, **run_options,
                              on_stdout=_bound(on_stdout, host),
                              on_stderr=_bound(on_stderr, host))
            return replace(result, host=host)

        return self.each(work, on_done=on_done)

    def put(self, local: Paths, remote: str, **copy_options: Any) -> HostResults[Copied]:
        """``Connection.put`` to every host; a host where a file failed holds
        its ``Copied`` with ``failures`` (not ``ok``)."""
        return self.each(lambda _host, conn: _copied(conn.put, local, remote, **copy_options))

    def get(self, remote: str | Sequence[str], local: str | os.PathLike[str],
            **copy_options: Any) -> HostResults[Copied]:
        """Each remote path from every host into the directory ``local``, as
        ``NAME.HOST`` (``syslog.web1``), so hosts never overwrite each other."""
        paths = [remote] if isinstance(remote, str) else list(remote)
        if not Path(local).is_dir():
            raise UsageError(f"{local}: not a directory (a group's files land in one)")

        def work(host: str, conn: Connection) -> Copied:
            total = Copied(0, 0, 0.0)
            for path in paths:
                target = Path(local) / f"{remote_name(path)}.{file_name(host)}"
                done = _copied(conn.get, path, target, **copy_options)
                total = Copied(total.files + done.files, total.bytes + done.bytes,
                               total.duration + done.duration,
                               total.failures + done.failures)
            return total

        return self.each(work)


def fan_out(items: Sequence[str], work: Callable[[str], T], parallel: int,
            on_done: OnDone | None = None) -> dict[str, T | RshellError]:
    """``work(item)`` for every item on at most ``parallel`` threads; an
    ``RshellError`` is that item's value; anything else is raised here once
    every thread has ended.  In ``items``' order."""
    results: dict[str, T | RshellError] = {}
    pending = iter(items)
    lock = threading.Lock()
    crashed: list[BaseException] = []

    def worker() -> None:
        while not crashed:
            with lock:
                item = next(pending, None)
            if item is None:
                return
            value: T | RshellError
            try:
                value = work(item)
            except RshellError as exc:
                value = exc
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                crashed.append(exc)
                return
            results[item] = value
            if on_done is not None:
                try:
                    on_done(item, value)
                except BaseException as exc:  # noqa: BLE001 - likewise
                    crashed.append(exc)
                    return

    threads = [threading.Thread(target=worker, name=f"fleet {n}", daemon=True)
               for n in range(min(parallel, len(items)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if crashed:
        raise crashed[0]
    return {item: results[item] for item in items}


def file_name(host: str) -> str:
    """A host as one file-name component: ``ssh://u@h:22`` -> ``u@h:22``."""
    name = host.removeprefix("ssh://").replace("/", "_")
    return name if name not in ("", ".", "..") else f"_{name}"


def remote_name(path: str) -> str:
    """The last component of a remote path, as a download names its file."""
    name = posixpath.basename(path.rstrip("/"))
    return name if name not in ("", ".", "..", "~") else "home"


def raise_descriptor_limit(wanted: int) -> None:
    """Lift the soft limit on open files towards ``wanted`` (up to the hard
    limit), as a fleet holds a socket and a few descriptors per host."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _bound(callback: HostCallback | None,
           host: str) -> Callable[[bytes | memoryview], object] | None:
    if callback is None:
        return None
    return lambda data: callback(host, data)


def _copied(copy: Callable[..., Copied], *args: Any, **kwargs: Any) -> Copied:
    """A copy's outcome as a value: a failed file is a host that failed, not
    one unreachable (``CopyFailed`` carries what was copied)."""
    from rshell.errors import CopyFailed

    try:
        return copy(*args, **kwargs)
    except CopyFailed as exc:  # refused as a whole (no such folder): one failure
        return exc.copied or Copied(0, 0, 0.0, (("", str(exc)),))
