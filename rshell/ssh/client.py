"""The ``ssh://[user@]host[:port]`` client backend: any sshd, through paramiko.

Must not import click or rshell.server.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import paramiko

from rshell.paths import format_hostport
from rshell.ssh._paramiko import SIGNAL_NAMES as _SIGNAL_NAMES

_CHUNK = 64 * 1024


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """SPEC §4's rules over ~/.ssh/known_hosts: ask on a terminal, else pin with
    a notice, refuse with strict checking; a changed key paramiko refuses."""

    def __init__(self, known: str, strict: bool, accept_new: bool, ask: Any) -> None:
        self.known, self.strict, self.accept_new, self.ask = known, strict, accept_new, ask

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        from rshell.errors import HostKeyError
        from rshell.trust import keys

        fp = keys.blob_fingerprint(key.asbytes())
        if self.strict:
            raise HostKeyError(f"host key for {hostname} ({fp}) is not in {self.known} and "
                               "strict host key checking is on")
        if self.ask is not None and not self.accept_new:
            if not self.ask(hostname, fp):
                raise HostKeyError(f"host key for {hostname} not accepted")
        else:
            import sys

            sys.stderr.write(f"rshell: pinned new host key for {hostname} ({fp}) in "
                             f"{self.known}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.known), mode=0o700, exist_ok=True)
        with open(self.known, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def parse_ssh_target(target: str, port: int | None) -> tuple[str, str, int]:
    """``ssh://[user@]host[:port]`` -> (user, host, port)."""
    import getpass

    from rshell.paths import parse_hostport

    rest = target[len("ssh://"):].rstrip("/")
    user, _, hostport = rest.rpartition("@")
    host, parsed = parse_hostport(hostport, port or 22)
    return user or getpass.getuser(), host, parsed


class SshConnection:
    """``Connection``'s interface over an SSH server: ``run`` returns the same
    Result; ``cd`` persists by prefixing each command with the directory."""

    def __init__(self, client: paramiko.SSHClient, user: str, host: str, port: int) -> None:
        self._client = client
        transport = client.get_transport()
        assert transport is not None
        self._transport = transport
        self.user, self.host, self.port = user, host, port
        self.address = f"ssh://{user}@{format_hostport(host, port)}"
        self.server = transport.remote_version
        self._channel: paramiko.Channel | None = None
        self.cwd = self.home = ""
        found = self.run("pwd")
        self.cwd = self.home = found.stdout.decode(errors="replace").strip()

    @property
    def closed(self) -> bool:
        return not self._transport.is_active()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SshConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_signal(self, signum: int) -> None:
        """Ask the server to signal the running command (RFC 4254 6.9)."""
        channel = self._channel
        if channel is None or channel.closed:
            return
        msg = paramiko.Message()
        msg.add_byte(bytes([98]))
        msg.add_int(channel.remote_chanid)
        msg.add_string("signal")
        msg.add_boolean(False)
        msg.add_string(_SIGNAL_NAMES.get(signal.Signals(signum), "INT"))
        try:
            self._transport._send_user_message(msg)
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def run(self, command: str, *, stdin: Any = None, cwd: str | None = None,
            env: Any = None, timeout: float | None = None, check: bool = False,
            on_stdout: Any = None, on_stderr: Any = None) -> Any:
        """As ``Connection.run``."""
        import shlex

        from rshell.errors import CommandFailed
        from rshell.result import Result

        moved = self._cd(command)
        if moved is not None:
            return moved
        prefix = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
        where = cwd if cwd and cwd.startswith("/") else os.path.join(self.cwd, cwd or "")
        full = f"cd -- {shlex.quote(where)} && {prefix}{command}" if self.cwd else command
        started = time.monotonic()
        code, signum, out, err, error = self._exchange(full, stdin, timeout, on_stdout,
                                                       on_stderr)
        result = Result(command=command, exit_code=code, signal=signum, stdout=out, stderr=err,
                        error=error, duration=time.monotonic() - started, host=self.address)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def _cd(self, command: str) -> Any:
        """``cd [DIR]``, resolved by the remote shell, remembered here."""
        import shlex

        from rshell.result import Result

        if not self.cwd or not command.lstrip().startswith("cd"):
            return None
        try:
            argv = shlex.split(command)
        except ValueError:
            return None
        if not argv or argv[0] != "cd" or len(argv) > 2:
            return None
        target = shlex.quote(argv[1]) if len(argv) == 2 else '"$HOME"'
        code, _, out, err, error = self._exchange(
            f"cd -- {shlex.quote(self.cwd)} && cd {target} && pwd", None, 30.0, None, None
        )
        if code == 0:
            self.cwd = out.decode(errors="surrogateescape").strip()
        return Result(command=command, exit_code=code, stderr=err, error=error,
                      host=self.address)

    def _exchange(self, command: str, stdin: Any, timeout: float | None, on_stdout: Any,
                  on_stderr: Any) -> tuple[int | None, int | None, bytes, bytes, str | None]:
        """Both streams read concurrently (one thread each: paramiko's classic
        deadlock is a full stderr window while the caller reads stdout)."""
        import queue

        from rshell.client.stdin import pump_for
        from rshell.errors import ConnectionFailed

        try:
            channel = self._transport.open_session(timeout=30)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"{self.address}: {exc}") from None
        self._channel = channel
        chunks: queue.SimpleQueue[tuple[str, bytes | None]] = queue.SimpleQueue()

        def reader(name: str, recv: Any) -> None:
            try:
                while data := recv(_CHUNK):
                    chunks.put((name, data))
            except (OSError, EOFError, paramiko.SSHException):
                pass
            chunks.put((name, None))

        pump = pump_for(stdin)

        def feeder() -> None:
            try:
                while pump is not None and (data := pump.read(_CHUNK)) is not None:
                    if data:
                        channel.sendall(bytes(data))
                channel.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass

        threads = [threading.Thread(target=reader, args=("out", channel.recv), daemon=True),
                   threading.Thread(target=reader, args=("err", channel.recv_stderr), daemon=True),
                   threading.Thread(target=feeder, daemon=True)]
        for t in threads:
            t.start()
        out, err = bytearray(), bytearray()
        open_streams, error = 2, None
        deadline = time.monotonic() + timeout if timeout else None
        try:
            while open_streams:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    error = f"timed out after {timeout:g} s"
                    break
                try:
                    name, data = chunks.get(timeout=left)
                except queue.Empty:
                    continue
                if data is None:
                    open_streams -= 1
                elif name == "out":
                    on_stdout(data) if on_stdout else out.extend(data)
                else:
                    on_stderr(data) if on_stderr else err.extend(data)
            code: int | None = None
            signum: int | None = None
            # The exit-status request may trail the EOFs: wait for it, bounded.
            left = 10.0 if deadline is None else max(0.0, deadline - time.monotonic())
            if error is None and channel.status_event.wait(left):
                status = channel.recv_exit_status()
                code = status if status >= 0 else None
                signum = getattr(channel, "rshell_signal", None)
                if code is None and signum is None:
                    error = "ended without an exit status"
            elif error is None:
                error = "the server closed the channel without an exit status"
        finally:
            channel.close()
            self._channel = None
        if not out and not err and error is None:
            if signum:
                error = f"killed by SIG{_SIGNAL_NAMES.get(signal.Signals(signum), signum)} " \
                        "with no output"
            elif code:
                error = f"exit status {code} with no output"
        return code, signum, bytes(out), bytes(err), error


