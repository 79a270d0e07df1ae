"""The benchmark stays runnable: tiny runs of every mode write sane JSON.

Not a performance test (no figure is judged here); it only guards the
benchmark script against rotting as rshell changes under it.  Mode all
drives every peer (sshd, ssh, paramiko, asyncssh: the ``test`` extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def run_bench(tmp_path: Path, *args: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """``bench.py --quick ARGS``, which must exit 0: its table and its JSON."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", *args, "--json-out", str(out)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_bench_quick_roundtrip_writes_json(tmp_path: Path) -> None:
    stdout, data = run_bench(tmp_path, "--mode", "plain", "--only", "roundtrip",
                             "--samples", "2", "--batch", "3", timeout=60)
    assert "round trip" in stdout
    assert {"when", "machine", "plan", "modes", "duration_s"} <= data.keys()
    mode = data["modes"]["plain"]
    assert mode["server_exit"] == 0
    assert list(mode["figures"]) == ["roundtrip"]
    fig = mode["figures"]["roundtrip"]
    for side in ("baseline", "rshell"):
        stats = fig[side]
        assert stats["n"] == 2 and len(stats["samples"]) == 2
        assert 0 < stats["min"] <= stats["median"] <= stats["max"]
    assert fig["ratio"] > 0
    assert [t["value"] for t in fig["targets"]] == [1.5, 1.2]
    assert all(isinstance(t["pass"], bool) for t in fig["targets"])
    assert "spawn floor" in stdout
    floor = fig["spawn_floor"]
    assert floor["target"] == "(floor)" and floor["floor"]["n"] == 2
    assert 0 < floor["floor"]["min"] <= floor["floor"]["max"]
    assert floor["ratio"] > 0 and floor["of_baseline"] > 0


def test_bench_tiny_throughput_has_relay_ceiling(tmp_path: Path) -> None:
    """Both modes, a 16 MiB stream: the raw, relay-ceiling and rshell samples
    are all taken, and the ceiling is reported beside the raw ratio."""
    stdout, data = run_bench(tmp_path, "--mode", "both", "--only", "throughput",
                             "--size", "16M", "--samples", "2", timeout=120)
    assert stdout.count("vs relay ceiling") == 2
    for name in ("plain", "tls"):
        mode = data["modes"][name]
        assert mode["server_exit"] == 0
        fig = mode["figures"]["throughput"]
        assert fig["size_bytes"] == 16 << 20
        assert fig["ratio"] > 0 and fig["targets"][0]["value"] == 0.7
        ceiling = fig["relay_ceiling"]
        assert ceiling["target"] == "(ceiling)"
        assert ceiling["relay"]["n"] == 2 and fig["rshell"]["n"] == 2
        assert 0 < ceiling["relay"]["min"] <= ceiling["relay"]["max"]
        assert ceiling["ratio"] == fig["rshell"]["median"] / ceiling["relay"]["median"]
        assert ceiling["of_baseline"] > 0 and ceiling["paired_ratio"]["n"] == 2


def test_bench_tiny_ssh_mode(tmp_path: Path) -> None:
    """Mode ssh: rshell's SSH listener and a private OpenSSH sshd, both measured
    with the same paramiko client; informational ratios, no target."""
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("OpenSSH server missing")
    pytest.importorskip("paramiko")
    stdout, data = run_bench(tmp_path, "--mode", "ssh", "--size", "4M",
                             "--samples", "2", "--batch", "3", timeout=120)
    assert "rshell/sshd" in stdout
    mode = data["modes"]["ssh"]
    assert mode["server_exit"] == 0 and "sshd_exit" in mode
    assert mode["transport"]["sshd"]["server_version"].startswith("SSH-2.0-OpenSSH")
    assert mode["transport"]["rshell"]["server_version"].startswith("SSH-2.0-rshell")
    assert list(mode["figures"]) == ["roundtrip", "throughput"]
    for fig in mode["figures"].values():
        assert fig["targets"] == [] and fig["ratio"] > 0
        assert fig["baseline"]["n"] == 2 and fig["rshell"]["n"] == 2
        assert fig["lost_exit_status"]["sshd"]["commands"] > 0
    assert mode["figures"]["throughput"]["size_bytes"] == 4 << 20


