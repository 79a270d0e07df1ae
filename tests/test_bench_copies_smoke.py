"""The benchmark's copy figures (issue 14) stay runnable: a smoke-sized run of
``file_copy`` and ``tree_copy`` writes sane JSON.

Not a performance test: no figure is judged; it guards benchmarks/rshell_bench/
files.py against rotting as rshell cp changes under it.  Every side copies for
real (rshell cp to a real rshell-server, scp and sftp to a private sshd, rsync
over ssh) and the harness checks every copy's files and digest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def test_bench_copy_figures_smoke(tmp_path: Path) -> None:
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("OpenSSH server missing")
    for tool in ("scp", "sftp", "rsync"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "file_copy,tree_copy",
         "--samples", "1", "--size", "4M", "--json-out", str(out)],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "file copy 4 MiB" in proc.stdout and "tree copy 200 x 4 KiB" in proc.stdout
    mode = json.loads(out.read_text())["modes"]["all"]
    assert mode["peer_errors"] == {}
    assert list(mode["figures"]) == ["file_copy", "tree_copy"]
    files, tree = mode["figures"]["file_copy"], mode["figures"]["tree_copy"]
    assert files["size_bytes"] == 4 << 20 and tree["files"] == 200
    for fig in (files, tree):
        for name, side in fig["sides"].items():
            assert "error" not in side, (name, side["error"])
            assert side["n"] == 1, name
            if not name.startswith("memory_"):  # a growth in MiB may be 0 or less
                assert side["median"] > 0, name
                assert side["sha256_checked"] == 1, name  # the one sample's digest
        for c in fig["comparisons"]:
            assert "error" not in c, c
            assert c["value"] is not None if c["peer"] is None else c["ratio"] > 0, c
    pairs = {(c["rshell"], c["peer"]): c for c in files["comparisons"]}
    for d in ("up", "down"):
        assert [t["value"] for t in pairs[(f"rshell_{d}", f"scp_{d}")]["targets"]] == [1.5]
        assert [t["value"] for t in pairs[(f"rshell_{d}", f"pipe_{d}")]["targets"]] == [0.9]
    bounds = [c for c in files["comparisons"] if c["peer"] is None]
    assert len(bounds) == 4 and all(c["targets"][0]["value"] == 64 for c in bounds)
    for way in ("upload", "download"):
        memory = files["memory"][way]
        assert 0 < memory["client_small_peak_mib"] and 0 < memory["server_before_mib"]
        assert memory["server_peak_mib"] >= memory["server_before_mib"]
    assert {(c["rshell"], c["peer"]) for c in tree["comparisons"]} == {
        ("rshell", "scp"), ("rshell", "rsync"), ("rshell", "rsync_fsync")}
    fsync = {(c["rshell"], c["peer"]): c for c in tree["comparisons"]}[("rshell", "rsync_fsync")]
    assert fsync["targets"] == []  # information: rsync syncing every file, as rshell cp does
