"""The fleet figure's hosts (issue 15), all on 127.0.0.1: a "host" is a port.

Owns: the rshell fleet (``rshell-server`` processes of up to ``PER_SERVER``
``--bind 127.0.0.1:0`` listeners each, the ports read off their logs,
handed out round-robin so that a fleet of any size spreads over every
server, every host key pinned by a first ``rshell --accept-new``); the
OpenSSH fleet (sshd processes of up to ``SSHD_PORTS`` listeners each, the
most one sshd takes, its ``MAX_LISTEN_SOCKS``); the files every SSH tool
reads (an ssh_config naming ``h001``.. with HostName, Port, the key and the
pinned host keys; pdsh's, parallel-ssh's and clush's host lists; an Ansible
inventory and ansible.cfg); and the CPU time a set of server processes has
used (``/proc/PID/stat``, their reaped children included).

Must not import rshell: every client is a whole process.
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from .contenders import LISTEN, ServerProcess
from .core import LOOPBACK, BenchError, progress
from .openssh import ALL_SSHD_LIMITS, ALL_SSHD_OPTIONAL, SshdProcess, find_sshd
from .procs import children, run_cli, wait_for

if TYPE_CHECKING:
    from .modes import AllRig

#: Listeners per rshell-server (issue 15: a server with 250 binds works).
PER_SERVER = 250
#: Listeners per sshd: OpenSSH's MAX_LISTEN_SOCKS ("Too many listen sockets").
SSHD_PORTS = 16
#: Every SSH tool's fan-out (and rshell's --parallel, its default).
FANOUT = 64


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User + system time of ``pids`` themselves (utime, stime of
    /proc/PID/stat), and of the children they reaped (cutime, cstime: an
    rshell-server's commands; sshd's per-connection processes and theirs),
    in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    own = reaped = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        times = [int(f) for f in fields[11:15]]  # fields 14-17, after pid and comm
        own, reaped = own + times[0] + times[1], reaped + times[2] + times[3]
    return own / tick, reaped / tick


def settled(pids: list[int], what: str) -> None:
    """Wait (bounded) until none of ``pids`` has a child left: every command
    and every per-connection process of the last run has ended and been
    reaped, so its CPU time is counted and the next run starts clean."""
    wait_for(lambda: not any(children(p) for p in pids), 30, f"{what} to reap its children")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now (held together while
    chosen, so none repeats), for sshd, which cannot report a port 0."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            held.append(sock)
            sock.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def node_names(count: int) -> list[str]:
    """``h001`` .. : the SSH tools' names for the hosts (pdsh/clush ranges)."""
    width = max(3, len(str(count)))
    return [f"h{i:0{width}d}" for i in range(1, count + 1)]


def node_range(count: int) -> str:
    names = node_names(count)
    return f"h[{names[0][1:]}-{names[-1][1:]}]"


class RshellFleet:
    """``size`` native hosts: rshell-server processes with many listeners."""

    def __init__(self, rig: AllRig, size: int, root: Path) -> None:
        self.root = root
        servers: list[ServerProcess] = []
        per, left, n = PER_SERVER, size, 0
        while left > 0:
            binds = min(per, left)
            # ServerProcess adds the first --bind 127.0.0.1:0 itself.
            flags = ("--bind", f"{LOOPBACK}:0") * (binds - 1)
            server = rig.start_server((*flags, "--shell", rig.shell, *rig.limits),
                                      f"fleet-server-{n}.log")
            rig.stack.callback(server.stop)
            servers.append(server)
            left, n = left - binds, n + 1
        lists = [self._addresses(s, min(per, size - i * per)) for i, s in enumerate(servers)]
        # Round-robin: the first k hosts of the fleet are spread over every server.
        self.addresses = [lst[i] for i in range(per) for lst in lists if i < len(lst)]
        self.pids = [s.proc.pid for s in servers]
        self.servers = servers
        self.env = rig.env
        self.rshell = str(rig.tool("rshell"))

    @staticmethod
    def _addresses(server: ServerProcess, binds: int) -> list[str]:
        def found() -> list[str]:
            return LISTEN.findall(server.log_path.read_text(errors="replace"))
        wait_for(lambda: len(found()) >= binds or server.proc.poll() is not None, 60,
                 f"rshell-server to listen on {binds} ports")
        addresses = found()
        if len(addresses) < binds or any(not a.startswith(f"{LOOPBACK}:") for a in addresses):
            raise BenchError(f"rshell-server listened on {len(addresses)} of {binds} ports:\n"
                             f"{server.log_tail()}")
        return addresses[:binds]

    def hosts_file(self, count: int) -> Path:
        """A ``-H`` file naming the first ``count`` hosts."""
        path = self.root / f"rshell-hosts-{count}.txt"
        if not path.exists():
            path.write_text("".join(f"{a}\n" for a in self.addresses[:count]))
        return path

    def pin(self) -> None:
        """Every host's key pinned by one first contact (``--accept-new``)."""
        progress(f"fleet: pinning {len(self.addresses)} rshell hosts (rshell --accept-new)")
        run_cli([self.rshell, "--accept-new", self.addresses[0], "-H",
                 str(self.hosts_file(len(self.addresses))), "-c", "true"], self.env,
                "fleet: first contact with every host")


