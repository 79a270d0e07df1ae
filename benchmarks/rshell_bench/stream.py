"""Figure 2, the stream: ``tp_size`` bytes (1 GiB in a full run) of a
generator command's output, in MB/s.

Owns the figure in every mode: rshell against a raw Python TCP/TLS transfer
and the relay ceiling (modes plain, tls and all), rshell's SSH listener
against sshd read by the same paramiko client (mode ssh), and in mode all
the rshell CLI against OpenSSH's ``ssh`` and rshell against asyncssh and
paramiko; the samples every one of them takes, and the figure's notes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bounds import RELAY_PIPE, Output, RawPeer, make_cert
from .contenders import rshell_stream
from .core import MiB, Probe, Side, bind, progress, run_rounds
from .peers import SSH_RECV, ExitTally, paramiko_stream
from .plans import Mode, Plan, targets
from .procs import run_cli
from .stats import ISSUE6, Target, all_figure, bound_row, compare, summarize, versus

if TYPE_CHECKING:
    from .modes import AllRig


# ---- what one sample is -----------------------------------------------------------------


def timed(side: Side, stream: Callable[[int, str], float], out: Output) -> Probe:
    """``stream(bytes, command)`` -> seconds, as MB/s samples, recording this
    process's CPU per second of transfer (near 1.0: the client set the pace)."""
    cpu: list[float] = side.extra.setdefault("client_cpu_per_s", [])

    def sample() -> float:
        cpu0 = time.process_time()
        seconds = stream(out.size, out.command)
        cpu.append((time.process_time() - cpu0) / seconds)
        return out.size / seconds / 1e6
    return sample, lambda: stream(out.small, out.warm_command)


def raw(peer: RawPeer, out: Output, relay: bool) -> Probe:
    """The raw transfer from a buffer, or (``relay``) the relay ceiling."""
    cmd, warm = (out.command, out.warm_command) if relay else ("", "")
    return (lambda: out.size / peer.transfer(out.size, cmd) / 1e6,
            lambda: peer.transfer(out.small, warm))


def whole_process(argv: Callable[[str], list[str]], env: dict[str, str], what: str,
                  out: Output) -> Probe:
    """A whole process writing the stream into /dev/null, handshake and all."""
    return (lambda: out.size / run_cli(argv(out.command), env, what) / 1e6,
            lambda: run_cli(argv(out.warm_command), env, what))


def relay_row(base: Side, relay: Side, rsh: Side, command: str,
              socket_what: str) -> dict[str, Any]:
    """rshell against the relay ceiling (informational, no target), and the
    ceiling against the raw transfer (what the pipe hop alone costs)."""
    what = (f"{command!r} into a {RELAY_PIPE // MiB} MiB pipe, relayed by a sender "
            f"process (readv into a {RELAY_PIPE // MiB} MiB buffer, sendall) over a "
            f"{socket_what} with TCP_NODELAY; receiver: recv_into")
    row = bound_row(relay, base, rsh, what, "relay", "(ceiling)")
    return {k: row[k] for k in ("what", "relay", "ratio", "paired_ratio", "of_baseline",
                                "target")}


# ---- modes plain and tls ----------------------------------------------------------------


def native(conn: Any, mode: Mode, plan: Plan, workdir: Path, generator: str,
           conn_info: dict[str, str]) -> dict[str, Any]:
    """rshell's output counted by a callback, against the same byte count over
    a raw Python socket (TCP, or TLS 1.3 in TLS mode), and against the relay
    ceiling: the same command's output relayed pipe -> socket by a minimal
    loop over the same kind of socket (what any pipe-based server can reach)."""
    out = Output.pick(plan.tp_size, generator, 64 * MiB)
    probe = out.probes[out.name]
    progress(f"{mode.name}: generator {out.name!r}: {probe['pipe_MBps']:.0f} MB/s into a "
             f"pipe, {probe['devnull_MBps']:.0f} MB/s into /dev/null")
    peer = RawPeer(make_cert(workdir) if mode.client_tls else None)
    try:
        n = plan.tp_samples
        rsh = Side("rshell", "rshell", "", n=n)
        sides = [bind(Side("raw", "raw", "", n=n), raw(peer, out, False)),
                 bind(Side("relay", "relay ceiling", "", n=n), raw(peer, out, True)),
                 bind(rsh, timed(rsh, rshell_stream(conn), out))]
        progress(f"{mode.name}: throughput, {n} x {out.size // MiB} MiB each: "
                 "raw, relay ceiling, rshell")
        run_rounds(sides, "throughput", 1, strict=True)
    finally:
        peer.stop()
    base, relay = sides[:2]
    socket_what = ("raw Python TLS 1.3 loopback socket" if mode.client_tls
                   else "raw Python TCP loopback socket")
    result = versus(
        base, rsh, targets("throughput", mode.name), "MB/s", size_bytes=out.size,
        baseline_what=socket_what
        + " (sender process: sendall from a 1 MiB buffer; receiver: recv_into)",
        rshell_what=f"conn.run({out.command!r}, on_stdout=<count bytes>)",
        generator=out.as_json())
    result["relay_ceiling"] = relay_row(base, relay, rsh, out.command, socket_what)
    notes = native_notes(result, probe["pipe_MBps"])
    if mode.client_tls:
        result["tls"] = {"baseline": peer.info, "rshell": conn_info}
        if conn_info and peer.info and conn_info.get("cipher") != peer.info.get("cipher"):
            notes.append(f"ciphers differ: rshell {conn_info.get('cipher')}, baseline "
                         f"{peer.info.get('cipher')}")
    result["notes"] = notes
    return result


