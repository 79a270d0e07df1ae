"""SSH-2 for OpenSSH clients, through paramiko: the only importer of paramiko.

``rshell-server --ssh-bind HOST:PORT`` serves exec and shell requests on
SSH beside the native protocol, with the same host key (so OpenSSH shows
the fingerprint ``rshell fingerprint`` prints), the same authorized_keys and
its options, public-key authentication only, and the same execution engine:
``execution.Child`` in its own session and process group, the same time and
output limits, ``command error`` reasons (on stderr, SSH has no field for
them), audit events and process-group termination when a channel closes.
A pty is refused (the command still runs, as OpenSSH's "PTY allocation
request failed" allows), and so is every forwarding and subsystem.

Threads: paramiko runs one transport thread per connection; each channel
gets a thread that streams the command's output, and a helper thread that
feeds it stdin, so a command that neither reads nor finishes cannot block
the other direction.  Must not import click or the client side.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import socketserver
import threading
import time
from typing import Any

import paramiko

from rshell.exec import cd as builtins
from rshell.exec import sweep
from rshell.exec.child import Child, StartError
from rshell.paths import format_hostport
from rshell.result import silent_failure
from rshell.server.commands import SESSION_IDS, ServerConfig, command_environment
from rshell.ssh._paramiko import SIGNAL_NAMES as _SIGNAL_NAMES
from rshell.transport import tune

log = logging.getLogger("rshell.server")

_CHUNK = 64 * 1024


#: Commands running on SSH channels, for a graceful stop (see ``stop_all``).
_RUNNING: set[Child] = set()
_RUNNING_LOCK = threading.Condition()


def stop_all(grace: float, kill_grace: float) -> None:
    """Server shutdown: let running SSH commands finish for ``grace`` seconds,
    then terminate their process groups (their channels then report)."""
    deadline = time.monotonic() + grace
    with _RUNNING_LOCK:
        while _RUNNING and time.monotonic() < deadline:
            _RUNNING_LOCK.wait(deadline - time.monotonic())
        stragglers = list(_RUNNING)
    for child in stragglers:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + kill_grace + 2
    with _RUNNING_LOCK:
        while _RUNNING and time.monotonic() < deadline:
            _RUNNING_LOCK.wait(deadline - time.monotonic())
    for child in stragglers:
        child.signal_group(signal.SIGKILL)


class _Interface(paramiko.ServerInterface):
    """What this SSH connection may do: public-key login, session channels,
    exec and shell requests; nothing else."""

    def __init__(self, config: ServerConfig, peer: str, peer_ip: str) -> None:
        self.config = config
        self.peer = peer
        self.peer_ip = peer_ip
        self.entry: Any = None
        self.requests: dict[int, tuple[str, str | None]] = {}
        self.ready = threading.Condition()
        #: This connection's session marker (see sweep.py), for all its channels.
        self.marker = f"{os.getpid()}:ssh{next(SESSION_IDS)}"
        self.groups: set[int] = set()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        from rshell.trust import keys

        authorized = self.config.authorized
        if authorized is None:
            return paramiko.AUTH_SUCCESSFUL
        blob = key.asbytes()
        entry = authorized.find(blob)
        fp = keys.blob_fingerprint(blob)
        if entry is not None and entry.allows_address(self.peer_ip):
            if self.entry is None:  # paramiko asks twice: the offer, then the signature
                log.info("%s: ssh: authenticated with key %s %s", self.peer, fp, entry.comment)
                if self.config.audit:
                    self.config.audit.event("auth", peer=self.peer, ok=True, key=fp, via="ssh")
            self.entry = entry
            return paramiko.AUTH_SUCCESSFUL
        reason = "key not in authorized_keys" if entry is None else "from= excludes the address"
        log.warning("%s: ssh: key %s refused: %s", self.peer, fp, reason)
        if self.config.audit:
            self.config.audit.event("auth", peer=self.peer, ok=False, key=fp, reason=reason,
                                    via="ssh")
        return paramiko.AUTH_FAILED

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL if self.config.authorized is None else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode("utf-8", "surrogateescape")
        return self._request(channel, "exec", text)

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return self._request(channel, "shell", None)

    def check_channel_pty_request(self, *args: Any) -> bool:
        return False  # line-oriented only: OpenSSH says so and goes on without one

    def _request(self, channel: paramiko.Channel, kind: str, command: str | None) -> bool:
        with self.ready:
            if channel.get_id() in self.requests:
                return False  # one request per channel
            self.requests[channel.get_id()] = (kind, command)
            self.ready.notify_all()
        return True

    def wait_request(self, channel: paramiko.Channel, timeout: float) -> tuple[str, str | None]:
        deadline = time.monotonic() + timeout
        with self.ready:
            while channel.get_id() not in self.requests:
                left = deadline - time.monotonic()
                if left <= 0 or channel.closed:
                    return "none", None
                self.ready.wait(min(left, 0.5))
            return self.requests.pop(channel.get_id())


def serve_connection(
    sock: socket.socket, peer: str, config: ServerConfig, host_key: str,
    on_authenticated: Any = None,
) -> None:
    """One SSH connection, until it ends; channels get threads of their own."""
    transport = paramiko.Transport(sock)
    transport.local_version = "SSH-2.0-rshell_0.1"
    transport.add_server_key(paramiko.Ed25519Key(filename=host_key))
    peer_ip = peer.rsplit(":", 1)[0].strip("[]")
    iface = _Interface(config, peer, peer_ip)
    log.info("ssh connection from %s", peer)
    channels = 0
    try:
        transport.start_server(server=iface)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        log.warning("%s: ssh negotiation failed: %s", peer, exc)
        transport.close()
        return
    deadline = time.monotonic() + config.auth_timeout
    threads: list[threading.Thread] = []
    authenticated = False
    idle_since = time.monotonic()
    try:
        while transport.is_active():
            now = time.monotonic()
            if not transport.is_authenticated():
                if now > deadline:
                    log.warning("%s: ssh: not authenticated in %gs", peer, config.auth_timeout)
                    break
            elif not authenticated:
                authenticated = True
                if on_authenticated is not None:
                    on_authenticated()
            threads = [t for t in threads if t.is_alive()]
            if threads:
                idle_since = now
            elif config.idle_timeout and now - idle_since > config.idle_timeout:
                log.info("%s: ssh: idle for %gs, closing", peer, config.idle_timeout)
                break
            channel = transport.accept(timeout=0.5)
            if channel is None:
                continue
            channels += 1
            thread = threading.Thread(
                target=_serve_channel, args=(channel, iface), daemon=True,
                name=f"ssh channel {peer}",
            )
            thread.start()
            threads.append(thread)
    finally:
        transport.close()
        for thread in threads:
            thread.join(config.kill_grace + 5)
        if iface.groups:  # what a command daemonized out of its group goes with us
            def swept(escaped: list[int]) -> None:
                log.warning("%s: ssh: killed %d process(es) that left their command's group",
                            peer, len(escaped))

            if config.sweeper is not None:
                config.sweeper.submit(iface.marker, iface.groups, swept)
            else:
                escaped = sweep.kill_session(iface.marker, iface.groups)
                if escaped:
                    swept(escaped)
        log.info("%s: ssh: disconnected after %d channel(s)", peer, channels)


def _serve_channel(channel: paramiko.Channel, iface: _Interface) -> None:
    try:
        kind, command = iface.wait_request(channel, iface.config.auth_timeout)
        if kind == "exec" and command is not None:
            status = _run(channel, iface, command, stdin=True)
            _send_status(channel, status)
        elif kind == "shell":
            _shell(channel, iface)
            channel.send_exit_status(0)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        log.info("%s: ssh channel ended: %s", iface.peer, exc)
    finally:
        channel.close()


def _send_status(channel: paramiko.Channel, status: tuple[int | None, int | None]) -> None:
    code, signum = status
    if signum:
        # Paramiko has no public call for exit-signal (RFC 4254 6.10).
        msg = paramiko.Message()
        msg.add_byte(bytes([98]))  # SSH_MSG_CHANNEL_REQUEST
        msg.add_int(channel.remote_chanid)
        msg.add_string("exit-signal")
        msg.add_boolean(False)
        msg.add_string(_SIGNAL_NAMES.get(signal.Signals(signum), f"SIG{signum}"))
        msg.add_boolean(False)
        msg.add_string("")
        msg.add_string("")
        channel.transport._send_user_message(msg)
    else:
        channel.send_exit_status(code if code is not None else 255)


def _shell(channel: paramiko.Channel, iface: _Interface) -> None:
    """A line-oriented session: each line a command, ``cd`` persisting."""
    config = iface.config
    cwd = previous = config.home
    stdin = channel.makefile("rb")
    for raw in iter(stdin.readline, b""):
        line = raw.decode("utf-8", "surrogateescape").strip()
        if not line:
            continue
        if line in ("exit", "logout"):
            break
        moved = builtins.cd(line, cwd, previous, config.home)
        if moved is not None:
            cwd, previous = moved.cwd, moved.previous
            if moved.stderr:
                channel.sendall_stderr(moved.stderr.encode("utf-8", "surrogateescape"))
            continue
        _run(channel, iface, line, stdin=False, cwd=cwd)


def _run(
    channel: paramiko.Channel, iface: _Interface, command: str, *, stdin: bool,
    cwd: str | None = None,
) -> tuple[int | None, int | None]:
    """Run one command on a channel: the same engine and limits as the native
    protocol; returns (exit code, signal)."""
    config = iface.config
    entry = iface.entry
    env = command_environment(config, iface.peer, iface.marker)
    text = command
    if entry is not None and entry.command is not None:
        env["RSHELL_ORIGINAL_COMMAND"] = command
        command = entry.command
    try:
        child = Child(command, shell=config.shell, cwd=cwd or config.home, env=env, stdin=stdin)
    except StartError as exc:
        channel.sendall_stderr(f"rshell: command error: {exc}\n".encode())
        return 127, None
    iface.groups.add(child.pid)
    if config.audit:
        config.audit.event("command-start", peer=iface.peer, command=text, pid=child.pid,
                           via="ssh")
    if stdin and child.stdin is not None:
        # The feeder owns the stdin descriptor from here on: only it closes it
        # (at EOF, or when the channel closes), so it can never be closed twice.
        fd, child.stdin = child.stdin, None
        threading.Thread(target=_feed, args=(channel, fd), daemon=True).start()
    with _RUNNING_LOCK:
        _RUNNING.add(child)
    try:
        out, reason = _pump(channel, child, config)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(child)
            _RUNNING_LOCK.notify_all()
    child.reap()
    error = reason or silent_failure(child.exit_code, child.signal, out)
    if error:
        channel.sendall_stderr(f"rshell: command error: {error}\n".encode())
    log.info("%s: ssh command %r exit=%s signal=%s error=%s", iface.peer, text,
             child.exit_code, child.signal, error)
    if config.audit:
        config.audit.event("command-end", peer=iface.peer, command=text,
                           exit_code=child.exit_code, signal=child.signal, error=error,
                           output_bytes=out, via="ssh")
    return child.exit_code, child.signal


def _pump(channel: paramiko.Channel, child: Child, config: ServerConfig) -> tuple[int, str | None]:
    """Stream stdout/stderr to the channel until EOF (channel windows give the
    back-pressure); stop the command if the channel closes or a limit is hit."""
    total = 0
    reason: str | None = None
    deadline = child.started + config.timeout if config.timeout else None
    poller = select.poll()
    for fd in (child.stdout, child.stderr):
        assert fd is not None
        poller.register(fd, select.POLLIN)
    poller.register(child.pidfd, select.POLLIN)
    open_fds = {child.stdout, child.stderr}
    linger: float | None = None  # the leader is gone: drain what holds the pipes briefly
    while open_fds:
        now = time.monotonic()
        ends = [t for t in (deadline, linger) if t is not None]
        wait = 500 if not ends else max(0, min(500, int((min(ends) - now) * 1000)))
        for fd, _ in poller.poll(wait):
            if fd == child.pidfd:  # the leader exited
                poller.unregister(fd)
                linger = time.monotonic() + config.linger
                continue
            try:
                data = os.read(fd, _CHUNK)
            except BlockingIOError:
                continue
            if not data:
                poller.unregister(fd)
                open_fds.discard(fd)
                child.close_output(fd)
                continue
            if config.max_output and total + len(data) > config.max_output:
                data = data[: config.max_output - total]
                reason = "output limit exceeded"
            total += len(data)
            if linger is not None:
                linger = time.monotonic() + config.linger
            (channel.sendall if fd == child.stdout else channel.sendall_stderr)(data)
            if reason:
                break
        if deadline is not None and time.monotonic() >= deadline:
            reason = f"timed out after {config.timeout:g} s"
        if linger is not None and time.monotonic() >= linger:
            for held in list(open_fds):
                if held is not None:
                    poller.unregister(held)
                    child.close_output(held)
            open_fds.clear()
        if channel.closed or reason:
            child.terminate(config.kill_grace)
            return total, reason
    return total, reason


def _feed(channel: paramiko.Channel, fd: int) -> None:
    """Channel data to the command's stdin; EOF (or the channel's end) closes it."""
    os.set_blocking(fd, True)
    try:
        while True:
            data = channel.recv(_CHUNK)
            if not data:
                break
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command closed its stdin: the rest is dropped, as a pipe would
    finally:
        os.close(fd)


class _Handler(socketserver.BaseRequestHandler):
    server: SshServer

    def handle(self) -> None:
        host, port = self.client_address[:2]
        tune(self.request)  # no Nagle: small SSH packets must not wait for ACKs
        daemon = self.server.daemon
        token = daemon.tokens.pop(id(self.request)) if daemon is not None else None
        try:
            serve_connection(
                self.request, format_hostport(host, port), self.server.config,
                self.server.host_key,
                (lambda: daemon.authenticated(token)) if daemon is not None else None,
            )
        finally:
            if daemon is not None and token is not None:
                daemon.release(token)


class SshServer(socketserver.ThreadingTCPServer):
    """The ``--ssh-bind`` listener (class variables as in server.RshellServer)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], config: ServerConfig, host_key: str, daemon: Any = None
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.config = config
        self.host_key = host_key
        #: The native server's Daemon: one admission count for both protocols.
        self.daemon = daemon
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error serving ssh %s", client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """The same admission control as the native listener; a refused SSH
        connection is simply closed (SSH has no frame to say 'busy' in)."""
        if self.daemon is not None:
            token, reason = self.daemon.admit(request)
            if token is None:
                log.warning("ssh %s: rejected: %s", client_address[0], reason)
                self.shutdown_request(request)
                return
            self.daemon.tokens[id(request)] = token
        super().process_request(request, client_address)


