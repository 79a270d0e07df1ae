"""Key authentication and authorized_keys end to end: a real server, the real
``rshell`` command and the API, keys from the real ``ssh-keygen``.

What an administrator relies on: OpenSSH keys work as they are; a
passphrase is asked on the terminal; authorized_keys options (forced
command, from=, restrict) bind every request; a bad line never crashes and
never grants; edits apply without a restart.  Denials are checked by a side
effect that must not happen, not only by an exit status.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from rshell.errors import AuthenticationFailed
from tests.conftest import CLIENT_MODE, RSHELL, ServerProcess, base_env, cli, connect
from tests.support.cli import one_line_error

PASSPHRASE = "correct horse battery"
PROMPT = r"Enter passphrase for key '[^']*': "
#: The question after a wrong answer (ssh: "Bad passphrase, try again for ...").
RETRY = r"Wrong passphrase, try again for key '[^']*': "


# ---- helpers ---------------------------------------------------------------------


def ssh_keygen(path: Path, kind: str, bits: int | None = None, passphrase: str = "") -> Path:
    """A key pair made by the real ssh-keygen; the private key's path."""
    args = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", f"{kind}@e2e", "-f", str(path)]
    if bits is not None:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return path


def ssh_fingerprint(path: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(path)], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    return out.split()[1]


def public(path: Path) -> str:
    """The public key line next to a private key file."""
    return Path(f"{path}.pub").read_text().strip()


def user_key(srv: ServerProcess) -> str:
    """The public line of the key the server's first start made for this user."""
    return public(srv.home / "id_ed25519")


def authorize(srv: ServerProcess, *lines: str) -> Path:
    """Rewrite the server's authorized_keys.  The mtime moves a full second
    forward, so the server sees a change even if the size is the same and
    the clock has not ticked (no sleeping)."""
    path = srv.home / "server" / "authorized_keys"
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text("".join(line + "\n" for line in lines))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, max(st.st_mtime_ns, before) + 1_000_000_000))
    return path


def assert_refused(proc: subprocess.CompletedProcess[bytes], marker: Path) -> str:
    """Exit 255 with one line, and the command never ran."""
    assert proc.returncode == 255, (proc.returncode, proc.stdout, proc.stderr)
    line = one_line_error(proc.stderr)
    assert proc.stdout == b""
    assert not marker.exists(), "the command ran although authentication failed"
    return line


