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
native frame size, exit status the last command's).  A ``pty-req`` is granted
when the key may have a terminal (``exec.policy.terminal_refusal``, the rule
``decide`` applies again) and the terminal asked for is sound
(``exec.terminal.Pty.problem``); refused, OpenSSH says "PTY allocation
request failed" and goes on without one, as with sshd.  The channel's
``shell`` or ``exec`` then runs on that terminal (the login shell, the
command, or the forced command: decided by ``decide``), and
``window-change`` requests resize it.  The ``sftp`` subsystem is served
(ssh/sftp.py: paramiko's SFTP server over the local files, in the channel's
thread), and refused, as sshd refuses it, to keys that may not copy files
(``exec.policy.transfer_refusal``); every other subsystem, forwarding and
environment request is refused.  At most
``--max-sessions`` channels are open at once on one connection (sshd's
MaxSessions): an open beyond is refused (resource shortage), the rest go on.
paramiko's own warnings reach our log as one line each (ssh/_paramiko.py
``route_logging``), never as a traceback.

Threads: paramiko's transport thread per connection, this connection's
handler thread (accepting channels), and one thread per channel running its
loop (ssh/channel.py).  Must not import click or the client side.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import paramiko

from rshell.exec.policy import Grant, Login, terminal_refusal
from rshell.exec.record import Recorder
from rshell.exec.terminal import Pty
from rshell.server.listener import Daemon, Listener
from rshell.server.session import end_login
from rshell.server.settings import Settings, new_marker
from rshell.ssh import sftp
from rshell.ssh._paramiko import (
    FAILURES,
    hear_signals,
    rekey_as_openssh,
    route_logging,
    route_transport,
)
from rshell.ssh.channel import ChannelDriver
from rshell.transport import peer_ip

if TYPE_CHECKING:
    from rshell.server.auth import Verdict

log = logging.getLogger("rshell.server")

class SshServer(Listener):
    """The ``--ssh-bind`` listener (class variables as in server.listener.Listener)."""

    kind = "ssh"

    def __init__(self, address: tuple[str, int], daemon: Daemon, host_key: str) -> None:
        route_logging(log)
        self.host_key = paramiko.Ed25519Key(filename=host_key)
        super().__init__(address, daemon)

    def serve_admitted(self, sock: socket.socket, peer: str, token: int) -> None:
        conn = SshConnection(sock, peer, self.settings, self.host_key,
                             lambda: self.daemon.admission.authenticated(token))
        with self.daemon.tracking(conn):
            conn.serve()


#: What a channel asked to run: "exec", "shell", "sftp" or "none" (nothing
#: asked in time), the exec command, and the terminal it asked for before, if granted.
ChannelRequest = tuple[str, str | None, Pty | None]


