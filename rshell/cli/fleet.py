"""``rshell`` on several targets: one command (or a batch) on every host, and
how their output is shown.

The hosts run through ``rshell.Group`` (fleet.group), in this one process.
Output is one of: live lines prefixed ``HOST: `` (stdout to stdout, stderr
to stderr, each line written whole under one lock, so lines from different
hosts never mix); ``--gather`` (identical stdouts printed once under the
folded hosts that gave them, clush -b's style); ``--out-dir`` (HOST.out and
HOST.err, written as they come); ``--json`` (one object per host and
command).  At the end a summary on stderr; the exit status is SPEC §11's.

Must not import click, rshell.server or rshell.exec.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rshell.cli.output import error_line
from rshell.client.api import Connection
from rshell.client.screen import visible
from rshell.errors import EXIT_CONNECTION, RshellError, UsageError
from rshell.fleet.group import Group, HostResults, file_name
from rshell.fleet.targets import fold
from rshell.result import Result

#: Past this much of a line without a newline, what came is written as a line.
MAX_LINE = 1 << 20
#: Most stdin a fleet command may be given (every host gets all of it).
MAX_STDIN = 64 << 20
_COLOURS = (b"\x1b[32m", b"\x1b[33m", b"\x1b[34m", b"\x1b[35m", b"\x1b[36m", b"\x1b[31m")


@dataclass
class HostBatch:
    """A host's batch: its results, in order; ``ok`` when every command was."""

    results: list[Result]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


class _Writer:
    """Whole writes to one descriptor, one at a time; a reader gone (EPIPE)
    silences it and calls ``on_broken`` once (the fleet then stops its
    commands, as a pipe would, and exits 141)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False
        self.on_broken: Callable[[], object] | None = None

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.broken:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self.fd, view):]
            except BrokenPipeError:
                self.broken = True
                if self.on_broken is not None:
                    self.on_broken()


class _Lines:
    """One host's stream cut into whole lines, each written with its prefix."""

    __slots__ = ("writer", "prefix", "pending")

    def __init__(self, writer: _Writer, prefix: bytes) -> None:
        self.writer, self.prefix, self.pending = writer, prefix, b""

    def __call__(self, data: bytes | memoryview) -> None:
        data = self.pending + bytes(data)
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) < MAX_LINE:
            self.pending = data
            return
        body, self.pending = (data[:cut], data[cut:]) if cut else (data + b"\n", b"")
        self.writer.write(self.prefix + body[:-1].replace(b"\n", b"\n" + self.prefix) + b"\n")

    def flush(self) -> None:
        if self.pending:
            self.pending, rest = b"", self.pending
            self.writer.write(self.prefix + rest + b"\n")


