"""The modes, start to end: what each sets up, which figures it runs, and
what it records about its set-up.  Everything started is stopped by an
``ExitStack`` (also on failure), by its own handle.

``run_native`` (modes plain and tls): one rshell server, its local
baselines.  ``run_ssh``: rshell's SSH listener beside a private sshd, one
paramiko client to each.  ``run_all``: ``AllRig``, three rshell servers and
every peer (sshd with ssh, paramiko and asyncssh), set up once for all the
figures.
"""

from __future__ import annotations

import getpass
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import cold, concurrency, files, fleet, memory, roundtrip, stream, terminal
from .contenders import SSH_LISTEN, Rig, login_shell, probe_tls, stop_into
from .core import LOOPBACK, BenchError, Probe, Side, bind, progress
from .openssh import (
    ALL_SSHD_LIMITS,
    ALL_SSHD_OPTIONAL,
    OpenSshClient,
    SshdProcess,
    find_ssh,
    find_sshd,
    write_ssh_key,
)
from .peers import AsyncsshPeer, import_paramiko, ssh_client, ssh_transport_info
from .plans import COPY_FIGURES, FIGURES, MODES, NATIVE_FIGURES, SSH_FIGURES, AllPlan, Mode, Plan
from .procs import raise_nofile

#: Mode all's rshell servers admit the 50 clients of the concurrency figure and
#: the 200 of the memory figure at once (the defaults: 100 and 64).
ALL_LIMITS = ("--max-connections", "400", "--max-unauthenticated", "128")
#: The load worker (concurrency, memory), a process of its own per sample, run
#: from benchmarks/ (core.BENCH_DIR).
LOAD = [sys.executable, "-m", "rshell_bench.load"]


# ---- modes plain and tls ----------------------------------------------------------------


def run_native(mode: Mode, plan: Plan, figures: list[str], workdir: Path, bin_dir: Path,
               generator: str) -> dict[str, Any]:
    """Start a server, measure the figures asked for, stop everything started."""
    others = [f for f in figures if f not in NATIVE_FIGURES]
    figures = [f for f in figures if f in NATIVE_FIGURES]
    if not figures:
        raise BenchError(f"mode {mode.name} measures {', '.join(NATIVE_FIGURES)} only; "
                         f"{', '.join(others)}: --mode all")
    if others:
        progress(f"{mode.name}: {', '.join(others)} measured in mode all only")
    out: dict[str, Any] = {"server_flags": list(mode.server_flags),
                           "client_flags": list(mode.cli_flags), "figures": {}}
    with ExitStack() as stack:
        rig = Rig(workdir, bin_dir, stack)
        server = rig.add_server("server", mode.server_flags, "server.log", out, "server_exit",
                                "server")
        out["address"] = server.address
        try:
            native_figures(rig, mode, plan, figures, generator, out)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{rig.logs()}") from None
    return out


def native_figures(rig: Rig, mode: Mode, plan: Plan, figures: list[str], generator: str,
                   out: dict[str, Any]) -> None:
    address = rig.servers["server"].address
    if mode.client_tls:
        out["server_tls"] = probe_tls(address)
        # Pin the host key as a non-interactive first contact does, so that the
        # API client below never asks on a terminal.
        rig.pin(address)
    conn_info: dict[str, str] = {}
    if {"roundtrip", "throughput"} & set(figures):
        conn_info = rig.connect("server", mode)
        out["client_tls"] = conn_info or None
    conn = rig.conns.get("server")
    if "roundtrip" in figures:
        out["figures"]["roundtrip"] = roundtrip.native(conn, mode, plan)
    if "throughput" in figures:
        out["figures"]["throughput"] = stream.native(conn, mode, plan, rig.workdir, generator,
                                                     conn_info)
    if "cold" in figures:
        out["figures"]["cold"] = cold.native(rig, address, mode, plan)


# ---- mode ssh: rshell's SSH listener vs OpenSSH's sshd ----------------------------------


