"""StrictModes, as sshd: a file that decides who logs in, who the server is
or what the record says is refused when another account could have written
it, or any directory on the real path to it (trust/modes.py).

The escalations a second local account (``nobody``) had are played for real
as that account, in a directory it can reach, then the server is started on
the result: each is refused with one line naming the offending path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rshell.trust import keys, modes
from tests.support.cli import RSHELL_SERVER, base_env, cli
from tests.support.servers import ServerProcess

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second account")


# ---- the rule, on real files ----------------------------------------------------


def test_a_private_path_is_trusted(tmp_path: Path) -> None:
    """tmp_path sits below /tmp, root's sticky directory: allowed as a step."""
    path = tmp_path / "authorized_keys"
    path.write_text("")
    path.chmod(0o600)
    assert modes.problem(path) == ""
    assert modes.problem(tmp_path / "not yet there") == ""


def test_a_file_of_ours_directly_in_tmp_is_trusted() -> None:
    fd, name = tempfile.mkstemp(dir="/tmp")
    os.close(fd)
    try:
        assert modes.problem(name) == ""
    finally:
        os.unlink(name)


def test_a_writable_directory_anywhere_above_is_named(tmp_path: Path) -> None:
    deep = tmp_path / "open" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "keys").write_text("")
    (tmp_path / "open").chmod(0o777)
    assert modes.problem(deep / "keys") == f"{tmp_path / 'open'} is writable by others (mode 0777)"


def test_a_sticky_directory_of_the_servers_account_is_no_exception(tmp_path: Path) -> None:
    """Only root's sticky directories are a safe step: in one of the server
    account's own, any account may still create the entry first.  (Run as
    root, the server's account is played by another uid.)"""
    account = os.getuid() or 4242
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    (sticky / "keys").write_text("")
    os.chown(sticky, account, -1)
    os.chown(sticky / "keys", account, -1)
    assert modes.problem(sticky / "keys", uid=account) == ""
    sticky.chmod(0o1777)
    assert modes.problem(sticky / "keys", uid=account) == \
        f"{sticky} is writable by others (mode 1777)"


def test_a_symlink_is_judged_by_its_target_and_its_own_directory(tmp_path: Path) -> None:
    safe, loose = tmp_path / "safe", tmp_path / "loose"
    safe.mkdir()
    loose.mkdir()
    loose.chmod(0o777)
    (loose / "keys").write_text("")
    (safe / "keys").write_text("")
    (safe / "to-loose").symlink_to(loose / "keys")
    (loose / "to-safe").symlink_to(safe / "keys")
    (safe / "relative").symlink_to("keys")
    assert modes.problem(safe / "to-loose") == f"{loose} is writable by others (mode 0777)"
    assert modes.problem(loose / "to-safe") == f"{loose} is writable by others (mode 0777)"
    assert modes.problem(safe / "relative") == ""
    (safe / "loop").symlink_to("loop")
    assert "too many levels of symbolic links" in modes.problem(safe / "loop")


def test_a_link_partway_up_is_judged_where_it_lives(tmp_path: Path) -> None:
    """A link in a writable directory partway up the path: whoever can write
    there can re-point it, so that directory is named, even though the link
    leads somewhere safe (the path's real directories alone looked fine)."""
    safe, loose = tmp_path / "safe", tmp_path / "loose"
    safe.mkdir()
    (safe / "keys").write_text("")
    loose.mkdir()
    loose.chmod(0o777)
    (loose / "d").symlink_to(safe)
    assert modes.problem(loose / "d" / "keys") == f"{loose} is writable by others (mode 0777)"
    (safe / "up").symlink_to("../safe/./keys")  # dots in a target: resolved as the kernel does
    assert modes.problem(safe / "up") == ""


def test_the_file_read_is_the_file_judged(tmp_path: Path) -> None:
    """Replaced between the judgement and the read: the read refuses it."""
    path, other = tmp_path / "keys", tmp_path / "other"
    path.write_text("judged\n")
    other.write_text("swapped in\n")
    examined = modes.examine(path)
    assert examined.problem == "" and modes.read(examined) == b"judged\n"
    os.replace(other, path)
    with pytest.raises(modes.Changed):
        modes.read(examined)


