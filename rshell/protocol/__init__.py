"""The rshell wire protocol, sans-IO: frames, messages and session states.

Nothing in this package touches a socket, a thread or a process; it turns
bytes (and the end of the stream) into validated messages and messages into
bytes.  See docs/PROTOCOL.md.
"""

from rshell.errors import ErrorCode
from rshell.protocol.frames import CHUNK_SIZE, HEADER_SIZE, MAX_PAYLOAD, BufferDecoder
from rshell.protocol.messages import PROTOCOL_VERSION, Closed, MessageType
from rshell.protocol.states import ClientProtocol, ServerProtocol, State

__all__ = [
    "CHUNK_SIZE", "HEADER_SIZE", "MAX_PAYLOAD", "BufferDecoder", "PROTOCOL_VERSION",
    "MessageType", "ClientProtocol", "ServerProtocol", "State", "Closed", "ErrorCode",
]
