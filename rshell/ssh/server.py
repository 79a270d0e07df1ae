"""The ``--ssh-bind`` listener: SSH-2 for OpenSSH clients, a driver over the one engine.

Same host key (OpenSSH shows the fingerprint ``rshell fingerprint`` prints),
same authorized_keys and authorizer (log, audit, failure delay), same
admission and registry as the native listener, and the same engine: each
exec or shell channel runs ``exec.policy.decide`` and ``exec.command.Command``
in a loop of its own (``ChannelDriver``), with the channel as the sink.  So
forced commands, ``restrict``, ``cd``, ``--max-commands``, time and output
limits, signals (RFC 4254 ``signal`` requests), hang-up, the audit record and
the sweep are those of the native path, decided in one place.

What SSH adds: the server's ``command error`` reason goes to stderr as one
line, only when the server itself refused or stopped the command (a plain
non-zero exit says nothing, as with sshd); a shell request without a pty is
a line session (one command per line, ``cd`` persisting, lines capped at the
native frame size, exit status the last command's).  A pty is refused (the
command still runs, as OpenSSH's "PTY allocation request failed" allows),
and so is every forwarding, environment and subsystem request.

Threads: paramiko's transport thread per connection, this connection's
handler thread (accepting channels), and one thread per channel running its
loop.  Must not import click or the client side.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import paramiko

from rshell.errors import ConnectionFailed, LocalProtocolError
from rshell.exec.command import STDERR, STDOUT, Command
from rshell.exec.loop import READ, Loop
from rshell.exec.policy import Answer, Grant, Launch, Login, Request, Workspace, decide
from rshell.exec.record import Outcome, Recorder
from rshell.protocol.frames import MAX_PAYLOAD
from rshell.server.listener import Daemon, Listener
from rshell.server.session import end_login
from rshell.server.settings import Settings, new_marker
from rshell.ssh._paramiko import (
    FAILURES,
    hear_signals,
    send_exit,
    silence_logging,
    unwatch_channel,
    watch_channel,
)

if TYPE_CHECKING:
    from rshell.server.auth import Authorizer, Verdict

log = logging.getLogger("rshell.server")

_CHUNK = 64 * 1024
#: Channel data taken for a command's stdin beyond what its pipe holds.
_STDIN_AHEAD = 1 << 20
#: A line of the line session: as long as a native frame may be.
MAX_LINE = MAX_PAYLOAD


class SshServer(Listener):
    """The ``--ssh-bind`` listener (class variables as in server.listener.Listener)."""

    kind = "ssh"

    def __init__(self, address: tuple[str, int], daemon: Daemon, host_key: str) -> None:
        silence_logging()
        self.host_key = paramiko.Ed25519Key(filename=host_key)
        super().__init__(address, daemon)

    def serve_admitted(self, sock: socket.socket, peer: str, token: int) -> None:
        conn = SshConnection(sock, peer, self.settings, self.host_key,
                             lambda: self.daemon.admission.authenticated(token))
        with self.daemon.tracking(conn):
            conn.serve()


class _Interface(paramiko.ServerInterface):
    """What one SSH connection may do: public-key login, session channels,
    exec and shell requests; nothing else."""

    def __init__(self, conn: SshConnection) -> None:
        self.conn = conn
        self.verdict: Verdict | None = None
        self.requests: dict[int, tuple[str, str | None]] = {}
        self.ready = threading.Condition()

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        conn = self.conn
        if conn.authorizer is None:
            return paramiko.AUTH_SUCCESSFUL
        verdict = conn.authorizer.verify_key(key.asbytes(), conn.peer_ip)
        if verdict.entry is None:
            conn.authorizer.report(verdict, conn.record)  # logged, audited, delayed
            return paramiko.AUTH_FAILED
        # Asked twice (the offer, then with the signature paramiko verified):
        # reported once the transport says the login is complete.
        self.verdict = verdict
        return paramiko.AUTH_SUCCESSFUL

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL if self.conn.authorizer is None else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        return self._request(channel, "exec", command.decode("utf-8", "surrogateescape"))

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return self._request(channel, "shell", None)

    def check_channel_pty_request(self, *args: Any) -> bool:
        return False  # no terminals yet: OpenSSH says so and goes on without one

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


class SshConnection:
    """One SSH connection: its transport, its login, its channels' drivers.

    Methods for the caller: ``serve()`` (blocks until the connection is over)
    and ``request_shutdown(grace)`` (thread-safe).
    """

    def __init__(self, sock: socket.socket, peer: str, settings: Settings,
                 host_key: paramiko.PKey, on_authenticated: Any = None) -> None:
        from rshell.server.auth import Authorizer

        self.sock, self.peer, self.settings = sock, peer, settings
        self.peer_ip = peer.rsplit(":", 1)[0].strip("[]")
        self.host_key, self.on_authenticated = host_key, on_authenticated
        marker = new_marker()
        self.login = Login(settings.home, settings.limits.shell, peer, marker)
        self.record = Recorder(peer, "ssh", marker, settings.audit)
        self.authorizer: Authorizer | None = None if settings.authorized is None else \
            Authorizer(settings.authorized, settings.host_key_blob, settings.auth_failure_delay)
        self.drivers: dict[int, ChannelDriver] = {}
        self.shutdown_at: float | None = None
        self.end_reason = ""
        self._lock = threading.Lock()

    def request_shutdown(self, grace: float) -> None:
        with self._lock:
            if self.shutdown_at is None:
                self.shutdown_at = time.monotonic() + grace
            self.login.stopping = True
            drivers = list(self.drivers.values())
        for driver in drivers:
            driver.request_shutdown(self.shutdown_at)

    def deliver_signal(self, chanid: int, signum: int) -> None:
        with self._lock:
            driver = self.drivers.get(chanid)
        if driver is not None:
            driver.post_signal(signum)

    def serve(self) -> None:
        self.record.connected()
        transport = paramiko.Transport(self.sock)
        transport.local_version = "SSH-2.0-rshell_0.1"
        transport.add_server_key(self.host_key)
        iface = _Interface(self)
        hear_signals(transport, self.deliver_signal)
        threads: list[threading.Thread] = []
        try:
            transport.start_server(server=iface)
            self._accept(transport, iface, threads)
        except FAILURES as exc:
            self.end_reason = f"negotiation failed: {exc}"
        finally:
            transport.close()
            for thread in threads:
                thread.join(self.settings.limits.kill_grace + 5)
            end_login(self.login, self.settings, self.record)
            self.record.disconnected(self.login.commands, self.end_reason)

    def _accept(self, transport: paramiko.Transport, iface: _Interface,
                threads: list[threading.Thread]) -> None:
        """Accept channels until the connection ends, times out or is stopped."""
        settings = self.settings
        deadline = time.monotonic() + settings.auth_timeout
        authenticated = False
        idle_since = time.monotonic()
        while transport.is_active():
            now = time.monotonic()
            if transport.is_authenticated():
                if not authenticated:
                    authenticated = True
                    self._logged_in(iface)
            elif now > deadline:
                log.warning("%s: handshake not completed in %gs", self.peer,
                            settings.auth_timeout)
                self.end_reason = "authentication timed out"
                return
            threads[:] = [t for t in threads if t.is_alive()]
            if threads:
                idle_since = now
            elif self.shutdown_at is not None:
                self.end_reason = "server shutting down"
                return
            elif settings.idle_timeout and now - idle_since > settings.idle_timeout:
                self.end_reason = f"idle for {settings.idle_timeout:g} s without a command"
                return
            channel = transport.accept(timeout=0.5)
            if channel is None:
                continue
            if not authenticated:  # the login completed while we waited: grant first
                if not transport.is_authenticated():
                    channel.close()
                    continue
                authenticated = True
                self._logged_in(iface)
            threads.append(self._start_channel(channel, iface))

    def _logged_in(self, iface: _Interface) -> None:
        if self.authorizer is not None and iface.verdict is not None:
            grant = self.authorizer.report(iface.verdict, self.record)
            self.login.grant = grant or Grant()
        if self.on_authenticated is not None:
            self.on_authenticated()

    def _start_channel(self, channel: paramiko.Channel, iface: _Interface) -> threading.Thread:
        driver = ChannelDriver(self, channel)
        with self._lock:
            self.drivers[channel.get_id()] = driver
            if self.shutdown_at is not None:
                driver.request_shutdown(self.shutdown_at)
        thread = threading.Thread(target=self._run_channel, args=(driver, iface), daemon=True,
                                  name=f"ssh channel {self.peer}")
        thread.start()
        return thread

    def _run_channel(self, driver: ChannelDriver, iface: _Interface) -> None:
        try:
            kind, command = iface.wait_request(driver.channel, self.settings.auth_timeout)
            driver.serve(kind, command)
        finally:
            with self._lock:
                self.drivers.pop(driver.channel.get_id(), None)


class ChannelSink:
    """Command output to an SSH channel, as far as its window allows now; the
    rest waits (bounded by the engine's HIGH_WATER) for a window-adjust."""

    headroom = 0

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.pending: deque[tuple[int, bytes]] = deque()
        self.queued = 0

    def output(self, kind: int, buf: bytearray, n: int) -> bool:
        view = memoryview(buf)[:n]
        sent = self._send(kind, view) if not self.pending else 0
        if sent < n:
            self.pending.append((kind, bytes(view[sent:])))
            self.queued += n - sent
        return True  # paramiko copied what it sent; the rest was copied here

    def flush(self) -> None:
        while self.pending:
            kind, data = self.pending[0]
            sent = self._send(kind, memoryview(data))
            self.queued -= sent
            if sent < len(data):
                self.pending[0] = (kind, data[sent:])
                return
            self.pending.popleft()

    def _send(self, kind: int, view: memoryview) -> int:
        send = self.channel.send if kind == STDOUT else self.channel.send_stderr
        sent = 0
        try:
            while sent < len(view):
                n = send(view[sent:])
                if n == 0:  # EOF sent or closed: the client is gone
                    raise ConnectionFailed("channel closed")
                sent += n
        except TimeoutError:
            pass  # the window is shut: wait for the peer to open it
        except FAILURES as exc:
            raise ConnectionFailed(f"channel closed: {exc}") from None
        return sent


class ChannelDriver(Loop):
    """One exec or shell channel over the engine, in its own thread."""

    def __init__(self, conn: SshConnection, channel: paramiko.Channel) -> None:
        super().__init__()
        self.conn, self.channel = conn, channel
        self.limits = conn.settings.limits
        self.sink = ChannelSink(channel)
        self.cmd: Command | None = None
        self.ws: Workspace = conn.login.workspace()
        self.shutdown_at: float | None = None
        self.signals: deque[int] = deque()
        self.lines: _Lines | None = None
        self.status = 0  # what the line session exits with
        self.chan_fd = channel.fileno()  # readable: data, EOF or close from the client
        watch_channel(channel, self.wake)

    # ---- from other threads -------------------------------------------------------

    def request_shutdown(self, at: float) -> None:
        self.shutdown_at = at
        self.wake()

    def post_signal(self, signum: int) -> None:
        self.signals.append(signum)
        self.wake()

    # ---- the channel's life ---------------------------------------------------------

    def serve(self, kind: str, command: str | None) -> None:
        record = self.conn.record
        try:
            self.set(self.wake_fd, READ, self._on_wake)
            if kind == "exec" and command is not None:
                self._exec(Request(command, stdin=True))
            elif kind == "shell" and self.conn.login.grant.forced is not None:
                self._exec(Request("", stdin=True))  # as sshd: the forced command, once
            elif kind == "shell":
                self._line_session()
        except LocalProtocolError as exc:  # past --max-commands: the connection goes
            self._say(str(exc))
            self._exit(255, None)
            self.channel.get_transport().close()
        except ConnectionFailed:
            if self.cmd is not None:
                record.finished(self.cmd.abandon())
                self.cmd = None
        except FAILURES as exc:
            log.info("%s: ssh channel ended: %s", self.conn.peer, exc)
        finally:
            if self.cmd is not None:
                record.finished(self.cmd.abandon())
            unwatch_channel(self.channel)
            self.close()  # our epoll first: the channel's pipe goes with the channel
            self.channel.close()

    def _exec(self, request: Request) -> None:
        outcome = self._run(request)
        if outcome is not None:
            self._exit(outcome.exit_code, outcome.signal)

    def _run(self, request: Request) -> Outcome | None:
        """One command to its end, reported; None when the channel went first."""
        plan = decide(request, self.ws, self.limits)
        if isinstance(plan, Answer):
            if plan.stderr:
                self._send_stderr(plan.stderr)
            return self._finished(plan.outcome)
        return self._launch(plan)

    def _launch(self, plan: Launch) -> Outcome | None:
        from rshell.exec.child import StartError

        login, record = self.conn.login, self.conn.record
        try:
            self.cmd = Command(plan, self, self.sink, self.limits)
        except StartError as exc:
            return self._finished(Outcome(plan.text, 127, None, str(exc)))
        login.groups.add(self.cmd.child.pid)
        record.started(plan.text, plan.cwd, self.cmd.child.pid, plan.forced)
        while True:
            outcome = self._turn()
            if outcome is not None:
                self.cmd = None
                return self._finished(outcome)

    def _turn(self) -> Outcome | None:
        """One loop turn while a command runs: its Outcome once it is over."""
        cmd = self.cmd
        assert cmd is not None
        wants = cmd.stdin_open and cmd.stdin_queued < _STDIN_AHEAD
        self.set(self.chan_fd, READ if wants else 0, self._on_stdin)
        cmd.sync()
        times = [cmd.next_deadline(), None if cmd.stopping else self.shutdown_at]
        pending = [t for t in times if t is not None]
        self.poll(max(0.0, min(pending) - time.monotonic()) if pending else None)
        now = time.monotonic()
        if self.shutdown_at is not None and now >= self.shutdown_at:
            cmd.stop("server shutting down")
        cmd.check(now)
        return cmd.finish()

    def _finished(self, outcome: Outcome) -> Outcome:
        self.conn.record.finished(outcome)
        if outcome.reason:  # the server's word; a plain failure says nothing, as sshd
            self._say(f"command error: {outcome.reason}")
        return outcome

    # ---- the line session -------------------------------------------------------------

    def _line_session(self) -> None:
        """Lines from the channel, one command each (no stdin), until EOF or
        ``exit``; the exit status is the last command's."""
        self.lines = lines = _Lines()
        while True:
            line = lines.next()
            if line is None:
                if lines.eof:
                    break
                if self.shutdown_at is not None:
                    self._say("server shutting down")
                    self.status = 255
                    break
                self.set(self.chan_fd, READ, self._on_line_data)
                self.poll(None)
                continue
            self.set(self.chan_fd, 0, None)  # the lines wait in the window
            text = line.decode("utf-8", "surrogateescape").strip()
            if not text:
                continue
            word, _, rest = text.partition(" ")
            if word in ("exit", "logout") and (not rest.strip() or rest.strip().isdigit()):
                self.status = int(rest) & 0xFF if rest.strip() else self.status
                break
            outcome = self._run(Request(text))
            if outcome is None:
                return
            self.status = _status(outcome)
        self._exit(self.status, None)

    def _on_line_data(self, mask: int) -> None:
        assert self.lines is not None
        data = self._recv()
        if data is None:
            return
        if not self.lines.feed(data):
            self._say(f"line longer than {MAX_LINE} bytes; closing")
            self._exit(255, None)
            raise ConnectionFailed("line too long")

    # ---- channel I/O ------------------------------------------------------------------

    def _on_stdin(self, mask: int) -> None:
        cmd = self.cmd
        data = self._recv()
        if cmd is None or data is None:
            return
        if data:
            cmd.feed(data)
        else:
            self.set(self.chan_fd, 0, None)
            cmd.end_stdin()

    def _recv(self) -> bytes | None:
        """Data from the client (b"" at EOF); None if none is there after all."""
        try:
            data: bytes = self.channel.recv(_CHUNK)
        except TimeoutError:
            return None
        if not data and self.lines is not None:
            self.lines.eof = True
        return data

    def _on_wake(self, mask: int) -> None:
        self.drain_wake()
        if self.channel.closed:
            raise ConnectionFailed("client disconnected")
        self.sink.flush()
        while self.signals:
            signum = self.signals.popleft()
            if self.cmd is not None:
                self.cmd.signal(signum)

    def _say(self, text: str) -> None:
        self._send_stderr(f"rshell: {text}\n".encode())

    def _send_stderr(self, data: bytes) -> None:
        self.sink.output(STDERR, bytearray(data), len(data))
        self._drain()

    def _drain(self) -> None:
        """Wait until the client took what is queued: it goes before the exit
        status.  A client gone ends the wait (the wake-up raises), and so does
        a stop's end (the grace and the kill grace spent)."""
        while self.sink.queued:
            stop = self.shutdown_at
            if stop is None:
                self.poll(None)
                continue
            left = stop + self.limits.kill_grace - time.monotonic()
            if left <= 0:
                return
            self.poll(left)

    def _exit(self, code: int | None, signum: int | None) -> None:
        self._drain()
        try:
            send_exit(self.channel, code, signum)
        except FAILURES:
            pass


class _Lines:
    """Bytes split into lines, none longer than MAX_LINE (checked as data comes)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False

    def feed(self, data: bytes) -> bool:
        """False if a line grew past MAX_LINE."""
        self.buffer += data
        end = self.buffer.rfind(b"\n")
        return len(self.buffer) - (end + 1) <= MAX_LINE

    def next(self) -> bytes | None:
        at = self.buffer.find(b"\n")
        if at >= 0:
            line = bytes(self.buffer[:at])
            del self.buffer[: at + 1]
            return line
        if self.eof and self.buffer:  # a last line without a newline still runs
            line, self.buffer = bytes(self.buffer), bytearray()
            return line
        return None


def _status(outcome: Outcome) -> int:
    """The status a shell would give ``$?``: the code, 128+N for signal N."""
    if outcome.signal:
        return 128 + outcome.signal
    return outcome.exit_code if outcome.exit_code is not None else 255