# ---- OpenSSH keys -----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "bits"), [("ed25519", None), ("ecdsa", None), ("rsa", 3072)])
def test_ssh_keygen_key_works_with_dash_i(
    home: Path, server: ServerProcess, tmp_path: Path, kind: str, bits: int | None
) -> None:
    """``~/.ssh/id_*`` made by ssh-keygen authenticates as-is, and the server
    logs the fingerprint ssh-keygen shows."""
    key = ssh_keygen(tmp_path / f"id_{kind}", kind, bits)
    authorize(server, public(key))  # only this key: the default one cannot stand in
    proc = cli(home, server.address, "-i", str(key), "-c", f"echo hello from {kind}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"hello from {kind}\n".encode()
    server.wait_for_log(rf"authenticated with key {re.escape(ssh_fingerprint(key))}")


def test_passphrase_is_asked_on_the_terminal(
    server: ServerProcess, tmp_path: Path, terminals: Callable[..., pexpect.spawn]
) -> None:
    """An encrypted ssh-keygen key prompts, unlocks with the passphrase, and
    the passphrase is not echoed."""
    key = ssh_keygen(tmp_path / "id_ed25519", "ed25519", passphrase=PASSPHRASE)
    authorize(server, public(key))
    child = terminals(server.address, "-i", str(key), "-c", "echo unlocked-$((6*7))",
                      timeout=30, width=200)
    child.expect(PROMPT)
    child.sendline(PASSPHRASE)
    child.expect("unlocked-42")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert PASSPHRASE not in (child.before or "")


def test_wrong_passphrase_three_times_fails(
    server: ServerProcess, tmp_path: Path, terminals: Callable[..., pexpect.spawn]
) -> None:
    """Three wrong answers: exit 255 with one line, as ssh gives up; nothing ran."""
    key = ssh_keygen(tmp_path / "id_ecdsa", "ecdsa", passphrase=PASSPHRASE)
    authorize(server, public(key))
    marker = tmp_path / "ran"
    child = terminals(server.address, "-i", str(key), "-c", f"touch {marker}", timeout=30,
                      width=200)
    for attempt in range(3):
        child.expect(RETRY if attempt else PROMPT)
        child.sendline(f"wrong {attempt}")
    child.expect(pexpect.EOF)
    child.close()
    tail = child.before or ""
    assert child.exitstatus == 255, tail
    assert "Enter passphrase" not in tail and "try again" not in tail, "asked a fourth time"
    assert "passphrase" in one_line_error(tail)
    assert not marker.exists()


def test_passphrase_is_never_read_from_stdin(home: Path, server: ServerProcess,
                                             tmp_path: Path) -> None:
    """Without a terminal there is nobody to ask: stdin is the command's data
    and must not be eaten as a passphrase (nor echoed by getpass's fallback)."""
    key = ssh_keygen(tmp_path / "id_locked", "ed25519", passphrase="pw")
    client = subprocess.Popen(
        [RSHELL, *CLIENT_MODE, server.address, "-i", str(key), "-c", "cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=base_env(home), start_new_session=True,  # no controlling terminal
    )
    try:
        out, err = client.communicate(b"pw\nthe data\n", timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
            client.communicate()
    assert client.returncode == 255, err
    assert "no passphrase was given" in one_line_error(err)
    assert b"GetPassWarning" not in err
    assert b"the data" not in out + err


def test_loose_key_permissions_refused_by_client(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """A group-readable key is refused by the client, as ssh refuses it: exit
    255 naming the problem, before any connection is made (the key is loaded
    first, so that a passphrase prompt does not eat the handshake's time)."""
    key = ssh_keygen(tmp_path / "id_ed25519", "ed25519")
    key.chmod(0o640)
    authorize(server, public(key))
    marker = tmp_path / "ran"
    line = assert_refused(
        cli(home, server.address, "-i", str(key), "-c", f"touch {marker}"), marker
    )
    assert "permissions" in line and str(key) in line
    # Once fixed, the key works, and that is the first connection the server sees.
    key.chmod(0o600)
    assert cli(home, server.address, "-i", str(key), "-c", "true").returncode == 0
    server.wait_for_log(r"disconnected after 1 command")
    assert server.log.count("connection from") == 1
    assert "authentication failed" not in server.log


# ---- forced commands ---------------------------------------------------------------


def test_forced_command_runs_instead_of_every_request(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """command="..." replaces whatever the client asks for; the request is
    only data, in $RSHELL_ORIGINAL_COMMAND."""
    authorize(server, f'command="echo forced:$RSHELL_ORIGINAL_COMMAND" {user_key(server)}')
    marker = tmp_path / "ran"
    proc = cli(home, server.address, "-c", f"touch {marker}; echo requested")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"forced:touch {marker}; echo requested\n".encode()
    assert not marker.exists()
    batch = cli(home, server.address, input=b"echo one\nexit 3\n")
    assert batch.stdout == b"forced:echo one\nforced:exit 3\n"
    assert batch.returncode == 0, batch.stderr


def test_forced_command_cd_does_not_move_the_session(home: Path, server: ServerProcess) -> None:
    """``cd`` is a request like any other under a forced command: it is
    handed to the forced command, and the session's directory stays put."""
    authorize(server, f'command="echo forced:$RSHELL_ORIGINAL_COMMAND; pwd" {user_key(server)}')
    with connect(server) as conn:
        start = conn.cwd
        assert start and start != "/tmp"
        moved = conn.run("cd /tmp")
        assert moved.stdout == f"forced:cd /tmp\n{start}\n".encode()
        assert conn.cwd == start
        after = conn.run("pwd")
        assert after.stdout == f"forced:pwd\n{start}\n".encode()
        assert conn.cwd == start


def test_forced_command_refuses_client_cwd(home: Path, server: ServerProcess) -> None:
    """A forced command runs where the administrator expects (the session's
    home), not in a directory the client picks: ``command="./backup.sh"``
    run in an attacker-chosen directory would run the attacker's script.
    Asking for a cwd is refused outright; without one, the home is used."""
    authorize(server, f'command="pwd" {user_key(server)}')
    with connect(server) as conn:
        home_dir = conn.cwd
        refused = conn.run("anything", cwd="/tmp")
        assert refused.exit_code == 126 and refused.stdout == b""
        assert refused.error is not None and "cwd not permitted" in refused.error
        result = conn.run("anything")
        assert result.stdout == f"{home_dir}\n".encode(), result


def test_forced_command_cannot_be_hijacked_through_env(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """A client-supplied PATH must not choose which program the forced
    command runs; otherwise command="..." confines nothing."""
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "escaped"
    script = evil / "date"
    script.write_text(f"#!/bin/sh\necho escaped\necho escaped > {marker}\n")
    script.chmod(0o755)
    authorize(server, f'command="date +forced-%Y" {user_key(server)}')
    with connect(server) as conn:
        result = conn.run("anything", env={"PATH": str(evil)})
    assert not marker.exists(), f"forced command escaped: {result}"
    assert b"escaped" not in result.stdout


# ---- from= -----------------------------------------------------------------------


def test_from_loopback_allows(home: Path, server: ServerProcess) -> None:
    authorize(server, f'from="127.0.0.1" {user_key(server)}')
    proc = cli(home, server.address, "-c", "echo allowed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"allowed\n"


@pytest.mark.parametrize("patterns", ["10.0.0.0/8", "!127.0.0.1,*"])
def test_from_denies(home: Path, server: ServerProcess, tmp_path: Path, patterns: str) -> None:
    """A key used from an address its from= excludes grants nothing, and the
    server says why in its log."""
    authorize(server, f'from="{patterns}" {user_key(server)}')
    marker = tmp_path / "ran"
    line = assert_refused(cli(home, server.address, "-c", f"touch {marker}"), marker)
    assert "refused" in line
    server.wait_for_log(r"authentication failed for key SHA256:\S+: from= .* excludes 127\.0\.0\.1")


# ---- restrict -----------------------------------------------------------------------


def test_restrict_refuses_client_environment(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """restrict: a request carrying environment is a command error and does
    not run; plain commands still work on the same connection."""
    authorize(server, f"restrict {user_key(server)}")
    marker = tmp_path / "ran"
    with connect(server) as conn:
        refused = conn.run(f"touch {marker}", env={"FOO": "bar"})
        assert not refused.ok
        assert refused.error is not None and "restrict" in refused.error
        assert not marker.exists()
        plain = conn.run("echo plain")
        assert (plain.exit_code, plain.stdout) == (0, b"plain\n")


# ---- the authorized_keys file ----------------------------------------------------------


def test_garbage_lines_are_skipped_and_logged(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """Random text, a truncated key and an unknown option are each skipped with
    a warning naming the line; the valid key on a later line still works,
    and the skipped line for the same key lends it nothing."""
    mine = user_key(server)
    kind, blob = mine.split()[:2]
    path = authorize(
        server,
        "# managed by hand",
        "lorem ipsum dolor sit amet",
        f"{kind} {blob[:len(blob) // 2]}",
        f'frobnicate="yes",command="echo hijacked" {mine}',
        mine,
    )
    proc = cli(home, server.address, "-c", "echo still works")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"still works\n"
    where = re.escape(str(path))
    server.wait_for_log(rf"WARNING .*{where} line 2 skipped")
    server.wait_for_log(rf"WARNING .*{where} line 3 skipped")
    server.wait_for_log(rf"WARNING .*{where} line 4 skipped: .*frobnicate")
    assert re.search(r"line [15] skipped", server.log) is None
    assert server.proc.poll() is None


def test_authorized_keys_writable_by_others_is_not_re_read(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """Anyone who can edit authorized_keys could let themselves in: while it
    is writable by others it is not read again (the list read while it was
    safe stays in force: no intruder's line, no lock-out), and the log says
    so once; fixing the mode reads it again."""
    keys = home / "server" / "authorized_keys"
    assert cli(home, server.address, "-c", "true").returncode == 0
    intruder = ssh_keygen(tmp_path / "intruder", "ed25519")

    keys.chmod(0o666)
    with keys.open("a") as f:
        f.write(Path(f"{intruder}.pub").read_text())
    refused = cli(home, server.address, "-i", str(intruder), "-c", "echo pwned")
    assert refused.returncode == 255 and b"pwned" not in refused.stdout, refused.stderr
    server.wait_for_log(rf"ERROR not re-reading {re.escape(str(keys))}: "
                        rf"{re.escape(str(keys))} is writable by others \(mode 0666\)")
    user = cli(home, server.address, "-c", "echo in")
    assert user.returncode == 0 and user.stdout == b"in\n", user.stderr
    assert server.log.count("not re-reading") == 1, server.log

    keys.chmod(0o600)  # safe again: read again, the new line included
    proc = cli(home, server.address, "-i", str(intruder), "-c", "echo now listed")
    assert proc.returncode == 0 and proc.stdout == b"now listed\n", proc.stderr


def test_authorized_keys_re_read_without_restart(
    home: Path, server: ServerProcess, tmp_path: Path
) -> None:
    """Removing the user's key refuses the next connection; adding it back
    accepts again; same server process throughout."""
    mine = user_key(server)
    stranger = public(ssh_keygen(tmp_path / "stranger", "ed25519"))
    assert cli(home, server.address, "-c", "true").returncode == 0
    authorize(server, stranger)
    marker = tmp_path / "ran"
    line = assert_refused(cli(home, server.address, "-c", f"touch {marker}"), marker)
    assert "refused key" in line
    server.wait_for_log(r"authentication failed for key \S+: key not in authorized_keys")
    authorize(server, stranger, mine)
    proc = cli(home, server.address, "-c", "echo back")
    assert (proc.returncode, proc.stdout) == (0, b"back\n"), proc.stderr
    assert server.proc.poll() is None
    assert len(re.findall(r"listening on", server.log)) == 1


def test_api_reports_refusal(home: Path, server: ServerProcess) -> None:
    """The API raises AuthenticationFailed (exit code 255) naming the key."""
    authorize(server, "# nobody")
    with pytest.raises(AuthenticationFailed, match="refused key SHA256:") as info:
        connect(server)
    assert info.value.exit_code == 255


@pytest.mark.parametrize("how", ["empty", "deleted", "missing from the start"])
def test_no_authorized_keys_grants_nothing(
    home: Path, start_server: object, tmp_path: Path, how: str
) -> None:
    """Without a single usable line nobody gets in: never a default grant."""
    marker = tmp_path / "ran"
    if how == "missing from the start":
        assert cli(home, "keygen").returncode == 0  # the user has a key...
        path = tmp_path / "nowhere" / "authorized_keys"
        srv: ServerProcess = start_server("--authorized-keys", str(path))  # type: ignore[operator]
    else:
        srv = start_server()  # type: ignore[operator]
        path = authorize(srv)
        if how == "deleted":
            path.unlink()
    line = assert_refused(cli(home, srv.address, "-c", f"touch {marker}"), marker)
    assert "refused key" in line
    srv.wait_for_log(r"authentication failed for key \S+: key not in authorized_keys")
    if how != "empty":
        srv.wait_for_log(r"WARNING .*authorized_keys does not exist: nobody can log in")
    assert not path.exists() or path.read_text() == ""