def native_notes(result: dict[str, Any], ceiling: float) -> list[str]:
    """When the generator, or the pipe hop itself, may be what limits rshell."""
    notes = []
    if result["rshell"]["median"] >= 0.8 * ceiling:
        notes.append(f"rshell reached {result['rshell']['median'] / ceiling:.0%} of what the "
                     f"generator alone delivers into a pipe ({ceiling:.0f} MB/s): the generator "
                     "may be the bottleneck")
    reach = result["relay_ceiling"]["of_baseline"]
    beyond = [f"{t['op']} {t['value']}" + (" (later)" if i else "")
              for i, t in enumerate(result["targets"]) if reach < t["value"]]
    if beyond:
        notes.append(f"the relay ceiling reaches {reach:.2f} of the raw transfer, below the "
                     f"target {' and '.join(beyond)}: no server that runs the command "
                     "behind a pipe can meet it on this machine")
    return notes


# ---- mode ssh ---------------------------------------------------------------------------


def ssh(clients: dict[str, Any], plan: Plan, generator: str) -> dict[str, Any]:
    """A stream of command output read with channel.recv(1 MiB), in MB/s; and the
    client's CPU (user+system, all threads) per second of transfer, which near
    1.0 means the paramiko client, not the server, set the pace."""
    out = Output.pick(plan.tp_size, generator, 16 * MiB)
    tally = ExitTally()

    def side(name: str) -> Side:
        def check(status: int, command: str) -> None:
            tally.check(name, status, f"{command!r}")
        new = Side(name, name, "", n=plan.tp_samples)
        return bind(new, timed(new, paramiko_stream(clients[name], f"ssh stream from {name}",
                                                    check), out))

    sshd, rsh = side("sshd"), side("rshell")
    progress(f"ssh: throughput, {plan.tp_samples} x {out.size // MiB} MiB each server "
             f"({out.name!r})")
    run_rounds([sshd, rsh], "throughput", 1, strict=True)
    cpu = {s.name: s.extra["client_cpu_per_s"] for s in (sshd, rsh)}
    recv = f"{out.command!r}, paramiko channel.recv({SSH_RECV})"
    result = versus(sshd, rsh, targets("throughput", "ssh"), "MB/s", size_bytes=out.size,
                    baseline_what=f"OpenSSH sshd: {recv}",
                    rshell_what=f"rshell-server --ssh-bind: {recv}",
                    generator=out.as_json(),
                    client_cpu={k: summarize(v) for k, v in cpu.items()})
    busy = {k: statistics.median(v) for k, v in cpu.items()}
    result["notes"] = [
        f"client CPU per second of transfer: {busy['sshd']:.2f} with sshd, "
        f"{busy['rshell']:.2f} with rshell" + (
            " (paramiko's client near a full core: it, not the server, may set the pace)"
            if max(busy.values()) >= 0.9 else "")]
    tally.record(result)
    return result


# ---- mode all ---------------------------------------------------------------------------


