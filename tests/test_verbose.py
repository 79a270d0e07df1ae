"""``rshell -v`` / ``-vv``: what the connection does, on stderr only, in
OpenSSH's style (``rshell: debug1: ...``), for both backends; and nothing,
not even ``import logging``, without it.  Real server, real sshd, real CLI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, base_env, cli
from tests.test_ssh_client import SSHD, Sshd

#: A command whose stdout and stderr are both busy and interleaved.
NOISY = "for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'no newline'"


def debug_lines(stderr: bytes, level: int | None = None) -> list[str]:
    lines = stderr.decode(errors="replace").splitlines()
    tag = "debug" if level is None else f"debug{level}"
    return [ln for ln in lines if ln.startswith(f"rshell: {tag}")]


def test_v_says_target_tls_host_key_identity_and_timings(server: ServerProcess) -> None:
    plain = cli(server.home, server.address, "-c", NOISY)
    proc = cli(server.home, "-v", server.address, "-c", NOISY)
    assert proc.returncode == plain.returncode == 0, proc.stderr
    assert proc.stdout == plain.stdout == b"out1\nout2\nout3\nno newline"
    text = "\n".join(debug_lines(proc.stderr, 1))
    host, port = server.address.rsplit(":", 1)
    assert f"rshell: debug1: connecting to {host} port {port}" in text
    assert re.search(r"connected to 127\.0\.0\.1 port \d+ \(TCP, [\d.]+ ms\)", text), text
    assert re.search(r"debug1: TLSv1\.3, cipher TLS_\w+ \([\d.]+ ms\)", text), text
    assert f"server host key: {server.fingerprint}" in text
    assert f"host {server.address} is known and matches" in text
    identity = server.home / "id_ed25519"
    assert re.search(rf"offering key SHA256:\S+ \({re.escape(str(identity))}\)", text), text
    assert re.search(r"key SHA256:\S+ accepted \([\d.]+ ms\)", text), text
    assert re.search(r"session to \S+ open in [\d.]+ ms", text), text
    # The command's stderr is all there, each line whole, besides the debug lines.
    rest = [ln for ln in proc.stderr.decode().splitlines() if not ln.startswith("rshell: debug")]
    assert rest == ["err1", "err2", "err3"]
    assert not debug_lines(proc.stderr, 2), "-v says debug2 lines"


def test_vv_says_more_and_no_v_says_nothing(server: ServerProcess) -> None:
    one = cli(server.home, "-v", server.address, "-c", "echo hi")
    two = cli(server.home, "-vv", server.address, "-c", "echo hi")
    none = cli(server.home, server.address, "-c", "echo hi")
    assert one.stdout == two.stdout == none.stdout == b"hi\n"
    assert debug_lines(two.stderr, 2), two.stderr
    assert len(debug_lines(two.stderr)) > len(debug_lines(one.stderr))
    assert any("welcome from rshell/" in ln for ln in debug_lines(two.stderr, 2))
    assert none.stderr == b""
    # The full (click) path without -v is as quiet as the fast path.
    full = cli(server.home, "-q", server.address, "-c", "echo hi")
    assert full.stderr == b""


def test_v_says_an_unknown_host_is_pinned(start_server: Callable[..., ServerProcess],
                                          home: Path, tmp_path: Path) -> None:
    srv = start_server()
    known = tmp_path / "elsewhere"
    proc = cli(home, "-v", "--known-hosts", str(known), srv.address, "-c", "true")
    assert proc.returncode == 0, proc.stderr
    text = "\n".join(debug_lines(proc.stderr, 1))
    assert f"host {srv.address} was unknown: accepted (new), pinned in {known}" in text


def test_the_cold_one_shot_does_not_import_logging(server: ServerProcess) -> None:
    """The debug lines cost nothing when off: ``rshell HOST -c CMD`` never
    loads ``logging`` (options.debug looks for it in sys.modules)."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write(f\"LOGGING={'logging' in sys.modules}\\n\"))\n"
        "from rshell.cli.entry import main\n"
        f"main([{server.address!r}, '-c', 'true'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          env=base_env(server.home), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().strip().splitlines()[-1] == "LOGGING=False", proc.stderr


@pytest.mark.skipif(not os.path.exists(SSHD), reason="OpenSSH server missing")
def test_v_over_ssh(tmp_path: Path) -> None:
    sshd = Sshd(tmp_path / "sshd")
    try:
        first = sshd.cli("-v", "-c", NOISY)  # unknown host: pinned
        again = sshd.cli("-v", "-c", NOISY)
        plain = sshd.cli("-c", NOISY)
        very = sshd.cli("-vvv", "-c", "true")
    finally:
        sshd.stop()
    assert first.returncode == again.returncode == plain.returncode == 0, first.stderr
    assert first.stdout == again.stdout == plain.stdout == b"out1\nout2\nout3\nno newline"
    assert plain.stderr == b"err1\nerr2\nerr3\n"
    text = "\n".join(debug_lines(first.stderr, 1))
    assert f"connecting to 127.0.0.1 port {sshd.port} as " in text
    assert "server host key: ssh-ed25519 SHA256:" in text
    assert "was unknown: accepted, added to" in text
    assert re.search(r"SSH handshake done in [\d.]+ ms: server SSH-2\.0-OpenSSH.*, cipher \S+",
                     text), text
    assert re.search(rf"offering key SHA256:\S+ \({re.escape(str(sshd.client_key))}\)", text)
    assert re.search(r"key SHA256:\S+ accepted \([\d.]+ ms\)", text), text
    assert re.search(r"authenticated to ssh://\S+ in [\d.]+ ms", text), text
    again_text = "\n".join(debug_lines(again.stderr, 1))
    assert "is known and matches" in again_text
    assert any(ln.startswith("rshell: debug3: paramiko: ") for ln in very.stderr.decode()
               .splitlines()), very.stderr


def test_debug_is_silent_while_another_thread_is_still_importing_logging(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet's first ssh:// host imports paramiko, and so logging, in its
    thread; another host's thread calling debug() then must not touch the
    half-made module (it crashed a mixed native and ssh:// run with
    "module 'logging' has no attribute 'getLogger'")."""
    import importlib.machinery
    import sys
    import types

    from rshell.client.options import debug, debugging

    half = types.ModuleType("logging")
    half.__spec__ = importlib.machinery.ModuleSpec("logging", None)
    half.__spec__._initializing = True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "logging", half)
    debug(1, "nothing to say %s", "yet")
    assert debugging() is False
