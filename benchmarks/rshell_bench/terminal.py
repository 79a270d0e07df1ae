"""Issue 13's figures, mode all: a command on a remote terminal, side by side.

``keystroke``: one byte written to a remote ``stty raw -echo && exec cat``
on a pty, its echo read back, in ms per keystroke.  The remote program
echoes, as readline at a shell prompt or an editor does (the pty in raw
mode, so the byte reaches ``cat`` at once and comes back unchanged, and the
pty's own echo is off: one byte back per byte sent).  ``tty_output``: ``cat``
of a text file on a remote pty, read to the end by the client, in MB/s (the
pty's line discipline turns each ``\\n`` into ``\\r\\n``).

Owns both figures' contenders and samples: rshell's API (``conn.terminal``,
``conn.run(pty=True)``) and its backend driven in this thread (what the
Terminal's thread hand-off costs), the rshell CLI and OpenSSH's ``ssh``,
each ``-tt`` on a local pty of its own (``LocalPty``), asyncssh with a
``term_type``, the same program on a local pty with no network (the
floor of a keystroke, the ceiling of a pty's output), and a bare Python
relay over TLS and over TCP (bounds.KeyRelay: what Python and TLS cost a
keystroke before any protocol).  Samples go through the one sampler
(core.run_rounds).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import shlex
import statistics
import struct
import subprocess
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bounds import KEY_RELAY_WHAT, KeyRelay, make_cert
from .contenders import open_connection, rshell_stream
from .core import BenchError, MiB, Probe, Side, bind, progress, run_rounds
from .plans import MODES
from .procs import stop_process
from .stats import Target, all_figure, compare, spread

if TYPE_CHECKING:
    from .modes import AllRig

ISSUE13 = "issue 13"
#: The remote program a keystroke goes to; READY says the pty is raw.
ECHO = "stty raw -echo && printf READY && exec cat"
READY = b"READY"
KEY = b"x"
TERM, COLS, ROWS = "xterm", 80, 24
#: Every wait is bounded: a keystroke's echo, a start, a whole transfer.
WAIT = 20.0
TRANSFER_WAIT = 600.0
#: A line of the text file (80 bytes with its newline).
LINE = b"The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJKLMNOPQRSTUVW\n"

Batch = Callable[[int], list[float]]  # k keystrokes -> the seconds each took


# ---- a process on a local pty of its own ------------------------------------------------


class LocalPty:
    """``argv`` with a fresh local pty (80x24) as stdin, and as stdout unless
    ``stdout`` is given; this process holds the master.  A session of its
    own, so that nothing it starts can reach the terminal this benchmark may
    run in; its stderr kept in a file for a failure message."""

    def __init__(self, argv: list[str], env: dict[str, str] | None, what: str,
                 stdout: int | None = None) -> None:
        self.what = what
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.err = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, env=env, stdin=slave,
                                         stdout=slave if stdout is None else stdout,
                                         stderr=self.err, start_new_session=True)
        finally:
            os.close(slave)
        self.poll = select.poll()
        self.poll.register(self.master, select.POLLIN)

    def read(self, timeout: float = WAIT) -> bytes:
        """What the master has (b"" at the end of output), within ``timeout``."""
        if not self.poll.poll(timeout * 1e3):
            raise BenchError(f"{self.what}: no output in {timeout:g} s{self.stderr()}")
        try:
            return os.read(self.master, 65536)
        except OSError:  # EIO: every slave end closed
            return b""

    def read_until(self, marker: bytes) -> None:
        seen = b""
        while marker not in seen:
            data = self.read()
            if not data:
                raise BenchError(f"{self.what}: ended before {marker!r}: {seen[-200:]!r}"
                                 f"{self.stderr()}")
            seen += data

    def key(self) -> None:
        os.write(self.master, KEY)
        echo = self.read()
        if echo != KEY:
            raise BenchError(f"{self.what}: echo {echo!r}{self.stderr()}")

    def wait(self) -> None:
        """The whole process to its end, exit status 0, within TRANSFER_WAIT."""
        try:
            status = self.proc.wait(TRANSFER_WAIT)
            problem = f"exited {status}{self.stderr()}" if status else ""
        except subprocess.TimeoutExpired:
            problem = f"still running after {TRANSFER_WAIT:g} s{self.stderr()}"
        self.close()
        if problem:
            raise BenchError(f"{self.what}: {problem}")

    def stderr(self) -> str:
        self.err.seek(0)
        lines = self.err.read().decode(errors="replace").strip().splitlines()
        return f" ({lines[-1]})" if lines else ""

    def close(self) -> None:
        """Stop it if it still runs (SIGTERM, then SIGKILL), close the master."""
        stop_process(self.proc, 5.0)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self.err.close()


def ssh_tt(rig: AllRig, command: str) -> list[str]:
    assert rig.ssh is not None
    exe, *rest = rig.ssh.argv(command)
    return [exe, "-tt", *rest]


def rshell_tt(rig: AllRig, command: str) -> list[str]:
    return [str(rig.tool("rshell")), "-tt", rig.servers["tls_login"].address, "-c", command]


# ---- figure 1: keystroke echo -----------------------------------------------------------


def timed_keys(one: Callable[[], None]) -> Batch:
    def batch(k: int) -> list[float]:
        clock, times = time.perf_counter, []
        for _ in range(k):
            start = clock()
            one()
            times.append(clock() - start)
        return times
    return batch


def keystroke_probe(side: Side, k: int, batch: Batch, every: dict[str, list[float]]) -> Probe:
    """A sample: the mean of ``k`` keystrokes in a row, in ms; each keystroke
    kept in ``every`` for the per-keystroke spread (warm-up ones are not)."""
    kept = every.setdefault(side.name, [])

    def sample() -> float:
        times = batch(k)
        kept.extend(times)
        return sum(times) / len(times) * 1e3
    return sample, lambda: batch(k)


def pty_echo(argv: list[str], rig: AllRig, what: str,
             closers: list[Callable[[], Any]]) -> Batch:
    """A whole client (``ssh -tt``, ``rshell -tt``), or the program itself (the
    floor), on a local pty: a keystroke written to the pty as a user's, its
    echo read from it."""
    term = LocalPty(argv, rig.env, what)
    closers.append(term.close)
    term.read_until(READY)
    return timed_keys(term.key)


def relay_echo(rig: AllRig, tls: bool, closers: list[Callable[[], Any]]) -> Batch:
    """The keystroke relay (bounds.KeyRelay), its client on a local pty."""
    certs = None
    if tls:
        where = rig.workdir / "key-relay"
        where.mkdir(exist_ok=True)
        certs = make_cert(where)
    relay = KeyRelay(ECHO, certs)
    closers.append(relay.stop)
    return pty_echo(relay.client, rig, f"Python relay ({'TLS' if tls else 'TCP'})", closers)


def api_echo(conn: Any, closers: list[Callable[[], Any]]) -> Batch:
    """``conn.terminal``: ``write`` then ``read`` (the headline: rshell's API)."""
    term = conn.terminal(ECHO, term=TERM, size=(COLS, ROWS))
    closers.append(term.close)
    term.read_until(READY, timeout=WAIT)

    def one() -> None:
        term.write(KEY)
        echo = term.read(timeout=WAIT)
        if echo != KEY:
            raise BenchError(f"rshell terminal: echo {echo!r}")
    return timed_keys(one)


def backend_echo(address: str, closers: list[Callable[[], Any]]) -> Batch:
    """The same exchange with no thread, on a connection of its own: the
    keystroke into a pipe the backend's loop watches, the loop driven here
    (``Connection._exchange``, private)."""
    from rshell.client.api import terminal

    conn, _ = open_connection(address, MODES["tls"])
    closers.append(conn.close)
    r, w = os.pipe2(os.O_CLOEXEC)
    keys = os.fdopen(r, "rb", buffering=0)
    events = conn._exchange(ECHO, keys, None, None, None, terminal(TERM, (COLS, ROWS)))
    closers += [keys.close, lambda: os.close(w), events.close]  # run in reverse
    seen = b""
    while READY not in seen:
        seen += bytes(next(events)[1])

    def one() -> None:
        os.write(w, KEY)
        echo = bytes(next(events)[1])
        if echo != KEY:
            raise BenchError(f"rshell backend: echo {echo!r}")
    return timed_keys(one)


def asyncssh_echo(peer: Any, closers: list[Callable[[], Any]]) -> Batch:
    """asyncssh's process API with a ``term_type``: ``stdin.write`` then
    ``stdout.read``, on the peer's own loop; the batch is bounded as a whole
    (a timeout per keystroke would add a task to each)."""
    async def start() -> Any:
        proc = await peer.conn.create_process(ECHO, term_type=TERM, term_size=(COLS, ROWS),
                                              encoding=None)
        await asyncio.wait_for(proc.stdout.readuntil(READY), WAIT)
        return proc
    proc = peer.loop.run_until_complete(start())

    async def stop() -> None:
        proc.close()
        await asyncio.wait_for(proc.wait_closed(), WAIT)
    closers.append(lambda: peer.loop.run_until_complete(stop()))

    async def keys(k: int) -> list[float]:
        clock, times = time.perf_counter, []
        write, read = proc.stdin.write, proc.stdout.read
        for _ in range(k):
            start = clock()
            write(KEY)
            echo = await read(64)
            times.append(clock() - start)
            if echo != KEY:
                raise BenchError(f"asyncssh: echo {echo!r}")
        return times
    return lambda k: peer.loop.run_until_complete(asyncio.wait_for(keys(k), WAIT + k))


def started(side: Side, k: int, every: dict[str, list[float]],
            start: Callable[[], Batch]) -> Side:
    """``side`` bound to the batch ``start()`` opens, or failed if it cannot."""
    if side.error:  # its peer could not be had
        return side
    try:
        return bind(side, keystroke_probe(side, k, start(), every))
    except Exception as exc:  # a peer's own exceptions too: fail that side only
        side.error = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        progress(f"keystroke: {side.label} cannot start: {side.error}")
        return side


def peer_side(rig: AllRig, peer: str, side: Side) -> Side:
    """``side``, failed if its peer could not be had."""
    if getattr(rig, peer) is None:
        side.error = rig.errors.get(peer, "unavailable")
    return side


def keystroke(rig: AllRig) -> dict[str, Any]:
    """Echo round trips on terminals kept open for the whole figure, every
    contender a keystroke batch in turn: rshell's API against ssh -tt and
    asyncssh (target: lower), the rshell CLI against ssh (both whole clients
    on a local pty), the backend without the Terminal's thread, a local pty."""
    n, k = rig.plan.key_samples, rig.plan.key_batch
    every: dict[str, list[float]] = {}
    closers: list[Callable[[], Any]] = []
    shell, address = rig.shell_name, rig.servers["tls_login"].address
    sides = [
        (Side("local", "local pty", f"sh -c {ECHO!r} on a local pty, no network", n=n),
         lambda: pty_echo(["/bin/sh", "-c", ECHO], rig, "local pty", closers)),
        (Side("rshell_api", f"rshell API ({shell})", "t = conn.terminal(ECHO); t.write(b'x'); "
              "t.read(): one open connection", n=n),
         lambda: api_echo(rig.conns["tls_login"], closers)),
        (Side("rshell_backend", "rshell backend", "conn._exchange(ECHO, stdin=<pipe>, "
              "pty=...) driven in this thread: no Terminal thread", n=n),
         lambda: backend_echo(address, closers)),
        (Side("rshell_cli", f"rshell -tt ({shell})", "rshell -tt ADDR -c ECHO, whole client on "
              "a local pty", n=n), lambda: pty_echo(rshell_tt(rig, ECHO), rig,
                                                    "rshell -tt", closers)),
        (peer_side(rig, "ssh", Side("ssh", "ssh -tt (OpenSSH)", "ssh -tt ... 127.0.0.1 ECHO, "
                                    "whole client on a local pty", n=n)),
         lambda: pty_echo(ssh_tt(rig, ECHO), rig, "ssh -tt", closers)),
        (Side("relay_tls", "Python relay, TLS", KEY_RELAY_WHAT + "; TLS 1.3, as rshell",
              n=n), lambda: relay_echo(rig, True, closers)),
        (Side("relay_tcp", "Python relay, TCP", KEY_RELAY_WHAT + "; raw TCP", n=n),
         lambda: relay_echo(rig, False, closers)),
        (peer_side(rig, "asyncssh", Side("asyncssh", "asyncssh", "create_process(ECHO, "
                                         "term_type='xterm'); stdin.write(b'x'); await "
                                         "stdout.read(64)", n=n)),
         lambda: asyncssh_echo(rig.asyncssh, closers)),
    ]
    try:
        for side, start in sides:
            started(side, k, every, start)
        ordered = [side for side, _ in sides]
        progress(f"all: keystroke echo, {n} rounds of {k} keystrokes: "
                 + ", ".join(s.label for s in ordered))
        rounds = run_rounds(ordered, "keystroke", rig.plan.warmup)
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception as exc:  # noqa: BLE001  # the end of a side: say, go on
                progress(f"keystroke: closing a terminal: {type(exc).__name__}: {exc}")
    return keystroke_figure(rig, ordered, rounds, every)


def keystroke_figure(rig: AllRig, sides: list[Side], rounds: int,
                     every: dict[str, list[float]]) -> dict[str, Any]:
    by = {s.name: s for s in sides}
    for name, times in every.items():
        if times:
            by[name].extra["per_keystroke_ms"] = spread([t * 1e3 for t in times])
    api, ssh, cli = by["rshell_api"], by["ssh"], by["rshell_cli"]
    lower = [Target("<", 1.0, ISSUE13)]
    tls, tcp = by["relay_tls"], by["relay_tcp"]
    comparisons = [compare(api, ssh, lower), compare(api, by["asyncssh"], lower),
                   compare(cli, ssh, lower), compare(by["rshell_backend"], api, []),
                   compare(api, by["local"], []), compare(tls, ssh, []),
                   compare(tcp, ssh, []), compare(cli, tls, [])]
    per = [f"{s.label} {pk['median']:.3f} [{pk['p10']:.3f}-{pk['p90']:.3f}]" for s in sides
           if (pk := s.extra.get("per_keystroke_ms"))]
    notes = ["per keystroke, ms, median [p10-p90]: " + ", ".join(per)] if per else []
    if tls.samples and tcp.samples and cli.samples:
        crypto = statistics.median(tls.samples) - statistics.median(tcp.samples)
        ours = statistics.median(cli.samples) - statistics.median(tls.samples)
        notes.append(f"TLS in Python, per keystroke (relay TLS - relay TCP): "
                     f"{crypto * 1e3:+.0f} us; rshell's own (rshell -tt - relay TLS): "
                     f"{ours * 1e3:+.0f} us")
    if api.samples and by["rshell_backend"].samples:
        hand = statistics.median(api.samples) - statistics.median(by["rshell_backend"].samples)
        notes.append(f"the Terminal object's thread hand-off (API - backend): {hand * 1e3:+.0f} "
                     "us per keystroke")
    return all_figure("ms/keystroke", rounds, sides, comparisons, batch=rig.plan.key_batch,
                      command=ECHO, notes=notes)


# ---- figure 2: output through a terminal ------------------------------------------------


def text_file(path: Path, size: int) -> int:
    """``size`` bytes (rounded down to whole lines) of text lines; the bytes a
    pty delivers for it (each ``\\n`` becomes ``\\r\\n``)."""
    lines = max(1, size // len(LINE))
    block = LINE * max(1, MiB // len(LINE))
    with open(path, "wb") as f:
        left = lines
        while left:
            n = min(left, len(block) // len(LINE))
            f.write(block[: n * len(LINE)])
            left -= n
    return lines * (len(LINE) + 1)


class TtyOutput:
    """One file of ``size`` bytes and a small one for the warm-up, and the
    bytes each comes to through a pty."""

    def __init__(self, workdir: Path, size: int) -> None:
        self.path, self.warm_path = workdir / "tty-output.txt", workdir / "tty-warm.txt"
        self.bytes = text_file(self.path, size)
        self.warm_bytes = text_file(self.warm_path, min(size, 4 * MiB))
        self.size = self.path.stat().st_size

    def command(self, warm: bool) -> tuple[str, int]:
        return (f"cat {shlex.quote(str(self.warm_path if warm else self.path))}",
                self.warm_bytes if warm else self.bytes)


def mbps(out: TtyOutput, seconds_for: Callable[[str, int], float]) -> Probe:
    """``seconds_for(command, bytes)`` as MB/s of what came through the pty."""
    def sample() -> float:
        command, expected = out.command(False)
        return expected / seconds_for(command, expected) / 1e6
    return sample, lambda: seconds_for(*out.command(True))


def local_cat(rig: AllRig) -> Callable[[str, int], float]:
    """``cat`` on a local pty, its master read here: what a pty delivers at most."""
    def seconds(command: str, expected: int) -> float:
        start = time.perf_counter()
        term = LocalPty(shlex.split(command), rig.env, "local pty cat")
        got = 0
        try:
            while data := term.read(TRANSFER_WAIT):
                got += len(data)
        except BaseException:
            term.close()
            raise
        term.wait()
        elapsed = time.perf_counter() - start
        if got != expected:
            raise BenchError(f"local pty cat: {got} of {expected} bytes")
        return elapsed
    return seconds


def process_cat(argv: Callable[[str], list[str]], rig: AllRig,
                what: str) -> Callable[[str, int], float]:
    """A whole client, stdin a local pty, its output into /dev/null."""
    def seconds(command: str, expected: int) -> float:
        with open(os.devnull, "wb") as sink:
            start = time.perf_counter()
            LocalPty(argv(command), rig.env, what, stdout=sink.fileno()).wait()
            return time.perf_counter() - start
    return seconds


def api_cat(conn: Any) -> Callable[[str, int], float]:
    """``conn.run(command, pty=True, on_stdout=<count bytes>)``."""
    stream = rshell_stream(conn, pty=True, term=TERM, size=(COLS, ROWS))
    return lambda command, expected: stream(expected, command)


def asyncssh_cat(peer: Any) -> Callable[[str, int], float]:
    """asyncssh's session with a ``term_type``: the stream figure's, on a terminal."""
    return lambda command, expected: peer.stream(expected, command, term_type=TERM,
                                                 term_size=(COLS, ROWS))


def tty_output(rig: AllRig) -> dict[str, Any]:
    """``cat`` of a text file on a remote pty to the client, every contender in
    turn: rshell's API and the rshell CLI against ssh -tt (target: ahead),
    asyncssh for information, and the local pty's own ceiling."""
    plan = rig.plan
    n = plan.tty_samples
    out = TtyOutput(rig.workdir, plan.tty_size)
    shell = rig.shell_name
    sides = [
        bind(Side("local", "local pty", "cat FILE on a local pty, its master read here "
                  "(64 KiB reads), no network", n=n), mbps(out, local_cat(rig))),
        bind(Side("rshell_api", f"rshell API ({shell})", "conn.run('cat FILE', pty=True, "
                  "on_stdout=<count bytes>), one open connection", n=n),
             mbps(out, api_cat(rig.conns["tls_login"]))),
        bind(Side("rshell_cli", f"rshell -tt ({shell})", "rshell -tt ADDR -c 'cat FILE' > "
                  "/dev/null, stdin a local pty, whole process", n=n),
             mbps(out, process_cat(lambda c: rshell_tt(rig, c), rig, "rshell -tt cat"))),
        rig.bind_peer(Side("ssh", "ssh -tt (OpenSSH)", "ssh -tt ... 127.0.0.1 'cat FILE' > "
                           "/dev/null, stdin a local pty, whole process", n=n), "ssh",
                      lambda c: mbps(out, process_cat(lambda cmd: ssh_tt(rig, cmd), rig,
                                                      "ssh -tt cat"))),
        rig.bind_peer(Side("asyncssh", "asyncssh", "create_session(<count bytes>, 'cat FILE', "
                           "term_type='xterm'), one open connection to sshd", n=n),
                      "asyncssh", lambda p: mbps(out, asyncssh_cat(p))),
    ]
    progress(f"all: terminal output, {n} rounds of {out.size // MiB} MiB of text lines: "
             + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "terminal output", 1)
    by = {s.name: s for s in sides}
    api, cli, ssh = by["rshell_api"], by["rshell_cli"], by["ssh"]
    ahead = [Target(">", 1.0, ISSUE13)]
    comparisons = [compare(api, ssh, ahead), compare(cli, ssh, ahead),
                   compare(api, by["asyncssh"], []),
                   compare(api, by["local"], [], bound="ceiling")]
    notes = [f"{out.size} bytes of {len(LINE)}-byte lines; {out.bytes} bytes through the pty "
             "(\\n -> \\r\\n), the MB/s of every side counts those; ssh -tt and rshell -tt "
             "are whole processes (start and handshake included), the others one open "
             "connection"]
    return all_figure("MB/s", rounds, sides, comparisons, size_bytes=out.size,
                      tty_bytes=out.bytes, notes=notes)
