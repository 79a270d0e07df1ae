"""OpenSSH's sshd with its sftp subsystem, for the copy tests (test_copy_api,
test_cp_cli): on 127.0.0.1, a port of its own, keys made now, its config and
files under the given root only (the system's are never read).
"""

from __future__ import annotations

import getpass
import socket
import subprocess
from pathlib import Path

from tests.support.procs import wait_until
from tests.test_copy_id import keygen
from tests.test_ssh_client import SSHD

START_WAIT = 15.0


class SftpSshd:
    """sshd whose ``sftp`` is internal-sftp; ``files``: where sftp sessions
    start (else the account's home), with ``umask`` there if given.
    ``key`` logs in; ``address`` is the ``ssh://`` target."""

    def __init__(self, root: Path, files: Path | None = None, umask: int | None = None) -> None:
        root.mkdir(mode=0o700)
        self.files = files
        host_key, self.key = keygen(root / "host_key"), keygen(root / "id_ed25519")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        sftp = "internal-sftp" + ("" if files is None else f" -d {files}") \
            + ("" if umask is None else f" -u {umask:03o}")
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {self.key}.pub\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
            f"StrictModes no\nPidFile {root / 'sshd.pid'}\nPermitRootLogin prohibit-password\n"
            f"Subsystem sftp {sftp}\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait_until(lambda: self._listening() or self.proc.poll() is not None,
                          START_WAIT), "sshd did not listen"
        assert self.proc.poll() is None, "sshd did not start"
        self.address = f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
