"""The server's verdict on an Auth message: which key, and may it log in.

Pure decision code over authorized_keys and the signed data; the session
does the talking, logging and delaying.  Must not import sockets or
anything above layer 1 but this.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def check(
    authorized: AuthorizedKeys, msg: Auth, nonce: bytes, host_key: bytes, peer_ip: str
) -> Verdict:
    """Authorized, allowed from this address, and a signature over *our* nonce and
    *our* host key: all three, or no entry."""
    try:
        key, _ = keys.parse_public(msg.public_key)
    except ValueError as exc:
        return Verdict("(unparsable key)", reason=f"unusable public key: {exc}")
    blob = keys.public_blob(key)
    fp = keys.fingerprint(key)
    entry = authorized.find(blob)
    if entry is None:
        return Verdict(fp, reason="key not in authorized_keys")
    if not entry.allows_address(peer_ip):
        return Verdict(fp, reason=f"from= of {authorized.path} line {entry.line} "
                                  f"excludes {peer_ip}")
    if not keys.verify(key, msg.signature, signed_data(nonce, host_key, blob)):
        return Verdict(fp, reason="bad signature")
    return Verdict(fp, entry=entry)
