"""Keys, authorized_keys and known_hosts without a server.

OpenSSH is the reference: fingerprints, key files and authorized_keys lines
must mean to rshell exactly what they mean to ``ssh-keygen`` and sshd, so
users can bring their ``~/.ssh`` keys and reasoning along.  Every key is made
at test time in ``tmp_path`` by the real ``ssh-keygen`` or the real
``rshell keygen``.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rshell.errors import KeyFileError
from rshell.trust import authorized_keys as authkeys
from rshell.trust import keys
from rshell.trust import known_hosts as knownhosts
from tests.conftest import cli
from tests.support.cli import one_line_error

SSH_KEYGEN = "ssh-keygen"


# ---- helpers ---------------------------------------------------------------------


def ssh_keygen(
    path: Path, kind: str, bits: int | None = None, *, passphrase: str = "",
    comment: str = "tester@example", pem: bool = False,
) -> Path:
    """Make a key pair with the real ssh-keygen; return the private key's path."""
    args = [SSH_KEYGEN, "-q", "-t", kind, "-N", passphrase, "-C", comment, "-f", str(path)]
    if bits is not None:
        args += ["-b", str(bits)]
    if pem:
        args += ["-m", "PEM"]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    return path


def ssh_fingerprint_line(path: Path) -> str:
    """``ssh-keygen -lf PATH`` as printed: ``BITS SHA256:... COMMENT (TYPE)``."""
    proc = subprocess.run(
        [SSH_KEYGEN, "-lf", str(path)], check=True, capture_output=True, text=True, timeout=30
    )
    return proc.stdout.strip()


def counting(answer: str | None) -> tuple[Callable[[str], str | None], list[str]]:
    """A passphrase callback that always gives ``answer`` and records its prompts."""
    prompts: list[str] = []

    def ask(prompt: str) -> str | None:
        prompts.append(prompt)
        return answer

    return ask, prompts


def pub_line(kind: str = "ed25519", comment: str = "me@host") -> str:
    """A fresh public key line, made in-process (fast; no file needed)."""
    return keys.public_line(keys.generate(kind).public_key(), comment)


# ---- fingerprints and key files ---------------------------------------------------


KINDS = [
    ("ed25519", None, "ED25519", 256),
    ("ecdsa", 256, "ECDSA", 256),
    ("ecdsa", 384, "ECDSA", 384),
    ("ecdsa", 521, "ECDSA", 521),
    ("rsa", 2048, "RSA", 2048),
]


@pytest.mark.parametrize(("kind", "bits", "name", "size"), KINDS,
                         ids=[f"{k}-{b or 256}" for k, b, _, _ in KINDS])
def test_fingerprint_matches_ssh_keygen(
    tmp_path: Path, kind: str, bits: int | None, name: str, size: int
) -> None:
    """The fingerprint a server logs and a user compares must be the one
    ``ssh-keygen -lf`` shows, from the public line and from the private file."""
    path = ssh_keygen(tmp_path / "key", kind, bits)
    expected_bits, expected_fp, *_ = ssh_fingerprint_line(path).split()
    key, comment = keys.parse_public((tmp_path / "key.pub").read_text())
    assert keys.fingerprint(key) == expected_fp
    assert comment == "tester@example"
    assert keys.describe(key) == (int(expected_bits), name) == (size, name)
    ident = keys.load_identity(path)
    assert ident.fingerprint == expected_fp
    assert ident.public_line == (tmp_path / "key.pub").read_text().strip()


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
def test_rshell_keygen_is_read_by_ssh_keygen(home: Path, tmp_path: Path, kind: str) -> None:
    """``rshell keygen`` writes real OpenSSH files: ssh-keygen derives the same
    public key from the private one, and ``rshell fingerprint`` prints exactly
    what ``ssh-keygen -lf`` prints."""
    path = tmp_path / f"id_{kind}"
    made = cli(home, "keygen", "-t", kind, "-f", str(path))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    derived = subprocess.run(
        [SSH_KEYGEN, "-y", "-f", str(path)], capture_output=True, text=True, timeout=30
    )
    assert derived.returncode == 0, derived.stderr
    written = (tmp_path / f"id_{kind}.pub").read_text().split()
    assert derived.stdout.split()[:2] == written[:2]
    for target in (path, Path(f"{path}.pub")):
        ours = cli(home, "fingerprint", str(target))
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout.decode().strip() == ssh_fingerprint_line(target)
    assert keys.fingerprint(keys.parse_public(" ".join(written))[0]).encode() in made.stdout


