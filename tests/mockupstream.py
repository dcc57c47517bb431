"""
A scriptable mock upstream: a real HTTP server on 127.0.0.1 that records
what it receives (parsed and as raw bytes) and answers each request with a
behaviour chosen by the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IListeningPort, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

Behaviour = Callable[[Request], "bytes | int"]


@define
class RecordedRequest:
    method: bytes
    uri: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def anthropicStream(text: str, model: str = "claude-sonnet-4-5") -> list[bytes]:
    """
    A well-formed Anthropic stream answering C{text}, one event per item.
    """
    events = [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            },
        ),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse("ping", {"type": "ping"}),
    ]
    for word in text.split(" "):
        events.append(
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": word + " "},
                },
            )
        )
    events += [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 9},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return events


def anthropicMessage(text: str, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    return {
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }


def respondJSON(
    payload: Any, status: int = 200, headers: dict[bytes, bytes] | None = None
) -> Behaviour:
    def behaviour(request: Request) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        return json.dumps(payload).encode()

    return behaviour


def respondEvents(events: list[bytes], spacing: float = 0.0) -> Behaviour:
    """
    Send each event as its own write, C{spacing} seconds apart, then end.
    """

    def behaviour(request: Request) -> int:
        request.setHeader(b"content-type", b"text/event-stream")
        request.write(b"")
        remaining = list(events)

        def sendNext() -> None:
            if not remaining:
                request.finish()
                return
            request.write(remaining.pop(0))
            pending[0] = reactor.callLater(spacing, sendNext)

        pending = [reactor.callLater(spacing, sendNext)]
        request.notifyFinish().addErrback(
            lambda failure: pending[0].active() and pending[0].cancel()
        )
        return NOT_DONE_YET

    return behaviour


def hang(request: Request) -> int:
    """
    Accept the request and never answer it.
    """
    return NOT_DONE_YET


class LockstepStream:
    """
    Sends event i+1 only once the test reports that the client has received
    event i: a proxy that holds back even one event stalls it for good.
    """

    def __init__(self, count: int, spacing: float) -> None:
        self.count = count
        self.spacing = spacing
        self.sent = 0
        self.finished: defer.Deferred[None] = defer.Deferred()
        self._request: Request | None = None

    def event(self, index: int) -> bytes:
        if index == self.count - 1:
            return sse("message_stop", {"type": "message_stop"})
        return sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": f"event {index} "},
            },
        )

    def __call__(self, request: Request) -> int:
        request.setHeader(b"content-type", b"text/event-stream")
        request.write(b"")
        self._request = request
        self._sendNext()
        return NOT_DONE_YET

    def _sendNext(self) -> None:
        assert self._request is not None
        if self.sent == self.count:
            self._request.finish()
            self.finished.callback(None)
            return
        self._request.write(self.event(self.sent))
        self.sent += 1

    def clientReceived(self, index: int) -> None:
        assert index == self.sent - 1, (index, self.sent)
        reactor.callLater(self.spacing, self._sendNext)


@implementer(IPushProducer)
class FloodingBody:
    """
    Streams C{total} bytes as fast as the connection takes them, as a push
    producer, counting what it has handed to the transport.
    """

    chunk = b"x" * 65535 + b"\n"

    def __init__(self, total: int) -> None:
        self.total = total
        self.written = 0
        self.paused = False
        self.pauseCount = 0
        self.resumeCount = 0
        self._request: Request | None = None

    def __call__(self, request: Request) -> int:
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % self.total)
        self._request = request
        request.registerProducer(self, True)
        request.write(b"")
        reactor.callLater(0, self.resumeProducing)
        return NOT_DONE_YET

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauseCount += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumeCount += 1
        request = self._request
        assert request is not None
        while not self.paused and self.written < self.total:
            piece = self.chunk[: self.total - self.written]
            self.written += len(piece)
            request.write(piece)
        if self.written >= self.total and not request.finished:
            request.unregisterProducer()
            request.finish()

    def stopProducing(self) -> None:
        self.paused = True


class _RecordingResource(Resource):
    isLeaf = True

    def __init__(self, upstream: MockUpstream) -> None:
        super().__init__()
        self._upstream = upstream

    def render(self, request: Request) -> bytes | int:
        assert request.content is not None
        recorded = RecordedRequest(
            method=request.method,
            uri=request.uri,
            headers=[
                (name, value)
                for name, values in request.requestHeaders.getAllRawHeaders()
                for value in values
            ],
            body=request.content.read(),
        )
        self._upstream.requests.append(recorded)
        disconnected: defer.Deferred[None] = defer.Deferred()
        self._upstream.disconnects.append(disconnected)
        request.notifyFinish().addErrback(lambda failure: disconnected.callback(None))
        if self._upstream.arrived is not None:
            arrived, self._upstream.arrived = self._upstream.arrived, None
            arrived.callback(recorded)
        return self._upstream.behaviour(request)


class _RawRecorder(Protocol):
    """
    Wraps the HTTP channel to keep every byte each connection received.
    """

    def __init__(self, channel: Protocol, raw: bytearray) -> None:
        self._channel = channel
        self._raw = raw
        self.closed: defer.Deferred[None] = defer.Deferred()

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self._channel.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self._raw += data
        self._channel.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._channel.connectionLost(reason)
        self.closed.callback(None)


class _RecordingSite(Site):
    def __init__(self, upstream: MockUpstream) -> None:
        super().__init__(_RecordingResource(upstream))
        self._upstream = upstream
        self.noisy = False

    def buildProtocol(self, addr: Any) -> Any:
        raw = bytearray()
        self._upstream.rawConnections.append(raw)
        protocol = _RawRecorder(super().buildProtocol(addr), raw)
        self._upstream.connections.append(protocol)
        return protocol


@define
class MockUpstream:
    """
    Start with L{listen}; stop with L{stop} (tests add it as a cleanup).
    """

    behaviour: Behaviour = field(default=respondJSON(anthropicMessage("hello")))
    requests: list[RecordedRequest] = field(factory=list)
    disconnects: list[defer.Deferred[None]] = field(factory=list)
    rawConnections: list[bytearray] = field(factory=list)
    connections: list[_RawRecorder] = field(factory=list)
    arrived: defer.Deferred[RecordedRequest] | None = None
    port: IListeningPort | None = None

    def listen(self, contextFactory: Any = None) -> MockUpstream:
        site = _RecordingSite(self)
        if contextFactory is None:
            self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        else:
            self.port = reactor.listenSSL(
                0, site, contextFactory, interface="127.0.0.1"
            )
        return self

    @property
    def portNumber(self) -> int:
        assert self.port is not None
        return int(self.port.getHost().port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.portNumber}"

    def nextRequest(self) -> defer.Deferred[RecordedRequest]:
        self.arrived = defer.Deferred()
        return self.arrived

    async def stop(self) -> None:
        """
        Stop listening and close every connection still open.
        """
        assert self.port is not None
        await defer.maybeDeferred(self.port.stopListening)
        for connection in self.connections:
            if not connection.closed.called:
                connection.transport.abortConnection()
                await connection.closed

    @property
    def allRaw(self) -> bytes:
        return b"".join(self.rawConnections)
