"""The benchmark stays runnable: a tiny plain round-trip run writes sane JSON.

Not a performance test (no figure is judged here); it only guards the
benchmark script against rotting as rshell changes under it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def test_bench_quick_roundtrip_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--mode", "plain", "--only", "roundtrip",
         "--samples", "2", "--batch", "3", "--json-out", str(out)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round trip" in proc.stdout
    data = json.loads(out.read_text())
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


def test_bench_tiny_throughput_has_relay_ceiling(tmp_path: Path) -> None:
    """Both modes, a 16 MiB stream: the raw, relay-ceiling and rshell samples
    are all taken, and the ceiling is reported beside the raw ratio."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--mode", "both", "--only", "throughput",
         "--size", "16M", "--samples", "2", "--json-out", str(out)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("vs relay ceiling") == 2
    data = json.loads(out.read_text())
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
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--mode", "ssh", "--size", "4M",
         "--samples", "2", "--batch", "3", "--json-out", str(out)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rshell/sshd" in proc.stdout
    mode = json.loads(out.read_text())["modes"]["ssh"]
    assert mode["server_exit"] == 0 and "sshd_exit" in mode
    assert mode["transport"]["sshd"]["server_version"].startswith("SSH-2.0-OpenSSH")
    assert mode["transport"]["rshell"]["server_version"].startswith("SSH-2.0-rshell")
    assert list(mode["figures"]) == ["roundtrip", "throughput"]
    for fig in mode["figures"].values():
        assert fig["targets"] == [] and fig["ratio"] > 0
        assert fig["baseline"]["n"] == 2 and fig["rshell"]["n"] == 2
        assert fig["lost_exit_status"]["sshd"]["commands"] > 0
    assert mode["figures"]["throughput"]["size_bytes"] == 4 << 20
