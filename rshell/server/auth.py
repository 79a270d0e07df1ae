"""Who may log in, decided and reported once for both listeners.

``Authorizer.verify`` judges a native Auth message (key authorized, allowed
from this address, signature over *our* nonce and *our* host key);
``Authorizer.verify_key`` judges a key whose signature the SSH layer has
already checked.  ``report`` then logs, audits and, on failure, delays the
answer (SPEC §6) the same way whichever wire the attempt came by, and turns
the key's options into the engine's Grant.

Must not import rshell.client, rshell.cli or paramiko.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from rshell.exec.policy import Grant
from rshell.exec.record import Recorder
from rshell.protocol.messages import Auth
from rshell.protocol.signing import signed_data
from rshell.trust import keys
from rshell.trust.authorized_keys import AuthorizedKeys, Entry


@dataclass(frozen=True)
class Verdict:
    """``entry`` is set when the key may log in; otherwise ``reason`` says why not."""

    fingerprint: str
    entry: Entry | None = None
    reason: str = ""


class Authorizer:
    """authorized_keys, the host key clients bind to, and the failure delay."""

    def __init__(self, authorized: AuthorizedKeys, host_key_blob: bytes, delay: float) -> None:
        self.authorized, self.host_key_blob, self.delay = authorized, host_key_blob, delay

    def verify(self, msg: Auth, nonce: bytes, peer_ip: str) -> Verdict:
        """Authorized, allowed from this address, and a signature over our nonce
        and host key: all three, or no entry."""
        try:
            key, _ = keys.parse_public(msg.public_key)
        except ValueError as exc:
            return Verdict("(unparsable key)", reason=f"unusable public key: {exc}")
        blob = keys.public_blob(key)
        verdict = self.verify_key(blob, peer_ip)
        if verdict.entry is not None and not keys.verify(
            key, msg.signature, signed_data(nonce, self.host_key_blob, blob)
        ):
            return Verdict(verdict.fingerprint, reason="bad signature")
        return verdict

    def verify_key(self, blob: bytes, peer_ip: str) -> Verdict:
        """The key's standing in authorized_keys for this address (its
        signature is the caller's to have checked)."""
        fp = keys.blob_fingerprint(blob)
        entry = self.authorized.find(blob)
        if entry is None:
            return Verdict(fp, reason="key not in authorized_keys")
        if not entry.allows_address(peer_ip):
            return Verdict(fp, reason=f"from= of {self.authorized.path} line {entry.line} "
                                      f"excludes {peer_ip}")
        return Verdict(fp, entry=entry)

    def report(self, verdict: Verdict, record: Recorder) -> Grant | None:
        """Log and audit the verdict; a failure waits out the delay (this
        connection's thread only) and gives None."""
        entry = verdict.entry
        if entry is not None:
            fields: dict[str, object] = {"ok": True, "key": verdict.fingerprint,
                                         "comment": entry.comment}
            record.log(logging.INFO, "%s: authenticated with key %s %s (via %s)", record.peer,
                       verdict.fingerprint, entry.comment, record.via, event="auth", **fields)
            record.event("auth", **fields)
            return grant_of(entry, verdict.fingerprint)
        fields = {"ok": False, "key": verdict.fingerprint, "reason": verdict.reason}
        record.log(logging.WARNING, "%s: authentication failed for key %s: %s (via %s)",
                   record.peer, verdict.fingerprint, verdict.reason, record.via, event="auth",
                   **fields)
        record.event("auth", **fields)
        time.sleep(self.delay)
        return None


def grant_of(entry: Entry, fingerprint: str | None = None) -> Grant:
    """The engine's view of a key's authorized_keys options, and of the key."""
    return Grant(forced=entry.command, restrict=entry.restrict, pty=entry.pty,
                 fingerprint=fingerprint)
