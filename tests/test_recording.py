"""Session recording (SPEC §9, ``--record-dir``, ``--record-input``): every
terminal session becomes an asciicast v2 file, checked here event by event
against the format and against what the client received, and replayed by
``asciinema cat``, on the native listener (the API's ``Connection.terminal``)
and through ``--ssh-bind`` (paramiko's client: pty-req, exec, window-change);
its mode and name, the audit log's reference, a refused unsafe directory,
and the writer's own rules (a character split across reads, a full disk)."""

from __future__ import annotations

import calendar
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rshell.client.terminal import Terminal
from rshell.exec.cast import BUFFER, Cast
from rshell.exec.policy import Launch, Limits
from rshell.exec.terminal import Pty
from tests.conftest import InProcessServer, ServerProcess, connect
from tests.parity_support import paramiko_client, read_to_eof, read_until, start_both
from tests.support.servers import Server
from tests.test_strict_modes import _refused_start

#: ``YYYYmmddTHHMMSS-<pid>.<connection>.<serial>-<key>.cast``
NAME = re.compile(r"^(\d{8}T\d{6})-(\d+)\.(\d+)\.(\d+)-([A-Za-z0-9._-]+)\.cast$")
#: Output that ends right after the first byte of 'é' (0xc3 0xa9), then
#: waits for a line, so that the second byte comes in a later read (no echo
#: of the line between them).
SCRIPT = ("stty -echo; printf 'ready\\n'; read a; printf 'half \\303'; read b; "
          "printf '\\251 %s|%s\\n' \"$a\" \"$b\"")
TYPED = ("hello\r", "wörld\r")


def cast_file(directory: Path) -> Path:
    files = list(directory.iterdir())
    assert len(files) == 1, files
    return files[0]