class Output:
    """The default: live prefixed lines, names aligned, a colour each on a terminal."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self.out, self.err = _Writer(1), _Writer(2)
        width = max(len(visible(h)) for h in hosts) + 2
        self._prefix: dict[str, tuple[bytes, bytes]] = {}
        paint = (_colour_wanted(1), _colour_wanted(2))
        for n, host in enumerate(hosts):
            # A name from a file (an inventory, -H) is shown, never obeyed.
            text = f"{visible(host)}:".ljust(width).encode("utf-8", "surrogateescape")
            coloured = _COLOURS[n % len(_COLOURS)] + text + b"\x1b[0m"
            self._prefix[host] = (coloured if paint[0] else text, coloured if paint[1] else text)
        #: Each streaming host's line cutters, flushed when it ends.
        self._streams: dict[str, tuple[_Lines, ...]] = {}

    def streams(self, host: str) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
        out, err = self._prefix[host]
        pair = (_Lines(self.out, out), _Lines(self.err, err))
        self._streams[host] = pair
        return pair

    def ended(self, host: str) -> None:
        for lines in self._streams.pop(host, ()):
            lines.flush()

    def unreachable(self, host: str, error: RshellError, commands: Sequence[str]) -> None:
        """``host`` could not be reached (or its connection broke): one line."""
        self.ended(host)
        self.say(host, f"rshell: {visible(str(error))}")

    def say(self, host: str, line: str) -> None:
        """A line of ours about ``host`` (made visible already), on stderr
        with its prefix."""
        self.err.write(self._prefix[host][1] + f"{line}\n".encode("utf-8", "surrogateescape"))

    def finish(self, results: HostResults[Any]) -> None:
        pass


class Gathered(Output):
    """``--gather``: each distinct stdout once, under the hosts that gave it;
    stderr stays live and prefixed."""

    def __init__(self, hosts: Sequence[str]) -> None:
        super().__init__(hosts)
        self._kept: dict[str, list[bytes]] = {}
        self._order = {h: n for n, h in enumerate(hosts)}
        self._outputs: dict[bytes, tuple[bytes, list[str]]] = {}
        self._lock = threading.Lock()

    def streams(self, host: str) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
        kept = self._kept.setdefault(host, [])
        err = self._streams[host] = (_Lines(self.err, self._prefix[host][1]),)
        return (lambda data: kept.append(bytes(data))), err[0]

    def ended(self, host: str) -> None:
        super().ended(host)
        data = b"".join(self._kept.pop(host, ()))
        digest = hashlib.sha256(data).digest()
        with self._lock:
            self._outputs.setdefault(digest, (data, []))[1].append(host)

    def finish(self, results: HostResults[Any]) -> None:
        first = self._order.__getitem__
        groups = sorted(self._outputs.values(), key=lambda o: min(map(first, o[1])))
        for data, hosts in groups:
            hosts.sort(key=self._order.__getitem__)
            if not data and all(isinstance(results.get(h), RshellError) for h in hosts):
                continue  # unreachable: said already, and in the summary
            title = visible(fold(hosts)) + (f" ({len(hosts)})" if len(hosts) > 1 else "")
            rule = "-" * max(15, min(len(title), 79))
            head = f"{rule}\n{title}\n{rule}\n".encode("utf-8", "surrogateescape")
            self.out.write(head + data + (b"" if not data or data.endswith(b"\n") else b"\n"))


class OutDir(Output):
    """``--out-dir DIR``: DIR/HOST.out and DIR/HOST.err, written as output comes."""

    def __init__(self, hosts: Sequence[str], directory: str) -> None:
        super().__init__(hosts)
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make {directory}: {exc.strerror or exc}") from None
        self._files: dict[str, list[Any]] = {}

    def streams(self, host: str) -> tuple[Callable[[Any], None], Callable[[Any], None]]:
        if host not in self._files:
            name = file_name(host)
            self._files[host] = [open(self.dir / f"{name}.{kind}", "wb")  # noqa: SIM115
                                 for kind in ("out", "err")]
        out, err = self._files[host]
        return out.write, err.write

    def ended(self, host: str) -> None:
        for f in self._files.pop(host, ()):
            f.close()


class Json(Output):
    """``--json``: one object per host and command on stdout (the Result
    keeps the output: no callbacks)."""

    def streams(self, host: str) -> tuple[Any, Any]:
        return None, None

    def result(self, result: Result) -> None:
        from rshell.cli.output import result_json

        self.out.write(result_json(result).encode() + b"\n")

    def ended(self, host: str) -> None:
        pass

    def unreachable(self, host: str, error: RshellError, commands: Sequence[str]) -> None:
        """Said on stderr, and an object for the first command not run (with
        ``error``), so a script reading stdout has one for every host."""
        super().unreachable(host, error, commands)
        if commands:
            self.result(Result(commands[0], None, error=str(error), host=host))


def run_on_fleet(targets: list[str], *, hosts_files: Sequence[str], inventory: str | None,
                 parallel: int | None, command: str | None, lines: Any, gather: bool,
                 out_dir: str | None, as_json: bool, fail_fast: bool, quiet: bool,
                 timeout: float | None, connect: dict[str, Any]) -> int:
    """``rshell TARGETS [-c CMD | -f FILE | the prompt]`` on several hosts."""
    from rshell.cli.common import forward_sigint, warn

    if gather + (out_dir is not None) + as_json > 1:
        raise UsageError("--gather, --out-dir and --json are three outputs: choose one")
    if not connect.get("tls", True) or not connect.get("auth", True):
        warn("--no-tls/--no-auth on every host of the fleet")
    stdin = read_stdin() if command is not None else None
    group = Group(targets, parallel=parallel, hosts_files=hosts_files, inventory=inventory,
                  passphrase=_OnePassphrase(), on_warning=warn, **connect)
    with group, forward_sigint(group.send_signal) as forward:
        if command is None and lines is None:
            return prompt(group, timeout=timeout, quiet=quiet)
        output: Output
        if gather:
            output = Gathered(group.hosts)
        elif out_dir is not None:
            output = OutDir(group.hosts, out_dir)
        else:
            output = Json(group.hosts) if as_json else Output(group.hosts)
        output.out.on_broken = lambda: forward.send(signal.SIGPIPE)
        status = run_fleet(group, [command] if command is not None else None, output=output,
                           fail_fast=fail_fast, quiet=quiet, timeout=timeout, stdin=stdin,
                           lines=lines)
        return 141 if output.out.broken else status


class _OnePassphrase:
    """A key's passphrase asked once on the terminal for the whole fleet,
    not once per host from as many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, str | None] = {}

    def __call__(self, prompt: str) -> str | None:
        from rshell.cli.common import ask_passphrase

        with self._lock:
            if prompt not in self._answers:
                self._answers[prompt] = ask_passphrase(prompt)
            return self._answers[prompt]


