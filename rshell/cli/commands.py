"""The ``rshell`` command line beyond the fast path: click's half.

Every failure becomes one line on stderr and an exit code taken from the
error class (2 for usage, 255 for connection/protocol/authentication, the
remote status otherwise); no traceback reaches a user.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from rshell.cli.common import (
    ask_new_passphrase,
    ask_passphrase,
    fail,
    forward_sigint,
    guarded,
    on_terminal,
    on_terminal_once,
    one_shot,
    open_client,
    sane_descriptors,
    version_line,
)
from rshell.client.options import CONNECT_TIMEOUT
from rshell.client.screen import visible
from rshell.errors import EXIT_USAGE, UsageError
from rshell.paths import DEFAULT_PORT, rshell_home

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def invoke(command: click.Command, args: Sequence[str], prog: str, obj: Any = None) -> NoReturn:
    """Run a click command with rshell's error policy: one line, no traceback.
    ``obj`` is handed to the command as its context's ``obj``."""

    def run() -> int | None:
        try:
            rv: int | None = command.main(list(args), prog_name=prog, standalone_mode=False,
                                          obj=obj)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help(), err=True)
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            fail(f"{exc.format_message()} (see {prog} --help)", EXIT_USAGE, prog)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            fail("aborted", 130, prog)
        return rv

    guarded(run, prog)


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_line(ctx.info_name or "rshell"))
        ctx.exit()


_Decorated = TypeVar("_Decorated", bound=Callable[..., Any])


def version_option(*names: str) -> Callable[[_Decorated], _Decorated]:
    """``--version``: the version, and the Python and OpenSSL it runs on."""
    return click.option(*names, is_flag=True, expose_value=False, is_eager=True,
                        callback=_print_version,
                        help="Print the version (with Python's and OpenSSL's) and exit.")


# ---- rshell ----------------------------------------------------------------------


def _complete_target(ctx: click.Context, param: click.Parameter,
                     incomplete: str) -> list[str]:
    """TARGET, completed: a subcommand, or a host pinned in known_hosts."""
    names = [*_SUBCOMMANDS]
    try:
        pins = (rshell_home() / "known_hosts").read_text(errors="replace").splitlines()
    except OSError:
        pins = []
    for line in pins:
        address = line.split(None, 1)[0] if line.strip() else ""
        if address and not address.startswith("#"):
            names.append(address.removesuffix(f":{DEFAULT_PORT}"))
    return sorted({n for n in names if n.startswith(incomplete)})


def _connect_flags(f: _Decorated) -> _Decorated:
    """The flags of how a connection is made and trusted: rshell's and rshell cp's."""
    for option in reversed((
        click.option("-i", "identity", metavar="PATH",
                     help="Private key to authenticate with."),
        click.option("--no-tls", is_flag=True,
                     help="Talk plain TCP (insecure; server must agree)."),
        click.option("--no-auth", is_flag=True,
                     help="Offer no key (only a --no-auth server will take you)."),
        click.option("--known-hosts", metavar="FILE",
                     help="Host key pins [$RSHELL_HOME/known_hosts]."),
        click.option("--strict-host-keys", is_flag=True, help="Refuse hosts not in known_hosts."),
        click.option("--accept-new", is_flag=True, help="Pin unknown hosts without asking."),
    )):
        f = option(f)
    return f