class _Interface(paramiko.ServerInterface):
    """What one SSH connection may do: public-key login, session channels,
    pty-req, window-change, exec and shell requests, the sftp subsystem;
    nothing else.

    Called from paramiko's transport thread; the channel's driver thread
    takes its request with ``wait_request``."""

    def __init__(self, conn: SshConnection) -> None:
        self.conn = conn
        self.verdict: Verdict | None = None
        self.requests: dict[int, ChannelRequest] = {}
        #: Terminals granted to channels that have not made their request
        #: yet, kept at their latest size; taken by the shell or exec request.
        self.ptys: dict[int, Pty] = {}
        #: Channels that made their request (one each; a later pty-req is refused).
        self.asked: set[int] = set()
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
        if kind != "session":
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        if not self.conn.take_slot(chanid):
            return paramiko.OPEN_FAILED_RESOURCE_SHORTAGE
        # The key's grant before any request on the channel is answered:
        # pty-req is judged by it here, on this thread, as the open's reply
        # is; the handler thread may not have taken the login in yet.
        self.conn.logged_in(self)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        return self._request(channel, "exec", command.decode("utf-8", "surrogateescape"))

    def check_channel_shell_request(self, channel: paramiko.Channel) -> bool:
        return self._request(channel, "shell", None)

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        """``sftp``, unless the key may not copy files (refused, OpenSSH says
        "subsystem request failed", as with sshd); served by the channel's
        own thread, which holds its slot (not paramiko's handler thread)."""
        if name != "sftp" or sftp.refused(self.conn):
            return False
        return self._request(channel, "sftp", None)

    def check_channel_pty_request(self, channel: paramiko.Channel, term: bytes, width: int,
                                  height: int, pixelwidth: int, pixelheight: int,
                                  modes: bytes) -> bool:
        """A terminal for the channel's coming shell or exec, if the key may
        have one and it is sound; False makes OpenSSH say "PTY allocation
        request failed" and go on without one, as with sshd.  Pixel sizes are
        ignored; so are the terminal modes (RFC 4254 8): the pty starts with
        the kernel's defaults (echo, ^C, ^D...), which is what the modes a
        client sends ask for in practice."""
        pty = Pty(term.decode("ascii", "replace"), width, height)
        if terminal_refusal(self.conn.login.grant) or pty.problem():
            return False
        with self.ready:
            chanid = channel.get_id()
            if chanid in self.asked:
                return False  # after shell or exec: too late, as with sshd
            self.ptys[chanid] = pty
        return True

    def check_channel_window_change_request(self, channel: paramiko.Channel, width: int,
                                            height: int, pixelwidth: int,
                                            pixelheight: int) -> bool:
        """The client's window changed: the terminal waiting for its request
        takes the size, or the channel's driver gets it (thread-safely).
        Either happens under ``ready`` before the delivery, so a change never
        falls between the request being taken and the driver being found."""
        chanid = channel.get_id()
        with self.ready:
            pty = self.ptys.get(chanid)
            if pty is not None:
                self.ptys[chanid] = replace(pty, cols=width, rows=height)
                return True
            if chanid not in self.asked:
                return False  # no terminal on this channel
        self.conn.deliver_resize(chanid, width, height)
        return True

    def _request(self, channel: paramiko.Channel, kind: str, command: str | None) -> bool:
        with self.ready:
            chanid = channel.get_id()
            if chanid in self.asked:
                return False  # one request per channel
            self.asked.add(chanid)
            self.requests[chanid] = (kind, command, self.ptys.pop(chanid, None))
            self.ready.notify_all()
        return True

    def wait_request(self, channel: paramiko.Channel, timeout: float) -> ChannelRequest:
        deadline = time.monotonic() + timeout
        chanid = channel.get_id()
        with self.ready:
            while chanid not in self.requests:
                left = deadline - time.monotonic()
                if left <= 0 or channel.closed:
                    self.ptys.pop(chanid, None)
                    return "none", None, None
                self.ready.wait(min(left, 0.5))
            return self.requests.pop(chanid)

    def forget(self, chanid: int) -> None:
        """The channel is over: nothing of it stays (ids are reused)."""
        with self.ready:
            self.ptys.pop(chanid, None)
            self.requests.pop(chanid, None)
            self.asked.discard(chanid)