def events(path: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """The header and the events, every line checked against asciicast v2."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == "", "the file ends with a newline"
    header = json.loads(lines[0])
    assert isinstance(header, dict) and header["version"] == 2
    parsed = [json.loads(line) for line in lines[1:-1]]
    last = 0.0
    for event in parsed:
        assert isinstance(event, list) and len(event) == 3, event
        t, kind, text = event
        assert isinstance(t, float | int) and t >= last, (t, last)
        assert kind in ("o", "i", "r") and isinstance(text, str), event
        last = t
    return header, parsed


def text_of(evts: list[list[Any]], kind: str) -> str:
    return "".join(e[2] for e in evts if e[1] == kind)


def audit_events(path: Path, kind: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["event"] == kind]


def safe_name(fingerprint: str) -> str:
    """The key's part of a recording's name (the contract, spelled out)."""
    return fingerprint.replace("SHA256:", "SHA256_").replace("/", "_").replace("+", "-")


def drive(term: Terminal) -> bytes:
    """Type TYPED at SCRIPT, resizing the window on the way; all it received."""
    seen = term.read_until("ready\r\n", timeout=10)
    term.resize(120, 40)
    term.write(TYPED[0])
    seen += term.read_until(b"half \xc3", timeout=10)
    term.write(TYPED[1])
    result = term.wait(timeout=10)
    assert result.exit_code == 0, result
    return seen + result.stdout


def check_recording(path: Path, received: bytes, command: str, *, typed: bool,
                    started: float) -> list[list[Any]]:
    """The file against the format and against what the client received."""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    header, evts = events(path)
    assert (header["width"], header["height"]) == (100, 30)
    assert header["env"] == {"TERM": "xterm-256color", "SHELL": "/bin/sh"}
    assert header["title"] == command
    assert started - 1 <= header["timestamp"] <= time.time() + 1
    output = text_of(evts, "o")
    assert output == received.decode("utf-8", "replace")
    assert "half é hello|wörld" in output, output  # the split character, whole
    assert ["r", "120x40"] in [e[1:] for e in evts]
    assert text_of(evts, "i") == ("".join(TYPED) if typed else "")
    # asciinema itself (the test extras) replays it as the client saw it.
    replay = subprocess.run([sys.executable, "-m", "asciinema", "cat", str(path)],
                            capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == received
    return evts


@pytest.mark.parametrize("typed", [False, True], ids=["output", "with-input"])
def test_a_native_terminal_session_is_recorded(
    start_in_process: Callable[..., InProcessServer], tmp_path: Path, typed: bool
) -> None:
    records, audit = tmp_path / "records", tmp_path / "audit.jsonl"
    flags = ["--record-dir", str(records), "--audit-log", str(audit)]
    srv = start_in_process(*flags, *(["--record-input"] if typed else []))
    assert stat.S_IMODE(records.stat().st_mode) == 0o700, "made private"
    started = time.time()
    with connect(srv) as conn:
        conn.run("true")  # not on a terminal: not recorded
        with conn.terminal(SCRIPT, term="xterm-256color", size=(100, 30)) as term:
            received = drive(term)
    path = cast_file(records)
    check_recording(path, received, SCRIPT, typed=typed, started=started)
    check_references(path, audit, srv, os.getpid(), started)


def check_references(path: Path, audit: Path, srv: Server, pid: int, started: float) -> None:
    """The name's parts, and the audit log and the log naming the file."""
    name = NAME.match(path.name)
    assert name is not None, path.name
    assert started - 1 <= calendar.timegm(time.strptime(name[1], "%Y%m%dT%H%M%S")) <= time.time()
    assert int(name[2]) == pid
    key = audit_events(audit, "auth")[0]["key"]
    assert name[5] == safe_name(key)
    starts = audit_events(audit, "command-start")
    assert [s.get("recording") for s in starts] == [None, str(path)]
    assert starts[1]["session"] == f"{name[2]}:{name[3]}"
    srv.wait_for_log(f"terminal session .* recorded in {re.escape(str(path))}", timeout=5)


def test_an_ssh_terminal_session_is_recorded(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The same engine behind --ssh-bind: a pty-req, exec, window-change and
    typed input from paramiko's client, recorded alike."""
    records, audit = tmp_path / "records", tmp_path / "audit.jsonl"
    srv = start_both(start_server, tmp_path / "account", "--record-dir", str(records),
                     "--record-input", "--audit-log", str(audit))
    started = time.time()
    received = bytearray()
    with paramiko_client(srv) as client:
        client.exec_command("true")[1].channel.recv_exit_status()  # no terminal: no recording
        chan = client.get_transport().open_session()
        chan.get_pty(term="xterm-256color", width=100, height=30)
        chan.exec_command(SCRIPT)
        read_until(chan, b"ready\r\n", received)
        chan.resize_pty(width=120, height=40)
        chan.sendall(TYPED[0].encode())
        read_until(chan, b"half \xc3", received)
        chan.sendall(TYPED[1].encode())
        read_to_eof(chan, received)
        assert chan.recv_exit_status() == 0
    path = cast_file(records)
    check_recording(path, bytes(received), SCRIPT, typed=True, started=started)
    check_references(path, audit, srv, srv.proc.pid, started)


def test_recordings_of_one_connection_have_their_own_names(
    start_in_process: Callable[..., InProcessServer], tmp_path: Path
) -> None:
    """Three in the same second on one connection: three files, one session."""
    records = tmp_path / "records"
    srv = start_in_process("--record-dir", str(records))
    with connect(srv) as conn:
        for _ in range(3):
            assert conn.run("echo hi", pty=True).stdout == b"hi\r\n"
    paths = sorted(records.iterdir())
    names = [NAME.match(p.name) for p in paths]
    assert len(paths) == 3 and all(names), paths
    assert len({(n[2], n[3]) for n in names if n}) == 1, paths
    for path in paths:
        assert text_of(events(path)[1], "o") == "hi\r\n"


def test_an_unsafe_record_directory_is_refused_at_start(home: Path, tmp_path: Path) -> None:
    records = tmp_path / "records"
    records.mkdir()
    records.chmod(0o777)
    line = _refused_start(home, "--record-dir", str(records))
    assert line == (f"rshell-server: refusing record directory {records}: {records} is "
                    "writable by others (mode 0777) (fix it, or --strict-modes=no)")


def test_record_input_needs_a_record_dir(home: Path) -> None:
    from tests.conftest import RSHELL_SERVER, base_env, one_line_error

    proc = subprocess.run([RSHELL_SERVER, "--bind", "127.0.0.1:0", "--record-input"],
                          env=base_env(home), capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert one_line_error(proc.stderr, "rshell-server") == (
        "rshell-server: --record-input needs --record-dir")


# ---- the writer itself ----------------------------------------------------------------


def _cast(tmp_path: Path, **launch: Any) -> Cast:
    plan = Launch(text="vi", command="vi", cwd="/", env={"SHELL": "/bin/sh"}, timeout=0,
                  stdin=True, forced=False, pty=Pty("xterm", 80, 24), marker="7:1",
                  fingerprint="SHA256:ab+c/d", **launch)
    cast = Cast.start(plan, Limits(record_dir=str(tmp_path)), 80, 24)
    assert cast is not None
    return cast


def test_a_character_split_anywhere_is_written_whole(tmp_path: Path) -> None:
    data = "é€😀 plain \x1b[1mbold\x1b[0m".encode() + b"\xff bad"
    cast = _cast(tmp_path)
    for byte in data:  # one byte a read: every character split
        cast.output(bytes([byte]))
    cast.output(b"\xe2\x82")  # cut short at the very end
    cast.close()
    evts = events(Path(cast.path))[1]
    assert text_of(evts, "o") == data.decode("utf-8", "replace") + "\ufffd"
    name = NAME.match(Path(cast.path).name)
    assert name is not None and (name[2], name[3], name[5]) == ("7", "1", "SHA256_ab-c_d")


def test_a_full_disk_ends_the_recording_not_the_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    cast = _cast(tmp_path)
    full = open("/dev/full", "wb", buffering=BUFFER)  # noqa: SIM115  # the cast closes it
    cast._file = full  # its writes now fail with ENOSPC, as on a full disk
    with caplog.at_level("ERROR", logger="rshell.server"):
        cast.output(b"x" * 10)  # buffered: fine so far
        cast.output(b"y" * BUFFER)  # the buffer is written: ENOSPC
        cast.output(b"more")
        cast.resize(100, 30)
        cast.close()
    assert not cast.recording and full.closed
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"recording {cast.path} stopped: No space left on device; "
                      "the session goes on unrecorded"], errors


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