def test_keygen_refuses_to_overwrite(home: Path, tmp_path: Path) -> None:
    """Overwriting a key file would silently destroy an identity."""
    path = tmp_path / "id_ed25519"
    path.write_text("precious\n")
    proc = cli(home, "keygen", "-f", str(path))
    assert proc.returncode != 0
    assert "exists" in proc.stderr.decode()
    assert path.read_text() == "precious\n"
    assert not Path(f"{path}.pub").exists()


def test_fingerprint_of_missing_path_says_missing(home: Path) -> None:
    """A path (it has a '/') is a file to read, never a host name to resolve."""
    proc = cli(home, "fingerprint", "/nonexistent/key")
    assert proc.returncode != 0
    line = one_line_error(proc.stderr)
    assert "/nonexistent/key" in line
    assert re.search(r"not found|no such file", line, re.I), line
    assert not re.search(r"resolve|name or service|getaddrinfo|connect", line, re.I), line


def test_keygen_bad_ecdsa_size_is_usage_error(home: Path, tmp_path: Path) -> None:
    """An impossible key size is the caller's mistake (2), and writes nothing."""
    target = tmp_path / "k"
    proc = cli(home, "keygen", "-t", "ecdsa", "-b", "2048", "-f", str(target))
    assert proc.returncode == 2, proc.stderr
    assert "2048" in one_line_error(proc.stderr)
    assert not target.exists()


def test_written_private_key_is_0600(tmp_path: Path) -> None:
    """A new private key is never readable by others, whatever the umask."""
    old = os.umask(0)
    try:
        keys.write_key_pair(tmp_path / "k", keys.generate("ed25519"), "c")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    keys.load_identity(tmp_path / "k")  # and it loads as written


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_identity_refuses_loose_permissions(tmp_path: Path, mode: int) -> None:
    """As ssh does: a private key others can read is not used at all."""
    path = ssh_keygen(tmp_path / "key", "ed25519")
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="(?i)permissions") as info:
        keys.load_identity(path)
    assert f"{mode:04o}" in str(info.value)
    path.chmod(0o600)
    assert keys.load_identity(path).path == str(path)


# ---- passphrases --------------------------------------------------------------------


