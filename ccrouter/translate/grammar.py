# -*- test-case-name: tests.test_translate_stream -*-
"""
A checker for the Anthropic streaming event grammar (C{protocol.md}
section 3.2) and the invariants the SDK accumulators and Claude Code add
(section 3.8), for tests and for checking what a translation produced.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_STOP_REASONS = frozenset(
    {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
    }
)
#: The delta types each block type accepts.
_DELTAS = {
    "text": frozenset({"text_delta", "citations_delta"}),
    "thinking": frozenset({"thinking_delta", "signature_delta"}),
    "tool_use": frozenset({"input_json_delta"}),
    "server_tool_use": frozenset({"input_json_delta"}),
}


class GrammarError(Exception):
    """
    A stream broke the Anthropic event grammar.
    """


class Event(NamedTuple):
    """
    One server-sent event: its C{event:} name and its parsed C{data:}.
    """

    name: str
    data: dict[str, object]


def parseEvents(stream: bytes) -> list[Event]:
    """
    Parse a whole Anthropic SSE stream strictly: every event must have one
    C{event:} line and JSON object data whose C{type} repeats the name, and
    the stream must end between events.  Comments are skipped.

    @param stream: The bytes of the stream.
    @return: Its events, in order.
    @raise GrammarError: For data-only events (which the SDKs drop),
        C{[DONE]}, malformed data or a trailing partial event.
    """
    text = stream.decode("utf-8")
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    if normalised and not normalised.endswith("\n\n"):
        raise GrammarError(f"stream ends inside an event: {normalised[-80:]!r}")
    return [
        _parseEvent(block)
        for block in normalised.split("\n\n")
        if block.strip("\n") and not _onlyComments(block)
    ]


def _onlyComments(block: str) -> bool:
    return all(line.startswith(":") for line in block.split("\n") if line)


def _parseEvent(block: str) -> Event:
    names: list[str] = []
    data: list[str] = []
    for line in block.strip("\n").split("\n"):
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            names.append(value)
        elif field == "data":
            data.append(value)
    if len(names) != 1 or not data:
        raise GrammarError(
            f"event without exactly one name, or without data: {block!r}"
        )
    try:
        payload = json.loads("\n".join(data))
    except ValueError as e:
        raise GrammarError(f"data is not JSON: {block!r}") from e
    if not isinstance(payload, dict) or payload.get("type") != names[0]:
        raise GrammarError(f"data type does not repeat the event name: {block!r}")
    return Event(names[0], payload)


class _Block:
    def __init__(self, index: int, kind: str) -> None:
        self.index = index
        self.kind = kind
        self.text: list[str] = []
        self.signed = False


class GrammarChecker:
    """
    Checks events one at a time against the grammar::

        stream := message_start block* message_delta+ message_stop
        block  := content_block_start content_block_delta* content_block_stop

    with C{ping} allowed anywhere after C{message_start} and C{error}
    allowed anywhere, as the last event.  Beyond the grammar it insists on
    what translated streams must do: dense block indexes in start order,
    no interleaved blocks, deltas of the open block's type, signed thinking
    blocks, non-empty text blocks, tool input streamed (never pre-filled)
    and whole JSON, Anthropic-valid tool ids.
    """

    def __init__(self) -> None:
        self.started = False
        self.ended = False
        self._nextIndex = 0
        self._open: _Block | None = None
        self._sawMessageDelta = False

    def check(self, event: Event) -> None:
        """
        @param event: The next event.
        @raise GrammarError: If it may not come here.
        """
        if self.ended:
            raise GrammarError(f"{event.name} after the end of the stream")
        if event.name == "error":
            self._error(event.data)
            return
        if not self.started and event.name != "message_start":
            raise GrammarError(f"{event.name} before message_start")
        handler = {
            "message_start": self._messageStart,
            "content_block_start": self._blockStart,
            "content_block_delta": self._blockDelta,
            "content_block_stop": self._blockStop,
            "message_delta": self._messageDelta,
            "message_stop": self._messageStop,
        }.get(event.name)
        if handler is not None:
            handler(event.data)

    def checkEnded(self) -> None:
        """
        @raise GrammarError: If the stream has not ended with C{message_stop}
            or C{error}.
        """
        if not self.ended:
            raise GrammarError("stream ended without message_stop or error")

    def _error(self, data: dict[str, object]) -> None:
        error = data.get("error")
        if not (
            isinstance(error, dict)
            and isinstance(error.get("type"), str)
            and isinstance(error.get("message"), str)
        ):
            raise GrammarError(f"malformed error event: {data}")
        self.ended = True

    def _messageStart(self, data: dict[str, object]) -> None:
        if self.started:
            raise GrammarError("a second message_start")
        message = data.get("message")
        if not isinstance(message, dict) or message.get("content") != []:
            raise GrammarError(f"malformed message_start: {data}")
        usage = message.get("usage")
        if not isinstance(usage, dict) or not isinstance(
            usage.get("input_tokens"), int
        ):
            raise GrammarError(f"message_start without usage.input_tokens: {data}")
        self.started = True

    def _blockStart(self, data: dict[str, object]) -> None:
        if self._open is not None or self._sawMessageDelta:
            raise GrammarError(f"content_block_start while not between blocks: {data}")
        if data.get("index") != self._nextIndex:
            raise GrammarError(f"expected index {self._nextIndex}: {data}")
        block = data.get("content_block")
        if not isinstance(block, dict) or block.get("type") not in _DELTAS:
            raise GrammarError(f"unknown content block: {data}")
        kind = str(block["type"])
        if kind == "tool_use":
            _checkToolStart(block)
        self._open = _Block(self._nextIndex, kind)
        self._nextIndex += 1

    def _blockDelta(self, data: dict[str, object]) -> None:
        block = self._openAt(data)
        delta = data.get("delta")
        if not isinstance(delta, dict) or delta.get("type") not in _DELTAS[block.kind]:
            raise GrammarError(f"delta does not fit a {block.kind} block: {data}")
        if block.signed:
            raise GrammarError(f"delta after signature_delta: {data}")
        for field in ("text", "thinking", "partial_json"):
            value = delta.get(field)
            if isinstance(value, str):
                block.text.append(value)
        block.signed = delta["type"] == "signature_delta"

    def _blockStop(self, data: dict[str, object]) -> None:
        block = self._openAt(data)
        text = "".join(block.text)
        if block.kind == "thinking" and not block.signed:
            raise GrammarError(f"thinking block closed without a signature: {data}")
        if block.kind == "text" and not text:
            raise GrammarError(f"empty text block: {data}")
        if block.kind == "tool_use":
            try:
                arguments = json.loads(text)
            except ValueError as e:
                raise GrammarError(f"tool input is not JSON: {text!r}") from e
            if not isinstance(arguments, dict):
                raise GrammarError(f"tool input is not an object: {text!r}")
        self._open = None

    def _messageDelta(self, data: dict[str, object]) -> None:
        if self._open is not None:
            raise GrammarError(f"message_delta inside block {self._open.index}")
        delta, usage = data.get("delta"), data.get("usage")
        if not isinstance(delta, dict) or delta.get("stop_reason") not in _STOP_REASONS:
            raise GrammarError(f"message_delta without a stop_reason: {data}")
        if not isinstance(usage, dict) or not isinstance(
            usage.get("output_tokens"), int
        ):
            raise GrammarError(f"message_delta without usage.output_tokens: {data}")
        self._sawMessageDelta = True

    def _messageStop(self, data: dict[str, object]) -> None:
        if not self._sawMessageDelta:
            raise GrammarError("message_stop without message_delta")
        self.ended = True

    def _openAt(self, data: dict[str, object]) -> _Block:
        if self._open is None or data.get("index") != self._open.index:
            raise GrammarError(f"event for a block that is not open: {data}")
        return self._open


def _checkToolStart(block: dict[str, object]) -> None:
    blockId, name = block.get("id"), block.get("name")
    if not isinstance(blockId, str) or not _TOOL_ID.match(blockId):
        raise GrammarError(f"tool_use id Anthropic would reject: {block}")
    if not isinstance(name, str) or not name:
        raise GrammarError(f"tool_use without a name: {block}")
    if block.get("input") != {}:
        raise GrammarError(f"tool_use input must be streamed, not pre-filled: {block}")


def checkStream(stream: bytes, complete: bool = True) -> list[Event]:
    """
    Parse a stream and check its grammar.

    @param stream: The bytes of an Anthropic SSE stream.
    @param complete: Whether the stream must have ended (with
        C{message_stop} or C{error}); otherwise a prefix is accepted.
    @return: Its events.
    @raise GrammarError: If it breaks the grammar.
    """
    events = parseEvents(stream)
    checker = GrammarChecker()
    for event in events:
        checker.check(event)
    if complete:
        checker.checkEnded()
    return events
