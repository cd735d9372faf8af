"""The post-handshake WebSocket frame parser: properties and every protocol violation."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame, Opcode
from websockets.streams import StreamReader

from evota.gateway import frames
from evota.gateway.frames import FrameError, FrameReader, Received


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """An independent encoder of client frames (RFC 6455 §5.2)."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, (0x80 if mask else 0) | n))
    elif n < 1 << 16:
        head = bytes((b0, (0x80 if mask else 0) | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, (0x80 if mask else 0) | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = hashlib.sha256(head + payload).digest()[:4]  # varied, yet the same in every run
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    return [c for c in chunks if c]


messages = st.lists(
    st.tuples(
        st.just(frames.OP_TEXT),
        # valid UTF-8 with multi-byte characters, which fragments may split
        st.binary(max_size=70_000).map(lambda b: b.decode("latin-1").encode()),
        st.integers(1, 4),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(messages, st.lists(st.integers(0, 10**6), max_size=12), st.booleans())
def test_any_fragmentation_and_chunking_yields_the_same_messages(msgs, cuts, with_pings):
    wire = b""
    expected: list[Received] = []
    for opcode, payload, parts in msgs:
        size = max(1, len(payload) // parts)
        pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for i, piece in enumerate(pieces):
            wire += client_frame(
                opcode if i == 0 else frames.OP_CONT, piece, fin=i == len(pieces) - 1
            )
            if with_pings and i == 0:
                wire += client_frame(frames.OP_PING, b"p")  # control frames may interleave
                expected.append(Received(frames.OP_PING, b"p"))
        expected.append(Received(opcode, payload))
    reader = FrameReader(max_size=1 << 20)
    got: list[Received] = []
    for chunk in split(wire, cuts):
        got.extend(reader.feed(chunk))
    data_only = [r for r in got if r.opcode != frames.OP_PING]
    assert data_only == [r for r in expected if r.opcode != frames.OP_PING]
    assert len(got) == len(expected)


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (client_frame(frames.OP_TEXT, b"x", mask=False), frames.CLOSE_PROTOCOL_ERROR),
        (client_frame(frames.OP_TEXT, b"x", rsv=0x40), frames.CLOSE_PROTOCOL_ERROR),
        (client_frame(frames.OP_CONT, b"x"), frames.CLOSE_PROTOCOL_ERROR),
        (client_frame(frames.OP_PING, b"x" * 126), frames.CLOSE_PROTOCOL_ERROR),
        (client_frame(frames.OP_PING, b"x", fin=False), frames.CLOSE_PROTOCOL_ERROR),
        (client_frame(0x3, b"x"), frames.CLOSE_PROTOCOL_ERROR),
        (client_frame(0xB, b"x"), frames.CLOSE_PROTOCOL_ERROR),
        (
            client_frame(frames.OP_TEXT, b"a", fin=False) + client_frame(frames.OP_TEXT, b"b"),
            frames.CLOSE_PROTOCOL_ERROR,
        ),
        (client_frame(frames.OP_TEXT, b"x" * 2000), frames.CLOSE_TOO_BIG),
        (client_frame(frames.OP_BINARY, b"[]"), frames.CLOSE_UNSUPPORTED_DATA),
        (client_frame(frames.OP_BINARY, b"[", fin=False), frames.CLOSE_UNSUPPORTED_DATA),
        (client_frame(frames.OP_TEXT, b'["\xff"]'), frames.CLOSE_INVALID_DATA),  # fast path
        (client_frame(frames.OP_TEXT, b"\xff" * 200), frames.CLOSE_INVALID_DATA),  # 16-bit length
        (client_frame(frames.OP_TEXT, b"\xc0\xaf"), frames.CLOSE_INVALID_DATA),  # overlong "/"
        (client_frame(frames.OP_TEXT, b"\xed\xa0\x80"), frames.CLOSE_INVALID_DATA),  # surrogate
        (client_frame(frames.OP_TEXT, b"\xf4\x90\x80\x80"), frames.CLOSE_INVALID_DATA),  # >10FFFF
        (
            client_frame(frames.OP_TEXT, b"ok", fin=False)
            + client_frame(frames.OP_CONT, b"\xe2\x82"),  # message ends inside a character
            frames.CLOSE_INVALID_DATA,
        ),
        (
            client_frame(frames.OP_TEXT, b"x" * 600, fin=False)
            + client_frame(frames.OP_CONT, b"x" * 600),
            frames.CLOSE_TOO_BIG,
        ),
    ],
)
def test_protocol_violations_close_with_the_right_code(wire, code):
    with pytest.raises(FrameError) as info:
        FrameReader(max_size=1000).feed(wire)
    assert info.value.code == code


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frames_parse_with_websockets(size):
    """websockets' own parser (an independent implementation) reads what we encode."""
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    reader = StreamReader()
    reader.feed_data(frames.encode(frames.OP_TEXT, payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


def test_invalid_utf8_fails_split_over_reads_too():
    reader = FrameReader(max_size=1000)
    wire = client_frame(frames.OP_TEXT, b"[1,\xfe]")
    assert reader.feed(wire[:3]) == []
    with pytest.raises(FrameError) as info:
        reader.feed(wire[3:])
    assert info.value.code == frames.CLOSE_INVALID_DATA


def test_a_character_split_across_fragments_is_valid():
    text = "Überlast €".encode()
    first = client_frame(frames.OP_TEXT, text[:1], fin=False)
    wire = first + client_frame(frames.OP_CONT, text[1:])
    assert FrameReader(max_size=1000).feed(wire) == [Received(frames.OP_TEXT, text)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_text_is_accepted_exactly_when_python_decodes_it_as_utf8(payload):
    try:
        payload.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    try:
        got = FrameReader(max_size=1000).feed(client_frame(frames.OP_TEXT, payload))
    except FrameError as exc:
        assert not valid and exc.code == frames.CLOSE_INVALID_DATA
    else:
        assert valid and got == [Received(frames.OP_TEXT, payload)]


def test_close_frames():
    assert frames.parse_close(frames.encode_close(1001, "bye")[2:]) == (1001, "bye")
    assert frames.parse_close(b"") == (1005, "")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x03", frames.CLOSE_PROTOCOL_ERROR),  # 1-byte payload
        *[(struct.pack("!H", c), frames.CLOSE_PROTOCOL_ERROR) for c in (1004, 1005, 1006, 1015)],
        *[(struct.pack("!H", c), frames.CLOSE_PROTOCOL_ERROR) for c in (0, 999, 1016, 2999)],
        *[(struct.pack("!H", c), frames.CLOSE_PROTOCOL_ERROR) for c in (5000, 65535)],
        (struct.pack("!H", 1000) + b"\xff", frames.CLOSE_INVALID_DATA),
        (struct.pack("!H", 4000) + b"by\xe2\x82", frames.CLOSE_INVALID_DATA),  # half a "€"
    ],
    ids=lambda v: v.hex() if isinstance(v, bytes) else str(v),
)
def test_a_close_frame_that_breaks_rfc_6455_is_an_error_not_a_code_to_echo(payload, code):
    """§7.4: codes that may not be sent and a 1-byte payload are 1002; §8.1: a reason that is
    not UTF-8 is 1007. parse_close used to return them (with the reason decoded leniently)."""
    with pytest.raises(FrameError) as info:
        frames.parse_close(payload)
    assert info.value.code == code


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 4000, 4999])
def test_every_sendable_close_code_is_accepted(code):
    assert frames.parse_close(struct.pack("!H", code) + "Tschüss".encode()) == (code, "Tschüss")


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=125),
        st.tuples(st.integers(0, 65535), st.binary(max_size=20)).map(
            lambda t: struct.pack("!H", t[0]) + t[1]
        ),
    )
)
def test_close_payloads_are_judged_like_websockets_does(payload):
    """websockets' Close.parse, an independent implementation of RFC 6455, is the oracle."""
    try:
        close = Close.parse(payload)
    except ProtocolError:
        expected: tuple[int, str] | int = frames.CLOSE_PROTOCOL_ERROR
    except UnicodeDecodeError:
        expected = frames.CLOSE_INVALID_DATA
    else:
        expected = (int(close.code), close.reason)
    try:
        got: tuple[int, str] | int = frames.parse_close(payload)
    except FrameError as exc:
        got = exc.code
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(3000, 4999), st.text(st.characters(codec="utf-8"), max_size=130))
@example(4000, "a" + "€" * 50)  # byte 123 is in the middle of a "€"
def test_a_long_close_reason_is_cut_at_a_character_boundary(code, reason):
    """A close payload has room for 123 bytes of reason; cutting "€" in half would send
    invalid UTF-8, which the peer must fail with 1007."""
    wire = frames.encode_close(code, reason)
    assert len(wire) <= 2 + 125
    kept = ""  # the longest prefix of whole characters that fits
    for char in reason:
        if len((kept + char).encode()) > 123:
            break
        kept += char
    assert frames.parse_close(wire[2:]) == (code, kept)


def test_non_minimal_length_encoding_is_not_misread_by_the_fast_path():
    payload = b"x" * 124
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    wire = bytes((0x81, 0x80 | 126)) + struct.pack("!H", 124) + key + masked  # 132 bytes
    assert FrameReader(1000).feed(wire) == [Received(frames.OP_TEXT, payload)]


@pytest.mark.parametrize("size", [125, 126, 300, 65535])
def test_single_frames_of_every_length_class(size):
    payload = bytes(32 + i % 95 for i in range(size))
    assert FrameReader(1 << 20).feed(client_frame(frames.OP_TEXT, payload)) == [
        Received(frames.OP_TEXT, payload)
    ]
