"""Issue 14's figures, mode all: copying files, whole processes side by side.

``file_copy``: one big file (1 GiB, made once) uploaded and downloaded by
``rshell cp``, OpenSSH's ``scp`` (SFTP mode, its default) and ``sftp -b``
to the rig's sshd, and the pipe through rshell (``cat BIG | rshell ADDR -c
'cat > DST'``, ``rshell ADDR -c 'cat SRC' > DST``), in MB/s; then the peak
RSS of one ``rshell cp`` upload and download, client and server.
``tree_copy``: 10,000 files of 4 KiB in 100 folders, uploaded whole by
``rshell cp -r``, ``scp -r`` and ``rsync -a -e ssh``, in files/s.

Owns both figures' contenders (their argv: ``Tools``), their samples (each
copy into a fresh folder, timed from start to exit, checked, removed; the
tree's copies kept until the figure ends) and
the memory measurement.  Every copy is a whole process of its own: rshell is
never imported here.  The rshell sides talk to ``tls_login`` (host key
pinned, key authentication), the OpenSSH ones to the rig's sshd with the
options of its ``ssh`` client.
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contenders import probe_tls
from .copies import (
    Command,
    Payload,
    big_file,
    file_tree,
    fresh,
    removed,
    reset_peak,
    run_timed,
    set_aside,
    status_bytes,
)
from .core import LOOPBACK, BenchError, MiB, Side, progress, run_rounds
from .procs import children, wait_for
from .stats import Target, absolute, all_figure, compare

if TYPE_CHECKING:
    from .modes import AllRig

ISSUE14 = "issue 14"
#: Mode all's sshd has a config of its own, without the sftp subsystem scp
#: (SFTP mode, OpenSSH 9's default) and sftp need: modes.py adds this line.
SSHD_SFTP = "Subsystem sftp internal-sftp"
#: Each warm-up copy: a file this big (at most), a tree this many files.
WARM_FILE = 8 * MiB
WARM_TREE = 20
#: The tree's files, and the small copy the client's own memory is read on.
TREE_FILE = 4096
SMALL_FILE = 4096
#: Why the tree's copies are not removed between rounds.
KEEP_WHY = ("on ext4 without a journal, a new inode skips every inode freed in the last "
            "minute (or five), one lookup each, so a tree copied seconds after another "
            "tree's removal paid for its 10,000 deletions (creating 10,000 files took "
            "0.04 s, 1.1-2.4 s right after such a removal, 0.2 s 75 s later)")
#: Growth of peak RSS over a copy of the big file, client and server (issue 14
#: asks it bounded and stated).
MEMORY_BOUND_MIB = 64.0

Build = Callable[[Path, Path], Command]  # (source, destination) -> the copy


class Tools:
    """The argv of every contender for one copy: the source and the
    destination are paths on this machine, one of them reached through a
    server (``up``: the destination)."""

    def __init__(self, rig: AllRig) -> None:
        self.env = rig.env
        self.address = rig.servers["tls_login"].address
        self.rshell = str(rig.tool("rshell"))
        self.cat = shutil.which("cat") or "/bin/cat"
        self.batches = rig.workdir / "copy-batches"
        self.batches.mkdir(exist_ok=True)
        self.missing: dict[str, str] = {}
        self.ssh: list[str] = []
        if rig.ssh is None:
            why = f"no ssh client: {rig.errors.get('ssh', 'unavailable')}"
            self.missing = dict.fromkeys(("scp", "sftp", "rsync"), why)
            return
        exe, *options, host = rig.ssh.base
        if host != LOOPBACK or "-p" not in options:
            raise BenchError(f"unexpected ssh argv {rig.ssh.base!r}")
        at = options.index("-p")
        self.ssh_port, self.ssh_options = options[at + 1], options[:at] + options[at + 2:]
        self.ssh = [exe, "-p", self.ssh_port, *self.ssh_options]
        self.exe: dict[str, str] = {}
        for name in ("scp", "sftp", "rsync"):
            found = shutil.which(name)
            if found is None:
                self.missing[name] = f"{name} not installed" + (
                    " (benchmarks/run installs it from apt when it can)"
                    if name == "rsync" else "")
            else:
                self.exe[name] = found

    @staticmethod
    def _ends(src: Path, dst: Path, up: bool, host: str) -> tuple[str, str]:
        return (str(src), f"{host}:{dst}") if up else (f"{host}:{src}", str(dst))

    def rshell_cp(self, up: bool, recursive: bool = False, address: str = "") -> Build:
        host, port = (address or self.address).rsplit(":", 1)
        flags = ["-r"] if recursive else []
        return lambda src, dst: Command([[self.rshell, "cp", *flags, "-P", port,
                                          *self._ends(src, dst, up, host)]])

    def pipe(self, up: bool) -> Build:
        if up:
            return lambda src, dst: Command([[self.cat, str(src)], [
                self.rshell, self.address, "-c", f"cat > {shlex.quote(str(dst))}"]])
        return lambda src, dst: Command([[self.rshell, self.address, "-c",
                                          f"cat {shlex.quote(str(src))}"]], output=dst)

    def scp(self, up: bool, recursive: bool = False) -> Build:
        argv = [self.exe["scp"], *(["-r"] if recursive else []), "-P", self.ssh_port,
                *self.ssh_options]
        return lambda src, dst: Command([[*argv, *self._ends(src, dst, up, LOOPBACK)]])

    def sftp(self, up: bool) -> Build:
        def build(src: Path, dst: Path) -> Command:
            batch = self.batches / f"{'put' if up else 'get'}-{src.name}"
            batch.write_text(f'{"put" if up else "get"} "{src}" "{dst}"\n')
            return Command([[self.exe["sftp"], "-b", str(batch), "-P", self.ssh_port,
                             *self.ssh_options, LOOPBACK]])
        return build

    def rsync(self, fsync: bool = False) -> Build:
        ssh = shlex.join(self.ssh)
        flags = ["-a", "--fsync"] if fsync else ["-a"]
        return lambda src, dst: Command([[self.exe["rsync"], *flags, "-e", ssh, f"{src}/",
                                          f"{LOOPBACK}:{dst}/"]])

    def rsync_fsync_missing(self) -> str | None:
        """Why ``rsync --fsync`` cannot be had (rsync before 3.2.4), or None."""
        if "rsync" in self.missing:
            return self.missing["rsync"]
        said = subprocess.run([self.exe["rsync"], "--help"], capture_output=True, text=True,
                              check=False).stdout
        return None if "--fsync" in said else "this rsync has no --fsync (3.2.4 or later has)"


# ---- one side: copies into a fresh folder, timed, checked, removed ----------------------


def copy_side(side: Side, tools: Tools, tool: str, make: Callable[[], Build],
              payloads: tuple[Payload, Payload], root: Path,
              rate: Callable[[Payload, float], float], digest_every: bool,
              kept: Path | None = None) -> Side:
    """``side`` sampling ``rate(payload, seconds)`` of a copy of ``payloads[0]``
    (warmed up on ``payloads[1]``), or failed if ``tool`` cannot be had.
    Every copy's sizes are checked, its digest on the warm-up, on the first
    sample and (``digest_every``) on every one.  Each copy is then removed,
    or with ``kept`` moved there (and synced) for the caller to remove once
    every round is over (see KEEP_WHY)."""
    if tool in tools.missing:
        side.error = tools.missing[tool]
        return side
    build, box = make(), root / side.name
    main, warm = payloads
    side.extra["sha256_checked"] = 0
    seconds: list[float] = side.extra.setdefault("seconds", [])

    def copy(payload: Payload) -> float:
        fresh(box)
        try:
            took = run_timed(build(payload.path, box / payload.path.name), tools.env,
                             side.label)
            digest = payload is warm or digest_every or not side.extra["sha256_checked"]
            payload.check(box, side.label, digest)
        finally:
            if kept is None:
                removed(box)
            else:
                set_aside(box, kept)
        if digest and payload is main:
            side.extra["sha256_checked"] += 1
        return took

    def sample() -> float:
        took = copy(main)
        seconds.append(took)
        return rate(main, took)
    side.sample, side.warm = sample, lambda: copy(warm)
    return side


def mbps(payload: Payload, seconds: float) -> float:
    return payload.size / seconds / 1e6


def files_per_s(payload: Payload, seconds: float) -> float:
    return payload.files / seconds


# ---- figure 1: one big file -------------------------------------------------------------


def file_sides(tools: Tools, n: int, payloads: tuple[Payload, Payload],
               root: Path) -> list[Side]:
    """rshell cp, scp, sftp -b and the pipe through rshell, up then down."""
    def side(name: str, label: str, what: str, tool: str, make: Callable[[], Build]) -> Side:
        return copy_side(Side(name, label, what + ", whole process", n=n), tools, tool, make,
                         payloads, root, mbps, False)

    sides = []
    for up in (True, False):
        d = "up" if up else "down"
        src, dst = ("BIG", "127.0.0.1:DIR/big.bin") if up else ("127.0.0.1:BIG", "DIR/big.bin")
        sides += [
            side(f"rshell_{d}", f"rshell cp ({d})", f"rshell cp -P PORT {src} {dst}",
                 "rshell", lambda up=up: tools.rshell_cp(up)),
            side(f"scp_{d}", f"scp ({d})", f"scp -P PORT <ssh's options> {src} {dst} "
                 "(SFTP protocol)", "scp", lambda up=up: tools.scp(up)),
            side(f"sftp_{d}", f"sftp -b ({d})", f"sftp -b BATCH -P PORT <ssh's options> "
                 f"127.0.0.1, BATCH: {'put BIG' if up else 'get BIG'} DIR/big.bin", "sftp",
                 lambda up=up: tools.sftp(up)),
            side(f"pipe_{d}", "cat | rshell -c (up)" if up else "rshell -c cat > (down)",
                 "cat BIG | rshell ADDR -c 'cat > DIR/big.bin'" if up
                 else "rshell ADDR -c 'cat BIG' > DIR/big.bin", "pipe",
                 lambda up=up: tools.pipe(up)),
        ]
    return sides


def file_copy(rig: AllRig) -> dict[str, Any]:
    """The big file up and down through every contender (target: rshell cp at
    least 1.5 x scp and 0.9 x the pipe, both ways), then one rshell cp each
    way on a fresh server with its peak memory read."""
    plan, data = rig.plan, rig.workdir / "copy-data"
    data.mkdir(exist_ok=True)
    progress(f"all: file copy: making a {plan.file_size // MiB} MiB file")
    big = big_file(data / "big.bin", plan.file_size)
    warm = big_file(data / "warm.bin", min(plan.file_size, WARM_FILE))
    small = big_file(data / "small.bin", SMALL_FILE)
    os.sync()  # the file on disk before the first copy, not written back during it
    tools, root = Tools(rig), rig.workdir / "copies"
    try:
        sides = file_sides(tools, plan.file_samples, (big, warm), root)
        progress(f"all: file copy, {plan.file_samples} rounds of {big.size // MiB} MiB up and "
                 "down: " + ", ".join(s.label for s in sides))
        rounds = run_rounds(sides, "file copy", 1)
        progress("all: file copy: peak memory of one rshell cp each way, fresh server")
        mem_sides, mem_rows, memory = copy_memory(rig, tools, big, small, root)
    finally:
        for payload in (big, warm, small):
            payload.path.unlink(missing_ok=True)
    by = {s.name: s for s in sides}
    comparisons = []
    for d in ("up", "down"):
        rsh = by[f"rshell_{d}"]
        comparisons += [compare(rsh, by[f"scp_{d}"], [Target(">=", 1.5, ISSUE14)]),
                        compare(rsh, by[f"pipe_{d}"], [Target(">=", 0.9, ISSUE14)]),
                        compare(rsh, by[f"sftp_{d}"], [])]
    return all_figure("MB/s", rounds, sides + mem_sides, comparisons + mem_rows,
                      size_bytes=big.size, memory=memory,
                      notes=file_notes(rig, tools, memory))


def file_notes(rig: AllRig, tools: Tools, memory: dict[str, Any]) -> list[str]:
    ciphers = {"rshell": probe_tls(tools.address).get("cipher"),
               "scp/sftp (ssh's)": rig.peer_info.get("ssh", {}).get("cipher")}
    notes = ["every copy a whole process (start, handshake, exit), into a fresh folder, "
             "then checked (sizes and no leftover every time, SHA-256 at least once per "
             "side), removed and synced; sshd's sftp: " + SSHD_SFTP.split()[-1],
             "ciphers: " + ", ".join(f"{k} {v}" for k, v in ciphers.items() if v),
             "rshell cp checks each file's SHA-256 and fsyncs it before renaming it into "
             "place; scp, sftp and the pipe neither check nor fsync"]
    if "error" in memory:
        return [*notes, f"memory: {memory['error']}"]
    for way in ("upload", "download"):
        m = memory[way]
        notes.append(
            f"memory, one rshell cp {way} of {memory['size_bytes'] // MiB} MiB: client peak "
            f"RSS {m['client_peak_mib']:.1f} MiB ({m['client_growth_mib']:+.1f} over a "
            f"{SMALL_FILE // 1024} KiB copy's {m['client_small_peak_mib']:.1f}); server "
            f"{m['server_before_mib']:.1f} MiB before, peak {m['server_peak_mib']:.1f} "
            f"({m['server_growth_mib']:+.1f}), {m['server_after_mib']:.1f} after")
    return notes


# ---- the memory of one copy each way ----------------------------------------------------


def copy_memory(rig: AllRig, tools: Tools, big: Payload, small: Payload,
                root: Path) -> tuple[list[Side], list[dict[str, Any]], dict[str, Any]]:
    """The growth of the client's and the server's peak RSS over one rshell cp
    of the big file each way, as bounded rows (< MEMORY_BOUND_MIB)."""
    names = {f"{who}_{d}": (way, who) for d, way in (("up", "upload"), ("down", "download"))
             for who in ("client", "server")}
    sides = {k: Side(f"memory_{k}", f"rshell cp {who} ({k.split('_')[1]})",
                     f"peak RSS growth of the {who} over one rshell cp {way} of the big file",
                     n=1) for k, (way, who) in names.items()}
    try:
        memory = measure_memory(rig, tools, big, small, root)
    except BenchError as exc:
        for side in sides.values():
            side.error = str(exc)
        progress(f"file copy: memory: {exc}")
        memory = {"error": str(exc)}
    rows = []
    for key, (way, who) in names.items():
        side = sides[key]
        value = None if side.error else memory[way][f"{who}_growth_mib"]
        if value is not None:
            side.samples, side.rounds = [value], [0]
        rows.append(absolute(side, value, "MiB growth", [Target("<", MEMORY_BOUND_MIB,
                                                                ISSUE14)],
                             f"peak RSS of the {who} over a copy, less its "
                             + ("RSS before it" if who == "server" else "peak over a "
                                "4 KiB copy")))
    return list(sides.values()), rows, memory


def measure_memory(rig: AllRig, tools: Tools, big: Payload, small: Payload,
                   root: Path) -> dict[str, Any]:
    """A fresh secure-default server (pinned, its first connection's one-off
    costs paid); then each way a small copy and the big one, the client's
    VmHWM read while it runs, the server's VmHWM reset (clear_refs) before
    each copy and read after it."""
    server = rig.start_server(rig.limits, "copy-memory-server.log")
    try:
        rig.pin(server.address)
        pid = server.proc.pid
        wait_for(lambda: not children(pid), 30, "rshell-server to reap its commands")
        out: dict[str, Any] = {"size_bytes": big.size}
        for up in (True, False):
            make = tools.rshell_cp(up, address=server.address)
            runs = [one_copy(tools, make, payload, root, pid) for payload in (small, big)]
            got = {"client_small_peak_mib": runs[0]["client_peak_mib"], **runs[1]}
            got["client_growth_mib"] = got["client_peak_mib"] - got["client_small_peak_mib"]
            got["server_growth_mib"] = got["server_peak_mib"] - got["server_before_mib"]
            out["upload" if up else "download"] = got
        return out
    finally:
        server.stop()


def one_copy(tools: Tools, make: Build, payload: Payload, root: Path,
             server: int) -> dict[str, Any]:
    """One rshell cp with its client's and the server's memory read, in MiB."""
    box = fresh(root / "memory")
    before = status_bytes(server, "VmRSS") or 0
    exact = reset_peak(server)
    seen = {"client": 0, "server": before}

    def watch(client: int) -> None:
        seen["client"] = max(seen["client"], status_bytes(client, "VmHWM") or 0)
        seen["server"] = max(seen["server"], status_bytes(server, "VmRSS") or 0)
    try:
        seconds = run_timed(make(payload.path, box / payload.path.name), tools.env,
                            "rshell cp (memory)", watch)
        peak = (status_bytes(server, "VmHWM") or 0) if exact else seen["server"]
        after = status_bytes(server, "VmRSS") or 0
        payload.check(box, "rshell cp (memory)", True)
    finally:
        removed(box)
    return {"seconds": seconds, "client_peak_mib": seen["client"] / MiB,
            "server_before_mib": before / MiB, "server_peak_mib": max(peak, before) / MiB,
            "server_after_mib": after / MiB,
            "server_peak_from": "VmHWM reset by clear_refs" if exact else "VmRSS sampled"}


# ---- figure 2: a tree of small files ----------------------------------------------------


def tree_copy(rig: AllRig) -> dict[str, Any]:
    """The tree uploaded whole to a fresh destination by rshell cp -r, scp -r
    and rsync -a (target: rshell at least 3 x scp -r, and ahead of rsync); and
    rsync -a --fsync, which syncs every file as rshell cp does (info)."""
    plan, data = rig.plan, rig.workdir / "copy-data"
    data.mkdir(exist_ok=True)
    progress(f"all: tree copy: making {plan.tree_files} files of {TREE_FILE} bytes in "
             f"{plan.tree_dirs} folders")
    tree = file_tree(data / "tree", plan.tree_files, plan.tree_dirs, TREE_FILE)
    warm = file_tree(data / "warm-tree", WARM_TREE, 2, TREE_FILE)
    os.sync()
    tools, root, n = Tools(rig), rig.workdir / "copies", plan.tree_samples
    payloads = (tree, warm)

    kept = root / "kept"

    def side(name: str, label: str, what: str, tool: str, make: Callable[[], Build]) -> Side:
        return copy_side(Side(name, label, what + " (a first copy: DEST is new), whole "
                              "process", n=n), tools, tool, make, payloads, root,
                         files_per_s, True, kept)

    try:
        sides = [
            side("rshell", "rshell cp -r", "rshell cp -r -P PORT TREE 127.0.0.1:DEST", "rshell",
                 lambda: tools.rshell_cp(True, recursive=True)),
            side("scp", "scp -r", "scp -r -P PORT <ssh's options> TREE 127.0.0.1:DEST "
                 "(SFTP protocol)", "scp", lambda: tools.scp(True, recursive=True)),
            side("rsync", "rsync -a", "rsync -a -e 'ssh -p PORT <its options>' TREE/ "
                 "127.0.0.1:DEST/", "rsync", tools.rsync),
            side("rsync_fsync", "rsync -a --fsync", "rsync -a --fsync -e 'ssh -p PORT <its "
                 "options>' TREE/ 127.0.0.1:DEST/: every file synced, as rshell cp syncs",
                 "rsync", lambda: tools.rsync(fsync=True)),
        ]
        if (why := tools.rsync_fsync_missing()) is not None:
            sides[-1].error = why
        progress(f"all: tree copy, {n} rounds of {tree.files} files: "
                 + ", ".join(s.label for s in sides))
        rounds = run_rounds(sides, "tree copy", 1)
    finally:
        for path in (*(payload.path for payload in payloads), kept):
            shutil.rmtree(path, ignore_errors=True)
    rsh, scp, rsync, rsync_fsync = sides
    comparisons = [compare(rsh, scp, [Target(">=", 3.0, ISSUE14)]),
                   compare(rsh, rsync, [Target(">", 1.0, ISSUE14)]),
                   compare(rsh, rsync_fsync, [])]
    took = [f"{s.label} {statistics.median(s.extra['seconds']):.2f}" for s in sides
            if s.extra.get("seconds")]
    notes = [f"{tree.files} files of {TREE_FILE} bytes in {plan.tree_dirs} folders "
             f"({tree.size // MiB} MiB), uploaded; every copy checked (every file's size, "
             "no leftover, SHA-256 of the whole tree), synced, and kept until the figure "
             "ends: " + KEEP_WHY,
             "seconds per copy, median: " + ", ".join(took)]
    return all_figure("files/s", rounds, sides, comparisons, files=tree.files,
                      file_bytes=TREE_FILE, dirs=plan.tree_dirs, notes=notes)