def run_ssh(plan: Plan, figures: list[str], workdir: Path, bin_dir: Path, generator: str,
            sshd_exe: Path | None) -> dict[str, Any]:
    """rshell-server (secure default, plus --ssh-bind) and OpenSSH's sshd, both on
    127.0.0.1, each with the same throwaway key authorized; the same paramiko
    client code against both, samples alternating."""
    wanted = [f for f in figures if f in SSH_FIGURES]
    if not wanted:
        raise BenchError(f"mode ssh measures {' and '.join(SSH_FIGURES)} only")
    exe = find_sshd(sshd_exe)
    key_file = workdir / "id_ed25519"
    # sshd runs commands with the user's login shell; rshell is given the same one,
    # so that both start the same shell and the figure compares the servers.
    shell = login_shell()
    flags = ("--ssh-bind", f"{LOOPBACK}:0", "--shell", shell)
    out: dict[str, Any] = {"plan": plan.__dict__, "server_flags": list(flags), "shell": shell,
                           "user": getpass.getuser(), "figures": {}}
    if len(wanted) < len(figures):
        progress(f"ssh: {', '.join(f for f in figures if f not in wanted)} not measured "
                 "in this mode")
    with ExitStack() as stack:
        rig = Rig(workdir, bin_dir, stack)
        public = write_ssh_key(key_file)
        server = rig.add_server("rshell", flags, "server.log", out, "server_exit",
                                "rshell-server")
        out["address"] = server.address
        out["ssh_address"] = server.wait_listening(SSH_LISTEN, "ssh listening on", 20.0)
        with open(rig.home / "server" / "authorized_keys", "a") as f:
            f.write(public + "\n")
        rig.sshd = sshd = SshdProcess(exe, workdir / "sshd", public)
        stack.callback(stop_into, out, "sshd_exit", sshd.stop)
        out["sshd_address"] = sshd.address
        out["sshd_config"] = sshd.config.splitlines()
        try:
            ssh_figures(rig, plan, wanted, generator, key_file, out)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{rig.logs()}") from None
        note_transport(out)
    return out


def ssh_figures(rig: Rig, plan: Plan, wanted: list[str], generator: str, key_file: Path,
                out: dict[str, Any]) -> None:
    clients = {"sshd": ssh_client(rig.sshd.address, key_file, "sshd",
                                  host_key=rig.sshd.host_key)}
    rig.stack.callback(clients["sshd"].close)
    clients["rshell"] = ssh_client(out["ssh_address"], key_file, "rshell-server --ssh-bind",
                                   host_key=rig.home / "server" / "host_key")
    rig.stack.callback(clients["rshell"].close)
    out["transport"] = {k: ssh_transport_info(c) for k, c in clients.items()}
    if "roundtrip" in wanted:
        out["figures"]["roundtrip"] = roundtrip.ssh(clients, plan)
    if "throughput" in wanted:
        out["figures"]["throughput"] = stream.ssh(clients, plan, generator)


def note_transport(out: dict[str, Any]) -> None:
    """A note under the last figure when the two connections negotiated differently."""
    tr = out["transport"]
    differ = [k for k in ("cipher", "mac", "host_key", "compression")
              if tr["sshd"][k] != tr["rshell"][k]]
    if differ and out["figures"]:
        last = list(out["figures"].values())[-1]
        last.setdefault("notes", []).append(
            "negotiated " + ", ".join(f"{k}: sshd {tr['sshd'][k]}, rshell {tr['rshell'][k]}"
                                      for k in differ))


# ---- mode all: rshell beside every peer, one run ----------------------------------------


