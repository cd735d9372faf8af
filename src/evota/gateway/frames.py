"""WebSocket framing after the handshake (RFC 6455 §5), server side, sans I/O.

websockets does evota's HTTP upgrade (request parsing, ``Sec-WebSocket-Accept``, 401/404
answers). Once a charger is connected, every message passes through here instead of
websockets' generator-based parser: OCPP traffic is small, unfragmented text frames, and
parsing them with a few slices and the C ``apply_mask`` from websockets roughly halves the
per-message framing cost (docs/performance.md). Everything unusual — fragments, control
frames, a frame split over several reads — still goes through the same, complete parser.

OCPP-J messages are JSON text: a text message that is not valid UTF-8 fails the connection
with 1007 (RFC 6455 §8.1), and a binary message, which OCPP-J has no use for, with 1003
(unsupported data). The UTF-8 check is ``bytes.isascii`` (OCPP traffic is nearly always
ASCII) and a strict decode only for the rest. A charger's close frame is checked the same
way (``parse_close``): a code that may not be sent or a 1-byte payload is a protocol error
(1002, RFC 6455 §7.4), a reason that is not UTF-8 is 1007, so evota never echoes a code
such as 1005 or 1006 onto the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from struct import Struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets ships the C extension on common platforms
    from websockets.utils import apply_mask

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # what an empty close frame means; never sent on the wire
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

# The codes a close frame may carry (RFC 6455 §7.4, IANA registry): the registered ones
# except 1004 (reserved) and 1005, 1006, 1015 (local meanings only), plus 3000-4999 for
# libraries and applications. Anything else, 1016-2999 included, is a protocol error.
_REGISTERED_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))

_U16 = Struct("!H")
_U64 = Struct("!Q")


class FrameError(Exception):
    """The peer broke RFC 6455; the connection must be closed with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Received:
    """A complete text message (``OP_TEXT``, valid UTF-8) or one control frame."""

    opcode: int
    data: bytes


class FrameReader:
    """Incremental parser of client frames: feed bytes as they arrive, get whole messages."""

    __slots__ = ("_buffer", "_fragments", "_fragments_size", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""
        self._fragments: list[bytes] | None = None  # of a text message (binary is refused)
        self._fragments_size = 0

    def feed(self, data: bytes) -> list[Received]:
        if not self._buffer and self._fragments is None and len(data) >= 6 and data[0] == 0x81:
            # One whole masked text frame in one read, FIN and no reserved bits: the usual
            # OCPP message. Minimal length encodings only; anything else takes the full path.
            b1 = data[1]
            if b1 & 0x80:
                length = b1 & 0x7F
                if length < 126 and length + 6 == len(data):
                    return [_text(apply_mask(data[6:], data[2:6]))]
                if length == 126 and len(data) >= 8:
                    length = (data[2] << 8) | data[3]
                    if 126 <= length <= self.max_size and length + 8 == len(data):
                        return [_text(apply_mask(data[8:], data[4:8]))]
        buffer = self._buffer + data if self._buffer else data
        out: list[Received] = []
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            b0 = buffer[pos]
            b1 = buffer[pos + 1]
            if b0 & 0x70:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
            if not b1 & 0x80:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = _U16.unpack_from(buffer, head)[0]
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                length = _U64.unpack_from(buffer, head)[0]
                head += 8
            if length > self.max_size:
                raise FrameError(CLOSE_TOO_BIG, f"frame of {length} bytes exceeds the limit")
            if end - head < 4 + length:
                break
            mask = buffer[head : head + 4]
            payload = apply_mask(buffer[head + 4 : head + 4 + length], mask)
            pos = head + 4 + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload, out)
        self._buffer = buffer[pos:] if pos < end else b""
        return out

    def _frame(self, fin: int, opcode: int, payload: bytes, out: list[Received]) -> None:
        if opcode >= 0x8:
            if not fin or len(payload) > 125:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "fragmented or oversized control frame")
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            out.append(Received(opcode, payload))
            return
        if opcode == OP_CONT:
            if self._fragments is None:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "continuation without a first fragment")
            self._fragments_size += len(payload)
            if self._fragments_size > self.max_size:
                raise FrameError(CLOSE_TOO_BIG, "message exceeds the size limit")
            self._fragments.append(payload)
            if fin:
                data = b"".join(self._fragments)
                self._fragments = None
                out.append(_text(data))
            return
        if opcode == OP_BINARY:
            raise FrameError(CLOSE_UNSUPPORTED_DATA, "binary frames are not OCPP-J")
        if opcode != OP_TEXT:
            raise FrameError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if self._fragments is not None:
            raise FrameError(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
        if fin:
            out.append(_text(payload))
        else:
            self._fragments = [payload]
            self._fragments_size = len(payload)


def _text(payload: bytes) -> Received:
    """A whole text message, once its payload is known to be UTF-8 (checked as a whole, so a
    character split across fragments is fine)."""
    if not payload.isascii():
        try:
            payload.decode()
        except UnicodeDecodeError:
            raise FrameError(CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
    return Received(OP_TEXT, payload)


def encode(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    length = len(payload)
    if length < 126:
        return bytes((0x80 | opcode, length)) + payload
    if length < 1 << 16:
        return bytes((0x80 | opcode, 126)) + _U16.pack(length) + payload
    return bytes((0x80 | opcode, 127)) + _U64.pack(length) + payload


def encode_close(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to the 123 bytes that fit, at a character boundary
    so that it stays valid UTF-8."""
    cut = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return encode(OP_CLOSE, _U16.pack(code) + cut)


def sendable_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame (RFC 6455 §7.4)."""
    return code in _REGISTERED_CLOSE_CODES or 3000 <= code < 5000


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a peer's close frame; 1005 (no status) when empty.

    Raises ``FrameError`` when the frame itself breaks RFC 6455, so that the connection is
    failed instead of the bad code being echoed: 1007 for a reason that is not UTF-8
    (§5.5.1, §8.1), 1002 for a 1-byte payload or a code that may not be sent (§7.4).
    """
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = _U16.unpack_from(payload)[0]
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(CLOSE_INVALID_DATA, "close reason is not valid UTF-8") from None
    if not sendable_close_code(code):
        raise FrameError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    return code, reason
