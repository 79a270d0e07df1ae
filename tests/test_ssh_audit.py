"""What the SSH listener says about a connection: the audit's ``auth`` record
and the log line name the key that *signed*, never one merely offered
(paramiko asks about a key on the offer, before any signature, and again
with it); the ``auth`` record has the same fields whichever listener; and
paramiko's own complaints reach the server's log as one line each in its
format (``--log-format json``), without their tracebacks.

The real OpenSSH ``ssh`` and rshell-server subprocesses, on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, connect
from tests.test_faults import audit_events
from tests.test_ssh_server import ssh_argv, start_ssh_server

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None,
                                reason="OpenSSH client missing (.ci/run installs it)")


def new_key(path: Path, comment: str) -> str:
    """An Ed25519 key pair at ``path``; its fingerprint (SHA256:...)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True)
    listed = subprocess.run(["ssh-keygen", "-lf", str(path)], capture_output=True, text=True,
                            check=True).stdout
    return listed.split()[1]


def auth_records(path: Path) -> list[dict[str, object]]:
    return [e for e in audit_events(path) if e["event"] == "auth"]


def test_an_offered_key_that_never_signed_is_not_the_one_logged_in(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """ssh offers the admin key (only its public half exists), the server
    answers PK_OK, ssh cannot sign and logs in with the attacker's key: the
    audit and the log name the attacker, and never the admin."""
    audit = tmp_path / "audit.jsonl"
    srv = start_ssh_server(start_server, "--audit-log", str(audit))
    admin_fp = new_key(tmp_path / "admin", "admin")
    attacker_fp = new_key(tmp_path / "attacker", "attacker")
    (tmp_path / "admin").unlink()
    keys_file = srv.home / "server" / "authorized_keys"
    with keys_file.open("a") as f:
        for name in ("admin", "attacker"):
            f.write((tmp_path / f"{name}.pub").read_text())

    argv = ssh_argv(srv, "echo in", key=tmp_path / "admin.pub",
                    extra=("-i", str(tmp_path / "attacker")))
    argv = [a.replace("LogLevel=ERROR", "LogLevel=DEBUG1") for a in argv]
    proc = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stdout) == (0, b"in\n"), proc.stderr
    offered = f"Server accepts key: {tmp_path / 'admin.pub'}".encode()
    assert offered in proc.stderr, "the admin key was never offered and accepted"

    # The login was audited before its command ran.
    records = auth_records(audit)
    assert [(r["ok"], r["key"], r.get("comment")) for r in records] == [
        (True, attacker_fp, "attacker")], records
    assert admin_fp not in audit.read_text()
    srv.wait_for_log(rf"authenticated with key {re.escape(attacker_fp)} attacker \(via ssh\)")
    srv.wait_for_log(r"disconnected after 1 command")  # the connection's last line
    assert admin_fp not in srv.log


def test_the_auth_record_has_the_same_fields_on_both_listeners(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    srv = start_ssh_server(start_server, "--audit-log", str(audit))
    with connect(srv) as conn:
        assert conn.run("true").ok
    proc = subprocess.run(ssh_argv(srv, "true"), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    # Each login was audited before its command ran: both records are there.
    records = {r["via"]: r for r in auth_records(audit)}
    assert set(records) == {"rshell", "ssh"}, records
    assert records["rshell"].keys() == records["ssh"].keys(), records
    assert records["rshell"]["ok"] is records["ssh"]["ok"] is True


def test_paramikos_complaint_is_one_json_line_without_its_traceback(
    start_server: Callable[..., ServerProcess],
) -> None:
    """A peer that sends a valid version line, then a packet of absurd
    length: paramiko raises and logs "Exception (server): ..." and a
    traceback, one record per line.  The server's stderr stays JSON, the
    complaint is one warning naming the peer, no line is a traceback's."""
    srv = start_ssh_server(start_server, "--log-format", "json")
    with socket.create_connection(("127.0.0.1", srv.ssh_port), timeout=10) as sock:  # type: ignore[attr-defined]
        sock.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        assert sock.makefile("rb").readline().startswith(b"SSH-2.0-")
        sock.sendall(struct.pack(">I", 0x7FFFFFF0) + bytes(60))
        host, port = sock.getsockname()
        peer = f"{host}:{port}"
        srv.wait_for_log(rf"{re.escape(peer)}: disconnected after 0 command")
    assert srv.stop() == 0

    records = [json.loads(line) for line in srv.log.splitlines()]  # each line is JSON
    complaints = [r for r in records if r["message"].startswith(f"ssh {peer}: Exception")]
    assert len(complaints) == 1, srv.log
    assert complaints[0]["level"] == "warning"
    for record in records:
        message = record["message"]
        assert "Traceback" not in message and "\n" not in message, message
        assert not message.startswith(("  File ", "    ")) and message.strip(), message