class SshFleet:
    """``size`` OpenSSH hosts: sshd processes of up to SSHD_PORTS listeners,
    the throwaway key authorized, and the files each SSH tool reads."""

    def __init__(self, rig: AllRig, size: int, root: Path) -> None:
        self.root, self.size = root, size
        self.user = getpass.getuser()
        self.key = rig.key_file
        public = Path(f"{rig.key_file}.pub").read_text().strip()
        exe = find_sshd(None if rig.sshd is None else Path(rig.sshd.proc.args[0]))
        self.sshds: list[SshdProcess] = []
        self.ports: list[int] = []
        lines: list[str] = []
        for n in range(-(-size // SSHD_PORTS)):
            sshd, extra = self._start(rig, exe, root / f"sshd-{n}", public,
                                      min(SSHD_PORTS, size - n * SSHD_PORTS))
            self.sshds.append(sshd)
            key = sshd.known_hosts_line().split(" ", 1)[1]
            for port in (sshd.port, *extra):
                self.ports.append(port)
                lines.append(f"[{LOOPBACK}]:{port} {key}")
        self.pids = [s.proc.pid for s in self.sshds]
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("\n".join(lines) + "\n")
        self.names = node_names(size)
        self.config = self._ssh_config()

    @staticmethod
    def _start(rig: AllRig, exe: Path, root: Path, public: str,
               ports: int) -> tuple[SshdProcess, list[int]]:
        """An sshd on ``ports`` ports (its own and the extra ones it returns);
        tried again on other ports if one was taken before sshd bound it."""
        for attempt in range(3):
            extra = free_ports(ports - 1)
            where = root.with_name(f"{root.name}-{attempt}") if attempt else root
            sshd = SshdProcess(exe, where, public, optional=ALL_SSHD_OPTIONAL,
                               extra=(*ALL_SSHD_LIMITS,
                                      *(f"ListenAddress {LOOPBACK}:{p}" for p in extra)))
            rig.stack.callback(sshd.stop)
            if SshFleet._listening(sshd, extra):
                return sshd, extra
            sshd.stop()
        raise BenchError(f"sshd did not listen on all its ports:\n{sshd.log_tail()}")

    @staticmethod
    def _listening(sshd: SshdProcess, ports: list[int]) -> bool:
        """Has ``sshd`` said it listens on every one of ``ports`` (False as soon
        as it failed to bind one, or exited)?"""
        said = [f"Server listening on {LOOPBACK} port {p}." for p in ports]

        def log() -> str:
            return sshd.log_path.read_text(errors="replace")
        wait_for(lambda: all(s in log() for s in said) or "Bind to port" in log()
                 or sshd.proc.poll() is not None, 15, "sshd to listen on every port")
        return all(s in log() for s in said)

    def _ssh_config(self) -> Path:
        """``h001`` .. as aliases of 127.0.0.1 and each port; the key only (no
        agent), the pinned host keys checked strictly, no prompt."""
        path = self.root / "ssh_config"
        hosts = [f"Host {name}\n  HostName {LOOPBACK}\n  Port {port}\n"
                 for name, port in zip(self.names, self.ports, strict=True)]
        path.write_text("".join(hosts) + (
            f"Host *\n  User {self.user}\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            "  IdentityAgent none\n  BatchMode yes\n  StrictHostKeyChecking yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  LogLevel ERROR\n"))
        return path

    def names_file(self) -> Path:
        """parallel-ssh's host file: one alias a line."""
        path = self.root / "ssh-hosts.txt"
        path.write_text("".join(f"{name}\n" for name in self.names))
        return path

    def urls(self) -> list[str]:
        return [f"ssh://{self.user}@{LOOPBACK}:{port}" for port in self.ports]

    def urls_file(self) -> Path:
        """rshell's ``-H`` file of ``ssh://user@127.0.0.1:PORT`` targets."""
        path = self.root / "ssh-urls.txt"
        path.write_text("".join(f"{url}\n" for url in self.urls()))
        return path

    def ansible_files(self) -> tuple[Path, Path]:
        """An INI inventory (the aliases, one group) and an ansible.cfg of its
        own (neither /etc/ansible nor ~/.ansible.cfg is read): fan-out, the
        ssh_config, no ControlPersist (each run connects afresh, as every
        other tool does), no forced pty for ``raw``, host keys checked."""
        inventory, cfg = self.root / "inventory.ini", self.root / "ansible.cfg"
        inventory.write_text("[fleet]\n" + "".join(f"{n}\n" for n in self.names))
        cfg.write_text(
            f"[defaults]\nforks = {FANOUT}\nhost_key_checking = True\nnocolor = True\n"
            f"local_tmp = {self.root / 'ansible-tmp'}\n"
            f"[ssh_connection]\nssh_args = -F {self.config}\nusetty = False\n")
        return inventory, cfg
