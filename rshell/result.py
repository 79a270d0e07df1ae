"""The record of one finished command, as ``subprocess.CompletedProcess`` is.

Must not import anything from rshell but errors.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Result:
    """What a command did: its status, its output, and why it failed if it did.

    ``exit_code`` is None when the command never exited normally (it could not
    start, or a signal ended it); ``signal`` is the terminating signal number;
    ``error`` holds the ``command error`` reason (timed out, output limit,
    cannot start, ...).  ``bool(result)`` is ``result.ok``.
    """

    command: str
    exit_code: int | None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    error: str | None = None
    duration: float = 0.0
    host: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def __bool__(self) -> bool:
        return self.ok

    @property
    def exit_status(self) -> int:
        """The status a shell would report: the code, or 128+N for signal N."""
        if self.signal:
            return 128 + self.signal
        if self.exit_code is not None:
            return self.exit_code
        return 1


@dataclass(frozen=True, slots=True)
class Copied:
    """What a copy moved: files and bytes written on the receiving side, how
    long it took, and each file that failed, with why (``path``, ``reason``)."""

    files: int
    bytes: int
    duration: float
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


def silent_failure(exit_code: int | None, signal: int | None, output: int) -> str | None:
    """The ``command error`` reason for a command that failed without a word
    (``output`` bytes in all), or None.  One rule for the server and for every
    client backend, so a reason never depends on the path a command took."""
    if exit_code == 127:
        return "command not found"
    if exit_code == 126:
        return "command cannot be executed"
    if output:
        return None
    if signal:
        return f"killed by {signal_name(signal)} with no output"
    if exit_code:
        return f"exit status {exit_code} with no output"
    return None


def timed_out(seconds: float) -> str:
    """The reason for a command stopped at its time limit, whoever stopped it."""
    return f"timed out after {seconds:g} s"


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number with no name here."""
    import signal as signals

    try:
        return signals.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
