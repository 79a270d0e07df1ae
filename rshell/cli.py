"""The ``rshell`` and ``rshell-server`` commands: the only importer of click.

Every failure becomes one line on stderr and an exit code taken from the
error class (2 for usage, 255 for connection/protocol/authentication, the
remote status otherwise); no traceback reaches a user.
"""

from __future__ import annotations

import functools
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from rshell.errors import EXIT_CONNECTION, EXIT_USAGE, RshellError, UsageError
from rshell.paths import DEFAULT_PORT, rshell_home

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _fail(message: str, code: int, prog: str = "rshell") -> NoReturn:
    line = " ".join(message.split("\n"))  # one line, always
    try:
        sys.stderr.write(f"{prog.split()[0]}: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass  # no stderr to write to: the exit status still says it
    sys.exit(code)


def _invoke(command: click.Command, args: Sequence[str], prog: str) -> NoReturn:
    """Run a click command with rshell's error policy: one line, no traceback."""
    fail = functools.partial(_fail, prog=prog)
    try:
        rv = command.main(list(args), prog_name=prog, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help(), err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as exc:
        fail(f"{exc.format_message()} (see {prog} --help)", EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        fail("aborted", 130)
    except RshellError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(141)
    except OSError as exc:  # a local file or device: not a crash, one line
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or exc}{where}", EXIT_CONNECTION)
    except UnicodeError as exc:
        fail(f"cannot decode or encode text: {exc}", EXIT_CONNECTION)
    sys.exit(rv if isinstance(rv, int) else 0)


# ---- rshell ----------------------------------------------------------------------


@click.command(context_settings=_CONTEXT, no_args_is_help=True)
@click.argument("target")
@click.argument("argv", nargs=-1)
@click.option("-c", "command", metavar="COMMAND", help="Run one command and exit.")
@click.option("-f", "batch", metavar="FILE", help="Run one command per line ('-' for stdin).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), help=f"Port [{DEFAULT_PORT}].")
@click.option("-i", "identity", metavar="PATH", help="Private key to authenticate with.")
@click.option("--no-tls", is_flag=True, help="Talk plain TCP (insecure; server must agree).")
@click.option("--no-auth", is_flag=True,
              help="Offer no key (only a --no-auth server will take you).")
@click.option("--known-hosts", metavar="FILE", help="Host key pins [$RSHELL_HOME/known_hosts].")
@click.option("--strict-host-keys", is_flag=True, help="Refuse hosts not in known_hosts.")
@click.option("--accept-new", is_flag=True, help="Pin unknown hosts without asking.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per command on stdout.")
@click.option("--fail-fast", is_flag=True, help="Batch: stop at the first failure.")
@click.option("-q", "--quiet", is_flag=True, help="Do not report command errors on stderr.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), help="Per-command limit (s).")
@click.option(
    "--connect-timeout", type=click.FloatRange(0, min_open=True), default=10.0,
    show_default=True, help="Connect, handshake and authentication limit (s).",
)
def client_command(
    target: str, argv: tuple[str, ...], command: str | None, batch: str | None,
    port: int | None, identity: str | None, no_tls: bool, no_auth: bool,
    known_hosts: str | None,
    strict_host_keys: bool, accept_new: bool, as_json: bool, fail_fast: bool, quiet: bool,
    timeout: float | None, connect_timeout: float,
) -> int:
    """Run commands on an rshell server: a prompt, one command, or a batch.

    \b
      rshell HOST                   interactive prompt
      rshell HOST -c 'COMMAND'      one command
      rshell HOST -- CMD ARG...     one command, argv quoted for the remote shell
      rshell HOST -f FILE           one command per line ('-f -': stdin)
      cmds | rshell HOST            batch from stdin
      rshell keygen [-f PATH] [-t ed25519|ecdsa|rsa]
      rshell fingerprint [PATH|HOST]
    """
    from rshell.client import connect

    if sum(x is not None and x != () for x in (command, batch, argv or None)) > 1:
        raise UsageError("give only one of -c COMMAND, -f FILE, or -- CMD ARG...")
    if argv:
        command = shlex.join(argv)
    if command is not None and not command.strip():
        raise UsageError("empty command")
    if strict_host_keys and accept_new:
        raise UsageError("--strict-host-keys and --accept-new contradict each other")
    if batch is None and command is None and not _stdin_is_tty():
        batch = "-"
    lines = _batch_lines(batch) if batch is not None else None
    if no_tls:
        sys.stderr.write("rshell: WARNING: --no-tls: the server is not authenticated and "
                         "nothing is encrypted\n")
    if no_auth:
        sys.stderr.write("rshell: WARNING: --no-auth: offering no key; only a server that "
                         "lets anyone run commands will accept this\n")

    def open_connection() -> Any:
        return connect(
            target, port=port, identity=identity, passphrase=_ask_passphrase,
            known_hosts=known_hosts, strict_host_keys=strict_host_keys, accept_new=accept_new,
            ask=_ask_host if _on_terminal() else None, connect_timeout=connect_timeout,
            tls=not no_tls, auth=not no_auth, on_warning=_warn,
        )

    conn = open_connection()
    with conn:
        if command is not None:
            return _one_shot(conn, command, as_json=as_json, quiet=quiet, timeout=timeout)
        if lines is not None:
            from rshell.batch import run_batch

            with _forward_sigint(conn.send_signal):
                return run_batch(conn, lines, fail_fast=fail_fast, as_json=as_json,
                                 quiet=quiet, timeout=timeout)
        from rshell.repl import interactive

        return interactive(conn, rshell_home() / "history", timeout=timeout,
                           reconnect=open_connection)


def _warn(message: str) -> None:
    sys.stderr.write(f"rshell: WARNING: {message}\n")
    sys.stderr.flush()


def _stdin_is_tty() -> bool:
    """True on a terminal; a closed stdin (``<&-``) is not one."""
    return sys.stdin is not None and sys.stdin.isatty()


def _on_terminal() -> bool:
    try:
        with open("/dev/tty"):
            return sys.stdin.isatty()
    except OSError:
        return False


def _ask_passphrase(prompt: str) -> str | None:
    """Ask on the controlling terminal, as ssh does; None when there is none.

    Never from stdin: that is the command's data (``... | rshell h -c cat``),
    and getpass would fall back to it, echoing and eating it.
    """
    import getpass

    try:
        with open("/dev/tty", "r+b", buffering=0):
            pass
    except OSError:
        return None
    try:
        return getpass.getpass(prompt)
    except (EOFError, OSError):
        return None


def _ask_host(address: str, fingerprint: str) -> bool:
    sys.stderr.write(
        f"The authenticity of host '{address}' can't be established.\n"
        f"Its host key fingerprint is {fingerprint}.\n"
    )
    while True:
        try:
            # Binary and unbuffered: a terminal is not seekable, so "r+" text fails.
            with open("/dev/tty", "rb+", buffering=0) as tty:
                tty.write(b"Are you sure you want to continue connecting (yes/no)? ")
                answer = tty.readline().decode(errors="replace").strip().lower()
        except OSError:
            return False
        if answer in ("yes", "no"):
            return answer == "yes"


def _batch_lines(batch: str) -> Iterator[str]:
    """Lines as they come (a command runs as soon as its line is there); bytes
    that are not UTF-8 survive as surrogates and reach the server unchanged."""
    if batch == "-":
        if sys.stdin is None:
            raise UsageError("no standard input to read commands from")
        source: Any = sys.stdin.buffer
    else:
        try:
            source = open(batch, "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise UsageError(f"cannot read {batch}: {exc.strerror}") from None
    return _decoded_lines(source)


def _decoded_lines(source: Any) -> Iterator[str]:
    with source:
        for raw in iter(source.readline, b""):
            yield raw.decode("utf-8", "surrogateescape").rstrip("\r\n")


def _one_shot(conn: Any, command: str, *, as_json: bool, quiet: bool,
              timeout: float | None) -> int:
    from rshell.output import fd_writer, report_error, write_json_line

    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    with _forward_sigint(conn.send_signal):
        if as_json:
            result = conn.run(command, stdin=stdin, timeout=timeout)
            write_json_line(result)
        else:
            out = _pipe_safe(fd_writer(1), conn.send_signal)
            result = conn.run(command, stdin=stdin, timeout=timeout,
                              on_stdout=out, on_stderr=fd_writer(2))
            report_error(result, quiet)
    return int(result.exit_status)


def _pipe_safe(write: Callable[[Any], None], send_signal: Callable[[int], None]) -> Any:
    """Once our stdout is gone (``| head``), tell the command, as a pipe would."""
    broken = False

    def guarded(data: Any) -> None:
        nonlocal broken
        if broken:
            return
        try:
            write(data)
        except BrokenPipeError:
            broken = True
            send_signal(signal.SIGPIPE)

    return guarded


class _forward_sigint:
    """While running a command, Ctrl-C goes to the remote command, not to us;
    three presses within two seconds abort locally (the connection closes, so
    the server terminates the command), for a command that ignores SIGINT."""

    def __init__(self, send: Callable[[int], None]) -> None:
        self._send = send
        self._previous: Any = None
        self._presses: list[float] = []

    def __enter__(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            now = time.monotonic()
            self._presses = [t for t in self._presses if now - t < 2.0] + [now]
            if len(self._presses) >= 3:
                raise KeyboardInterrupt
            self._send(signal.SIGINT)

        self._previous = signal.signal(signal.SIGINT, handler)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


@click.command(context_settings=_CONTEXT)
@click.option("-f", "path", metavar="PATH", help="Key file [$RSHELL_HOME/id_ed25519].")
@click.option("-t", "kind", type=click.Choice(["ed25519", "ecdsa", "rsa"]), default="ed25519",
              show_default=True)
@click.option("-b", "bits", type=int, help="Bits (RSA >= 2048; ECDSA 256, 384 or 521).")
@click.option("-N", "new_passphrase", default="", help="Passphrase (empty: none).")
@click.option("-C", "comment", help="Comment [user@host].")
def keygen_command(
    path: str | None, kind: str, bits: int | None, new_passphrase: str, comment: str | None
) -> int:
    """Generate a key pair in OpenSSH format (private file mode 0600)."""
    from rshell import keys
    from rshell.errors import KeyFileError

    target = Path(path).expanduser() if path else rshell_home() / f"id_{kind}"
    try:
        key = keys.generate(kind, bits)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    keys.write_key_pair(target, key, comment or keys.default_comment(), new_passphrase)
    bits_, name = keys.describe(key.public_key())
    click.echo(f"Your identification has been saved in {target}")
    click.echo(f"Your public key has been saved in {target}.pub")
    click.echo(f"The key fingerprint is:\n{keys.fingerprint(key.public_key())} ({name}, {bits_})")
    return 0


@click.command(context_settings=_CONTEXT)
@click.argument("what", required=False)
@click.option("-p", "--port", type=click.IntRange(1, 65535))
@click.option("--connect-timeout", type=float, default=10.0)
def fingerprint_command(what: str | None, port: int | None, connect_timeout: float) -> int:
    """Print a key's fingerprint as `ssh-keygen -lf` does, or a host's.

    WHAT is a key file (private or .pub), or HOST[:PORT] to ask a server
    for its host key; default: your identity.
    """
    from rshell import keys

    path = Path(what).expanduser() if what else rshell_home() / "id_ed25519"
    if what is None or path.exists() or "/" in what:
        key, comment = _public_key_of(path)
        bits, name = keys.describe(key)
        click.echo(f"{bits} {keys.fingerprint(key)} {comment or 'no comment'} ({name})")
        return 0
    from rshell.paths import format_hostport, parse_hostport
    from rshell.probe import host_key_of

    host, p = parse_hostport(what, port or DEFAULT_PORT)
    key = host_key_of(host, p, connect_timeout)
    bits, name = keys.describe(key)
    click.echo(f"{format_hostport(host, p)} {bits} {keys.fingerprint(key)} ({name})")
    return 0


def _public_key_of(path: Path) -> tuple[Any, str]:
    from rshell import keys
    from rshell.errors import KeyFileError

    pub = path if path.suffix == ".pub" else Path(f"{path}.pub")
    try:
        if pub.exists():
            return keys.parse_public(pub.read_text())
        text = path.read_text(errors="replace")
        if text.split(None, 1)[0:1] and not text.startswith("-----"):
            return keys.parse_public(text)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    ident = keys.load_identity(path, _ask_passphrase)
    return ident.key.public_key(), ""


_SUBCOMMANDS: dict[str, click.Command] = {
    "keygen": keygen_command, "fingerprint": fingerprint_command,
}


def _sane_descriptors() -> None:
    """Open /dev/null on a closed 0, 1 or 2, as ssh does: otherwise the next
    pipe or socket we open would take that number, and writing "to stderr"
    would write into it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``rshell``."""
    _sane_descriptors()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _SUBCOMMANDS:
        _invoke(_SUBCOMMANDS[args[0]], args[1:], f"rshell {args[0]}")
    _invoke(client_command, _command_words(args), "rshell")


#: Client options that take a value (the next word, unless attached).
_VALUE_OPTIONS = frozenset({
    "-c", "-f", "-p", "--port", "-i", "--known-hosts", "--timeout", "--connect-timeout",
})


def _takes_next_word(option: str) -> bool:
    """Whether ``option`` consumes the following word as its value: ``-p``,
    ``--port``, and a short cluster ending in one (``-qc``), but not ``-p22``,
    ``--port=22`` or ``-cls`` (whose value is attached)."""
    if option.startswith("--"):
        return "=" not in option and option in _VALUE_OPTIONS
    for at, letter in enumerate(option[1:], 1):
        if f"-{letter}" in _VALUE_OPTIONS:
            return at == len(option) - 1
    return False


def _command_words(args: list[str]) -> list[str]:
    """As ssh reads ``ssh host ls -l /``: options may come before or right after
    the target, and the first other word after it starts the remote command,
    whose own dashes are its own (as if ``--`` stood before it)."""
    target_seen = False
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return args
        if word.startswith("-") and word != "-":
            i += 2 if _takes_next_word(word) else 1
            continue
        if target_seen:
            return [*args[:i], "--", *args[i:]]
        target_seen = True
        i += 1
    return args


# ---- rshell-server ---------------------------------------------------------------


@click.command(context_settings=_CONTEXT)
@click.option("--bind", "binds", multiple=True, metavar="HOST:PORT",
              help="Address to listen on, repeatable [127.0.0.1:7722]; IPv6 as [::1]:7722.")
@click.option("--ssh-bind", "ssh_binds", multiple=True, metavar="HOST:PORT",
              help="Also serve SSH-2 (OpenSSH clients) here, repeatable.")
@click.option("--state-dir", metavar="DIR",
              help="Host key and authorized_keys [$RSHELL_HOME/server].")
@click.option("--authorized-keys", metavar="FILE", help="[STATE_DIR/authorized_keys]")
@click.option("--no-tls", is_flag=True, help="Serve plain TCP (insecure, loud warning).")
@click.option("--no-auth", is_flag=True, help="Run commands for anyone who connects (insecure).")
@click.option("--allow-unauthenticated-remote", is_flag=True,
              help="Permit --no-auth on a non-loopback address.")
@click.option("--timeout", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Default per-command time limit in seconds (0 = none).")
@click.option("--max-output", type=click.IntRange(0), default=0, show_default=True,
              help="Output bytes per command (0 = unlimited).")
@click.option("--max-connections", type=click.IntRange(1), default=100, show_default=True,
              help="Simultaneous connections; beyond, 'server busy'.")
@click.option("--max-unauthenticated", type=click.IntRange(1), default=64, show_default=True,
              help="Connections still authenticating; beyond, the oldest idle one is cut off.")
@click.option("--idle-timeout", type=click.FloatRange(0), default=3600.0, show_default=True,
              help="Close a session idle this long between commands (0 = never).")
@click.option("--max-commands", type=click.IntRange(1), default=1_000_000, show_default=True,
              help="Commands per connection before it must reconnect.")
@click.option("--auth-timeout", type=click.FloatRange(0, min_open=True), default=10.0,
              show_default=True, help="Seconds to complete the handshake.")
@click.option("--shutdown-grace", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Seconds running commands get to finish on SIGTERM.")
@click.option("--shell", default="/bin/sh", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--audit-log", metavar="FILE", help="Append one JSON line per event.")
def server_command(**opts: Any) -> int:
    """Serve rshell commands: run them, stream their output, report their status."""
    from rshell.daemon_main import run_server

    return run_server(**opts)


def server_main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``rshell-server``."""
    args = list(sys.argv[1:] if argv is None else argv)
    _invoke(server_command, args, "rshell-server")


__all__ = ["main", "server_main", "EXIT_CONNECTION"]
