"""``--max-sessions``: concurrent channels on one SSH connection (sshd's
MaxSessions).  Beyond the limit a channel open is refused with
OPEN_FAILURE (resource shortage), logged once per connection; the
connection and its open channels go on, and a channel's slot is free again
by the time the client sees it close.  Before the limit, one connection
opened 300 channels in 0.7 s: 600 threads, 1,200 descriptors.

paramiko is the client (it reports each refused open as ChannelException);
the server is the real rshell-server subprocess with ``--ssh-bind``.
"""

from __future__ import annotations

from collections.abc import Callable

import paramiko
import pytest

from tests.conftest import ServerProcess
from tests.parity_support import WAIT, paramiko_client, read_to_eof
from tests.support.procs import usage, wait_until
from tests.test_ssh_server import start_ssh_server


def open_waiting(transport: paramiko.Transport, tag: str) -> paramiko.Channel:
    """A channel whose command waits for one line of stdin, then echoes it."""
    chan = transport.open_session(timeout=WAIT)
    chan.exec_command(f"read line; echo {tag}:$line")
    return chan


def finish(chan: paramiko.Channel, line: str) -> tuple[int, bytes]:
    """Give a waiting channel its line: (exit status, output)."""
    chan.sendall(f"{line}\n".encode())
    chan.shutdown_write()
    got = bytearray()
    read_to_eof(chan, got)
    assert chan.status_event.wait(WAIT), "no exit status"
    return chan.recv_exit_status(), bytes(got)


def assert_refused(transport: paramiko.Transport) -> None:
    with pytest.raises(paramiko.ChannelException) as refused:
        transport.open_session(timeout=WAIT)
    assert refused.value.code == paramiko.OPEN_FAILED_RESOURCE_SHORTAGE


@pytest.mark.parametrize("flags, limit", [((), 10), (("--max-sessions", "2"), 2)],
                         ids=["default-10", "max-sessions-2"])
def test_channels_beyond_the_limit_are_refused_and_the_rest_go_on(
    start_server: Callable[..., ServerProcess], flags: tuple[str, ...], limit: int
) -> None:
    srv = start_ssh_server(start_server, *flags)
    with paramiko_client(srv) as client:
        transport = client.get_transport()
        assert transport is not None
        chans = [open_waiting(transport, f"c{i}") for i in range(limit)]
        assert_refused(transport)
        assert_refused(transport)
        assert transport.is_active()

        # One ends: by the time its close reaches us, its slot is free.
        assert finish(chans[0], "first") == (0, b"c0:first\n")
        assert wait_until(lambda: chans[0].closed, WAIT), "the server never closed it"
        chans[0] = open_waiting(transport, "again")
        assert_refused(transport)

        for i, chan in enumerate(chans):
            tag = "again" if i == 0 else f"c{i}"
            assert finish(chan, str(i)) == (0, f"{tag}:{i}\n".encode())
    srv.wait_for_log(rf"disconnected after {limit + 1} command\(s\)")
    refusals = [ln for ln in srv.log.splitlines() if "channel open refused" in ln]
    assert len(refusals) == 1, srv.log  # once per connection, not once per open
    assert f"{limit} channels open (--max-sessions)" in refusals[0]


def test_a_flood_of_channel_opens_holds_no_more_than_the_limit(
    start_server: Callable[..., ServerProcess],
) -> None:
    """300 opens on one connection, none with a request yet (each such
    channel holds a thread until its request comes): 290 refused, and the
    server's threads and descriptors grow by what 10 channels take."""
    srv = start_ssh_server(start_server)
    pid = srv.proc.pid
    with paramiko_client(srv) as client:
        transport = client.get_transport()
        assert transport is not None
        before = usage(pid)
        opened: list[paramiko.Channel] = []
        refused = 0
        for _ in range(300):
            try:
                opened.append(transport.open_session(timeout=WAIT))
            except paramiko.ChannelException:
                refused += 1
        during = usage(pid)
        assert (len(opened), refused) == (10, 290)
        assert during.threads <= before.threads + 10 + 2, (before, during)
        assert during.fds <= before.fds + 10 * 6, (before, during)
        # The connection still works: a channel closed, a command in its slot.
        opened[0].close()
        assert wait_until(lambda: _opens(transport), WAIT), "the freed slot never came back"


def _opens(transport: paramiko.Transport) -> bool:
    """A channel opens, runs ``echo ok`` and exits 0 (False if refused)."""
    try:
        chan = transport.open_session(timeout=WAIT)
    except paramiko.ChannelException:
        return False
    chan.exec_command("echo ok")
    got = bytearray()
    read_to_eof(chan, got)
    return chan.recv_exit_status() == 0 and bytes(got) == b"ok\n"