class AllRig(Rig):
    """What mode all starts, once, for every figure: three rshell servers (the
    secure default with /bin/sh; the same with ``--shell`` set to the login
    shell sshd runs commands with, for every figure against an SSH peer;
    plain TCP without auth), an API connection to each, and the peers: a
    private sshd and, to it, OpenSSH's ssh, paramiko and asyncssh.  A peer that
    cannot be had is recorded in ``errors`` and its sides fail; rshell's own
    set-up failing fails the mode.  ``stack`` stops everything."""

    limits = ALL_LIMITS

    def __init__(self, plan: AllPlan, workdir: Path, bin_dir: Path, sshd_exe: Path | None,
                 stack: ExitStack, out: dict[str, Any]) -> None:
        super().__init__(workdir, bin_dir, stack)
        self.plan = plan
        self.shell = login_shell()
        self.shell_name = Path(self.shell).name
        self.errors: dict[str, str] = {}
        out["login_shell"] = self.shell
        out["nofile"] = raise_nofile(4096)  # 200 held connections; the servers inherit it
        flags = {"tls": ALL_LIMITS, "tls_login": ("--shell", self.shell, *ALL_LIMITS),
                 "plain": ("--no-tls", "--no-auth", *ALL_LIMITS)}
        self.tls_info: dict[str, str] = {}
        out["servers"] = {}
        for name, server_flags in flags.items():
            record: dict[str, Any] = {}
            out["servers"][name] = record
            server = self.add_server(name, server_flags, f"server-{name}.log", record, "exit",
                                     f"rshell-server {name}")
            record.update(address=server.address, flags=list(server_flags))
            mode = MODES["plain" if name == "plain" else "tls"]
            if mode.client_tls:
                record["tls"] = probe_tls(server.address)
                self.pin(server.address)
            info = self.connect(name, mode)
            self.tls_info = self.tls_info or info
        out["client_tls"] = self.tls_info
        self.peer_info: dict[str, Any] = {}
        out["peers"] = self.peer_info
        self.start_peers(sshd_exe)

    def start_peers(self, sshd_exe: Path | None) -> None:
        self.ssh: OpenSshClient | None = None
        self.paramiko: Any = None
        self.asyncssh: AsyncsshPeer | None = None
        self.key_file = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        public = write_ssh_key(self.key_file)
        try:
            self.sshd = sshd = SshdProcess(find_sshd(sshd_exe), self.workdir / "sshd", public,
                                           extra=(*ALL_SSHD_LIMITS, files.SSHD_SFTP),
                                           optional=ALL_SSHD_OPTIONAL)
        except BenchError as exc:
            for name in ("sshd", "ssh", "paramiko", "asyncssh"):
                self.fail_peer(name, f"no sshd: {exc}")
            return
        self.peer_info["sshd"] = {"address": sshd.address, "config": sshd.config.splitlines()}
        self.stack.callback(stop_into, self.peer_info["sshd"], "exit", sshd.stop)
        self.known_hosts.write_text(sshd.known_hosts_line() + "\n")
        self.start_clients(sshd)

    def start_clients(self, sshd: SshdProcess) -> None:
        info = self.peer_info
        try:
            self.ssh = OpenSshClient(find_ssh(), self.workdir, sshd, self.key_file)
            info["ssh"] = {"argv": self.ssh.argv("COMMAND"),
                           "config": self.ssh.config.read_text().splitlines(),
                           **self.ssh.negotiated()}
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            self.ssh = None
            self.fail_peer("ssh", str(exc))
        try:
            version = import_paramiko().__version__
            self.paramiko = ssh_client(sshd.address, self.key_file, "sshd",
                                       known_hosts=self.known_hosts)
            self.stack.callback(self.paramiko.close)
            info["paramiko"] = {"version": version, **ssh_transport_info(self.paramiko)}
        except BenchError as exc:
            self.fail_peer("paramiko", str(exc))
        try:
            self.asyncssh = AsyncsshPeer(sshd.address, self.key_file, self.known_hosts)
            self.stack.callback(self.asyncssh.close)
            info["asyncssh"] = {"version": self.asyncssh.asyncssh.__version__,
                                **self.asyncssh.info}
        except BenchError as exc:
            self.fail_peer("asyncssh", str(exc))

    def fail_peer(self, name: str, error: str) -> None:
        self.errors[name] = error
        self.peer_info[name] = {"error": error}
        print(f"peer {name} unavailable: {error}", flush=True)

    def bind_peer(self, side: Side, peer: str, make: Callable[[Any], Probe]) -> Side:
        """``side`` measured through ``make(<the peer>)``, or failed if that peer
        could not be had."""
        obj = {"ssh": self.ssh, "paramiko": self.paramiko, "asyncssh": self.asyncssh,
               "sshd": self.sshd}[peer]
        if obj is None:
            side.error = self.errors.get(peer, "unavailable")
            return side
        return bind(side, make(obj))

    def load_argv(self, action: str, peer: str, conns: int, address: str = "") -> list[str]:
        """The load worker for ``peer`` (run it with ``cwd=BENCH_DIR``): rshell to
        ``address`` (default: the login-shell server), the others to sshd."""
        if peer == "rshell":
            target = ["--address", address or self.servers["tls_login"].address]
        else:
            assert self.sshd is not None
            target = ["--address", self.sshd.address, "--key", str(self.key_file),
                      "--known-hosts", str(self.known_hosts)]
        return [*LOAD, action, "--peer", peer, "--conns", str(conns), *target]


#: Mode all's figures, by name.
ALL_FIGURES: dict[str, Callable[..., dict[str, Any]]] = {
    "roundtrip": roundtrip.in_all, "throughput": stream.in_all, "cold": cold.in_all,
    "concurrency": concurrency.in_all, "memory": memory.in_all,
    "keystroke": terminal.keystroke, "tty_output": terminal.tty_output,
    "file_copy": files.file_copy, "tree_copy": files.tree_copy, "fleet": fleet.fleet}


def run_all(plan: AllPlan, figures: list[str], workdir: Path, bin_dir: Path,
            generator: str, sshd_exe: Path | None) -> dict[str, Any]:
    """Every peer set up once, every figure with every contender alternating,
    everything stopped at the end (also on failure)."""
    out: dict[str, Any] = {"plan": plan.__dict__, "figures": {}}
    if not plan.copies_in_every and set(figures) == set(FIGURES):
        figures = [f for f in figures if f not in COPY_FIGURES]
        progress(f"all: {', '.join(COPY_FIGURES)} left out of a quick run of every figure "
                 "(--only names them)")
    with ExitStack() as stack:
        rig = AllRig(plan, workdir, bin_dir, sshd_exe, stack, out)
        try:
            for name in figures:
                figure = ALL_FIGURES[name]
                out["figures"][name] = (figure(rig, generator) if name == "throughput"
                                        else figure(rig))
        except BenchError as exc:
            raise BenchError(f"{exc}\n{rig.logs()}") from None
        out["peer_errors"] = dict(rig.errors)
    return out
