"""
What the load scripts' client and mock upstream agree on: the plan each
request carries, the bytes of each event, and how the client tells that a
stream arrived whole.

Every content event carries its send time (C{time.monotonic_ns()} in the
mock, which runs on the same machine, so the client can subtract it from its
own clock) and a sequence number.  The last event, C{message_stop}, carries
the SHA-256 of every byte the mock sent before it, so the client checks each
stream against what the upstream really sent without a side channel: a
byte lost, added, changed or reordered anywhere changes the digest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from attrs import frozen

MODEL = "claude-sonnet-4-5"
#: Where a request carries its plan, beside the usual Messages API fields.
PLAN_KEY = "soak"
#: Ways the mock cuts a stream short.
KILLS = ("fin", "rst")


@frozen
class Plan:
    """
    What the mock upstream does with one request.

    @ivar id: Unique per run; the mock reports disconnects by it.
    @ivar events: How many content events the stream carries.
    @ivar spacing: Seconds between two content events.
    @ivar size: Roughly how many bytes each content event has.
    @ivar kill: C{"fin"} or C{"rst"} to cut the connection after
        C{killAfter} content events (always between two events), or
        L{None} to finish the stream.
    @ivar status: Answer with this status and an Anthropic error body
        instead of a stream (e.g. 529), or L{None}.
    @ivar close: Whether the mock closes the connection after the response
        (C{Connection: close}), so the proxy has to dial a new one.
    @ivar stream: Whether to answer with a stream; if not, with one JSON
        message (see L{benchmarks.perfwire}).
    """

    id: int
    events: int
    spacing: float
    size: int = 200
    kill: str | None = None
    killAfter: int = 0
    status: int | None = None
    close: bool = False
    stream: bool = True

    def toJSON(self) -> dict[str, Any]:
        # C{stream} only when it is not the default, so the bodies of the
        # older scripts stay as they were.
        extra: dict[str, Any] = {} if self.stream else {"stream": False}
        return {
            "id": self.id,
            "events": self.events,
            "spacing": self.spacing,
            "size": self.size,
            "kill": self.kill,
            "kill_after": self.killAfter,
            "status": self.status,
            "close": self.close,
        } | extra

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> Plan:
        kill = data.get("kill")
        if kill is not None and kill not in KILLS:
            raise ValueError(f"unknown kill {kill!r}")
        return cls(
            id=int(data["id"]),
            events=int(data["events"]),
            spacing=float(data["spacing"]),
            size=int(data.get("size", 200)),
            kill=kill,
            killAfter=int(data.get("kill_after", 0)),
            status=None if data.get("status") is None else int(data["status"]),
            close=bool(data.get("close", False)),
            stream=bool(data.get("stream", True)),
        )


def requestBody(plan: Plan) -> bytes:
    """
    A streaming Messages API request that carries C{plan}.
    """
    return json.dumps(
        {
            "model": MODEL,
            "max_tokens": 1024,
            "stream": True,
            "messages": [{"role": "user", "content": "load test"}],
            PLAN_KEY: plan.toJSON(),
        },
        separators=(",", ":"),
    ).encode()


def planFromBody(body: bytes) -> Plan:
    """
    @raise ValueError: If C{body} carries no valid plan.
    """
    try:
        data = json.loads(body)
        if PLAN_KEY not in data:
            # A request translated to OpenAI format keeps only what the
            # translator knows: the plan rides in the user's text instead.
            return Plan.fromJSON(json.loads(_planInText(data)))
        return Plan.fromJSON(data[PLAN_KEY])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"no plan in the request body: {e}") from None


#: What starts a user text that carries a plan (see L{planFromBody}).
PLAN_PREFIX = "plan:"


def _planInText(data: dict[str, Any]) -> str:
    """
    The JSON after L{PLAN_PREFIX} in any message's text, in either the
    Messages or the Chat Completions shape.

    @raise KeyError: If no message carries one.
    """
    for message in data.get("messages", []):
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"text": content}]
        for part in parts:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and text.startswith(PLAN_PREFIX):
                return text[len(PLAN_PREFIX) :]
    raise KeyError(PLAN_KEY)


def sseEvent(name: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (
        name.encode(),
        json.dumps(data, separators=(",", ":")).encode(),
    )


def errorBody(errorType: str, message: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": errorType, "message": message}},
        separators=(",", ":"),
    ).encode()


def finalEvent(digest: str) -> bytes:
    return sseEvent("message_stop", {"type": "message_stop", "sha256": digest})


_LETTERS = b"abcdefghijklmnopqrstuvwxyz"


class StreamEncoder:
    """
    The mock's side: the bytes of one planned stream, event by event, with
    the running digest the final event announces.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._digest = hashlib.sha256()

    def _record(self, event: bytes) -> bytes:
        self._digest.update(event)
        return event

    def opening(self) -> bytes:
        start = sseEvent(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_load_{self.plan.id}",
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        )
        block = sseEvent(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        return self._record(start + block)

    def delta(self, seq: int, sentNs: int) -> bytes:
        letter = _LETTERS[(self.plan.id + seq) % len(_LETTERS)]
        # The fixed part of a delta event is about 130 bytes.
        text = bytes([letter]) * max(1, self.plan.size - 130)
        return self._record(
            sseEvent(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text.decode()},
                    "seq": seq,
                    "t": sentNs,
                },
            )
        )

    def closing(self) -> bytes:
        body = self._record(
            sseEvent("content_block_stop", {"type": "content_block_stop", "index": 0})
            + sseEvent(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": self.plan.events},
                },
            )
        )
        return body + finalEvent(self._digest.hexdigest())