class SshConnection:
    """One SSH connection: its transport, its login, its channels' drivers.

    Methods for the caller: ``serve()`` (blocks until the connection is over)
    and ``request_shutdown(grace)`` (thread-safe).
    """

    def __init__(self, sock: socket.socket, peer: str, settings: Settings,
                 host_key: paramiko.PKey,
                 on_authenticated: Callable[[], None] | None = None) -> None:
        self.sock, self.peer, self.settings = sock, peer, settings
        self.peer_ip = peer_ip(sock)
        self.host_key, self.on_authenticated = host_key, on_authenticated
        marker = new_marker()
        self.login = Login(settings.home, settings.limits.shell, peer, marker,
                           settings.authorized_keys_file)
        self.record = Recorder(peer, "ssh", marker, settings.audit)
        self.authorizer = settings.authorizer
        self.drivers: dict[int, ChannelDriver] = {}
        #: Channels open (--max-sessions): each from its open, waiting for its
        #: request included, until its driver lets go, just before its close.
        self.slots: set[int] = set()
        self.refused = 0
        self.admitted = False  # the login taken in (logged_in), once
        self.shutdown_at: float | None = None
        self.end_reason = ""
        self._lock = threading.Lock()
        self._admitting = threading.Lock()

    def request_shutdown(self, grace: float) -> None:
        with self._lock:
            if self.shutdown_at is None:
                self.shutdown_at = time.monotonic() + grace
            self.login.stopping = True
            drivers = list(self.drivers.values())
        for driver in drivers:
            driver.request_shutdown(self.shutdown_at)

    def take_slot(self, chanid: int) -> bool:
        """A slot for a new channel (from paramiko's thread, before the open is
        answered); False at --max-sessions, logged once per connection so that
        a flood of opens is not a flood of lines."""
        with self._lock:
            if len(self.slots) < self.settings.max_sessions:
                self.slots.add(chanid)
                return True
            self.refused += 1
            first = self.refused == 1
        if first:
            self.record.log(logging.WARNING, "%s: channel open refused: %d channels open "
                            "(--max-sessions); further refusals on this connection are not "
                            "logged", self.peer, self.settings.max_sessions,
                            event="channel-refused", max_sessions=self.settings.max_sessions)
        return False

    def release(self, chanid: int) -> None:
        """The channel's slot back (idempotent): called before its close is
        sent, so a client that saw the close may open another at once."""
        with self._lock:
            self.slots.discard(chanid)
            self.drivers.pop(chanid, None)

    def deliver_signal(self, chanid: int, signum: int) -> None:
        with self._lock:
            driver = self.drivers.get(chanid)
        if driver is not None:
            driver.post_signal(signum)

    def deliver_resize(self, chanid: int, cols: int, rows: int) -> None:
        with self._lock:
            driver = self.drivers.get(chanid)
        if driver is not None:
            driver.post_resize(cols, rows)

    def serve(self) -> None:
        self.record.connected()
        transport = paramiko.Transport(self.sock)
        route_transport(transport, self.peer)  # its log lines name the peer, no tracebacks
        transport.local_version = "SSH-2.0-rshell_0.1"
        transport.add_server_key(self.host_key)
        iface = _Interface(self)
        hear_signals(transport, self.deliver_signal)
        rekey_as_openssh(transport)  # paramiko's 512 MiB rekey can deadlock (#822)
        threads: list[threading.Thread] = []
        try:
            transport.start_server(server=iface)
            self._accept(transport, iface, threads)
        except FAILURES as exc:
            self.end(f"negotiation failed: {exc}")
        finally:
            for thread in threads:  # each channel says its last word first
                thread.join(self.settings.limits.kill_grace + 5)
            transport.close()
            end_login(self.login, self.settings, self.record)
            self.record.disconnected(self.login.commands, self.end_reason)

    def _accept(self, transport: paramiko.Transport, iface: _Interface,
                threads: list[threading.Thread]) -> None:
        """Accept channels until the connection ends, times out or is stopped;
        ``end_reason`` says why, in the native session's words."""
        settings = self.settings
        deadline = time.monotonic() + settings.auth_timeout
        authenticated = False
        idle_since = time.monotonic()
        while transport.is_active():
            now = time.monotonic()
            if transport.is_authenticated():
                if not authenticated:
                    authenticated = True
                    self.logged_in(iface)
            elif now > deadline:
                log.warning("%s: handshake not completed in %gs", self.peer,
                            settings.auth_timeout)
                self.end("auth-timeout: authentication timed out")
                return
            threads[:] = [t for t in threads if t.is_alive()]
            idle_since = max([idle_since, *self._activity()])
            if not threads and self.shutdown_at is not None:
                self.end("shutdown: server is shutting down")
                return
            if settings.idle_timeout and now - idle_since > settings.idle_timeout:
                self._idle(f"idle for {settings.idle_timeout:g} s without a command")
                return
            channel = transport.accept(timeout=0.5)
            if channel is None:
                continue
            if not authenticated:  # the login completed while we waited: grant first
                if not transport.is_authenticated():
                    self.release(channel.get_id())
                    iface.forget(channel.get_id())
                    channel.close()
                    continue
                authenticated = True
                self.logged_in(iface)
            threads.append(self._start_channel(channel, iface))
        self.end("client disconnected")

    def _activity(self) -> list[float]:
        """When each channel was last busy (now, for one running a command)."""
        with self._lock:
            drivers = list(self.drivers.values())
        now = time.monotonic()
        return [now if d.busy else d.active_at for d in drivers]

    def _idle(self, reason: str) -> None:
        """As the native session: an idle connection is told why and closed."""
        self.end(f"idle-timeout: {reason}")
        with self._lock:
            drivers = list(self.drivers.values())
        for driver in drivers:
            driver.close_idle(reason)

    def end(self, reason: str) -> None:
        """Why the connection ends (the first reason given wins)."""
        with self._lock:
            if not self.end_reason:
                self.end_reason = reason

    def logged_in(self, iface: _Interface) -> None:
        """Take the authenticated login in, once: its report and grant, and
        its admission count.  From this handler's thread when it sees the
        login, or from paramiko's at the first channel open, whichever is first."""
        with self._admitting:  # held throughout: the other caller waits for the grant
            if self.admitted:
                return
            self.admitted = True
            if self.authorizer is not None and iface.verdict is not None:
                grant = self.authorizer.report(iface.verdict, self.record)
                self.login.admit(grant or Grant())
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
            kind, command, pty = iface.wait_request(driver.channel, self.settings.auth_timeout)
            if kind == "sftp":
                sftp.serve(self, driver)
            else:
                driver.serve(kind, command, pty)
        finally:
            self.release(driver.channel.get_id())  # the driver did, unless it failed first
            iface.forget(driver.channel.get_id())
