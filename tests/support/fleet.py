"""Many loopback "hosts" for the fleet tests (issue 15, SPEC §11): a few
``rshell-server`` processes with hundreds of ``--bind 127.0.0.1:0`` each,
every listener one host; hosts that fail in known ways (a port where nothing
listens, a listener that never speaks); and the fleet's prefixed output read
back per host.

A real fleet is a thousand machines; here it is a thousand listeners of four
processes sharing one ``RSHELL_HOME`` (one host key, one authorized_keys), so
that a thousand TLS handshakes, authentications and commands are real while
the machine runs four servers, not a thousand.
"""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import wait_until
from tests.support.servers import ServerProcess

#: A native listener's log line (not ``ssh listening on``).
LISTENING = re.compile(r"INFO listening on ([^\s\"]+)")
#: Spawn to every listener logged: 0.25 s for 300 here; generous for a loaded machine.
START_WAIT = 30.0
#: What a rig's servers get beyond their binds: room for every connection a
#: client may open at once (--parallel up to 1024, on listeners of one
#: process), and no per-source penalties, since every host of the rig is the
#: same source to the server (127.0.0.1): a fault test's abandoned
#: handshakes to some hosts must not shut the client out of the others, as
#: it would not on a fleet of distinct machines.
RIG_FLAGS = ("--max-connections", "1100", "--max-unauthenticated", "1100",
             "--per-source-penalties", "no")

StartServer = Callable[..., ServerProcess]


@dataclass
class Hosts:
    """One server process and the addresses it serves (each a host)."""

    server: ServerProcess
    addresses: list[str]


def binds(count: int) -> list[str]:
    return [arg for _ in range(count) for arg in ("--bind", "127.0.0.1:0")]


def serve(start_server: StartServer, count: int, *flags: str) -> Hosts:
    """A server listening on ``count`` loopback ports (the fixture adds the
    first bind), once every listener is up.  Its host key is pinned for the
    first address only (the fixture's doing): see ``pin``."""
    srv = start_server(*binds(count - 1), *RIG_FLAGS, *flags)
    assert wait_until(lambda: len(LISTENING.findall(srv.log)) >= count, START_WAIT), srv.log
    addresses = LISTENING.findall(srv.log)
    assert len(set(addresses)) == count, "port 0 gave two listeners the same port"
    return Hosts(srv, addresses)


def serve_many(start_server: StartServer, counts: Sequence[int],
               flags: Sequence[Sequence[str]] | None = None) -> list[Hosts]:
    """Servers with ``counts[i]`` listeners each (``flags[i]`` their own
    flags).  The first starts alone (it makes the home's keys, which the
    others then share); the rest start at once."""
    flags = flags or [()] * len(counts)
    first = serve(start_server, counts[0], *flags[0])
    with ThreadPoolExecutor(max(1, len(counts) - 1)) as pool:
        rest = list(pool.map(lambda n: serve(start_server, counts[n], *flags[n]),
                             range(1, len(counts))))
    return [first, *rest]


def rig(home: Path, start_server: StartServer, counts: Sequence[int],
        flags: Sequence[Sequence[str]] | None = None) -> list[Hosts]:
    """``serve_many``, and every address pinned in the client's known_hosts."""
    servers = serve_many(start_server, counts, flags)
    for s in servers:
        pin(home, s.addresses[1:], s.server.fingerprint)  # the fixture pinned the first
    return servers


def home_with(path: Path, **files: str) -> Path:
    """A new folder for a server's ``--home`` holding ``files`` (name=text):
    its hosts' commands start there, so a marker tells them apart."""
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def pin(home: Path, addresses: Sequence[str], fingerprint: str) -> None:
    """``addresses`` pinned to ``fingerprint`` in the client's known_hosts,
    in one write (the first pin of an address is the one that counts)."""
    with open(home / "known_hosts", "a") as f:
        f.write("".join(f"{a} {fingerprint}\n" for a in addresses))


def hosts_file(path: Path, hosts: Sequence[str]) -> str:
    """A ``-H`` file naming ``hosts``, one a line, with a comment among them."""
    path.write_text("# fleet under test\n" + "".join(f"{h}\n" for h in hosts))
    return str(path)


def closed_port() -> str:
    """A loopback address where nothing listens (see ``closed_ports``)."""
    return closed_ports(1)[0]


def closed_ports(count: int) -> list[str]:
    """``count`` distinct loopback addresses where nothing listens: free now,
    and below the ephemeral range, so no port-0 bind made meanwhile (a
    silent listener, a server) can take one.  (Ports bound with port 0 and
    closed again can come back twice, or be handed to the next port-0 bind:
    a "down" host that was a duplicate, or listening, made a run of 100
    hosts count 99.)"""
    chosen: set[int] = set()
    for _ in range(100 * count):
        port = random.randrange(24000, 32000)
        if port in chosen:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.add(port)
        if len(chosen) == count:
            return [f"127.0.0.1:{port}" for port in sorted(chosen)]
    raise AssertionError(f"no {count} free ports")


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive loopback ports free now, below the
    ephemeral range (so the port-0 binds of other servers do not take them
    meanwhile): for a node range in the port, ``127.0.0.1:[A-B]``."""
    for _ in range(200):
        base = random.randrange(24000, 32000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no run of {count} free ports")


@contextmanager
def silent_listeners(count: int) -> Iterator[list[str]]:
    """Loopback addresses that take a TCP connection (the kernel completes
    it: they listen) and never say a word: the handshake can only time out."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
            s.listen(16)
        yield [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def stderr_lines(stderr: bytes) -> bytes:
    """A fleet's stderr without its last line (the summary)."""
    return stderr[: stderr.rstrip(b"\n").rfind(b"\n") + 1]


def by_host(data: bytes, hosts: Sequence[str]) -> dict[str, list[bytes]]:
    """A fleet's prefixed lines, per host, in the order they came.

    Every line must carry a prefix of the run's one width (``HOST:`` padded
    to the longest name plus two), so the text after it starts in the same
    column on every line; a line that does not is a failure here."""
    assert data == b"" or data.endswith(b"\n"), f"last line not ended: {data[-200:]!r}"
    width = max(len(h) for h in hosts) + 2
    known = set(hosts)
    lines: dict[str, list[bytes]] = {}
    for line in data[:-1].split(b"\n") if data else ():
        prefix = line[:width].decode(errors="replace")
        host = prefix.rstrip(" ")[:-1]
        assert host in known and prefix == f"{host}:".ljust(width), \
            f"line without a host's aligned prefix: {line[:200]!r}"
        lines.setdefault(host, []).append(line[width:])
    return lines


_SUMMARY = re.compile(r"rshell: (\d+) hosts: (\d+) succeeded"
                      r"(?:; (\d+) failed: (\S+))?(?:; (\d+) unreachable: (\S+))?")


@dataclass
class Summary:
    """The fleet's last line on stderr, read back: counts and host sets
    (the folded lists expanded again)."""

    total: int
    succeeded: int
    failed: list[str]
    unreachable: list[str]


def summary(stderr: bytes) -> Summary:
    """The one summary line of a fleet run's stderr (its last line)."""
    from rshell.fleet.targets import expand

    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    found = _SUMMARY.fullmatch(last)
    assert found, f"no summary as the last line: {text[-2000:]}"
    total, ok, n_failed, failed, n_unreachable, unreachable = found.groups()
    summary = Summary(int(total), int(ok), expand(failed) if failed else [],
                      expand(unreachable) if unreachable else [])
    assert len(summary.failed) == int(n_failed or 0), last
    assert len(summary.unreachable) == int(n_unreachable or 0), last
    return summary