@click.command(context_settings=CONTEXT, no_args_is_help=True)
@click.argument("target", required=False, shell_complete=_complete_target)
@click.argument("argv", nargs=-1)
@click.option("-c", "command", metavar="COMMAND", help="Run one command and exit.")
@click.option("-f", "batch", metavar="FILE", help="Run one command per line ('-' for stdin).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), help=f"Port [{DEFAULT_PORT}].")
@_connect_flags
@click.option("--json", "as_json", is_flag=True, help="One JSON object per command on stdout.")
@click.option("--fail-fast", is_flag=True, help="Batch: stop at the first failure.")
@click.option("-q", "--quiet", is_flag=True, help="Do not report command errors on stderr.")
@click.option("-v", "--verbose", count=True,
              help="Say on stderr what the connection does (-vv, -vvv: more).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), help="Per-command limit (s).")
@click.option(
    "--connect-timeout", type=click.FloatRange(0, min_open=True), default=CONNECT_TIMEOUT,
    show_default=True, help="Connect, handshake and authentication limit (s).",
)
@click.option("-t", "tty", count=True,
              help="A remote terminal (-tt: even when stdin is not one); alone: a login shell.")
@click.option("-T", "no_tty", is_flag=True,
              help="Never a remote terminal (the prompt too runs commands without one).")
@click.option("-e", "escape", metavar="CHAR", default="~", show_default=True,
              help="Escape character on a terminal ('none': no escapes).")
@click.option("-H", "hosts_files", metavar="FILE", multiple=True,
              help="More targets, one a line ('#' comments).")
@click.option("--parallel", type=click.IntRange(1, 1024), metavar="N",
              help="Several targets: hosts at once [64, or config.toml's].")
@click.option("-b", "--gather", is_flag=True,
              help="Several targets: identical outputs once, with their hosts.")
@click.option("--out-dir", metavar="DIR", help="Several targets: DIR/HOST.out, DIR/HOST.err.")
@click.option("--inventory", metavar="FILE", help="An Ansible INI inventory: hosts and groups.")
@version_option("-V", "--version")
def client_command(
    target: str | None, argv: tuple[str, ...], command: str | None, batch: str | None,
    port: int | None, identity: str | None, no_tls: bool, no_auth: bool,
    known_hosts: str | None,
    strict_host_keys: bool, accept_new: bool, as_json: bool, fail_fast: bool, quiet: bool,
    timeout: float | None, connect_timeout: float, verbose: int = 0, tty: int = 0,
    no_tty: bool = False, escape: str = "~", hosts_files: tuple[str, ...] = (),
    parallel: int | None = None, gather: bool = False, out_dir: str | None = None,
    inventory: str | None = None,
) -> int:
    """Run commands on an rshell server: a prompt, one command, or a batch.

    \b
      rshell HOST                   interactive prompt
      rshell HOST -c 'COMMAND'      one command
      rshell HOST WORD...           one command: the words joined with spaces, as ssh does
      rshell HOST -- CMD ARG...     one command, argv quoted for the remote shell
      rshell HOST -f FILE           one command per line ('-f -': stdin)
      cmds | rshell HOST            batch from stdin
      rshell -t HOST [COMMAND]      a login shell (or COMMAND) on a remote terminal
      rshell web[01-20],@db -c CMD  several hosts (also: rshell -c CMD HOST..., -H FILE)
      rshell hosts TARGETS          print the hosts TARGETS name
      rshell keygen [-f PATH] [-t ed25519|ecdsa|rsa]
      rshell fingerprint [PATH|HOST]
      rshell copy-id [-i KEY] HOST  add a public key to HOST's authorized_keys
    """
    joined = bool(click.get_current_context().obj == _JOIN_WORDS)
    if target is None and not hosts_files:
        raise UsageError("no host: give TARGET (or -H FILE)")
    targets = [target] if target is not None else []  # rshell -H FILE -c CMD
    if argv and joined and (command is not None or batch is not None):
        targets, argv = [*targets, *argv], ()  # rshell -c CMD HOST HOST...
    if _is_fleet(targets, hosts_files, inventory):
        if tty:
            raise UsageError("-t applies to one host, not to several")
        from rshell.cli.fleet import run_on_fleet

        command, batch = _mode(argv, command, batch, joined)
        return run_on_fleet(
            targets, hosts_files=hosts_files, inventory=inventory, parallel=parallel,
            command=command, lines=_batch_lines(batch) if batch is not None else None,
            gather=gather, out_dir=out_dir, as_json=as_json, fail_fast=fail_fast, quiet=quiet,
            timeout=timeout, connect=dict(
                port=port, identity=identity, known_hosts=known_hosts,
                strict_host_keys=strict_host_keys, accept_new=accept_new,
                connect_timeout=connect_timeout, tls=not no_tls, auth=not no_auth))
    if gather or out_dir or parallel:
        raise UsageError("--gather, --out-dir and --parallel apply to several targets")
    assert target is not None  # one target: _is_fleet said so
    on_tty = _tty_wanted(tty, no_tty, batch, as_json)
    escape_byte = _escape(escape)
    if on_tty and command is None and not argv and batch is None:
        command = ""  # the login shell, not a batch from a piped stdin (-tt)
    else:
        command, batch = _mode(argv, command, batch, joined)
    if verbose:
        from rshell.cli.verbose import configure

        configure(verbose)
    if strict_host_keys and accept_new:
        raise UsageError("--strict-host-keys and --accept-new contradict each other")
    lines = _batch_lines(batch) if batch is not None else None
    _warn_opt_outs(no_tls, no_auth)

    def open_connection() -> Any:
        return open_client(
            target, port=port, identity=identity, known_hosts=known_hosts,
            strict_host_keys=strict_host_keys, accept_new=accept_new,
            connect_timeout=connect_timeout, tls=not no_tls, auth=not no_auth,
        )

    try:
        with open_connection() as conn:
            if on_tty:
                assert command is not None
                return on_terminal_once(conn, command, escape=escape_byte, quiet=quiet,
                                        timeout=timeout)
            if command is not None:
                return one_shot(conn, command, as_json=as_json, quiet=quiet, timeout=timeout)
            if lines is not None:
                from rshell.cli.batch import run_batch

                with forward_sigint(conn.send_signal):
                    return run_batch(conn, lines, fail_fast=fail_fast, as_json=as_json,
                                     quiet=quiet, timeout=timeout)
            from rshell.cli.repl import interactive

            return interactive(conn, rshell_home() / "history", timeout=timeout,
                               reconnect=open_connection,
                               terminal=not no_tty and _stdin_is_tty() and _stdout_is_tty(),
                               escape=escape_byte)
    except BrokenPipeError:
        # Our stdout or stderr is gone: 141, as `guarded` (and the fast path)
        # says it; click's own handler, which would see it first, exits 1.
        return 141


def _is_fleet(targets: list[str], hosts_files: tuple[str, ...], inventory: str | None) -> bool:
    """Several targets, -H, --inventory, or a target written as several
    (fleet.targets.names_several): the fleet's output."""
    from rshell.fleet.targets import names_several

    return len(targets) != 1 or bool(hosts_files or inventory) or names_several(targets[0])


def _mode(argv: tuple[str, ...], command: str | None, batch: str | None,
          joined: bool = False) -> tuple[str | None, str | None]:
    """One command (``-c``; words after the target, ``joined`` with spaces for
    the remote shell to parse, as ssh does; or argv after ``--``, quoted), a
    batch (``-f``, or piped stdin), or neither (the prompt)."""
    if sum(x is not None and x != () for x in (command, batch, argv or None)) > 1:
        raise UsageError("give only one of -c COMMAND, -f FILE, or a command after the target")
    if argv:
        command = " ".join(argv) if joined else shlex.join(argv)
    if command is not None and not command.strip():
        raise UsageError("empty command")
    if batch is None and command is None and not _stdin_is_tty():
        batch = "-"
    return command, batch


def _tty_wanted(tty: int, no_tty: bool, batch: str | None, as_json: bool) -> bool:
    """-t, -tt, -T as ssh reads them: -t only when stdin is a terminal (else a
    warning and none), -tt whatever stdin is, -T never."""
    if not tty:
        return False
    if no_tty:
        raise UsageError("-t and -T contradict each other")
    if batch is not None or as_json:
        raise UsageError("-t applies to one command or a login shell, not to -f or --json")
    if tty == 1 and not _stdin_is_tty():
        sys.stderr.write("rshell: Pseudo-terminal will not be allocated because stdin is "
                         "not a terminal.\n")
        return False
    return True


def _escape(text: str) -> int | None:
    from rshell.terminal.escape import escape_char

    try:
        return escape_char(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _stdout_is_tty() -> bool:
    try:
        return os.isatty(1)
    except OSError:
        return False


def _warn_opt_outs(no_tls: bool, no_auth: bool) -> None:
    if no_tls:
        sys.stderr.write("rshell: WARNING: --no-tls: the server is not authenticated and "
                         "nothing is encrypted\n")
    if no_auth:
        sys.stderr.write("rshell: WARNING: --no-auth: offering no key; only a server that "
                         "lets anyone run commands will accept this\n")


def _stdin_is_tty() -> bool:
    """True on a terminal; a closed stdin (``<&-``) is not one."""
    return sys.stdin is not None and sys.stdin.isatty()


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


@click.command(context_settings=CONTEXT)
@click.option("-f", "path", metavar="PATH", help="Key file [$RSHELL_HOME/id_ed25519].")
@click.option("-t", "kind", type=click.Choice(["ed25519", "ecdsa", "rsa"]), default="ed25519",
              show_default=True)
@click.option("-b", "bits", type=int, help="Bits (RSA >= 2048; ECDSA 256, 384 or 521).")
@click.option("-N", "new_passphrase",
              help="Passphrase ('' for none) [asked on a terminal; none otherwise].")
@click.option("-C", "comment", help="Comment [user@host].")
def keygen_command(
    path: str | None, kind: str, bits: int | None, new_passphrase: str | None,
    comment: str | None,
) -> int:
    """Generate a key pair in OpenSSH format (private file mode 0600).

    On a terminal the passphrase is asked for, twice, as ssh-keygen does
    (empty for none); -N gives it instead, -N '' for none."""
    from rshell.errors import KeyFileError
    from rshell.trust import keys

    target = Path(path).expanduser() if path else rshell_home() / f"id_{kind}"
    try:
        key = keys.generate(kind, bits)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    if target.exists():  # said before asking for a passphrase it would not use
        raise KeyFileError(f"{target} already exists; not overwriting it")
    if new_passphrase is None:
        new_passphrase = ask_new_passphrase() if on_terminal() else ""
    keys.write_key_pair(target, key, comment or keys.default_comment(), new_passphrase)
    bits_, name = keys.describe(key.public_key())
    click.echo(f"Your identification has been saved in {target}")
    click.echo(f"Your public key has been saved in {target}.pub")
    click.echo(f"The key fingerprint is:\n{keys.fingerprint(key.public_key())} ({name}, {bits_})")
    return 0


@click.command(context_settings=CONTEXT)
@click.argument("what", required=False)
@click.option("-p", "--port", type=click.IntRange(1, 65535))
@click.option("--connect-timeout", type=float, default=CONNECT_TIMEOUT)
def fingerprint_command(what: str | None, port: int | None, connect_timeout: float) -> int:
    """Print a key's fingerprint as `ssh-keygen -lf` does, or a host's.

    WHAT is a key file (private or .pub), or HOST[:PORT] to ask a server
    for its host key; default: your identity.
    """
    from rshell.trust import keys

    path = Path(what).expanduser() if what else rshell_home() / "id_ed25519"
    if what is None or path.exists() or "/" in what:
        key, comment = _public_key_of(path)
        bits, name = keys.describe(key)
        # A .pub file's comment is whatever its sender wrote: shown, not obeyed.
        click.echo(f"{bits} {keys.fingerprint(key)} {visible(comment or 'no comment')} ({name})")
        return 0
    from rshell.client.config import load, resolve
    from rshell.client.probe import host_key_of
    from rshell.paths import format_hostport, parse_hostport

    target = resolve(what, load(), port=port)  # an alias too, as everywhere
    if target.target.startswith("ssh://"):
        raise UsageError(f"{what} is an ssh host: ask it with ssh-keyscan")
    host, p = parse_hostport(target.target, target.port or DEFAULT_PORT)
    key = host_key_of(host, p, connect_timeout)
    bits, name = keys.describe(key)
    click.echo(f"{visible(format_hostport(host, p))} {bits} {keys.fingerprint(key)} ({name})")
    return 0


def _public_key_of(path: Path) -> tuple[Any, str]:
    from rshell.errors import KeyFileError
    from rshell.trust import keys

    pub = path if path.suffix == ".pub" else Path(f"{path}.pub")
    try:
        if pub.exists():
            return keys.parse_public(pub.read_text())
        text = path.read_text(errors="replace")
        if text.split(None, 1)[0:1] and not text.startswith("-----"):
            return keys.parse_public(text)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    ident = keys.load_identity(path, ask_passphrase)
    return ident.key.public_key(), ""


def _value_options(command: click.Command) -> frozenset[str]:
    """The options of ``command`` that take a value, read off click's own
    definitions (a hand-kept list drifts the day an option is added)."""
    return frozenset(
        name for p in command.params
        if isinstance(p, click.Option) and not p.is_flag and not p.count
        for name in (*p.opts, *p.secondary_opts)
    )


#: Client options that take a value (the next word, unless attached).
_VALUE_OPTIONS = _value_options(client_command)




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


#: The context ``obj`` that tells client_command its words are to be joined.
_JOIN_WORDS = "join-words"


def _command_start(args: list[str]) -> tuple[int | None, bool]:
    """Where the remote command starts in ``args`` (None: no command words),
    and whether the user marked it with ``--`` right after the target."""
    target_seen = False
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            return (i, target_seen) if target_seen else (None, False)
        if word.startswith("-") and word != "-":
            i += 2 if _takes_next_word(word) else 1
            continue
        if target_seen:
            return i, False
        target_seen = True
        i += 1
    return None, False


def command_words(args: list[str]) -> list[str]:
    """As ssh reads ``ssh host ls -l /``: options may come before or right after
    the target, and the first other word after it starts the remote command,
    whose own dashes are its own (as if ``--`` stood before it)."""
    start, marked = _command_start(args)
    if start is None or marked:
        return args
    return [*args[:start], "--", *args[start:]]


def words_are_joined(args: list[str]) -> bool:
    """SPEC §4: words after the target are one command line, joined with spaces
    for the remote shell to parse (``rshell h 'ls | wc -l'``), as ssh does;
    after an explicit ``--`` right after the target they are an exact argv,
    each word quoted.  A ``--`` before the target only ends rshell's options."""
    return not _command_start(args)[1]


@click.command(context_settings=CONTEXT, no_args_is_help=True)
@click.argument("target")
@click.option("-i", "identity", metavar="PATH",
              help="Key to add: a .pub, or a private key [your identity].")
@click.option("-p", "--port", type=click.IntRange(1, 65535), help=f"Port [{DEFAULT_PORT}].")
@click.option("-n", "--dry-run", is_flag=True, help="Say whether the key would be added; "
              "change nothing.")
@click.option("--known-hosts", metavar="FILE", help="Host key pins [$RSHELL_HOME/known_hosts].")
@click.option("--strict-host-keys", is_flag=True, help="Refuse hosts not in known_hosts.")
@click.option("--accept-new", is_flag=True, help="Pin unknown hosts without asking.")
@click.option("--connect-timeout", type=click.FloatRange(0, min_open=True),
              default=CONNECT_TIMEOUT, show_default=True)
def copy_id_command(
    target: str, identity: str | None, port: int | None, dry_run: bool,
    known_hosts: str | None, strict_host_keys: bool, accept_new: bool, connect_timeout: float,
) -> int:
    """Add a public key to TARGET's authorized_keys, as ssh-copy-id does, over
    a connection your identity already opens (or ssh://USER@HOST for sshd's
    ~/.ssh/authorized_keys). A key already there is not added twice."""
    from rshell.cli.copyid import copy_id, key_to_copy, report

    if strict_host_keys and accept_new:
        raise UsageError("--strict-host-keys and --accept-new contradict each other")
    key = key_to_copy(identity, ask_passphrase)
    with open_client(target, port=port, known_hosts=known_hosts,
                     strict_host_keys=strict_host_keys, accept_new=accept_new,
                     connect_timeout=connect_timeout) as conn:
        copied = copy_id(conn, key, ssh=target.startswith("ssh://"), dry_run=dry_run)
    click.echo(report(copied, key, target))
    return 0


@click.command(context_settings=CONTEXT, no_args_is_help=True)
@click.argument("operands", nargs=-1, required=True)
@click.option("-r", "recursive", is_flag=True, help="Copy directories, recursively.")
@click.option("-p", "preserve", is_flag=True, help="Keep modes, modification and access times.")
@click.option("-P", "port", type=click.IntRange(1, 65535), help=f"Port [{DEFAULT_PORT}].")
@click.option("-q", "quiet", is_flag=True, help="No progress bar.")
@_connect_flags
@click.option("--connect-timeout", type=click.FloatRange(0, min_open=True),
              default=CONNECT_TIMEOUT, show_default=True)
def cp_command(
    operands: tuple[str, ...], recursive: bool, preserve: bool, port: int | None, quiet: bool,
    identity: str | None, no_tls: bool, no_auth: bool, known_hosts: str | None,
    strict_host_keys: bool, accept_new: bool, connect_timeout: float,
) -> int:
    """Copy SRC... to DEST, as scp does; either side remote (HOST:PATH,
    rshell://HOST[:PORT]/PATH, ssh://[USER@]HOST[:PORT]/PATH; a relative
    remote path is relative to the home). Nothing is half-written: each file
    is checked (SHA-256) and renamed into place."""
    from rshell.cli.cp import copy

    if strict_host_keys and accept_new:
        raise UsageError("--strict-host-keys and --accept-new contradict each other")
    _warn_opt_outs(no_tls, no_auth)
    return copy(operands, recursive=recursive, preserve=preserve, port=port, quiet=quiet,
                connect={"identity": identity, "known_hosts": known_hosts,
                         "strict_host_keys": strict_host_keys, "accept_new": accept_new,
                         "connect_timeout": connect_timeout, "tls": not no_tls,
                         "auth": not no_auth})


@click.command(context_settings=CONTEXT, no_args_is_help=True)
@click.argument("targets", nargs=-1)
@click.option("-H", "hosts_files", metavar="FILE", multiple=True,
              help="More targets, one a line ('#' comments).")
@click.option("--inventory", metavar="FILE", help="An Ansible INI inventory: hosts and groups.")
@click.option("--fold", "folded", is_flag=True, help="One line, folded: web[01-20],db1.")
def hosts_command(targets: tuple[str, ...], hosts_files: tuple[str, ...],
                  inventory: str | None, folded: bool) -> int:
    """Print the hosts TARGETS name (comma lists, ranges such as web[01-20],
    @group, aliases), one a line, as a fleet would run them."""
    from rshell.client.config import load
    from rshell.fleet.targets import expand_all, fold

    config = load()
    if inventory is not None:
        from rshell.client.inventory import read_inventory

        config = config.merged(*read_inventory(inventory))
    hosts = expand_all(list(targets), config.groups, hosts_files)
    if folded:
        click.echo(visible(fold(hosts)))
    else:
        for host in hosts:
            click.echo(visible(host))
    return 0


_SUBCOMMANDS: dict[str, click.Command] = {
    "keygen": keygen_command, "fingerprint": fingerprint_command, "copy-id": copy_id_command,
    "cp": cp_command, "hosts": hosts_command,
}


#: click's shell completion protocol: the variable its scripts set.
COMPLETE_VAR = "_RSHELL_COMPLETE"


def complete(instruction: str) -> NoReturn:
    """click's shell completion (``{bash,zsh,fish}_source``, ``..._complete``),
    over the subcommands too: the words after ``rshell keygen`` complete as
    keygen's, the others as the client's (where TARGET offers subcommands and
    pinned hosts)."""
    from click.shell_completion import get_completion_class

    shell, _, action = instruction.partition("_")
    kind = get_completion_class(shell)
    if kind is None or action not in ("source", "complete"):
        sys.exit(1)
    completion = kind(client_command, {}, "rshell", COMPLETE_VAR)
    if action == "source":
        click.echo(completion.source(), nl=False)
        sys.exit(0)
    args, incomplete = completion.get_completion_args()
    if args and args[0] in _SUBCOMMANDS:
        completion.cli, args = _SUBCOMMANDS[args[0]], args[1:]
    items = completion.get_completions(args, incomplete)
    click.echo("\n".join(completion.format_completion(item) for item in items))
    sys.exit(0)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The full command line of ``rshell`` (``rshell.cli.entry.main`` is the entry
    point: it takes the plain one-shot form itself and hands the rest here)."""
    sane_descriptors()
    if COMPLETE_VAR in os.environ:
        complete(os.environ[COMPLETE_VAR])
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in _SUBCOMMANDS:
        invoke(_SUBCOMMANDS[args[0]], args[1:], f"rshell {args[0]}")
    invoke(client_command, command_words(args), "rshell",
           _JOIN_WORDS if words_are_joined(args) else None)
