"""The host-key decision, written once for both backends (SPEC §4).

A backend looks the server's key up in its own store (rshell's known_hosts
for the native protocol, OpenSSH's for SSH), asks ``HostKeyPolicy.decide``,
and pins the key when told to.  The rules: a pinned key that matches is
trusted; a changed one is always refused, loudly; an unknown one is refused
with strict checking, offered to ``ask`` on a terminal unless ``accept_new``,
and otherwise pinned with a notice on stderr.

Must not import anything above layer 0.
"""

from __future__ import annotations

import enum
import sys

from rshell.client.options import AskHost, ConnectOptions
from rshell.client.screen import visible
from rshell.errors import HostKeyError


class Decision(enum.Enum):
    """What the backend does next with a key ``decide`` did not refuse."""

    KNOWN = "known"  # pinned already: nothing to do
    PIN = "pin"  # new: pin it (the notice is written)
    PIN_ASKED = "pin-asked"  # new, and the user said yes: pin it; time passed


class HostKeyPolicy:
    """The three choices SPEC §4 leaves the user, and the verdict they give."""

    __slots__ = ("strict", "accept_new", "ask")

    def __init__(self, strict: bool = False, accept_new: bool = False,
                 ask: AskHost | None = None) -> None:
        self.strict, self.accept_new, self.ask = strict, accept_new, ask

    @classmethod
    def of(cls, options: ConnectOptions) -> HostKeyPolicy:
        return cls(options.strict_host_keys, options.accept_new, options.ask)

    def decide(self, address: str, fingerprint: str, pinned: str | None, where: str,
               fix: str = "") -> Decision:
        """The verdict on ``fingerprint`` for ``address``, given the one ``pinned``
        in ``where`` (None: not there); raises HostKeyError to refuse.  ``fix``
        says how to drop a stale pin (default: edit ``where``)."""
        if pinned is not None:
            if pinned == fingerprint:
                return Decision.KNOWN
            raise HostKeyError(
                f"WARNING: HOST KEY FOR {address} HAS CHANGED (now {fingerprint}, pinned "
                f"{pinned}): someone may be intercepting this connection; refusing. "
                f"If the change is expected, {fix or f'remove its line from {where}'}"
            )
        if self.strict:
            raise HostKeyError(
                f"host key for {address} ({fingerprint}) is not in {where} and strict host "
                "key checking is on"
            )
        if self.ask is not None and not self.accept_new:
            if not self.ask(address, fingerprint):
                raise HostKeyError(f"host key for {address} not accepted")
            return Decision.PIN_ASKED
        sys.stderr.write(f"rshell: pinned new host key for {visible(address)} "
                         f"({visible(fingerprint)}) in {visible(where)}\n")
        return Decision.PIN
