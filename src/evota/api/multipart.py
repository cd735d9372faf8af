"""multipart/form-data for streamed uploads, sans I/O: a parser of body chunks into part
events, and a reader that pulls a request's chunks through it on demand.

Uploads are parsed here, chunk by chunk, rather than with FastAPI's ``UploadFile``/``Form``:
Starlette spools the whole file to a temp file before the handler runs and a store would
then copy it a second time. Here the body goes through python-multipart's streaming parser
straight to whoever consumes the file part (the firmware store, the charger-upload store),
so a file of any size costs one write and a bounded amount of memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Final

import python_multipart
from python_multipart.multipart import parse_options_header

__all__ = [
    "DRAIN_BYTES",
    "END",
    "Body",
    "Event",
    "MultipartError",
    "MultipartParser",
    "NotFormData",
    "PartEnd",
    "PartStart",
    "PartTooLarge",
    "form_boundary",
]

MAX_PARTS: Final = 256
MAX_HEADER_BYTES: Final = 16 * 1024  # the header block of one part
DRAIN_BYTES: Final = 64 * 1024 * 1024
"""After refusing mid-body, read (and drop) up to this much more of it: a server that closes
with unread request data resets the connection, and the client never sees the problem."""

_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^\s;"]{1,70}))', re.IGNORECASE)


class NotFormData(ValueError):
    """The request's Content-Type is not multipart/form-data (``no_boundary``: it is, but
    without a usable boundary; the message says so)."""

    def __init__(self, message: str = "", *, no_boundary: bool = False) -> None:
        super().__init__(message)
        self.no_boundary = no_boundary


class PartTooLarge(ValueError):
    """A part read whole was longer than its limit; ``size`` is how much was read."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def form_boundary(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data ``Content-Type``, or :class:`NotFormData`."""
    kind, _, params = (content_type or "").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise NotFormData()
    match = _BOUNDARY.search(";" + params)
    boundary = (match.group(1) or match.group(2)) if match else None
    if not boundary or not boundary.isascii():
        raise NotFormData(
            "multipart/form-data needs a boundary parameter of 1 to 70 ASCII characters",
            no_boundary=True,
        )
    return boundary.encode("ascii")


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data (the message says where)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None


class PartEnd:
    pass


END: Final = PartEnd()
Event = PartStart | bytes | PartEnd


class MultipartParser:
    """Turns body chunks into events: a part's start, its data in pieces, its end.

    A thin adapter over python-multipart's streaming parser (which buffers nothing of a
    part's data), adding the limits evota wants: parts per body, header bytes per part.
    """

    def __init__(self, boundary: bytes, *, max_parts: int = MAX_PARTS) -> None:
        self._events: list[Event] = []
        self._parts = 0
        self._max_parts = max_parts
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._ended = False
        callbacks: Any = {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": lambda: self._events.append(END),
            "on_header_field": lambda d, a, b: self._header(self._header_name, d[a:b]),
            "on_header_value": lambda d, a, b: self._header(self._header_value, d[a:b]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }
        self._parser = python_multipart.MultipartParser(
            boundary, callbacks, max_header_count=16, max_header_size=MAX_HEADER_BYTES
        )

    def feed(self, data: bytes) -> list[Event]:
        try:
            self._parser.write(data)
        except python_multipart.exceptions.MultipartParseError as exc:
            raise MultipartError(str(exc) or "malformed multipart body") from None
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        """The body has ended: complain unless it ended with the closing boundary."""
        if not self._ended:
            if self._parts == 0:
                raise MultipartError("the body holds no multipart parts (wrong boundary?)")
            raise MultipartError("the body ended before the closing boundary")

    def _begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise MultipartError(f"more than {self._max_parts} parts")
        self._headers = {}
        self._header_bytes = 0

    def _data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._events.append(bytes(data[start:end]))

    def _header(self, into: bytearray, chunk: bytes) -> None:
        self._header_bytes += len(chunk)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise MultipartError("a part's headers are too long")
        into += chunk

    def _header_end(self) -> None:
        name = self._header_name.decode("latin-1").strip().lower()
        self._headers[name] = _text(bytes(self._header_value)).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        self._events.append(_part_start(self._headers))

    def _end(self) -> None:
        self._ended = True


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _part_start(headers: dict[str, str]) -> PartStart:
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise MultipartError("a part has no Content-Disposition header")
    kind, raw_params = parse_options_header(disposition.encode("utf-8"))
    if kind.lower() != b"form-data":
        raise MultipartError("a part is not form-data")
    params = {k.decode("latin-1").lower(): _text(v) for k, v in raw_params.items()}
    part_name = params.get("name")
    if not part_name:
        raise MultipartError("a part has no name")
    return PartStart(part_name, params.get("filename"))  # the file name is only a label


class Body:
    """Pulls request chunks through the parser on demand, one event at a time."""

    def __init__(self, stream: AsyncIterator[bytes], parser: MultipartParser) -> None:
        self._stream = stream
        self._parser = parser
        self._events: deque[Event] = deque()
        self._ended = False

    async def next(self) -> Event | None:
        while not self._events:
            if self._ended:
                return None
            try:
                chunk = await anext(self._stream)
            except StopAsyncIteration:
                self._ended = True
                self._parser.close()
                continue
            if chunk:
                self._events.extend(self._parser.feed(chunk))
        return self._events.popleft()

    async def file_data(self) -> AsyncIterator[bytes]:
        """The current part's data as it arrives (for a store's ``put``)."""
        while True:
            event = await self.next()
            if isinstance(event, bytes):
                yield event
            elif event is END:
                return
            else:  # pragma: no cover - the parser always ends a part before the body ends
                raise MultipartError("the file part did not end")

    async def read_part(self, limit: int) -> bytes:
        """The rest of the current part, or :class:`PartTooLarge` once it passes ``limit``."""
        data = bytearray()
        while True:
            event = await self.next()
            if isinstance(event, bytes):
                data += event
                if len(data) > limit:
                    raise PartTooLarge(len(data))
            elif event is END:
                return bytes(data)
            else:  # pragma: no cover - the parser always ends a part before the body ends
                raise MultipartError("a part did not end")

    async def drain(self) -> None:
        """Read what the client still sends (bounded), so it can read our answer."""
        if self._ended:
            return
        seen = 0
        with contextlib.suppress(Exception):
            async for chunk in self._stream:
                seen += len(chunk)
                if seen > DRAIN_BYTES:
                    return
        self._ended = True
