"""The frame decoder and encode_frame, byte by byte, with no sockets.

TCP delivers a byte stream, not messages: a frame may arrive in pieces, or
several frames in one read ("sticky packets").  These tests feed scripted and
generated chunkings and require the decoder to see the same frames every time,
and to refuse an oversized length prefix before it buffers the payload.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rshell.errors import LocalProtocolError
from rshell.protocol.frames import HEADER_SIZE, MAX_PAYLOAD, BufferDecoder, encode_frame

Frame = tuple[int, bytes]

FRAMES: list[Frame] = [
    (1, b'{"version":1}'),
    (11, b""),
    (20, bytes(range(256))),
    (255, b"x" * 1000),
    (0, b"\x00"),
    (21, b"tail"),
]


def drain(decoder: BufferDecoder) -> list[Frame]:
    """Every whole frame the decoder holds now, payloads copied to bytes."""
    out: list[Frame] = []
    while (frame := decoder.next_frame()) is not None:
        kind, payload = frame
        out.append((kind, bytes(payload)))
    return out


def decode_chunks(chunks: Iterable[bytes], max_payload: int = MAX_PAYLOAD) -> list[Frame]:
    """Feed chunks one read at a time, pulling frames after each, as a service does."""
    decoder = BufferDecoder(max_payload)
    out: list[Frame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(drain(decoder))
    assert decoder.buffered == 0, "bytes left over after whole frames"
    return out


def encode_all(frames: Iterable[Frame]) -> bytes:
    return b"".join(encode_frame(kind, payload) for kind, payload in frames)


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """data cut at the given offsets (clamped, sorted, duplicates give empty chunks)."""
    points = sorted(min(max(c, 0), len(data)) for c in cuts)
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def header(length: int, kind: int) -> bytes:
    return struct.pack("!IB", length, kind)


# ---- encode_frame -----------------------------------------------------------


def test_encode_frame_layout_is_length_then_kind_then_payload() -> None:
    """The wire layout is the contract with every other implementation."""
    assert encode_frame(20, b"abc") == b"\x00\x00\x00\x03\x14abc"
    assert encode_frame(4) == b"\x00\x00\x00\x00\x04"
    assert HEADER_SIZE == 5


@pytest.mark.parametrize(("kind", "payload"), FRAMES)
def test_single_frame_round_trip(kind: int, payload: bytes) -> None:
    assert decode_chunks([encode_frame(kind, payload)]) == [(kind, payload)]


# ---- read boundaries ----------------------------------------------------------


def test_one_byte_at_a_time_matches_one_chunk() -> None:
    """The worst chunking a socket can produce must change nothing."""
    data = encode_all(FRAMES)
    assert decode_chunks([data[i : i + 1] for i in range(len(data))]) == FRAMES


def test_many_frames_coalesced_in_one_chunk() -> None:
    """Sticky packets: one read holding many frames yields them all, in order."""
    frames = [(i % 256, bytes([i % 256]) * (i % 7)) for i in range(500)]
    assert decode_chunks([encode_all(frames)]) == frames


@pytest.mark.parametrize("seed", range(20))
def test_random_splits_match_one_chunk(seed: int) -> None:
    rng = random.Random(seed)
    data = encode_all(FRAMES)
    cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 40))]
    assert decode_chunks(split_at(data, cuts)) == FRAMES


def test_header_split_across_chunks() -> None:
    """A header cut anywhere is reassembled; no frame is reported early."""
    data = encode_frame(7, b"payload")
    for cut in range(1, HEADER_SIZE):
        decoder = BufferDecoder()
        decoder.feed(data[:cut])
        assert decoder.next_frame() is None
        decoder.feed(data[cut:HEADER_SIZE])
        assert decoder.next_frame() is None  # header whole, payload missing
        decoder.feed(data[HEADER_SIZE:])
        assert drain(decoder) == [(7, b"payload")]


def test_header_in_three_pieces() -> None:
    decoder = BufferDecoder()
    data = encode_frame(9, b"xy")
    for piece in (data[:1], data[1:3], data[3:5]):
        assert decoder.next_frame() is None
        decoder.feed(piece)
    assert decoder.next_frame() is None
    decoder.feed(data[5:])
    assert drain(decoder) == [(9, b"xy")]


def test_payload_split_across_many_chunks() -> None:
    """The slow path that joins a payload spread over several reads."""
    payload = bytes(range(256)) * 40
    data = encode_frame(21, payload) + encode_frame(22, b"next")
    chunks = [data[i : i + 333] for i in range(0, len(data), 333)]
    assert decode_chunks(chunks) == [(21, payload), (22, b"next")]


def test_empty_chunks_are_ignored() -> None:
    decoder = BufferDecoder()
    decoder.feed(b"")
    assert decoder.buffered == 0
    assert decoder.next_frame() is None
    assert decode_chunks([b"", encode_frame(3, b"a"), b"", b""]) == [(3, b"a")]


def test_zero_length_payload() -> None:
    """A frame that is all header completes as soon as the header does."""
    decoder = BufferDecoder()
    decoder.feed(encode_frame(12))
    frame = decoder.next_frame()
    assert frame is not None and frame[0] == 12 and bytes(frame[1]) == b""
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_consecutive_zero_length_frames() -> None:
    frames = [(12, b"")] * 10
    data = encode_all(frames)
    assert decode_chunks([data]) == frames
    assert decode_chunks([data[i : i + 1] for i in range(len(data))]) == frames


@pytest.mark.parametrize("pieces", [1, 3])
def test_payload_exactly_max_is_accepted(pieces: int) -> None:
    payload = b"\xab" * MAX_PAYLOAD
    data = encode_frame(20, payload)
    step = -(-len(data) // pieces)
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    assert decode_chunks(chunks) == [(20, payload)]


def test_length_above_max_refused_at_header_without_payload() -> None:
    """A hostile prefix is refused on its 5 header bytes; nothing waits for its payload."""
    decoder = BufferDecoder()
    decoder.feed(header(MAX_PAYLOAD + 1, 20))
    with pytest.raises(LocalProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "frame-too-large"
    assert decoder.buffered == HEADER_SIZE


def test_huge_length_refused_when_header_completes_across_chunks() -> None:
    decoder = BufferDecoder()
    data = header(0xFFFFFFFF, 1)
    decoder.feed(data[:4])
    assert decoder.next_frame() is None  # not yet a header: no verdict
    decoder.feed(data[4:])
    with pytest.raises(LocalProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "frame-too-large"


def test_oversized_frame_after_good_frames() -> None:
    """Good frames before the bad one are delivered; the bad one is refused."""
    decoder = BufferDecoder(max_payload=8)
    decoder.feed(encode_frame(1, b"12345678") + header(9, 2))
    frame = decoder.next_frame()
    assert frame is not None and bytes(frame[1]) == b"12345678"
    with pytest.raises(LocalProtocolError) as info:
        decoder.next_frame()
    assert info.value.code == "frame-too-large"


def test_custom_max_payload_boundary() -> None:
    assert decode_chunks([encode_frame(5, b"x" * 16)], max_payload=16) == [(5, b"x" * 16)]
    with pytest.raises(LocalProtocolError):
        decode_chunks([header(17, 5)], max_payload=16)


# ---- buffered accounting -------------------------------------------------------------


def test_buffered_counts_unconsumed_bytes() -> None:
    decoder = BufferDecoder()
    one = encode_frame(1, b"abc")  # 8 bytes
    two = encode_frame(2, b"defgh")  # 10 bytes
    decoder.feed(one[:3])
    assert decoder.buffered == 3
    assert decoder.next_frame() is None
    assert decoder.buffered == 3  # a miss consumes nothing
    decoder.feed(one[3:] + two[:6])
    assert decoder.buffered == 14
    assert drain(decoder) == [(1, b"abc")]
    assert decoder.buffered == 6  # the header and first byte of frame two
    decoder.feed(two[6:])
    assert decoder.buffered == 10
    assert drain(decoder) == [(2, b"defgh")]
    assert decoder.buffered == 0


# ---- properties --------------------------------------------------------------------

frames_st = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=20
)
cuts_st = st.lists(st.integers(0, 7000), max_size=30)


@settings(max_examples=200, deadline=None)
@given(frames=frames_st, cuts=cuts_st)
def test_property_any_split_decodes_to_same_frames(frames: list[Frame], cuts: list[int]) -> None:
    """Whatever the read boundaries, the decoded frames are the encoded ones."""
    assert decode_chunks(split_at(encode_all(frames), cuts)) == frames


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=600),
    cuts=cuts_st,
    max_payload=st.sampled_from([0, 1, 16, 255, MAX_PAYLOAD]),
)
def test_property_arbitrary_bytes_yield_frames_or_protocol_error(
    data: bytes, cuts: Sequence[int], max_payload: int
) -> None:
    """Hostile input may only produce frames or LocalProtocolError, never another exception."""
    decoder = BufferDecoder(max_payload)
    consumed = 0
    try:
        for chunk in split_at(data, cuts):
            decoder.feed(chunk)
            for _, payload in drain(decoder):
                assert len(payload) <= max_payload
                consumed += HEADER_SIZE + len(payload)
    except LocalProtocolError as exc:
        assert exc.code == "frame-too-large"
        return
    assert consumed + decoder.buffered == len(data)
    assert decoder.buffered < HEADER_SIZE or decoder.next_frame() is None