def connect_ssh(target: str, *, port: int | None = None, identity: Any = None,
                passphrase: Any = None, strict_host_keys: bool = False,
                accept_new: bool = False, ask: Any = None,
                connect_timeout: float = 10.0) -> SshConnection:
    """Open ``ssh://[user@]host[:port]`` with paramiko, honouring ~/.ssh/known_hosts."""
    from rshell.errors import AuthenticationFailed, ConnectionFailed, HostKeyError, KeyFileError

    user, host, port_ = parse_ssh_target(target, port)
    known = os.path.expanduser("~/.ssh/known_hosts")
    client = paramiko.SSHClient()
    if os.path.exists(known):
        try:
            client.load_host_keys(known)
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(f"cannot read {known}: {exc}") from None
    client.set_missing_host_key_policy(_HostKeyPolicy(known, strict_host_keys, accept_new, ask))
    secret = passphrase if isinstance(passphrase, str) else None
    for _attempt in range(2):
        try:
            client.connect(
                host, port_, username=user, key_filename=str(identity) if identity else None,
                look_for_keys=identity is None, allow_agent=False, timeout=connect_timeout,
                banner_timeout=connect_timeout, auth_timeout=connect_timeout, passphrase=secret,
            )
            break
        except paramiko.PasswordRequiredException:
            secret = passphrase(f"Enter passphrase for {identity or 'your key'}: ") \
                if callable(passphrase) else None
            if not secret:
                raise KeyFileError("the key is encrypted and no passphrase was given") from None
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"WARNING: HOST KEY FOR {exc.hostname} HAS CHANGED: someone may be "
                f"intercepting this connection; refusing. Fix {known} if the change is expected"
            ) from None
        except paramiko.AuthenticationException as exc:
            raise AuthenticationFailed(f"{target}: {exc}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"{target}: {exc}") from None
    _hear_exit_signals(client.get_transport())
    return SshConnection(client, user, host, port_)


def _hear_exit_signals(transport: Any) -> None:
    """Paramiko drops ``exit-signal`` (RFC 4254 6.10) and never sets the status:
    route channel requests through a handler that records it first."""
    from paramiko.common import MSG_CHANNEL_REQUEST

    table = dict(transport._channel_handler_table)
    original = table[MSG_CHANNEL_REQUEST]

    def handle(channel: Any, m: Any) -> None:
        where = m.packet.tell()
        if m.get_text() == "exit-signal":
            m.get_boolean()
            name = m.get_text()
            numbers = {v: k for k, v in _SIGNAL_NAMES.items()}
            channel.rshell_signal = int(numbers.get(name, signal.SIGTERM))
            channel.exit_status = -1
            channel.status_event.set()
            return
        m.packet.seek(where)
        original(channel, m)

    table[MSG_CHANNEL_REQUEST] = handle
    transport._channel_handler_table = table