def test_the_file_itself_writable_or_a_key_readable(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    path.chmod(0o646)
    assert modes.problem(path) == f"{path} is writable by others (mode 0646)"
    path.chmod(0o644)
    assert modes.problem(path) == ""
    assert modes.problem(path, private=True) == \
        f"{path} is a private key accessible by others (mode 0644)"


@as_root
def test_another_accounts_file_or_a_shared_group_is_named(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    os.chown(path, NOBODY, -1)
    assert modes.problem(path) == f"{path} is owned by nobody (uid {NOBODY}), not by root"
    os.chown(path, 0, NOBODY)  # group nogroup: shared by whoever has it
    path.chmod(0o660)
    assert modes.problem(path) == f"{path} is writable by its group (mode 0660)"


@as_root
def test_a_link_owned_by_another_account_is_named(tmp_path: Path) -> None:
    """A link someone else made (in /tmp, say) leads wherever they like."""
    (tmp_path / "keys").write_text("")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "keys")
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    assert modes.problem(link) == f"{link} is a link owned by nobody (uid {NOBODY}), not by root"


# ---- the escalations, as a second account, against the real server ----------------


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory the second account can reach (pytest's own are private)."""
    path = Path(tempfile.mkdtemp(prefix="rshell-strict-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as_nobody(script: str, *args: str) -> None:
    subprocess.run(["sh", "-ec", script, "sh", *args], user=NOBODY, group=NOBODY,
                   extra_groups=[], check=True, timeout=10)


def _refused_start(home: Path, *flags: str) -> str:
    """Start the server; it must refuse, with its last line saying why."""
    proc = subprocess.run([RSHELL_SERVER, "--bind", "127.0.0.1:0", *flags], env=base_env(home),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 255, proc.stderr
    assert "Traceback" not in proc.stderr and "listening" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("rshell-server: refusing "), proc.stderr
    assert last.endswith("(fix it, or --strict-modes=no)"), proc.stderr
    return last


def _key_pair(path: Path) -> str:
    return keys.write_key_pair(path, keys.generate("ed25519"), "attacker@strict")


@as_root
def test_a_writable_directory_higher_up_is_refused(
    home: Path, reachable: Path, tmp_path: Path
) -> None:
    """nobody renames the directory holding authorized_keys and puts its own in place."""
    own = (home / "id_ed25519.pub")
    keys.write_key_pair(home / "id_ed25519", keys.generate("ed25519"), "me@strict")
    open_dir = reachable / "open"
    (open_dir / "keys").mkdir(parents=True, mode=0o700)
    open_dir.chmod(0o777)
    authorized = open_dir / "keys" / "authorized_keys"
    authorized.write_text(own.read_text())
    attacker = _key_pair(reachable / "attacker_key")
    _as_nobody('mv "$1/keys" "$1/mine"; mkdir "$1/keys"; echo "$2" > "$1/keys/authorized_keys"',
               str(open_dir), attacker)
    line = _refused_start(home, "--authorized-keys", str(authorized))
    assert f"{open_dir} is writable by others (mode 0777)" in line


@as_root
def test_a_file_planted_in_a_sticky_directory_is_refused(home: Path, reachable: Path) -> None:
    """nobody creates the file first in a /tmp-style directory; the server's
    account would find it there, writable only by nobody, holding nobody's key."""
    sticky = reachable / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    attacker = _key_pair(reachable / "attacker_key")
    planted = sticky / "authorized_keys"
    _as_nobody('umask 022; echo "$2" > "$1"', str(planted), attacker)
    line = _refused_start(home, "--authorized-keys", str(planted))
    assert f"{planted} is owned by nobody (uid {NOBODY}), not by root" in line


@as_root
def test_a_symlink_into_a_writable_directory_is_refused(home: Path, reachable: Path) -> None:
    """state/authorized_keys is a link; nobody replaces what it points to."""
    loose = reachable / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    target = loose / "authorized_keys"
    target.write_text("")
    target.chmod(0o600)
    (home / "server").mkdir(mode=0o700)
    (home / "server" / "authorized_keys").symlink_to(target)
    attacker = _key_pair(reachable / "attacker_key")
    _as_nobody('rm -f "$1"; echo "$2" > "$1"', str(target), attacker)
    line = _refused_start(home)
    assert f"{loose} is writable by others (mode 0777)" in line


@as_root
def test_unsafe_on_re_read_keeps_the_list_read_before(
    home: Path, reachable: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """The server is running when a directory above authorized_keys turns
    world-writable and nobody swaps its own key in: nobody is refused, the
    user still gets in (the last safe list stays), one line says why, and
    fixing the directory lets the file be read again."""
    keys.write_key_pair(home / "id_ed25519", keys.generate("ed25519"), "me@strict")
    shared = reachable / "shared"
    (shared / "keys").mkdir(parents=True, mode=0o700)
    shared.chmod(0o755)
    authorized = shared / "keys" / "authorized_keys"
    authorized.write_text((home / "id_ed25519.pub").read_text())
    server: ServerProcess = start_server("--authorized-keys", str(authorized))
    assert cli(home, server.address, "-c", "echo in").stdout == b"in\n"

    attacker_key = reachable / "attacker_key"
    attacker = _key_pair(attacker_key)
    shared.chmod(0o777)
    _as_nobody('mv "$1/keys" "$1/mine"; mkdir "$1/keys"; echo "$2" > "$1/keys/authorized_keys"',
               str(shared), attacker)
    refused = cli(home, server.address, "-i", str(attacker_key), "-c", "echo pwned")
    assert refused.returncode == 255 and b"pwned" not in refused.stdout, refused.stderr
    server.wait_for_log(rf"ERROR not re-reading {authorized}: {shared} is writable by others "
                        r"\(mode 0777\); the 1 key\(s\) read before stay in force")
    user = cli(home, server.address, "-c", "echo still in")
    assert user.returncode == 0 and user.stdout == b"still in\n", user.stderr
    assert server.log.count("not re-reading") == 1, server.log

    shared.chmod(0o755)  # fixed: the file (now nobody's) is judged again, on its own
    again = cli(home, server.address, "-i", str(attacker_key), "-c", "echo pwned")
    assert again.returncode == 255 and b"pwned" not in again.stdout, again.stderr
    server.wait_for_log(rf"not re-reading {authorized}: {shared / 'keys'} is owned by nobody")


# ---- the files the server itself keeps ------------------------------------------


def test_a_world_writable_state_directory_is_refused(home: Path) -> None:
    state = home / "server"
    state.mkdir(mode=0o700)
    state.chmod(0o777)
    line = _refused_start(home)
    assert line == (f"rshell-server: refusing state directory {state}: {state} is writable "
                    "by others (mode 0777) (fix it, or --strict-modes=no)")


@as_root
def test_a_host_key_owned_by_another_account_is_refused(home: Path) -> None:
    state = home / "server"
    keys.write_key_pair(state / "host_key", keys.generate("ed25519"), "planted")
    os.chown(state / "host_key", NOBODY, NOBODY)
    line = _refused_start(home)
    assert f"host key {state / 'host_key'}: {state / 'host_key'} is owned by nobody" in line


def test_a_readable_host_key_is_refused(home: Path) -> None:
    state = home / "server"
    keys.write_key_pair(state / "host_key", keys.generate("ed25519"), "loose")
    (state / "host_key").chmod(0o644)
    line = _refused_start(home)
    assert "is a private key accessible by others (mode 0644)" in line


def test_an_audit_log_in_a_writable_directory_is_refused(home: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    line = _refused_start(home, "--audit-log", str(logs / "audit.jsonl"))
    assert f"refusing audit log {logs / 'audit.jsonl'}: {logs} is writable by others" in line


def test_strict_modes_no_is_a_loud_opt_out(
    home: Path, start_server: Callable[..., ServerProcess]
) -> None:
    state = home / "server"
    state.mkdir(mode=0o700)
    state.chmod(0o777)
    try:
        server: ServerProcess = start_server("--strict-modes=no")
        server.wait_for_log(r"WARNING STRICT MODES DISABLED \(--strict-modes=no\)")
        server.wait_for_log(rf"WARNING state directory {state} is not safe: {state} is writable "
                            r"by others \(mode 0777\); used anyway")
        assert cli(home, server.address, "-c", "echo in").stdout == b"in\n"
    finally:
        state.chmod(0o700)


def test_a_fresh_state_path_under_umask_002_still_starts(
    tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    """Every directory a first start creates is private whatever the umask
    (mkdir -p would leave 0775 parents, which the check would then refuse)."""
    state = tmp_path / "a" / "b" / "state"
    old = os.umask(0o002)
    try:
        server = start_server("--state-dir", str(state))
    finally:
        os.umask(old)
    for level in (tmp_path / "a", tmp_path / "a" / "b", state):
        assert level.stat().st_mode & 0o077 == 0, level
    assert cli(server.home, server.address, "-c", "echo in").stdout == b"in\n"
