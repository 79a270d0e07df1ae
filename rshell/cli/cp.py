"""``rshell cp``: copy files to or from one host, as scp does (SPEC §10).

The operands are read by transfer.operands; the copy is the API's
``Connection.put``/``get`` (one connection, every source in one stream); a
progress bar is drawn on stderr when it is a terminal and ``-q`` is not
given (tqdm, imported only then); each file that failed is one line on
stderr.  Exit status: 0, 1 if any file failed, 255 when the connection
fails (errors.py's codes).

Must not import click (cli/commands.py parses the flags).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from rshell.cli.common import open_client
from rshell.client.screen import visible
from rshell.errors import CopyFailed, RshellError, UsageError
from rshell.result import Copied
from rshell.transfer.operands import Operand, split_operands


def copy(args: Sequence[str], *, recursive: bool, preserve: bool, port: int | None,
         quiet: bool, connect: dict[str, Any]) -> int:
    """Run one ``rshell cp``; the exit status."""
    sources, dest = split_operands(args)
    remote = dest if dest.is_remote else sources[0]
    if any(s.is_remote and s.target != remote.target for s in sources):
        raise UsageError("the sources must all be on one host (or all local)")
    target = remote.target
    assert target is not None
    from rshell.fleet.targets import names_several

    if names_several(target):
        return _fleet_copy(target, sources, dest, recursive=recursive, preserve=preserve,
                           port=port, connect=connect)
    bar = None if quiet or not _stderr_is_terminal() else _Bar()
    try:
        with open_client(target, port=port, **connect) as conn:
            if dest.is_remote:
                copied = conn.put([s.path for s in sources], dest.path, recursive=recursive,
                                  preserve=preserve, progress=bar)
            else:
                copied = conn.get([s.path for s in sources], dest.path, recursive=recursive,
                                  preserve=preserve, progress=bar)
    except CopyFailed as exc:
        if bar is not None:
            bar.close()
        return _failed(exc, remote)
    if bar is not None:
        bar.close()
    return 0 if copied.ok else 1


def _fleet_copy(target: str, sources: Sequence[Operand], dest: Operand, *, recursive: bool,
                preserve: bool, port: int | None, connect: dict[str, Any]) -> int:
    """``rshell cp FILE @web:/tmp/`` or ``rshell cp @web:/var/log/syslog logs/``
    (``logs/syslog.HOST``): every host through ``rshell.Group``, one line per
    failed file or host, the fleet's summary and exit status."""
    from rshell.cli.common import warn
    from rshell.cli.fleet import fleet_status, summarize
    from rshell.fleet.group import Group

    with Group(target, port=port, on_warning=warn, **connect) as group:
        paths = [s.path for s in sources]
        if dest.is_remote:
            results = group.put(paths, dest.path, recursive=recursive, preserve=preserve)
        else:
            results = group.get(paths, dest.path, recursive=recursive, preserve=preserve)
    for host, value in results.items():
        if isinstance(value, RshellError):
            sys.stderr.write(f"rshell cp: {visible(host)}: {visible(str(value))}\n")
        else:
            for path, reason in value.failures:
                sys.stderr.write(f"rshell cp: {visible(host)}: {visible(path)}: "
                                 f"{visible(reason)}\n")
    summarize(results)
    return fleet_status(results)


def _failed(exc: CopyFailed, remote: Operand) -> int:
    """Each failed file on its own line; a copy refused as a whole is the caller's."""
    copied: Copied | None = exc.copied
    if copied is None:
        raise exc
    for path, reason in copied.failures:
        sys.stderr.write(f"rshell cp: {path}: {reason}\n")
    return 1


def _stderr_is_terminal() -> bool:
    try:
        return os.isatty(2)
    except (OSError, ValueError):
        return False


class _Bar:
    """One bar per file (name, bytes, rate, ETA) on stderr, drawn by tqdm."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._path = ""

    def __call__(self, path: str, done: int, size: int) -> None:
        if path != self._path:
            self.close()
            from tqdm import tqdm  # type: ignore[import-untyped]  # a terminal only: the cold start never pays for it

            self._path = path
            sized = _columns() > 0  # a terminal that reports no width: 80 columns
            self._bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=_short(path), leave=True, file=sys.stderr,
                             dynamic_ncols=sized, ncols=None if sized else 80, miniters=1)
            self._done = 0
        bar = self._bar
        bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._path = ""


def _columns() -> int:
    try:
        return os.get_terminal_size(2).columns
    except OSError:
        return 0


def _short(path: str, width: int = 32) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]