def all_sides(rig: AllRig, out: Output, raw_tls: RawPeer, raw_tcp: RawPeer) -> list[Side]:
    """Every contender, in the order they take their samples in a round."""
    n, slow = rig.plan.tp_samples, rig.plan.tp_slow_samples
    command = out.command
    cli = [str(rig.tool("rshell")), rig.servers["tls_login"].address, "-c"]

    def api(name: str, label: str, what: str, k: int = n) -> Side:
        return Side(name, label, what, n=k)

    def rshell(server: str, label: str, flags: str) -> Side:
        side = api(f"rshell_{server}", label, f"conn.run({command!r}, on_stdout=<count "
                   f"bytes>), {flags}, one open connection")
        return bind(side, timed(side, rshell_stream(rig.conns[server]), out))

    assh = api("asyncssh", "asyncssh", "create_session(<count bytes in data_received>, "
               "command), stdin EOF, one open connection to sshd", slow)
    para = api("paramiko", "paramiko", "exec_command, shutdown_write, channel.recv(1 MiB) "
               "to EOF, one open connection to sshd", slow)
    sender = "sendall()s from a 1 MiB buffer, this one recv_into()s"
    return [
        bind(api("raw_tls", "raw TLS 1.3", "raw Python TLS 1.3 loopback socket: a sender "
                 f"process {sender}"), raw(raw_tls, out, False)),
        bind(api("relay_tls", "relay ceiling TLS", f"{command!r} into a 1 MiB pipe, relayed "
                 "by a minimal readv+sendall loop over the same TLS socket"),
             raw(raw_tls, out, True)),
        rshell("tls", "rshell tls", "secure default"),
        bind(api("rshell_cli", f"rshell CLI ({rig.shell_name})",
                 f"rshell ADDR -c {command!r} > /dev/null, whole process"),
             whole_process(lambda c: [*cli, c], rig.env, "rshell CLI stream", out)),
        rig.bind_peer(api("ssh", "ssh (OpenSSH)", f"ssh ... 127.0.0.1 {command!r} > "
                          "/dev/null, whole process, default algorithms"),
                      "ssh", lambda c: whole_process(c.argv, rig.env, "ssh stream", out)),
        rig.bind_peer(assh, "asyncssh", lambda peer: timed(assh, peer.stream, out)),
        rig.bind_peer(para, "paramiko", lambda client: timed(
            para, paramiko_stream(client, "paramiko stream"), out)),
        bind(api("raw_tcp", "raw TCP", f"raw Python TCP loopback socket: a sender process "
                 f"{sender}"), raw(raw_tcp, out, False)),
        bind(api("relay_tcp", "relay ceiling TCP", f"{command!r} into a 1 MiB pipe, relayed "
                 "over plain TCP"), raw(raw_tcp, out, True)),
        rshell("plain", "rshell plain", "--no-tls --no-auth"),
    ]


def in_all(rig: AllRig, generator: str) -> dict[str, Any]:
    """The same generator command's output, ``tp_size`` bytes, through every
    contender.  In-process clients over an open connection (rshell TLS and
    plain, asyncssh, paramiko) against raw Python TLS/TCP transfers and relay
    ceilings; whole processes writing into /dev/null (the rshell CLI and
    OpenSSH's ssh) against each other, handshake and all."""
    plan = rig.plan
    out = Output.pick(plan.tp_size, generator, 64 * MiB)
    progress(f"all: generator {out.name!r}: {out.probes[out.name]['pipe_MBps']:.0f} MB/s "
             "into a pipe")
    raw_tls = RawPeer(make_cert(rig.workdir))
    rig.stack.callback(raw_tls.stop)
    raw_tcp = RawPeer(None)
    rig.stack.callback(raw_tcp.stop)
    sides = all_sides(rig, out, raw_tls, raw_tcp)
    by = {s.name: s for s in sides}
    tls, plain = by["rshell_tls"], by["rshell_plain"]
    progress(f"all: throughput, {max(plan.tp_samples, plan.tp_slow_samples)} rounds of "
             f"{out.size // MiB} MiB (asyncssh and paramiko in {plan.tp_slow_samples} of "
             "them): " + ", ".join(s.label for s in sides))
    rounds = run_rounds(sides, "throughput", 1)
    comparisons = [
        compare(tls, by["raw_tls"], [Target(">=", 0.85, ISSUE6)]),
        compare(tls, by["relay_tls"], [], bound="ceiling"),
        compare(by["rshell_cli"], by["ssh"], [Target(">=", 1.5, ISSUE6)]),
        compare(tls, by["asyncssh"], []),
        compare(tls, by["paramiko"], []),
        compare(plain, by["raw_tcp"], [Target(">=", 0.7, "issue 2/6")]),
        compare(plain, by["relay_tcp"], [], bound="ceiling"),
    ]
    return all_figure("MB/s", rounds, sides, comparisons, size_bytes=out.size,
                      generator=out.as_json(), notes=all_notes(rig, sides, raw_tls.info))


def all_notes(rig: AllRig, sides: list[Side], raw_tls: dict[str, str]) -> list[str]:
    """The ciphers, what the pipe hop costs, and whose client set the pace."""
    by = {s.name: s for s in sides}
    ciphers = {"rshell": rig.tls_info.get("cipher"),
               "raw TLS": raw_tls.get("cipher")}
    ciphers |= {p: rig.peer_info.get(p, {}).get("cipher") for p in ("ssh", "asyncssh",
                                                                     "paramiko")}
    notes = ["ciphers: " + ", ".join(f"{k} {v}" for k, v in ciphers.items() if v)]
    for relay, base in (("relay_tls", "raw_tls"), ("relay_tcp", "raw_tcp")):
        if by[relay].samples and by[base].samples:
            reach = statistics.median(by[relay].samples) / statistics.median(by[base].samples)
            notes.append(f"{by[relay].label} = {reach:.2f} x {by[base].label}: what the pipe "
                         "hop alone costs; no server that runs the command behind a pipe "
                         "does better")
    busy = {s.label: statistics.median(s.extra["client_cpu_per_s"]) for s in sides
            if s.extra.get("client_cpu_per_s")}
    if busy:
        notes.append("client CPU per second of transfer: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in busy.items())
                     + " (near 1.0: that client, not the server, set the pace)")
    return notes
