"""The benchmark's fleet figure (issue 15) stays runnable: a smoke-sized run of
``fleet`` writes sane JSON.

Not a performance test: no figure is judged; it guards benchmarks/rshell_bench/
fleet.py and fleethosts.py against rotting as rshell's fleets change under
them.  Every run is real: rshell on 10 and 20 native hosts (ports of a real
rshell-server), rshell's ssh:// fan-out to 10 ports of real sshd processes,
and each SSH fan-out tool (pdsh, parallel-ssh, clush, ansible) that is
installed; the harness checks every host's ``ok`` in every run's output.  A
tool that is not installed must fail its own side, saying so, and nothing
else: rshell's rows are required either way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
#: The SSH tools' sides and the executable each needs.
TOOLS = {"pdsh": "pdsh", "pssh": "parallel-ssh", "clush": "clush", "ansible": "ansible"}


def test_bench_fleet_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "fleet", "--samples", "1",
         "--json-out", str(out)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    have_sshd = os.path.exists("/usr/sbin/sshd") or shutil.which("sshd") is not None
    installed = {name: have_sshd and shutil.which(exe) is not None
                 for name, exe in TOOLS.items()}
    every = have_sshd and all(installed.values())
    # 1: something could not be measured, which only a missing tool may cause.
    assert proc.returncode == (0 if every else 1), proc.stdout + proc.stderr
    assert "fleet `echo ok`" in proc.stdout
    mode = json.loads(out.read_text())["modes"]["all"]
    fig = mode["figures"]["fleet"]
    assert list(mode["figures"]) == ["fleet"]
    assert fig["hosts"] == 10 and fig["scale"] == [10, 20] and fig["fanout"] == 64
    assert fig["rounds"] == 1 and fig["rshell_servers"] == 1
    sides = fig["sides"]
    assert set(sides) == {"rshell_10", "rshell_20", "rshell_ssh", *TOOLS}

    for name, hosts in (("rshell_10", 10), ("rshell_20", 20)):
        side = sides[name]
        assert "error" not in side, side["error"]
        assert side["hosts"] == hosts and side["n"] == 1
        assert 0 < side["median"] < 60
        assert 0 < side["client_cpu_s"]["median"] < 60
        assert 5 < side["peak_rss_mib"]["median"] < 500  # a Python process: tens of MiB
        assert side["server_cpu_s"]["median"] > 0  # the servers' TLS, auth and spawns
        assert 0 < side["server_reaped_cpu_s"]["median"] <= side["server_cpu_s"]["median"]

    for name in ("rshell_ssh", *TOOLS):
        side = sides[name]
        if name == "rshell_ssh" and have_sshd or installed.get(name):
            assert "error" not in side, (name, side["error"])
            assert side["hosts"] == 10 and side["n"] == 1 and side["median"] > 0, name
            assert side["server_cpu_s"]["median"] > 0, name  # sshd did the work
        else:
            assert "not installed" in side["error"] or "no sshd" in side["error"], side

    rows = {(c["rshell"], c["peer"]): c for c in fig["comparisons"]}
    growth = rows[("rshell_20", "rshell_10")]
    assert growth["targets"] == [] and growth["ratio"] > 0
    bounds = [c for c in fig["comparisons"] if c["peer"] is None]
    assert [(c["rshell"], c["unit"]) for c in bounds] == [
        ("rshell_20", "s wall"), ("rshell_20", "MiB peak RSS")]
    assert [c["targets"][0]["value"] for c in bounds] == [5.0, 200.0]
    assert all(c["value"] > 0 and c["targets"][0]["pass"] for c in bounds)
    for name in TOOLS:
        row = rows[("rshell_10", name)]
        assert [t["value"] for t in row["targets"]] == [0.1]
        assert (row["ratio"] > 0) if installed[name] else "error" in row
    assert [t["value"] for t in rows[("rshell_ssh", "pssh")]["targets"]] == [1.0]
