"""What issue 14's copy figures copy, and how one copy is run and checked.

Owns: the payloads (a big file, a tree of small files), made once in the
run's temporary folder, with the manifest (every file's name and size) and
the digest a copy of them must have; a copy's check (exactly the manifest
under the destination folder, no leftover such as a ``.part`` file, and the
digest when asked); a pipeline of whole processes timed from the first start
to the last exit, every wait bounded (a pidfd, so the end is seen at once);
and the ``/proc`` memory readers (``VmHWM``, and its reset through
``clear_refs``) the copy's peak RSS is measured with.

Must not import rshell: every copy is a whole process.
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .core import BenchError, MiB
from .procs import stop_process

#: The big file is this random block repeated: random enough that nothing on
#: the way can shrink it, cheap enough to make 1 GiB of it in a second or two.
BLOCK = 64 * MiB
#: A whole copy (1 GiB, or 10,000 files by scp) must end within this.
WAIT = 600.0
#: How often a watched process's /proc is read while it runs.
WATCH_STEP = 0.01


# ---- the payloads -----------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """A file or a folder to copy: every file's path relative to the folder
    the payload sits in, with its size, and the digest of the lot."""

    path: Path
    manifest: dict[str, int]
    digest: str

    @property
    def size(self) -> int:
        return sum(self.manifest.values())

    @property
    def files(self) -> int:
        return len(self.manifest)

    def check(self, box: Path, what: str, digest: bool) -> None:
        """``box`` (the folder the copy went into) holds exactly this payload,
        each file of its size, nothing else (no ``.part`` or other leftover),
        and, if ``digest``, the same bytes."""
        found = manifest(box)
        if found != self.manifest:
            extra = sorted(set(found) - set(self.manifest))
            missing = sorted(set(self.manifest) - set(found))
            wrong = sorted(k for k in set(found) & set(self.manifest)
                           if found[k] != self.manifest[k])
            parts = [f"{len(v)} {k} (first: {v[0]}"
                     + (f", {found[v[0]]} bytes of {self.manifest[v[0]]})" if k == "wrong size"
                        else ")")
                     for k, v in (("left over", extra), ("missing", missing),
                                  ("wrong size", wrong)) if v]
            raise BenchError(f"{what}: the copy is not the source: {'; '.join(parts)}")
        if digest and digest_of(box, self.manifest) != self.digest:
            raise BenchError(f"{what}: the copy has the right sizes but other bytes "
                             "(SHA-256 differs)")


def manifest(folder: Path) -> dict[str, int]:
    """Every non-directory under ``folder``: its path relative to it, its size."""
    found: dict[str, int] = {}
    for top, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(top, name)
            found[os.path.relpath(path, folder)] = os.lstat(path).st_size
    return found


def digest_of(folder: Path, names: Iterable[str]) -> str:
    """SHA-256 over each name (sorted) and its bytes."""
    h = hashlib.sha256()
    for name in sorted(names):
        h.update(name.encode() + b"\0")
        with open(folder / name, "rb") as f:
            while chunk := f.read(MiB):
                h.update(chunk)
    return h.hexdigest()


def big_file(path: Path, size: int) -> Payload:
    """``size`` bytes: a random block of up to BLOCK bytes, repeated; its
    digest computed as it is written."""
    block = memoryview(os.urandom(min(BLOCK, size)))
    h = hashlib.sha256(path.name.encode() + b"\0")
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = block[:min(left, len(block))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return Payload(path, {path.name: size}, h.hexdigest())


def file_tree(path: Path, files: int, dirs: int, size: int) -> Payload:
    """``files`` random files of ``size`` bytes, spread evenly over ``dirs``
    folders under ``path``."""
    per_dir = -(-files // dirs)
    for i in range(files):
        folder = path / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True)
        (folder / f"f{i:05d}").write_bytes(os.urandom(size))
    found = {os.path.join(path.name, k): v for k, v in manifest(path).items()}
    return Payload(path, found, digest_of(path.parent, found))


# ---- a pipeline of whole processes, timed -----------------------------------------------


@dataclass(frozen=True)
class Command:
    """Processes in a pipeline (each one's stdout the next one's stdin; the
    first's stdin /dev/null), the last one's stdout ``output`` or /dev/null."""

    stages: list[list[str]]
    output: Path | None = None


def run_timed(command: Command, env: dict[str, str], what: str,
              watch: Callable[[int], None] | None = None) -> float:
    """Seconds from the first process's start to the last one's exit; every
    process must exit 0 within WAIT.  ``watch(pid)`` is called with the last
    stage's pid every WATCH_STEP while it runs."""
    err = tempfile.TemporaryFile()
    procs: list[subprocess.Popen[bytes]] = []
    sink: IO[bytes] = open(command.output or os.devnull, "wb")  # noqa: SIM115
    try:
        start = time.perf_counter()
        feed: Any = subprocess.DEVNULL
        for i, argv in enumerate(command.stages):
            last = i == len(command.stages) - 1
            procs.append(subprocess.Popen(argv, env=env, stdin=feed, stderr=err,
                                          stdout=sink if last else subprocess.PIPE))
            if feed is not subprocess.DEVNULL:
                feed.close()
            feed = procs[-1].stdout
        deadline = time.monotonic() + WAIT
        for proc in procs:
            wait_until(proc, deadline, what, watch if proc is procs[-1] else None)
        elapsed = time.perf_counter() - start
    finally:
        for proc in procs:
            stop_process(proc, 5.0)  # nothing left to do for those that ended
        sink.close()
    failed = [p for p in procs if p.returncode]
    if failed:
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
        err.close()
        raise BenchError(f"{what}: {Path(failed[0].args[0]).name} exited "
                         f"{failed[0].returncode}" + (f": {lines[-1]}" if lines else ""))
    err.close()
    return elapsed


def wait_until(proc: subprocess.Popen[bytes], deadline: float, what: str,
               watch: Callable[[int], None] | None) -> None:
    """``proc`` to its exit (seen through a pidfd, at once), by ``deadline``."""
    fd = os.pidfd_open(proc.pid)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{what}: still running after {WAIT:g} s")
            ready, _, _ = select.select([fd], [], [], min(left, WATCH_STEP) if watch else left)
            if ready:
                break
            if watch is not None:
                watch(proc.pid)
    finally:
        os.close(fd)
    proc.wait()


def fresh(box: Path) -> Path:
    """``box`` as an empty folder (whatever an earlier copy left removed)."""
    shutil.rmtree(box, ignore_errors=True)
    box.mkdir(parents=True)
    return box


def removed(box: Path) -> None:
    """``box`` removed, and the disk left with nothing pending (``sync``): a
    copy's blocks written back or freed (and, on a filesystem mounted with
    ``discard``, trimmed) now, not during whichever copy comes next."""
    shutil.rmtree(box)
    os.sync()


def set_aside(box: Path, kept: Path) -> None:
    """``box`` moved under ``kept`` (a new name each time) and the disk left
    with nothing pending, as ``removed`` does, but with nothing freed."""
    kept.mkdir(exist_ok=True)
    box.rename(kept / f"{box.name}-{len(os.listdir(kept))}")
    os.sync()


# ---- peak memory ------------------------------------------------------------------------


def status_bytes(pid: int, field: str) -> int | None:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in bytes;
    None once the process has no memory (exited) or is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def reset_peak(pid: int) -> bool:
    """Set ``pid``'s VmHWM back to its VmRSS (``clear_refs``, value 5); False
    where the kernel or the permissions refuse it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
