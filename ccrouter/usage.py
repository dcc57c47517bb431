# -*- test-case-name: tests.test_usage -*-
"""
Token usage, read from the body of a C{/v1/messages} response exactly as it
is written to the client, without changing (or holding back) a byte.

A streamed answer is an Anthropic SSE stream: C{message_start} carries the
input and cache counts (and a placeholder output count), and every
C{message_delta} carries cumulative totals that overwrite the fields it has,
plus the stop reason.  Translated OpenAI streams are read the same way, as
they are Anthropic streams by the time they are written.  A non-streamed
answer is one JSON message with a top-level C{usage} and C{stop_reason}.

This runs on every relayed event, so events other than C{message_start} and
C{message_delta} are skipped with a few C{bytes.find} calls per chunk rather
than parsed line by line.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from attrs import frozen

if TYPE_CHECKING:
    from zlib import _Decompress

#: How much of one SSE event is kept; a longer event is ignored.
MAX_EVENT_BYTES = 1024 * 1024
#: The largest token count believed; anything larger is ignored.  Far beyond
#: any context window, and small enough that summing many stays exact.
MAX_TOKENS = 10**9
#: The longest stop reason believed (Anthropic's longest is 30 characters).
MAX_STOP_REASON = 64

#: Decompressed bytes produced per C{zlib} call, so that a small compressed
#: chunk never turns into a large piece of memory at once.
_INFLATE_STEP = 64 * 1024

_SSE = "sse"
_JSON = "json"

_IDENTITY = frozenset({b"", b"identity"})
_GZIP = frozenset({b"gzip", b"x-gzip"})

#: The SSE C{usage} fields and the L{Usage} attributes they fill.
_FIELDS = (
    ("input_tokens", "inputTokens"),
    ("output_tokens", "outputTokens"),
    ("cache_read_input_tokens", "cacheReadTokens"),
    ("cache_creation_input_tokens", "cacheWriteTokens"),
)

#: What every interesting event name or C{type} contains.
_MARK = b"message_"
_MARK_END = len(_MARK)
#: What follows L{_MARK} in the two events that carry usage.
_KINDS = (b"start", b"delta")
_KIND_LENGTH = 5


@frozen
class Usage:
    """
    The token counts and stop reason of one response.  Each is L{None} when
    the response did not say (or said something unbelievable).

    @ivar cacheReadTokens: C{cache_read_input_tokens}.
    @ivar cacheWriteTokens: C{cache_creation_input_tokens}.
    """

    inputTokens: int | None = None
    outputTokens: int | None = None
    cacheReadTokens: int | None = None
    cacheWriteTokens: int | None = None
    stopReason: str | None = None


def _tokens(value: object) -> int | None:
    # bool is an int, and a float may be 1e300: neither is a count.
    if type(value) is int and 0 <= value <= MAX_TOKENS:
        return value
    return None


def _stopReason(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_STOP_REASON:
        return value
    return None


def _loads(data: bytes | bytearray) -> Any:
    """
    @return: The JSON value of C{data}, or L{None} if it is not JSON.
    """
    try:
        return json.loads(data)
    # Deep nesting raises RecursionError; a 5000-digit number, ValueError.
    except (ValueError, RecursionError):
        return None


def _mediaType(contentType: bytes | None) -> bytes:
    if contentType is None:
        return b""
    return contentType.split(b";", 1)[0].strip().lower()


class UsageReader:
    """
    Reads the usage of one response body, fed in the pieces it is written
    in.  Its result does not depend on where the pieces were cut.

    Bodies it cannot read (another content type, a content coding other
    than gzip, broken gzip, JSON over the limit) give an empty L{Usage}.
    """

    def __init__(
        self,
        contentType: bytes | None,
        contentEncoding: bytes | None,
        limit: int = 8 * 1024 * 1024,
        *,
        eventLimit: int = MAX_EVENT_BYTES,
    ) -> None:
        """
        @param contentType: The response's C{Content-Type}, if any.
        @param contentEncoding: The response's C{Content-Encoding}, if any.
        @param limit: The most bytes of a JSON body kept, and the most bytes
            a gzip body is inflated to (the rest is not read).
        @param eventLimit: The most bytes of one SSE event kept.
        """
        self._limit = limit
        self._eventLimit = eventLimit
        # Whether feed() reads anything more: false for bodies it cannot
        # read, and once it has read all it will.
        self._reading = True
        # Whether what was read no longer counts.
        self._failed = False
        mediaType = _mediaType(contentType)
        # The function, not a bound method: one would hold this reader in a
        # reference cycle, left for the garbage collector.
        self._consume: Callable[[UsageReader, bytes], None] = UsageReader._feedJSON
        if mediaType == b"text/event-stream":
            self._kind = _SSE
            self._consume = UsageReader._feedSSE
        elif mediaType == b"application/json":
            self._kind = _JSON
        else:
            self._kind = ""
            self._reading = False
        coding = (contentEncoding or b"").strip().lower()
        self._inflater: _Decompress | None = None
        self._inflated = 0
        if coding in _GZIP:
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding not in _IDENTITY:
            self._reading = False
            self._failed = True

        # SSE: the bytes of the event in progress, line ends made LF.
        self._event = bytearray()
        # SSE: a CR ended the last piece, so an LF starting the next is part
        # of the same line end.
        self._skipLF = False
        # SSE: the event in progress outgrew eventLimit and is being skipped
        # to its end; _lastLF says whether the last byte seen was an LF.
        self._skipping = False
        self._lastLF = False
        self._fields: dict[str, int] = {}
        self._stop: str | None = None

        # JSON: the body so far, and its parse.
        self._body = bytearray()
        self._parsed: Usage | None = None

    def feed(self, data: bytes) -> None:
        """
        Read the next bytes of the body.  Never raises.
        """
        if not self._reading:
            return
        try:
            self._read(data)
        # This runs inside the write of a relayed response: a bug here must
        # cost the usage figures, never the response.
        except Exception:  # noqa: BLE001
            self._giveUp()

    def result(self) -> Usage:
        """
        The usage read so far: final once the whole body was fed.
        """
        if self._failed:
            return Usage()
        if self._kind == _JSON:
            if self._parsed is None:
                self._parsed = self._parseJSON()
            return self._parsed
        fields = self._fields
        return Usage(
            inputTokens=fields.get("inputTokens"),
            outputTokens=fields.get("outputTokens"),
            cacheReadTokens=fields.get("cacheReadTokens"),
            cacheWriteTokens=fields.get("cacheWriteTokens"),
            stopReason=self._stop,
        )

    def _read(self, data: bytes) -> None:
        """
        L{feed}, without its safety net (which the tests do without, so that
        a bug shows).
        """
        if not self._reading or not data:
            return
        if self._inflater is None:
            self._consume(self, data)
        else:
            self._inflate(self._inflater, data)

    def _giveUp(self) -> None:
        self._reading = False
        self._failed = True
        self._event = bytearray()
        self._body = bytearray()

    def _inflate(self, inflater: _Decompress, data: bytes) -> None:
        while True:
            room = self._limit - self._inflated
            # One byte more than there is room for tells an overflow apart
            # from a body that ends exactly at the limit.
            wanted = min(_INFLATE_STEP, room + 1)
            try:
                out = inflater.decompress(data, wanted)
            except zlib.error:
                # Where zlib notices depends on how the body was cut, so
                # nothing read from a broken body counts.
                self._giveUp()
                return
            data = inflater.unconsumed_tail
            if len(out) > room:
                self._consume(self, out[:room])
                self._overLimit()
                return
            self._inflated += len(out)
            if out:
                self._consume(self, out)
            if inflater.eof:
                # Anything after the gzip member is not part of the body.
                self._reading = False
                return
            if len(out) < wanted:
                # zlib stopped for want of input, not of room.
                return

    def _overLimit(self) -> None:
        self._reading = False
        if self._kind == _JSON:
            self._giveUp()

    def _feedJSON(self, data: bytes) -> None:
        self._parsed = None
        if len(self._body) + len(data) > self._limit:
            self._giveUp()
            return
        self._body += data

    def _parseJSON(self) -> Usage:
        body = _loads(self._body)
        if not isinstance(body, dict) or body.get("type") != "message":
            return Usage()
        usage = body.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return Usage(
            inputTokens=_tokens(usage.get("input_tokens")),
            outputTokens=_tokens(usage.get("output_tokens")),
            cacheReadTokens=_tokens(usage.get("cache_read_input_tokens")),
            cacheWriteTokens=_tokens(usage.get("cache_creation_input_tokens")),
            stopReason=_stopReason(body.get("stop_reason")),
        )

    def _feedSSE(self, data: bytes) -> None:
        # Line ends become LF, so that an event ends at the first b"\n\n".
        if self._skipLF:
            self._skipLF = False
            if data[:1] == b"\n":
                data = data[1:]
                if not data:
                    return
        if b"\r" in data:
            self._skipLF = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._skipping:
            if self._lastLF and data[:1] == b"\n":
                end = 1
            else:
                found = data.find(b"\n\n")
                if found < 0:
                    self._lastLF = data[-1:] == b"\n"
                    return
                end = found + 2
            self._skipping = False
            data = data[end:]
        event = self._event
        if event:
            scanFrom = len(event) - 1
            event += data
            text: bytes | bytearray = event
        else:
            # Blank lines between events dispatch nothing.
            text = data.lstrip(b"\n")
            scanFrom = 0
        end = text.rfind(b"\n\n", scanFrom)
        if end >= 0:
            self._events(text, end)
            # What follows the last blank line (never an LF) is kept.
            if text is event:
                del event[: end + 2]
            elif end + 2 < len(text):
                event += text[end + 2 :]
        elif text is not event:
            event += text
        if len(event) > self._eventLimit + 1:
            # Even with an LF of its end kept, it is longer than allowed.
            self._skipping = True
            self._lastLF = event[-1:] == b"\n"
            event.clear()

    def _events(self, text: bytes | bytearray, stop: int) -> None:
        """
        Read the events of C{text[:stop]} (whole events, ended by blank
        lines) that could be C{message_start} or C{message_delta}.
        """
        position = 0
        while True:
            mark = text.find(_MARK, position, stop)
            if mark < 0:
                return
            kind = text[mark + _MARK_END : mark + _MARK_END + _KIND_LENGTH]
            if kind not in _KINDS:
                position = mark + _MARK_END
                continue
            start = text.rfind(b"\n\n", 0, mark) + 2
            if start == 1:
                start = 0
            end = text.find(b"\n\n", mark, stop)
            if end < 0:
                end = stop
            position = end
            while end > start and text[end - 1] == 0x0A:
                end -= 1
            if end - start <= self._eventLimit:
                self._readEvent(text[start:end])

    def _readEvent(self, event: bytes | bytearray) -> None:
        """
        Read one whole event (its lines, ended by LF): dispatched on its
        C{event:} name, or on its JSON C{type} if it has no name.
        """
        name: bytes | bytearray | None = None
        data: list[bytes | bytearray] = []
        for line in event.split(b"\n"):
            if not line or line[0] == 0x3A:
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value
        if not data:
            return
        payload = _loads(b"\n".join(data))
        if not isinstance(payload, dict):
            return
        if not name:
            kind = payload.get("type")
            if not isinstance(kind, str):
                return
            name = kind.encode("utf-8", "replace")
        if name == b"message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._usage(message.get("usage"))
        elif name == b"message_delta":
            self._usage(payload.get("usage"))
            delta = payload.get("delta")
            if isinstance(delta, dict):
                stopReason = _stopReason(delta.get("stop_reason"))
                if stopReason is not None:
                    self._stop = stopReason

    def _usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        for key, attribute in _FIELDS:
            count = _tokens(usage.get(key))
            if count is not None:
                self._fields[attribute] = count