@pytest.fixture(params=["openssh-ed25519", "pem-ecdsa"])
def encrypted_key(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A key ssh-keygen protected with the passphrase 'open sesame'."""
    pem = request.param.startswith("pem")
    kind = request.param.split("-")[1]
    return ssh_keygen(tmp_path / "enc", kind, passphrase="open sesame", pem=pem)


def test_passphrase_protected_key_loads(encrypted_key: Path) -> None:
    """The right passphrase unlocks it; the callback is asked once, naming the file."""
    ask, prompts = counting("open sesame")
    ident = keys.load_identity(encrypted_key, ask)
    assert ident.fingerprint == ssh_fingerprint_line(Path(f"{encrypted_key}.pub")).split()[1]
    assert len(prompts) == 1
    assert str(encrypted_key) in prompts[0]


def test_wrong_passphrase_fails_cleanly(encrypted_key: Path) -> None:
    """A wrong passphrase is asked for three times, as ssh does, then a
    KeyFileError (never a cryptography exception)."""
    ask, prompts = counting("open sesame!")
    with pytest.raises(KeyFileError, match="(?i)passphrase"):
        keys.load_identity(encrypted_key, ask)
    assert len(prompts) == 3


@pytest.mark.parametrize("how", ["no callback", "callback gives none"])
def test_no_passphrase_fails_cleanly(encrypted_key: Path, how: str) -> None:
    """Without a passphrase an encrypted key is a KeyFileError saying so."""
    ask = None if how == "no callback" else counting(None)[0]
    with pytest.raises(KeyFileError, match="encrypted"):
        keys.load_identity(encrypted_key, ask)


def test_empty_passphrase_answer_is_not_called_unencrypted(encrypted_key: Path) -> None:
    """Pressing Enter at the prompt gives ''; the error must not claim the
    key is unencrypted (it is), which would send the user the wrong way."""
    ask, prompts = counting("")
    with pytest.raises(KeyFileError) as info:
        keys.load_identity(encrypted_key, ask)
    assert prompts, "the passphrase was never asked for"
    assert "not encrypted" not in str(info.value), str(info.value)


def test_passphrase_for_unencrypted_key_is_not_needed(tmp_path: Path) -> None:
    """A plain key never triggers the prompt."""
    path = ssh_keygen(tmp_path / "plain", "ed25519")
    ask, prompts = counting("unused")
    keys.load_identity(path, ask)
    assert prompts == []


# ---- RSA size, signatures ---------------------------------------------------------


def test_small_rsa_keys_are_refused(tmp_path: Path) -> None:
    """RSA under 2048 bits is breakable: refused as identity, as authorized key,
    and by keygen."""
    path = ssh_keygen(tmp_path / "small", "rsa", 1024)
    with pytest.raises(KeyFileError, match="too small"):
        keys.load_identity(path)
    line = (tmp_path / "small.pub").read_text()
    with pytest.raises(ValueError, match="too small"):
        keys.parse_public(line)
    with pytest.raises(ValueError):
        authkeys.parse_line(line.strip(), 1)
    with pytest.raises(KeyFileError):
        keys.generate("rsa", 1024)


@pytest.fixture(scope="module")
def rsa_key() -> keys.PrivateKey:
    """One RSA key for the module: generating them is slow."""
    return keys.generate("rsa", 2048)


@pytest.mark.parametrize(("kind", "bits"), [
    ("ed25519", None), ("ecdsa", 256), ("ecdsa", 384), ("ecdsa", 521), ("rsa", 2048),
])
def test_sign_verify_round_trip(kind: str, bits: int | None, rsa_key: keys.PrivateKey) -> None:
    """A signature verifies only for the same data, the same key, and unaltered."""
    key = rsa_key if kind == "rsa" else keys.generate(kind, bits)
    data = b"nonce|host key|client key"
    signature = keys.sign(key, data)
    public = key.public_key()
    assert keys.verify(public, signature, data)
    assert not keys.verify(public, signature, data + b"x")
    assert not keys.verify(public, signature, b"N" + data[1:])
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not keys.verify(public, flipped, data)
    assert not keys.verify(public, b"", data)
    other = keys.generate("ed25519")
    assert not keys.verify(other.public_key(), signature, data)


# ---- authorized_keys: lines -------------------------------------------------------


@pytest.mark.parametrize("option", ['command="a",command="b"', 'from="10.0.0.1",from="*"'])
def test_a_repeated_option_makes_the_line_unusable(option: str) -> None:
    """As sshd: two command= or from= on one line are refused, not last-wins."""
    with pytest.raises(ValueError, match="given twice"):
        authkeys.parse_line(f"{option} {pub_line()}", 1)


def test_from_patterns_speak_openssh_not_fnmatch() -> None:
    """``*`` and ``?`` only: a ``[...]`` class is literal, as in OpenSSH's match.c."""
    match = authkeys.match_address
    assert match("10.0.0.7", ("10.0.0.?",)) and match("10.0.0.77", ("10.0.0.*",))
    assert not match("10.0.0.7", ("10.0.0.[0-9]",))
    assert not match("10.0.0.7", ("10.0.0.[7]",))
    assert match("10.0.0.7", ("!10.0.0.[7]", "10.0.0.*")), "a literal class negates nothing"


def test_parse_line_with_options() -> None:
    """command= keeps escaped quotes and commas; from= splits on commas; flags set."""
    key = pub_line(comment="alice@laptop with spaces")
    text = (
        r'command="echo \"a, b\"; logger x",from="10.0.0.0/8,127.0.0.1",no-pty,restrict '
        + key
    )
    entry = authkeys.parse_line(text, 7)
    assert entry.command == 'echo "a, b"; logger x'
    assert entry.from_patterns == ("10.0.0.0/8", "127.0.0.1")
    assert entry.restrict
    assert entry.line == 7
    assert entry.comment == "alice@laptop with spaces"
    parsed, _ = keys.parse_public(key)
    assert entry.fingerprint == keys.fingerprint(parsed)
    assert entry.blob == keys.public_blob(parsed)


def test_parse_line_plain_and_flag_only() -> None:
    """No options grants everything and forces nothing; no-pty is not restrict."""
    key = pub_line("ecdsa")
    plain = authkeys.parse_line(key, 1)
    assert (plain.command, plain.from_patterns, plain.restrict) == (None, None, False)
    nopty = authkeys.parse_line("no-pty,no-port-forwarding " + key, 2)
    assert (nopty.command, nopty.restrict) == (None, False)
    assert authkeys.parse_line('command="a,b c" ' + key, 3).command == "a,b c"


@pytest.mark.parametrize("text", [
    'tunnel="0" {key}',  # a real sshd option rshell does not implement
    "frobnicate {key}",
    'command="echo unterminated {key}',
    "command=echo {key}",  # value must be quoted
    'restrict="yes" {key}',  # flag with a value
    'from="" {key}',
    'command="x"{key}',  # no space before the key
    "restrict,",
    "restrict",
    "ssh-ed25519",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI",  # truncated
    "ssh-ed25519 !!!notbase64!!!",
    "ssh-rsa {blob}",  # type and blob disagree
    "hello world, this is not a key",
    ",restrict {key}",
])
def test_parse_line_rejects(text: str) -> None:
    """Anything not fully understood is a ValueError, so the line grants nothing."""
    key = pub_line()
    line = text.format(key=key, blob=key.split()[1])
    with pytest.raises(ValueError):
        authkeys.parse_line(line, 1)


@pytest.mark.parametrize(("address", "patterns", "allowed"), [
    ("127.0.0.1", ("127.0.0.1",), True),
    ("127.0.0.2", ("127.0.0.1",), False),
    ("10.1.2.3", ("10.0.0.0/8",), True),
    ("11.1.2.3", ("10.0.0.0/8",), False),
    ("192.168.1.77", ("192.168.1.64/26",), True),
    ("192.168.1.128", ("192.168.1.64/26",), False),
    ("2001:db8::5", ("2001:db8::/32",), True),
    ("2001:db9::5", ("2001:db8::/32",), False),
    ("::1", ("::1",), True),
    ("fe80::1%eth0", ("fe80::/10",), True),
    ("127.0.0.9", ("127.0.0.*",), True),
    ("127.0.1.9", ("127.0.0.*",), False),
    ("10.0.0.7", ("10.0.0.?",), True),
    ("10.0.0.17", ("10.0.0.?",), False),
    ("127.0.0.1", ("*",), True),
    ("127.0.0.1", ("!127.0.0.1", "*"), False),
    ("127.0.0.1", ("*", "!127.0.0.1"), False),  # negation wins whatever the order
    ("10.9.9.9", ("!10.0.0.0/8", "10.9.9.9"), False),
    ("10.9.9.9", ("!127.0.0.1",), False),  # only negative patterns: no positive match
    ("127.0.0.1", ("10.0.0.0/8", "192.168.0.0/16"), False),
    ("::ffff:127.0.0.1", ("127.0.0.1",), True),  # IPv4-mapped IPv6 is the IPv4 peer
    ("::ffff:10.2.3.4", ("10.0.0.0/8",), True),
    ("::ffff:10.2.3.4", ("!10.0.0.0/8", "*"), False),
    ("127.0.0.1", ("not-a-net/99",), False),
    ("not an address", ("*",), False),
])
def test_match_address(address: str, patterns: tuple[str, ...], allowed: bool) -> None:
    """from= follows OpenSSH: any matching negation denies, else any match allows."""
    assert authkeys.match_address(address, patterns) is allowed


# ---- authorized_keys: the file ---------------------------------------------------


def bump(path: Path) -> None:
    """Give the file a new mtime a whole second away, so a change is visible
    even where timestamps are coarse (no sleeping)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def blob_of(line: str) -> bytes:
    return keys.public_blob(keys.parse_public(line)[0])


def test_garbage_lines_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad line costs only itself: warned about by number, good keys still found."""
    good1, good2, stranger = pub_line(comment="one"), pub_line("ecdsa", "two"), pub_line()
    path = tmp_path / "authorized_keys"
    path.write_text("\n".join([
        "# a comment",
        "total garbage here",
        good1,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI",
        "",
        'frobnicate="1" ' + stranger,
        good2,
        'command="never closed ' + stranger,
    ]) + "\n")
    table = authkeys.AuthorizedKeys(path)
    with caplog.at_level(logging.WARNING, logger="rshell.server"):
        first = table.find(blob_of(good1))
        second = table.find(blob_of(good2))
        assert table.find(blob_of(stranger)) is None
    assert first is not None and first.line == 3
    assert second is not None and second.line == 7
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for number in (2, 4, 6, 8):
        assert f"line {number} skipped" in warned, warned
    for number in (1, 3, 5, 7):
        assert f"line {number} skipped" not in warned, warned
    assert str(path) in warned


def test_file_is_re_read_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Removing a key revokes it and adding one grants it, without a restart;
    a missing file grants nothing."""
    alice, bob = pub_line(comment="alice"), pub_line(comment="bobby")  # same length
    assert len(alice) == len(bob)
    path = tmp_path / "authorized_keys"
    path.write_text(alice + "\n")
    table = authkeys.AuthorizedKeys(path)
    assert table.find(blob_of(alice)) is not None
    assert table.find(blob_of(bob)) is None
    path.write_text(bob + "\n")  # same size, same inode: only the mtime tells
    bump(path)
    assert table.find(blob_of(alice)) is None
    assert table.find(blob_of(bob)) is not None
    path.write_text(bob + "\n" + 'command="ls" ' + alice + "\n")  # size changes
    entry = table.find(blob_of(alice))
    assert entry is not None and entry.command == "ls" and entry.line == 2
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="rshell.server"):
        assert table.find(blob_of(bob)) is None
    assert "does not exist" in caplog.text
    path.write_text(alice + "\n")
    assert table.find(blob_of(alice)) is not None


def test_first_line_for_a_duplicated_key_wins(tmp_path: Path) -> None:
    """As in sshd: a later, looser line for the same key cannot widen the first."""
    key = pub_line()
    path = tmp_path / "authorized_keys"
    path.write_text(f'command="first",from="10.0.0.0/8" {key}\n{key}\ncommand="third" {key}\n')
    entry = authkeys.AuthorizedKeys(path).find(blob_of(key))
    assert entry is not None
    assert (entry.line, entry.command) == (1, "first")
    assert not entry.allows_address("127.0.0.1")
    assert entry.allows_address("10.0.0.1")


def test_empty_file_grants_nothing(tmp_path: Path) -> None:
    key = pub_line()
    path = tmp_path / "authorized_keys"
    path.write_text("")
    assert authkeys.AuthorizedKeys(path).find(blob_of(key)) is None


# ---- known_hosts ---------------------------------------------------------------------


def test_knownhosts_add_and_lookup(tmp_path: Path) -> None:
    """Pins are found by exact host:port (IPv6 bracketed) with the line to fix."""
    path = tmp_path / "sub" / "known_hosts"
    assert knownhosts.lookup(path, "127.0.0.1:7722") is None  # missing file
    knownhosts.add(path, "127.0.0.1:7722", "SHA256:aaa")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with path.open("a") as f:
        f.write("# a comment line\n\n")
    knownhosts.add(path, "[::1]:7722", "SHA256:bbb")
    knownhosts.add(path, "[2001:db8::1]:22", "SHA256:ccc")
    with path.open("a") as f:
        f.write("example.org:7722 SHA256:ddd # pinned by hand\n")
    assert knownhosts.lookup(path, "127.0.0.1:7722") == knownhosts.Pin(
        "127.0.0.1:7722", "SHA256:aaa", 1)
    assert knownhosts.lookup(path, "[::1]:7722") == knownhosts.Pin("[::1]:7722", "SHA256:bbb", 4)
    pin = knownhosts.lookup(path, "[2001:db8::1]:22")
    assert pin is not None and (pin.fingerprint, pin.line) == ("SHA256:ccc", 5)
    pin = knownhosts.lookup(path, "example.org:7722")
    assert pin is not None and (pin.fingerprint, pin.line) == ("SHA256:ddd", 6)
    for absent in ("127.0.0.1:772", "127.0.0.1:77220", "[::1]:7723", "::1:7722", "127.0.0.1"):
        assert knownhosts.lookup(path, absent) is None, absent


def test_knownhosts_first_pin_wins(tmp_path: Path) -> None:
    """A later line cannot override an earlier pin: the changed-key warning
    names the line that actually decided."""
    path = tmp_path / "known_hosts"
    knownhosts.add(path, "h:1", "SHA256:old")
    knownhosts.add(path, "h:1", "SHA256:new")
    assert knownhosts.lookup(path, "h:1") == knownhosts.Pin("h:1", "SHA256:old", 1)
