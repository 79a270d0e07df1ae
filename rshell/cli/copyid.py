"""``rshell copy-id``: append a public key to a server's authorized_keys, as
``ssh-copy-id`` does, over a connection that is already authorized.

Which key: ``-i`` (a ``.pub``, or a private key whose public half is beside
it or derived from it), else the client's own identity, found in the order
the client signs with (``$RSHELL_HOME/id_ed25519``, then ``~/.ssh/id_*``).

Which file: the server's business.  An rshell server (either listener)
tells an unrestricted key's commands in ``$RSHELL_AUTHORIZED_KEYS``; an
``ssh://`` target that does not is a real sshd, whose file is
``~/.ssh/authorized_keys``.  The work is one POSIX sh snippet, constant
text: no host, user or key is ever interpolated into it; the key line
travels on its stdin.  It skips a key already there (type and base64
compared, comments and options ignored), appends in place with
``O_APPEND`` (the file keeps its mode, owner and inode; two concurrent
copies of different keys lose no line), and creates a missing file 0600 in
a missing directory 0700 (``umask 077``).

Must not import click.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rshell.client.screen import visible
from rshell.errors import KeyFileError, RshellError
from rshell.paths import rshell_home

if TYPE_CHECKING:
    from rshell.client.api import Connection
    from rshell.trust.keys import Passphrase

#: What a key type and its base64 may contain (also checked by the snippet).
_KIND = re.compile(r"[A-Za-z0-9@._-]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/=]+")


class CopyIdFailed(RshellError):
    """The server could not, or would not, take the key."""

    exit_code = 1


@dataclass(frozen=True)
class PublicKey:
    """The key to copy: its authorized_keys line (``type base64 [comment]``),
    its fingerprint, and the file it came from."""

    line: str
    fingerprint: str
    source: Path


@dataclass(frozen=True)
class Copied:
    """What the server did: ``added``, ``present`` or (dry run) ``absent``, in ``path``."""

    status: str
    path: str


# The remote half.  $1 and $2 come from the key line on stdin, checked
# against the same classes as _KIND and _BASE64; the file's name comes from
# the server ($RSHELL_AUTHORIZED_KEYS) or from $HOME; nothing else is read.
_FIND = """\
umask 077
IFS= read -r key || [ -n "$key" ] || { echo 'copy-id: no key on stdin' >&2; exit 2; }
set -f
set -- $key
case $1 in ''|*[!A-Za-z0-9@._-]*) echo 'copy-id: bad key type' >&2; exit 2;; esac
case $2 in ''|*[!A-Za-z0-9+/=]*) echo 'copy-id: bad key' >&2; exit 2;; esac
f=${RSHELL_AUTHORIZED_KEYS:-}
"""
_NATIVE_FILE = """\
if [ -z "$f" ]; then
  echo 'copy-id: the server does not say where its authorized_keys is (a server' \
       'older than copy-id, or a key with command= or restrict)' >&2
  exit 3
fi
"""
_SSH_FILE = """\
[ -n "$f" ] || f=$HOME/.ssh/authorized_keys
"""
_APPEND = """\
if [ -f "$f" ] && T=$1 B=$2 awk '
  /^[ \t]*#/ { next }
  { for (i = 1; i < NF; i++)
      if ($i == ENVIRON["T"] && $(i + 1) == ENVIRON["B"]) { found = 1; exit } }
  END { exit !found }' "$f"; then
  printf 'present\\n%s\\n' "$f"; exit 0
fi
"""
_WRITE = """\
d=${f%/*}
[ -z "$d" ] || [ -d "$d" ] || mkdir -p -- "$d" || exit 1
if [ -s "$f" ] && [ -n "$(tail -c 1 -- "$f")" ]; then
  printf '\\n%s\\n' "$key"
else
  printf '%s\\n' "$key"
fi >> "$f" || exit 1
printf 'added\\n%s\\n' "$f"
"""
_DRY = """\
printf 'absent\\n%s\\n' "$f"
"""


def snippet(ssh: bool, dry_run: bool) -> str:
    """The shell text the server runs (constant: four variants)."""
    where = _SSH_FILE if ssh else _NATIVE_FILE
    return _FIND + where + _APPEND + (_DRY if dry_run else _WRITE)


def key_to_copy(identity: str | None, passphrase: Passphrase | None = None) -> PublicKey:
    """The key ``-i`` names (a ``.pub`` or a private key), else the client's own."""
    if identity is not None:
        return _read_key(Path(identity).expanduser(), passphrase)
    from rshell.client.handshake import DEFAULT_IDENTITIES

    for name in DEFAULT_IDENTITIES:
        path = rshell_home() / name if "/" not in name else Path(name).expanduser()
        if path.exists() or Path(f"{path}.pub").exists():
            return _read_key(path, passphrase)
    raise KeyFileError(f"no identity found ({rshell_home() / 'id_ed25519'} or ~/.ssh/id_*); "
                       "create one with: rshell keygen, or name a key with -i")


def _read_key(path: Path, passphrase: Passphrase | None) -> PublicKey:
    from rshell.trust import keys

    pub = path if path.suffix == ".pub" else Path(f"{path}.pub")
    try:
        if pub.exists():
            key, comment = keys.parse_public(pub.read_text())
            source = pub
        elif path.exists():
            key, comment, source = keys.load_identity(path, passphrase).key.public_key(), "", path
        else:
            raise KeyFileError(f"{path}: no such key")
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{pub if pub.exists() else path}: {exc}") from None
    # The comment is the sender's text: kept only if it is plain, so that the
    # line stays one line of printable words in someone's authorized_keys.
    comment = comment.strip() if comment.isprintable() else ""
    line = keys.public_line(key, comment)
    kind, b64 = line.split()[:2]
    if not (_KIND.fullmatch(kind) and _BASE64.fullmatch(b64)):
        raise KeyFileError(f"{source}: unusable key")
    return PublicKey(line, keys.fingerprint(key), source)


def copy_id(conn: Connection, key: PublicKey, *, ssh: bool, dry_run: bool = False) -> Copied:
    """Run the snippet with the key line on its stdin; what it did, or CopyIdFailed."""
    result = conn.run(snippet(ssh, dry_run), stdin=(key.line + "\n").encode())
    out = result.stdout.decode("utf-8", "surrogateescape")
    status, _, path = out.partition("\n")
    if result.ok and status not in ("added", "present", "absent"):
        raise CopyIdFailed("the server ran something else (a key with a forced command "
                           "runs only that command)")
    if not result.ok:
        said = result.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = said[-1] if said else result.error or f"exit status {result.exit_status}"
        raise CopyIdFailed(reason.removeprefix("copy-id: "))
    return Copied(status, path.removesuffix("\n"))


def report(copied: Copied, key: PublicKey, host: str) -> str:
    """What was done, in one line (the path is the server's text: made inert)."""
    where = f"{visible(host)}:{visible(copied.path)}"
    if copied.status == "added":
        return f"added key {key.fingerprint} to {where}"
    if copied.status == "present":
        return f"key {key.fingerprint} already authorized on {where}"
    return f"would add key {key.fingerprint} to {where} (dry run)"