class StreamCheck:
    """
    The client's side: fed each event of a 200 response as it arrives, it
    checks the order of the content events, the final digest and the bytes
    of the final event, and keeps each content event's latency.

    @ivar complete: The final event arrived and every check held.
    @ivar errorEvent: The data of an SSE C{error} event, if one arrived.
    @ivar problems: What did not hold.
    @ivar latencies: Per content event, nanoseconds from the mock's write
        to the client's read.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.complete = False
        self.errorEvent: dict[str, Any] | None = None
        self.problems: list[str] = []
        self.latencies: list[int] = []
        self.received = 0
        self._nextSeq = 0
        self._digest = hashlib.sha256()

    def event(self, raw: bytes, receivedNs: int) -> None:
        self.received += len(raw)
        if self.complete or self.errorEvent is not None:
            self.problems.append("bytes after the end of the stream")
            return
        name, data = _parse(raw)
        if name == "message_stop":
            digest = self._digest.hexdigest()
            if raw != finalEvent(digest):
                self.problems.append("digest differs: bytes lost, added or changed")
            elif self._nextSeq != self.plan.events:
                self.problems.append(
                    f"{self._nextSeq} of {self.plan.events} content events"
                )
            else:
                self.complete = True
            return
        self._digest.update(raw)
        if name == "error":
            self.errorEvent = data if data is not None else {}
            return
        if name == "content_block_delta" and data is not None:
            seq = data.get("seq")
            if seq != self._nextSeq:
                self.problems.append(
                    f"event {seq} arrived where {self._nextSeq} was due"
                )
            self._nextSeq = (seq if isinstance(seq, int) else self._nextSeq) + 1
            sent = data.get("t")
            if isinstance(sent, int):
                self.latencies.append(receivedNs - sent)


def _parse(raw: bytes) -> tuple[str | None, dict[str, Any] | None]:
    name = None
    data = None
    for line in raw.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode(errors="replace")
        elif line.startswith(b"data:"):
            try:
                parsed = json.loads(line[5:])
            except ValueError:
                parsed = None
            data = parsed if isinstance(parsed, dict) else None
    return name, data