def test_bench_tiny_all_mode(tmp_path: Path) -> None:
    """Mode all, every figure, one round each, a 4 MiB stream: every peer (sshd
    with ssh, paramiko and asyncssh; the raw senders, relay ceilings and the
    spawn floor) is started, measured and stopped, and the JSON has every
    figure, side and comparison; the terminal figures (issue 13) drive ssh -tt
    and rshell -tt on local ptys, asyncssh and rshell's API on remote ones.
    No figure's value is judged."""
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("OpenSSH server missing")
    stdout, data = run_bench(tmp_path, "--mode", "all", "--samples", "1",
                             "--batch", "3", "--size", "4M", timeout=180)
    assert "spawn floor" in stdout and "(floor)" in stdout
    mode = data["modes"]["all"]
    assert mode["peer_errors"] == {}
    assert all(s["exit"] == 0 for s in mode["servers"].values())
    assert mode["peers"]["sshd"]["exit"] == 0
    figures = mode["figures"]
    assert list(figures) == ["roundtrip", "throughput", "cold", "concurrency", "memory",
                             "keystroke", "tty_output", "fleet"]
    for name, fig in figures.items():
        assert fig["rounds"] == 1, name
        assert "rshell" in "".join(fig["sides"]), name
        for side, stats in fig["sides"].items():
            assert "error" not in stats, (name, side, stats["error"])
            assert stats["n"] == 1 and len(stats["samples"]) == 1, (name, side)
        assert fig["comparisons"], name
        for c in fig["comparisons"]:
            assert "error" not in c, (name, c)
            if c["peer"] is None:  # a bound on rshell's own figure
                assert c["value"] is not None and c["targets"], (name, c)
            else:
                assert c["rshell"] in fig["sides"] and c["peer"] in fig["sides"], (name, c)
                assert c["ratio"] > 0, (name, c)
            for t in c["targets"]:
                assert {"op", "value", "source"} <= t.keys() and isinstance(t["pass"], bool)
    rt = figures["roundtrip"]
    pairs = {(c["rshell"], c["peer"]): c for c in rt["comparisons"]}
    floor = pairs[("spawn_floor", "subprocess")]
    assert floor["bound"] == "floor" and floor["targets"] == []
    assert pairs[("rshell_tls", "spawn_floor")]["targets"] == []
    assert [t["value"] for t in pairs[("rshell_tls", "subprocess")]["targets"]] == [1.2]
    assert {c.get("bound") for c in figures["throughput"]["comparisons"]} == {None, "ceiling"}
    keys = {(c["rshell"], c["peer"]): c["targets"] for c in figures["keystroke"]["comparisons"]}
    for pair in (("rshell_api", "ssh"), ("rshell_api", "asyncssh"), ("rshell_cli", "ssh")):
        assert [(t["op"], t["value"]) for t in keys[pair]] == [("<", 1.0)], pair
    # The bare Python relays (bounds.KeyRelay), over TLS and TCP, measured beside ssh.
    for pair in (("relay_tls", "ssh"), ("relay_tcp", "ssh"), ("rshell_cli", "relay_tls")):
        assert keys[pair] == [], pair
    assert figures["keystroke"]["batch"] == 3
    assert figures["keystroke"]["sides"]["rshell_api"]["per_keystroke_ms"]["n"] == 3
    tty = figures["tty_output"]
    assert tty["size_bytes"] == (4 << 20) // 80 * 80  # whole 80-byte lines
    assert tty["tty_bytes"] == tty["size_bytes"] // 80 * 81  # each \n became \r\n
    outs = {(c["rshell"], c["peer"]): c for c in tty["comparisons"]}
    assert [t["op"] for t in outs[("rshell_api", "ssh")]["targets"]] == [">"]
    assert outs[("rshell_api", "local")]["bound"] == "ceiling"
