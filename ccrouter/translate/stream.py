# -*- test-case-name: tests.test_translate_stream -*-
"""
An OpenAI Chat Completions stream, translated into an Anthropic Messages
stream: a pure state machine (no I/O, no reactor) fed with the upstream's
raw body bytes, in whatever pieces they arrive, that returns the Anthropic
SSE bytes to send on.

The specification is C{protocol.md} section 7.7; the pitfalls it avoids are
listed in section 7.9 and named in the tests.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from typing import Protocol

from ccrouter.translate.response import FAKE_SIGNATURE_PREFIX, anthropicUsage

#: OpenAI C{finish_reason} to Anthropic C{stop_reason}; others give end_turn.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: Anthropic's error types, passed through when an upstream already uses one.
_ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "overloaded_error",
        "api_error",
    }
)

#: OpenAI error types and codes with an obvious Anthropic equivalent.
_OPENAI_ERROR_TYPES = {
    "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
    "server_error": "api_error",
    "invalid_api_key": "authentication_error",
    "invalid_value": "invalid_request_error",
}

#: HTTP statuses (which some upstreams put in C{error.code}) to error types.
_STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "overloaded_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_CONTEXT_LENGTH = re.compile(
    r"context_length_exceeded|context length|context window|prompt is too long",
    re.IGNORECASE,
)
_INVALID_ID_CHARACTERS = re.compile(r"[^a-zA-Z0-9_-]")

#: A line longer than this is not an SSE stream worth waiting for.
MAX_LINE = 16 * 1024 * 1024
#: How much of a body with no SSE event in it is kept, to read an error from.
_MAX_STRAY_BODY = 64 * 1024

_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'

_TEXT = "text"
_THINKING = "thinking"
_TOOL = "tool_use"


class ToolNameMap(Protocol):
    """
    Maps tool names as the upstream knows them back to Claude Code's names.
    """

    def toOriginal(self, name: str) -> str:
        """
        @param name: A tool name as sent to (and returned by) the upstream.
        @return: The name Claude Code gave the tool.
        """


class _SSEParser:
    """
    Splits a byte stream into SSE lines (ended by LF, CR LF or CR, in pieces
    cut anywhere) and events, and hands each on.  Lines are kept as bytes
    until complete, so a UTF-8 sequence cut between pieces is whole again
    by the time it is decoded.

    @ivar partial: The bytes of an unfinished line.
    """

    def __init__(self) -> None:
        # What feed or flush returns: for each event that has data, its name
        # (C{""} if none) and its data lines joined with LF; None for each
        # comment line.  Returned rather than handed to callbacks, which
        # would tie parser and translator in a reference cycle.
        self._found: list[tuple[str, bytes] | None] = []
        self.partial = b""
        self._skipLF = False
        self._name = ""
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[str, bytes] | None]:
        """
        @return: The events and comments C{data} completes, in order: an
            event as its name and data, a comment as L{None}.
        """
        if not data:
            return []
        if self._skipLF:
            self._skipLF = False
            data = data[1:] if data[:1] == b"\n" else data
        buffered = self.partial + data if self.partial else data
        end = max(buffered.rfind(b"\n"), buffered.rfind(b"\r"))
        if end < 0:
            self.partial = buffered
            return []
        last = len(buffered) - 1
        self._skipLF = end == last and buffered[end] == ord("\r")
        self.partial = buffered[end + 1 :]
        for line in buffered[: end + 1].splitlines():
            self._line(line)
        return self._take()

    def flush(self) -> list[tuple[str, bytes] | None]:
        """
        The stream ended: finish the last line and the last event even
        without their line endings.

        @return: As L{feed}.
        """
        if self.partial:
            partial, self.partial = self.partial, b""
            self._line(partial)
        self._line(b"")
        return self._take()

    def _take(self) -> list[tuple[str, bytes] | None]:
        found, self._found = self._found, []
        return found

    def _line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
        elif line[0] == ord(":"):
            self._found.append(None)
        else:
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                self._data.append(value)
            elif field == b"event":
                self._name = value.decode("utf-8", "replace")

    def _dispatch(self) -> None:
        name, data = self._name, self._data
        self._name, self._data = "", []
        if data:
            self._found.append((name, b"\n".join(data)))


class _Tool:
    """
    One upstream tool call on its way to becoming a C{tool_use} block.

    @ivar upstreamId: The call's id as the upstream sent it, if it did.
    @ivar blockId: The id the C{tool_use} block carries.
    @ivar name: Claude Code's name for the tool, once known.
    @ivar arguments: The argument fragments received so far.
    @ivar blockIndex: The block's index once started; L{None} while waiting.
    @ivar closed: Whether the block has been stopped.
    """

    __slots__ = (
        "arguments",
        "blockId",
        "blockIndex",
        "closed",
        "name",
        "pending",
        "upstreamId",
    )

    def __init__(self, upstreamId: str | None, blockId: str) -> None:
        self.upstreamId = upstreamId
        self.blockId = blockId
        self.name: str | None = None
        self.arguments: list[str] = []
        self.pending: list[str] = []
        self.blockIndex: int | None = None
        self.closed = False

    def argumentsComplete(self) -> bool:
        """
        @return: Whether the arguments so far are a whole JSON object, the
            sign that a call whose fragments cannot be told apart from the
            next one's has ended.
        """
        text = "".join(self.arguments)
        if not text.rstrip().endswith("}"):
            return False
        try:
            return isinstance(json.loads(text), dict)
        except ValueError:
            return False


def _event(name: str, payload: dict[str, object]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


def _delta(index: int, kind: str, field: str, value: str) -> bytes:
    return (
        'event: content_block_delta\ndata: {"type":"content_block_delta",'
        f'"index":{index},"delta":{{"type":"{kind}","{field}":{json.dumps(value)}}}}}'
        "\n\n"
    ).encode()


def mapStreamError(error: object) -> tuple[str, str]:
    """
    An upstream's in-stream error object, as an Anthropic error type and
    message.  Context-length errors get the C{prompt is too long} wording
    Claude Code recognises and compacts on.

    @param error: The value of the chunk's C{error} key.
    @return: C{(type, message)}.
    """
    if not isinstance(error, dict):
        return "api_error", str(error) if error else "upstream error"
    message = error.get("message")
    message = message if isinstance(message, str) else json.dumps(error)
    kind, code = error.get("type"), error.get("code")
    if _CONTEXT_LENGTH.search(f"{kind} {code} {message}"):
        if not message.startswith("prompt is too long"):
            message = "prompt is too long: " + message
        return "invalid_request_error", message
    for value in (kind, code):
        if value in _ANTHROPIC_ERROR_TYPES:
            return str(value), message
        if isinstance(value, str) and value in _OPENAI_ERROR_TYPES:
            return _OPENAI_ERROR_TYPES[value], message
    for value in (code, error.get("status")):
        status = (
            int(value)
            if isinstance(value, str) and value.isascii() and value.isdigit()
            else value
        )
        if isinstance(status, int) and status in _STATUS_ERROR_TYPES:
            return _STATUS_ERROR_TYPES[status], message
    return "api_error", message


class StreamTranslator:
    """
    Translates one streamed OpenAI chat completion into one Anthropic
    message stream.

    Every call returns whole Anthropic events (or C{b""}), so the caller may
    write anything of its own between them.  Once L{ended}, every call
    returns C{b""}.
    """

    def __init__(
        self,
        model: str,
        toolNames: ToolNameMap,
        messageId: str,
        reasoningFields: tuple[str, ...] = ("reasoning_content", "reasoning"),
        inputTokens: int = 0,
    ) -> None:
        """
        @param model: The model name to report in C{message_start} (the one
            Claude Code asked for).
        @param toolNames: Maps the upstream's tool names back.
        @param messageId: The C{msg_...} id of the message; generated tool
            ids and thinking signatures derive from it.
        @param reasoningFields: The C{delta} fields that carry reasoning
            text, in order of preference (the first non-empty one is used).
        @param inputTokens: The estimated input token count reported in
            C{message_start}, until the upstream reports the real one.
        """
        self._model = model
        self._toolNames = toolNames
        self._messageId = messageId
        self._reasoningFields = reasoningFields
        self._inputTokens = inputTokens
        self._parser = _SSEParser()
        self._out: list[bytes] = []
        self._started = False
        self._complete = False
        self._ended = False
        self._sawEvent = False
        self._strayBody = b""
        self._nextIndex = 0
        self._openKind: str | None = None
        self._openIndex = -1
        self._openTool: _Tool | None = None
        self._thinkingHash = hashlib.sha256()
        self._tools: list[_Tool] = []
        self._toolsByIndex: dict[int, _Tool] = {}
        self._toolsById: dict[str, _Tool] = {}
        self._waiting: deque[_Tool] = deque()
        self._stopReason: str | None = None
        self._usage: dict[str, object] | None = None

    @property
    def started(self) -> bool:
        """
        Whether C{message_start} has been emitted.
        """
        return self._started

    @property
    def complete(self) -> bool:
        """
        Whether C{message_stop} has been emitted: the message is whole.
        """
        return self._complete

    @property
    def ended(self) -> bool:
        """
        Whether the stream is over, by C{message_stop} or by an C{error}
        event: the response should end now, and the upstream be dropped.
        """
        return self._ended

    def feed(self, data: bytes) -> bytes:
        """
        @param data: The next bytes of the upstream's SSE body, cut anywhere.
        @return: The Anthropic events they complete, possibly C{b""}.
        """
        if self._ended:
            return b""
        if not self._sawEvent and len(self._strayBody) < _MAX_STRAY_BODY:
            self._strayBody += data
        self._handle(self._parser.feed(data))
        if len(self._parser.partial) > MAX_LINE and not self._ended:
            self._fail("api_error", "upstream sent an overlong stream line")
        return self._take()

    def finish(self) -> bytes:
        """
        The upstream body ended cleanly.  A stream that reported a
        C{finish_reason} (or C{[DONE]}) ends with C{message_delta} and
        C{message_stop}; one that did not was cut short, and ends with an
        C{error} event rather than a truncated message that looks whole.

        @return: The closing events.
        """
        if self._ended:
            return b""
        self._handle(self._parser.flush())
        if not self._ended:
            if self._stopReason is not None:
                self._end()
            elif self._sawEvent or not self._strayError():
                self._fail("api_error", "upstream stream ended without finish_reason")
        return self._take()

    def fail(self, errorType: str, message: str) -> bytes:
        """
        The upstream broke mid-stream.

        @param errorType: An Anthropic error type, such as C{api_error}.
        @param message: What went wrong.
        @return: An C{error} event, after C{message_start} if none was sent.
        """
        if not self._ended:
            self._fail(errorType, message)
        return self._take()

    def ping(self) -> bytes:
        """
        @return: A C{ping} event to keep the client's idle watchdog fed,
            after C{message_start} if none was sent yet; C{b""} once ended.
        """
        if not self._ended:
            self._emitPing()
        return self._take()

    def _take(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        usage = {
            "input_tokens": self._inputTokens,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        message: dict[str, object] = {
            "id": self._messageId,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        self._out.append(
            _event("message_start", {"type": "message_start", "message": message})
        )

    def _emitPing(self) -> None:
        self._start()
        self._out.append(_PING)

    def _fail(self, errorType: str, message: str) -> None:
        self._start()
        error = {"type": errorType, "message": message}
        self._out.append(_event("error", {"type": "error", "error": error}))
        self._ended = True

    def _strayError(self) -> bool:
        """
        A body with no SSE event in it may be a plain JSON error.

        @return: Whether it was one, now emitted as an C{error} event.
        """
        try:
            body = json.loads(self._strayBody)
        except ValueError:
            return False
        if not isinstance(body, dict) or "error" not in body:
            return False
        self._fail(*mapStreamError(body["error"]))
        return True

    def _handle(self, found: list[tuple[str, bytes] | None]) -> None:
        for item in found:
            if item is None:
                self._onComment()
            else:
                self._onEvent(*item)

    def _onComment(self) -> None:
        if not self._ended:
            self._emitPing()

    def _onEvent(self, name: str, data: bytes) -> None:
        if self._ended:
            return
        self._sawEvent = True
        if name == "ping":
            self._emitPing()
            return
        if name not in ("", "message", "error"):
            return
        self._start()
        if data.strip() == b"[DONE]":
            self._end()
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            self._fail("api_error", "upstream sent a malformed stream chunk")
        elif name == "error" or "error" in chunk:
            self._fail(*mapStreamError(chunk.get("error", chunk)))
        else:
            self._onChunk(chunk)

    def _onChunk(self, chunk: dict[str, object]) -> None:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._onChoice(choice)

    def _onChoice(self, choice: dict[str, object]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._onDelta(delta)
        if self._ended:
            return
        finishReason = choice.get("finish_reason")
        if isinstance(finishReason, str) and finishReason:
            self._onFinish(finishReason)

    def _onDelta(self, delta: dict[str, object]) -> None:
        for field in self._reasoningFields:
            reasoning = delta.get(field)
            if isinstance(reasoning, str) and reasoning:
                self._addThinking(reasoning)
                break
        for field in ("content", "refusal"):
            text = delta.get(field)
            if isinstance(text, str) and text:
                self._addText(text)
        toolCalls = delta.get("tool_calls")
        if isinstance(toolCalls, list):
            for call in toolCalls:
                if isinstance(call, dict) and not self._ended:
                    self._addToolFragment(call)
        functionCall = delta.get("function_call")
        if isinstance(functionCall, dict) and not self._ended:
            self._addToolFragment({"function": functionCall})

    def _onFinish(self, finishReason: str) -> None:
        if finishReason == "error":
            self._fail("api_error", "upstream reported an error")
            return
        self._stopReason = _STOP_REASONS.get(finishReason, "end_turn")
        self._flushTools()
        self._closeOpen()

    def _end(self) -> None:
        """
        Close everything and end the message.
        """
        self._flushTools()
        self._closeOpen()
        stopReason = self._stopReason or "end_turn"
        if self._tools and stopReason == "end_turn":
            stopReason = "tool_use"
        usage: dict[str, int] = {"output_tokens": 0}
        if self._usage is not None:
            usage = anthropicUsage(self._usage)
        delta = {"stop_reason": stopReason, "stop_sequence": None}
        payload: dict[str, object] = {
            "type": "message_delta",
            "delta": delta,
            "usage": usage,
        }
        self._out.append(_event("message_delta", payload))
        self._out.append(_MESSAGE_STOP)
        self._complete = self._ended = True

    def _openBlock(self, kind: str, block: dict[str, object]) -> int:
        self._closeOpen()
        index = self._nextIndex
        self._nextIndex += 1
        self._openKind, self._openIndex = kind, index
        payload = {
            "type": "content_block_start",
            "index": index,
            "content_block": block,
        }
        self._out.append(_event("content_block_start", payload))
        return index

    def _closeOpen(self) -> None:
        kind, index = self._openKind, self._openIndex
        if kind is None:
            return
        if kind == _THINKING:
            signature = FAKE_SIGNATURE_PREFIX + self._thinkingHash.hexdigest()
            self._out.append(_delta(index, "signature_delta", "signature", signature))
        elif kind == _TOOL and self._openTool is not None:
            if not self._openTool.arguments:
                self._out.append(
                    _delta(index, "input_json_delta", "partial_json", "{}")
                )
            self._openTool.closed = True
            self._openTool = None
        payload = {"type": "content_block_stop", "index": index}
        self._out.append(_event("content_block_stop", payload))
        self._openKind = None

    def _addThinking(self, text: str) -> None:
        self._flushTools()
        if self._openKind != _THINKING:
            self._openBlock(
                _THINKING, {"type": "thinking", "thinking": "", "signature": ""}
            )
            self._thinkingHash = hashlib.sha256()
        self._thinkingHash.update(text.encode("utf-8", "surrogatepass"))
        self._out.append(_delta(self._openIndex, "thinking_delta", "thinking", text))

    def _addText(self, text: str) -> None:
        self._flushTools()
        if self._openKind != _TEXT:
            self._openBlock(_TEXT, {"type": "text", "text": ""})
        self._out.append(_delta(self._openIndex, "text_delta", "text", text))

    def _addToolFragment(self, call: dict[str, object]) -> None:
        """
        One element of a delta's C{tool_calls}: the start of a call, a piece
        of its arguments, or both.
        """
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        name = name if isinstance(name, str) and name else None
        tool = self._toolFor(call, name)
        if tool.name is None and name is not None:
            tool.name = self._toolNames.toOriginal(name)
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments)
        if isinstance(arguments, str) and arguments:
            self._addArguments(tool, arguments)
        self._advance()

    def _toolFor(self, call: dict[str, object], name: str | None) -> _Tool:
        """
        Find the call a fragment belongs to, or begin a new one.  Fragments
        are joined by C{index}; a new C{id} is a new call even at a known
        index (adapters that number every call 0), and so is a new C{name}
        once the known call's arguments are a whole object.  Without index
        or id, a fragment belongs to the latest call.
        """
        callId = call.get("id")
        callId = callId if isinstance(callId, str) and callId else None
        index = call.get("index")
        index = (
            index if isinstance(index, int) and not isinstance(index, bool) else None
        )
        if callId is not None and callId in self._toolsById:
            return self._toolsById[callId]
        if index is not None:
            tool = self._toolsByIndex.get(index)
        else:
            tool = self._tools[-1] if self._tools and callId is None else None
        if tool is None or self._startsNewCall(tool, callId, name):
            tool = self._newTool(callId)
        elif callId is not None and tool.upstreamId is None:
            tool.upstreamId = callId
            self._toolsById[callId] = tool
        if index is not None:
            self._toolsByIndex[index] = tool
        return tool

    def _startsNewCall(self, tool: _Tool, callId: str | None, name: str | None) -> bool:
        if callId is not None and tool.upstreamId is not None:
            return True
        if callId is None and name is None:
            return False
        return tool.name is not None and tool.argumentsComplete()

    def _newTool(self, callId: str | None) -> _Tool:
        if callId is not None:
            blockId = _INVALID_ID_CHARACTERS.sub("_", callId)
        else:
            seed = f"{self._messageId}:{len(self._tools)}".encode()
            blockId = "toolu_" + hashlib.sha256(seed).hexdigest()[:24]
        tool = _Tool(callId, blockId)
        self._tools.append(tool)
        if callId is not None:
            self._toolsById[callId] = tool
        self._waiting.append(tool)
        return tool

    def _addArguments(self, tool: _Tool, arguments: str) -> None:
        if tool.closed:
            if arguments.strip():
                self._fail("api_error", "upstream sent arguments for a finished call")
            return
        tool.arguments.append(arguments)
        if tool.blockIndex is None:
            tool.pending.append(arguments)
        else:
            self._out.append(
                _delta(tool.blockIndex, "input_json_delta", "partial_json", arguments)
            )

    def _advance(self) -> None:
        """
        Start waiting calls in order, as far as blocks cannot interleave:
        each needs its name, and the open call to be complete.
        """
        while self._waiting and not self._ended:
            head = self._waiting[0]
            if head.name is None:
                return
            openTool = self._openTool
            if openTool is not None and not openTool.argumentsComplete():
                return
            self._startTool(self._waiting.popleft())

    def _flushTools(self) -> None:
        """
        Something other than a tool call follows: start (and so finish)
        every waiting call now.
        """
        while self._waiting and not self._ended:
            self._startTool(self._waiting.popleft())

    def _startTool(self, tool: _Tool) -> None:
        block: dict[str, object] = {
            "type": "tool_use",
            "id": tool.blockId,
            "name": tool.name or "",
            "input": {},
        }
        tool.blockIndex = self._openBlock(_TOOL, block)
        self._openTool = tool
        pending, tool.pending = tool.pending, []
        for arguments in pending:
            self._out.append(
                _delta(tool.blockIndex, "input_json_delta", "partial_json", arguments)
            )
