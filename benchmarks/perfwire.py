"""
What the performance suite adds to L{benchmarks.wire}: non-streaming
requests (padded to a chosen body size) and the mock's one-message answer,
and OpenAI-format streams whose text carries each event's send time, so a
stream the proxy translated can be timed and checked event by event.

A translated stream's envelope (ids, indices, C{message_start}) is the
proxy's own, so it cannot be compared with what the mock sent; its text
can.  Each OpenAI delta's text is one record, C{<seq>.<send ns>.<letters>;},
and the last record, C{end.<sha256>;}, carries the SHA-256 of every record
before it: a character lost, added, changed or reordered anywhere in the
text changes the digest.  The records are parsed from the concatenated
text, so the check does not depend on how the proxy cuts it into events.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from benchmarks.wire import (
    _LETTERS,
    MODEL,
    PLAN_KEY,
    PLAN_PREFIX,
    Plan,
    StreamCheck,
    _parse,
)

#: The model name the suite's config routes to the OpenAI-format upstream.
OPENAI_MODEL = "perf-openai"
#: The path under the mock that OpenAI-format requests go to (the proxy
#: adds C{/chat/completions}).
OPENAI_BASE = "/openai/v1"
_DONE = b"data: [DONE]\n\n"
_FILLER = "Claude Code sends the whole conversation, the tools and the system prompt. "


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _letters(plan: Plan, seq: int) -> str:
    letter = chr(_LETTERS[(plan.id + seq) % len(_LETTERS)])
    return letter * max(1, plan.size - 130)


def _filler(length: int) -> str:
    return (_FILLER * (length // len(_FILLER) + 1))[:length]


def _padding(size: int) -> dict[str, Any]:
    """
    About C{size} bytes of what a Claude Code request is made of: tool
    definitions with JSON schemas (a third) and a conversation history of
    text blocks (most of the rest), so that a proxy that parses the whole
    body pays for many small objects, not for one long string.
    """
    tools: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    used = 0
    while used + 1200 < size // 3:
        tool = {
            "name": f"Tool{len(tools)}",
            "description": _filler(600),
            "input_schema": {
                "type": "object",
                "properties": {
                    f"arg{i}": {"type": "string", "description": _filler(40)}
                    for i in range(4)
                },
                "required": ["arg0"],
            },
        }
        tools.append(tool)
        used += len(_compact(tool)) + 1
    while used + 2200 < size:
        for role in ("user", "assistant"):
            message = {
                "role": role,
                "content": [{"type": "text", "text": _filler(1000)}],
            }
            history.append(message)
            used += len(_compact(message)) + 1
    return {"tools": tools, "history": history}


def plainRequest(plan: Plan, size: int = 0, model: str = MODEL) -> bytes:
    """
    A non-streaming Messages API request that carries C{plan}, padded to
    exactly C{size} bytes when it would be shorter (the rest of the padding
    is the system prompt).
    """
    padding = _padding(size)
    document: dict[str, Any] = {
        "model": model,
        "max_tokens": 1024,
        "stream": False,
        "messages": [
            *padding["history"],
            {"role": "user", "content": "load test"},
        ],
        PLAN_KEY: plan.toJSON(),
    }
    if padding["tools"]:
        document["tools"] = padding["tools"]
    body = _compact(document)
    # ,"system":"" adds 12 bytes besides the text itself.
    missing = size - len(body) - 12
    if missing >= 0:
        document["system"] = _filler(missing)
        body = _compact(document)
    return body


def messageBody(plan: Plan) -> bytes:
    """
    The mock's answer to a non-streaming request: one Messages API message
    whose text is C{plan.size} letters long, the same for the same plan.
    """
    return _compact(
        {
            "id": f"msg_load_{plan.id}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": _letters(plan, 0)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }
    )


def translatedRequest(plan: Plan, model: str = OPENAI_MODEL) -> bytes:
    """
    A streaming Messages API request for a model the proxy sends to an
    OpenAI-format upstream: the plan rides in the user's text, the only
    place the request translation keeps.
    """
    return _compact(
        {
            "model": model,
            "max_tokens": 1024,
            "stream": True,
            "messages": [
                {
                    "role": "user",
                    "content": PLAN_PREFIX + json.dumps(plan.toJSON()),
                }
            ],
        }
    )


class OpenAIStreamEncoder:
    """
    The mock's side of an OpenAI chat-completions stream; the same methods
    as L{benchmarks.wire.StreamEncoder}.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._digest = hashlib.sha256()

    def _chunk(
        self,
        delta: dict[str, Any] | None,
        finish: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> bytes:
        document: dict[str, Any] = {
            "id": f"chatcmpl-load-{self.plan.id}",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": OPENAI_MODEL,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            document["usage"] = usage
        return b"data: " + _compact(document) + b"\n\n"

    def opening(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, seq: int, sentNs: int) -> bytes:
        record = f"{seq}.{sentNs}.{_letters(self.plan, seq)};"
        self._digest.update(record.encode())
        return self._chunk({"content": record})

    def closing(self) -> bytes:
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": self.plan.events,
            "total_tokens": 10 + self.plan.events,
        }
        return (
            self._chunk({"content": f"end.{self._digest.hexdigest()};"})
            + self._chunk({}, "stop")
            + self._chunk(None, usage=usage)
            + _DONE
        )


def _text(name: str | None, data: dict[str, Any] | None) -> str | None:
    """
    The text a stream event adds: an Anthropic C{text_delta} or an OpenAI
    chunk's C{delta.content}.
    """
    if data is None:
        return None
    if name == "content_block_delta":
        delta = data.get("delta")
        if isinstance(delta, dict) and delta.get("type") == "text_delta":
            text = delta.get("text")
            return text if isinstance(text, str) else None
        return None
    choices = data.get("choices")
    if name is None and isinstance(choices, list) and choices:
        delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else None
    return None


class TextStreamCheck(StreamCheck):
    """
    The client's side of an L{OpenAIStreamEncoder} stream, read either
    straight from the mock (OpenAI format) or translated by the proxy
    (Anthropic format): every record's sequence, letters and send time,
    the final digest, and a proper end (C{[DONE]} or C{message_stop}).
    """

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self._pendingText = ""
        self._textEnded = False
        self._finished = False

    def event(self, raw: bytes, receivedNs: int) -> None:
        self.received += len(raw)
        if self._finished or self.errorEvent is not None:
            self.problems.append("bytes after the end of the stream")
            return
        name, data = _parse(raw)
        if name == "message_stop" or raw == _DONE:
            self._finished = True
            if self._pendingText:
                self.problems.append("text after the last record")
            elif not self._textEnded:
                self.problems.append("the stream ended without its end record")
            self.complete = not self.problems
            return
        if name == "error":
            self.errorEvent = data if data is not None else {}
            return
        text = _text(name, data)
        if text:
            self._pendingText += text
            while ";" in self._pendingText:
                record, self._pendingText = self._pendingText.split(";", 1)
                self._record(record, receivedNs)

    def _record(self, record: str, receivedNs: int) -> None:
        if self._textEnded:
            self.problems.append("text after the end record")
            return
        if record.startswith("end."):
            self._textEnded = True
            if record[4:] != self._digest.hexdigest():
                self.problems.append("digest differs: text lost, added or changed")
            elif self._nextSeq != self.plan.events:
                self.problems.append(
                    f"{self._nextSeq} of {self.plan.events} content events"
                )
            return
        self._digest.update(f"{record};".encode())
        seq, _, rest = record.partition(".")
        sent, _, letters = rest.partition(".")
        if not (seq.isdigit() and sent.isdigit()):
            self.problems.append(f"a record that is not one: {record[:40]!r}")
            return
        if int(seq) != self._nextSeq:
            self.problems.append(f"event {seq} arrived where {self._nextSeq} was due")
        elif letters != _letters(self.plan, self._nextSeq):
            self.problems.append(f"event {seq}: its text differs")
        self._nextSeq = int(seq) + 1
        self.latencies.append(receivedNs - int(sent))
