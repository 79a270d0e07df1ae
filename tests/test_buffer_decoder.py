"""BufferDecoder in the way its users drive it (receive into ``writable()``,
then drain): the encoded frames whatever the read sizes, including the rare
compaction of a partial frame to the buffer's front."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rshell.errors import LocalProtocolError
from rshell.protocol.frames import HEADER_SIZE, MAX_PAYLOAD, BufferDecoder, encode_frame
from tests.test_frames import Frame, cuts_st, encode_all, frames_st, header, split_at


def receive(decoder: BufferDecoder, data: bytes, read_sizes: list[int]) -> list[Frame]:
    """Receive ``data`` as recv_into would, in reads of the given sizes, draining
    (and copying) frames after every read, as the client does."""
    out: list[Frame] = []
    view = memoryview(data)
    sizes = iter(read_sizes)
    while view:
        space = decoder.writable()
        n = min(len(space), len(view), max(1, next(sizes, len(view))))
        space[:n] = view[:n]
        decoder.commit(n)
        view = view[n:]
        while (frame := decoder.next_frame()) is not None:
            out.append((frame[0], bytes(frame[1])))
    return out


@settings(max_examples=200, deadline=None)
@given(frames=frames_st, cuts=cuts_st)
def test_property_any_split_decodes_to_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    data = encode_all(frames)
    sizes = [len(c) for c in split_at(data, cuts)]
    decoder = BufferDecoder()
    assert receive(decoder, data, sizes) == frames
    assert decoder.buffered == 0


def test_large_frames_in_odd_reads_force_compaction() -> None:
    """Maximal frames read in sizes that never align: the buffer must move a
    partial frame to its front many times without corrupting a byte."""
    rng = random.Random(7)
    frames = [(20, rng.randbytes(MAX_PAYLOAD if i % 3 else 1000)) for i in range(24)]
    data = encode_all(frames)
    sizes = [rng.randrange(1, 3 * MAX_PAYLOAD) for _ in range(200)]
    assert receive(BufferDecoder(), data, sizes) == frames


def test_small_capacity_overlapping_move_is_safe() -> None:
    """With room for only a frame or two, the partial frame may overlap its
    destination: it must still arrive intact."""
    rng = random.Random(3)
    frames = [(21, rng.randbytes(rng.randrange(0, 200))) for _ in range(300)]
    decoder = BufferDecoder(max_payload=200, frames=2)
    data = encode_all(frames)
    assert receive(decoder, data, [rng.randrange(1, 500) for _ in range(2000)]) == frames


def test_oversized_length_refused_at_the_header() -> None:
    decoder = BufferDecoder(max_payload=16)
    decoder.feed(header(17, 20))
    with pytest.raises(LocalProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "frame-too-large"


def test_payload_view_is_zero_copy_until_next_writable() -> None:
    decoder = BufferDecoder(max_payload=64, frames=2)
    decoder.feed(encode_frame(20, b"abc"))
    frame = decoder.next_frame()
    assert frame is not None and frame[1].obj is decoder.writable().obj  # same buffer


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), cuts=cuts_st)
def test_property_hostile_bytes_yield_frames_or_protocol_error(
    data: bytes, cuts: list[int]
) -> None:
    decoder = BufferDecoder(max_payload=255, frames=2)
    try:
        for _, payload in receive(decoder, data, [len(c) for c in split_at(data, cuts)]):
            assert len(payload) <= 255
    except LocalProtocolError as exc:
        assert exc.code == "frame-too-large"
        return
    assert decoder.buffered < HEADER_SIZE + 255


def test_partial_describes_the_incomplete_frame() -> None:
    """What a stream cut short left behind: header bytes, then the frame's size."""
    decoder = BufferDecoder()
    assert decoder.partial() == (0, None)
    frame = encode_frame(7, b"abcd")
    decoder.feed(encode_frame(1, b"x") + frame[:3])
    assert decoder.next_frame() is not None
    assert decoder.partial() == (3, None)
    decoder.feed(frame[3:6])
    assert decoder.next_frame() is None
    assert decoder.partial() == (6, HEADER_SIZE + 4)
    decoder.feed(frame[6:])
    assert decoder.next_frame() is not None
    assert decoder.partial() == (0, None)