def run_fleet(group: Group, commands: Sequence[str] | None, *, output: Output,
              fail_fast: bool, quiet: bool, timeout: float | None,
              stdin: bytes | None = None, lines: Any = None, keep: bool = False,
              brief: bool = False) -> int:
    """Every host runs ``commands`` (or the batch ``lines``, read once, all
    of it, before any host starts) on its own connection, in order.
    ``keep``: the connections stay open for more; ``brief``: a summary only
    when something went wrong (the prompt's)."""
    todo = list(commands) if commands is not None else list(lines or ())
    if not todo:
        return 0
    progress = _Progress(len(group.hosts)) if _progress_wanted(output) else None
    json_out = output if isinstance(output, Json) else None

    def work(host: str, conn: Connection) -> Result | HostBatch:
        out, err = output.streams(host)
        done: list[Result] = []
        try:
            for command in todo:
                result = conn.run(command, stdin=stdin, timeout=timeout, on_stdout=out,
                                  on_stderr=err)
                result = replace(result, host=host)
                done.append(result)
                if json_out is not None:
                    json_out.result(result)
                line = None if quiet else error_line(result)  # one host's rule
                if line is not None:
                    output.say(host, line)
                if fail_fast and not result.ok or output.out.broken:
                    break
        finally:
            output.ended(host)
        return done[0] if commands is not None and len(done) == 1 else HostBatch(done)

    def on_done(host: str, value: object) -> None:
        if isinstance(value, RshellError):
            output.unreachable(host, value, todo)
        if progress is not None:
            progress.step()

    try:
        results = group.each(work, keep=keep, on_done=on_done)
    finally:
        if progress is not None:
            progress.clear()
    output.finish(results)
    if not quiet and not (brief and results.ok):
        summarize(results)
    return fleet_status(results)


def fleet_status(results: HostResults[Any]) -> int:
    """SPEC §11: 0 if everything succeeded everywhere; 255 if a host could
    not be reached or authenticated; else 1."""
    if results.unreachable:
        return EXIT_CONNECTION
    return 0 if results.ok else 1


def prompt(group: Group, *, timeout: float | None, quiet: bool) -> int:
    """``rshell @web`` on a terminal: each line runs on every host (each with
    its own connection and ``cd``), its output gathered; the status is the
    last line's."""
    import readline  # noqa: F401 - line editing for input()

    label = visible(fold(group.hosts))
    label = label if len(label) <= 30 else f"{len(group.hosts)} hosts"
    status = 0
    while True:
        try:
            line = input(f"rshell {label}> ")
        except EOFError:
            _to_stderr("\n")
            return status
        except KeyboardInterrupt:
            _to_stderr("\n")
            continue
        if line.strip() in ("exit", "logout"):
            return status
        if line.strip():
            status = run_fleet(group, [line], output=Gathered(group.hosts), fail_fast=False,
                               quiet=quiet, timeout=timeout, keep=True, brief=True)


def summarize(results: HostResults[Any]) -> None:
    """``rshell: 100 hosts: 97 succeeded; 1 failed: web3; 2 unreachable: web[07-08]``."""
    parts = [f"{len(results.succeeded)} succeeded"]
    if results.failed:
        parts.append(f"{len(results.failed)} failed: {fold(results.failed)}")
    if results.unreachable:
        parts.append(f"{len(results.unreachable)} unreachable: {fold(results.unreachable)}")
    try:
        sys.stderr.write(f"rshell: {len(results)} hosts: {visible('; '.join(parts))}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def read_stdin() -> bytes | None:
    """A fleet command's stdin: all of piped stdin, once, for every host."""
    if sys.stdin is None or sys.stdin.isatty():
        return None
    data = sys.stdin.buffer.read(MAX_STDIN + 1)
    if len(data) > MAX_STDIN:
        raise UsageError(f"stdin for a fleet command is capped at {MAX_STDIN >> 20} MiB "
                         "(every host gets all of it); copy a file with rshell cp instead")
    return data


class _Progress:
    """``rshell: 37/100 hosts done`` on a terminal's stderr, redrawn at most 10 times a second."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.shown = total, 0, 0.0
        self.lock = threading.Lock()

    def step(self) -> None:
        with self.lock:
            self.done += 1
            now = time.monotonic()
            if now - self.shown >= 0.1 or self.done == self.total:
                self.shown = now
                _to_stderr(f"\rrshell: {self.done}/{self.total} hosts done\x1b[K")

    def clear(self) -> None:
        with self.lock:
            _to_stderr("\r\x1b[K")


def _to_stderr(text: str) -> None:
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def _progress_wanted(output: Output) -> bool:
    """Where output is not streamed to the terminal, and stderr is one."""
    return isinstance(output, Gathered | OutDir | Json) and _isatty(2)


def _colour_wanted(fd: int) -> bool:
    return _isatty(fd) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
