"""The deployment material in server/ works as shipped: the systemd unit
passes ``systemd-analyze verify``, its account and paths are the ones
server/README.md tells the operator to create, and the README's first
deployment (the first key put in place, example.env's flags, then
``rshell copy-id``) admits users, played here without systemd."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RSHELL_SERVER, ServerProcess, base_env, cli

SERVER_DIR = Path(__file__).resolve().parents[1] / "server"
UNIT = SERVER_DIR / "rshell-server.service"
SHIPPED_SERVER = "/opt/rshell/bin/rshell-server"


def unit_settings() -> dict[str, list[str]]:
    """The unit's ``Key=value`` lines (every value of a repeated key)."""
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def readme_commands() -> list[list[str]]:
    """The shell commands of server/README.md's "First deployment" block,
    as words (continuation lines joined, comments dropped)."""
    text = (SERVER_DIR / "README.md").read_text()
    section = text.split("## First deployment", 1)[1].split("\n## ", 1)[0]
    block = "\n".join(line[4:] for line in section.splitlines() if line.startswith("    "))
    return [words for words in (shlex.split(line, comments=True)
                                 for line in block.replace("\\\n", " ").splitlines()) if words]


def command(words: str) -> list[str]:
    """The README command that starts with ``words``."""
    start = words.split()
    found = [c for c in readme_commands() if c[: len(start)] == start]
    assert len(found) == 1, f"server/README.md: one '{words} ...' command expected"
    return found[0]


def test_the_unit_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify``, with not a single warning, on the unit as
    shipped but for its binary's path, which must exist for verify to pass:
    the venv's real rshell-server stands in for /opt/rshell's."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing (.ci/run installs the systemd package)")
    text = UNIT.read_text()
    assert text.count(SHIPPED_SERVER) == 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(SHIPPED_SERVER, RSHELL_SERVER))
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # And it does judge: a typo'd option is reported.
    unit.write_text(text.replace(SHIPPED_SERVER, RSHELL_SERVER)
                    .replace("ProtectSystem=strict", "ProtectSystem=strcit"))
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert "ProtectSystem" in proc.stderr or "protect system" in proc.stderr


def test_the_unit_and_the_readme_agree() -> None:
    """The account, its home, the venv, the flags file and the first key's
    path: the README creates exactly what the unit uses."""
    unit = unit_settings()
    useradd = command("useradd")
    account = useradd[-1]
    home = useradd[useradd.index("--home-dir") + 1]
    assert unit["User"] == [account] and unit["Group"] == [account]
    assert "--user-group" in useradd
    assert unit["StateDirectory"] == [Path(home).name] and home == f"/var/lib/{Path(home).name}"
    assert f"RSHELL_HOME={home}" in unit["Environment"]
    assert unit["WorkingDirectory"] == [home]

    venv = command("python3 -m venv")[-1]
    assert command(f"{venv}/bin/pip install")[-1] == "."
    assert unit["ExecStart"][0].split()[0] == f"{venv}/bin/rshell-server" == SHIPPED_SERVER

    env_file = command("install -m 0644 server/example.env")[-1]
    assert unit["EnvironmentFile"] == [f"-{env_file}"]
    assert unit["ExecStart"][0].split()[1:] == ["$RSHELL_SERVER_ARGS"]
    assert command("install -m 0644 server/rshell-server.service")[-1] == "/etc/systemd/system/"

    # The first key goes where the server reads authorized_keys by default
    # ($RSHELL_HOME/server), in directories owned by the account, 0700.
    first_key = command(f"install -o {account} -g {account} -m 0600")
    assert first_key[-1] == f"{home}/server/authorized_keys"
    dirs = command(f"install -d -o {account} -g {account} -m 0700")
    assert dirs[-2:] == [home, f"{home}/server"]


def example_args(state: Path) -> list[str]:
    """example.env's flags, read as systemd's EnvironmentFile= reads them,
    with the addresses and the log path of this test."""
    values = dict(line.split("=", 1) for line in (SERVER_DIR / "example.env").read_text()
                  .splitlines() if line.strip() and not line.startswith("#"))
    args = shlex.split(shlex.split(values["RSHELL_SERVER_ARGS"])[0])
    for flag, value in (("--bind", "127.0.0.1:0"), ("--audit-log", str(state / "audit.jsonl"))):
        assert flag in args
        args[args.index(flag) + 1] = value
    return args


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, Path]]:
    """The README's steps 4 and 5 in a temporary root: the state directory
    (the account's RSHELL_HOME) with alice's key as the first, then the
    server with example.env's flags.  Yields (server, alice's home, state)."""
    alice = tmp_path / "alice"
    alice.mkdir()
    assert cli(alice, "keygen").returncode == 0
    state = tmp_path / "var-lib-rshell"
    (state / "server").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    first = state / "server" / "authorized_keys"
    shutil.copyfile(alice / "id_ed25519.pub", first)
    first.chmod(0o600)
    srv = ServerProcess(alice, example_args(state), base_env(state))
    yield srv, alice, state
    srv.stop(signal.SIGKILL if srv.proc.poll() is None else signal.SIGTERM)
    print(f"---- server log ----\n{srv.log}")


def test_first_deployment_admits_the_first_key_then_copy_id(
    deployed: tuple[ServerProcess, Path, Path], tmp_path: Path
) -> None:
    srv, alice, state = deployed
    assert cli(alice, srv.address, "-c", "true").returncode == 0
    assert "created" not in srv.log  # no key of the server's own was provisioned

    bob = tmp_path / "bob"
    bob.mkdir()
    assert cli(bob, "keygen").returncode == 0
    assert cli(bob, srv.address, "-c", "true").returncode == 255
    added = cli(alice, "copy-id", "-i", str(bob / "id_ed25519.pub"), srv.address)
    assert added.returncode == 0, added.stderr
    assert re.fullmatch(rf"added key SHA256:\S+ to {re.escape(srv.address)}:"
                        rf"{re.escape(str(state / 'server' / 'authorized_keys'))}\n",
                        added.stdout.decode())
    (bob / "known_hosts").write_text((alice / "known_hosts").read_text())
    assert cli(bob, srv.address, "-c", "true").returncode == 0
    assert len((state / "server" / "authorized_keys").read_text().splitlines()) == 2
    assert (state / "audit.jsonl").stat().st_size > 0

