"""OpenSSH, the SSH peer rshell is measured against, on 127.0.0.1: a private
``sshd`` instance (config, host key and authorized_keys of its own) and the
``ssh`` client to it; and the throwaway Ed25519 keys both ends use.

sshd keeps its defaults (algorithms, window sizes); only what keeps the run
hermetic (own config, keys, pinned host keys) or lets it be measured at all
(its start-up limits, see ``ALL_SSHD_LIMITS``) is set.  A missing binary
raises BenchError saying so, and mode all fails that peer only.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .core import LOOPBACK, BenchError
from .procs import stop_process

#: sshd's defaults (MaxStartups 10:30:100: random refusals from the 11th
#: unauthenticated connection on; MaxSessions 10) would make a burst of 50 or
#: 200 logins measure refusals, not sshd: raised for ``--mode all``.
ALL_SSHD_LIMITS = ("MaxStartups 100:30:200", "MaxSessions 100")
#: Newer sshd (9.8+) penalizes a source address that opens many connections;
#: kept only where this sshd knows the keyword.
ALL_SSHD_OPTIONAL = ("PerSourcePenalties no",)


# ---- keys and OpenSSH's sshd ------------------------------------------------------------


def write_ssh_key(path: Path) -> str:
    """A throwaway Ed25519 key in OpenSSH format (mode 0600); its public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.OpenSSH,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    line = f"{public} rshell-bench"
    Path(f"{path}.pub").write_text(line + "\n")
    return line


def find_sshd(given: Path | None) -> Path:
    for candidate in ([given] if given else [Path("/usr/sbin/sshd"), shutil.which("sshd")]):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise BenchError(f"OpenSSH's sshd not found ({given or '/usr/sbin/sshd, PATH'}); "
                     "the SSH figures need it (--sshd PATH)")


def free_port() -> int:
    """A port free on 127.0.0.1 now (sshd cannot report a port 0 it bound)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class SshdProcess:
    """OpenSSH's ``sshd -D -e`` on 127.0.0.1 with a config, host key and
    authorized_keys of its own in ``root`` (the system's are never read), its
    log in a file.  ``extra`` config lines are added as given; ``optional``
    ones only if this sshd's ``-t`` accepts them."""

    def __init__(self, exe: Path, root: Path, client_public: str,
                 extra: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> None:
        root.mkdir(mode=0o700)
        # Sessions get an empty HOME: bash run by sshd sources ~/.bashrc (Debian
        # builds it so), and the user's rc files are not what is measured.
        self.home = root / "home"
        self.home.mkdir()
        self.host_key = root / "ssh_host_ed25519_key"
        self.host_public = write_ssh_key(self.host_key)
        (root / "authorized_keys").write_text(client_public + "\n")
        self.port = free_port()
        config = root / "sshd_config"
        lines = [
            f"Port {self.port}", f"ListenAddress {LOOPBACK}", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}", f"PidFile {root / 'sshd.pid'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PermitRootLogin prohibit-password", "PrintMotd no", "LogLevel INFO",
            f"SetEnv HOME={self.home}", *extra]
        for line in optional:
            config.write_text("\n".join([*lines, line]) + "\n")
            if subprocess.run([str(exe), "-t", "-f", str(config)], capture_output=True,
                              stdin=subprocess.DEVNULL).returncode == 0:
                lines.append(line)
        self.config = "\n".join(lines) + "\n"
        config.write_text(self.config)
        if os.geteuid() == 0:
            # Privilege separation wants this directory (tmpfs: gone after a reboot).
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.log_path = root / "sshd.log"
        with open(self.log_path, "wb") as sink:
            self.proc = subprocess.Popen([str(exe), "-D", "-e", "-f", str(config)],
                                         stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        deadline = time.monotonic() + 15.0
        said = f"Server listening on {LOOPBACK} port {self.port}"
        while said not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"sshd did not start (status {self.proc.returncode}):\n"
                                 f"{self.log_tail()}")
            time.sleep(0.02)
        self.address = f"{LOOPBACK}:{self.port}"

    def known_hosts_line(self) -> str:
        """This server's host key as an OpenSSH known_hosts line (non-22 port form)."""
        return f"[{LOOPBACK}]:{self.port} {' '.join(self.host_public.split()[:2])}"

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def stop(self) -> int | None:
        return stop_process(self.proc, 10.0)


# ---- OpenSSH's ssh client ---------------------------------------------------------------


def find_ssh() -> Path:
    found = shutil.which("ssh")
    if found is None:
        raise BenchError("OpenSSH's ssh client not found on PATH")
    return Path(found)


class OpenSshClient:
    """Argv for OpenSSH's ``ssh`` to the private sshd: a minimal config of its
    own (``-F``: neither ~/.ssh/config nor /etc/ssh/ssh_config is read), the
    throwaway key only (no agent), the host key pinned and checked strictly;
    algorithms left at OpenSSH's defaults."""

    def __init__(self, exe: Path, root: Path, sshd: SshdProcess, key_file: Path) -> None:
        self.exe = exe
        self.config = root / "ssh_config"
        self.config.write_text("IdentitiesOnly yes\nIdentityAgent none\n"
                               "GlobalKnownHostsFile /dev/null\n")
        self.known_hosts = root / "ssh_known_hosts"
        self.known_hosts.write_text(sshd.known_hosts_line() + "\n")
        self.base = [str(exe), "-F", str(self.config), "-p", str(sshd.port), "-i", str(key_file),
                     "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                     "-o", "StrictHostKeyChecking=yes", LOOPBACK]

    def argv(self, command: str) -> list[str]:
        return [*self.base, command]

    def negotiated(self) -> dict[str, str]:
        """One ``ssh -v ... true``: the version and algorithms it settles on with sshd."""
        proc = subprocess.run([*self.base[:1], "-v", *self.base[1:], "true"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1:] or ["?"]
            raise BenchError(f"ssh to the private sshd failed ({proc.returncode}): {last[0]}")
        info: dict[str, str] = {}
        patterns = {"client_version": r"^(OpenSSH_\S+)",
                    "kex": r"kex: algorithm: (\S+)",
                    "host_key": r"kex: host key algorithm: (\S+)",
                    "cipher": r"kex: server->client cipher: (\S+)",
                    "mac": r"kex: server->client cipher: \S+ MAC: (\S+)"}
        for key, pattern in patterns.items():
            found = re.search(pattern, proc.stderr, re.MULTILINE)
            if found:
                info[key] = found.group(1).rstrip(",")
        return info
