"""
Tests for the request log (L{ccrouter.requestlog}) through a real proxy: a
L{ProxySite} over the whole resource tree listening on 127.0.0.1, in front
of mock upstreams that are real HTTP servers, with every log event caught
from the global log publisher.
"""

from __future__ import annotations

import json
import time
from typing import Any

import treq
from attrs import evolve
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.iweb import IResponse
from twisted.web.server import NOT_DONE_YET, Request

from ccrouter.agents import PooledAgents
from ccrouter.config import parseConfig
from ccrouter.live import LiveState
from ccrouter.logs import FIELD_LIMIT
from ccrouter.requestlog import REQUEST_ID_HEADER, REQUEST_LOG_NAMESPACE
from ccrouter.root import resourceTree
from ccrouter.server import ProxySite
from tests.mockupstream import (
    Behaviour,
    MockUpstream,
    anthropicMessage,
    anthropicStream,
    respondEvents,
    respondJSON,
    sse,
)
from tests.sseclient import EventReader
from tests.test_end_to_end import freePort

#: The wall clock the proxy is given: every record starts at this moment.
WALL = 1795341600.25
AT = "2026-11-22T10:00:00.250Z"
MODEL = "claude-sonnet-4-5"

# Canaries that do not look like keys, so that no redaction can hide a leak.
CLIENT_KEY = "CLIENTKEYCANARY5a7d0c"
CLIENT_AUTH = "Basic AUTHCANARY93ce41"
CUSTOM_VALUE = "CUSTOMHEADERCANARY71b0"
AGENT = "AGENTCANARY/1.0 c3d9e2"
PROVIDER_KEY = "PROVIDERKEYCANARYe8a2f6"
CANARIES = (
    CLIENT_KEY,
    "AUTHCANARY93ce41",
    CUSTOM_VALUE,
    "AGENTCANARY",
    PROVIDER_KEY,
)

FAILOVER_CONFIG = """
default: {{url: "{claude}"}}
upstreams:
  zai:
    url: "{zai}/api/anthropic"
    auth: {{header: x-api-key, value: "${{Z_AI_API_KEY}}"}}
default_mode: auto
modes:
  glm:
    - match: "claude-*"
      model: "glm-4.6"
      upstream: zai
  claude: []
  auto: {{failover: [claude, glm]}}
"""
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
SERVER_ERROR = {"type": "error", "error": {"type": "api_error", "message": "boom"}}


def messageBody(model: str = MODEL, stream: bool = True) -> bytes:
    return json.dumps(
        {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        },
        separators=(",", ":"),
    ).encode()


def usageStream() -> list[bytes]:
    """
    An Anthropic stream with every usage field: the input and cache counts
    in C{message_start}, the final output count and stop reason in
    C{message_delta}.
    """
    return [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_usage",
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 21,
                        "output_tokens": 1,
                        "cache_read_input_tokens": 300,
                        "cache_creation_input_tokens": 40,
                    },
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
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hello"},
            },
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                "usage": {"output_tokens": 17},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]


def openAIChunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    document = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "deepseek-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(document).encode() + b"\n\n"


OPENAI_USAGE = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "deepseek-chat",
    "choices": [],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 8,
        "total_tokens": 38,
        "prompt_tokens_details": {"cached_tokens": 10},
    },
}
OPENAI_STREAM = [
    openAIChunk({"role": "assistant", "content": ""}),
    openAIChunk({"content": "Hello"}),
    openAIChunk({}, "stop"),
    b"data: " + json.dumps(OPENAI_USAGE).encode() + b"\n\n",
    b"data: [DONE]\n\n",
]


def entry(**changes: Any) -> dict[str, Any]:
    """
    A request log event's fields, but its two durations, with C{changes}.
    """
    fields: dict[str, Any] = {
        "at": AT,
        "method": "POST",
        "path": "/v1/messages",
        "client_model": MODEL,
        "upstream_model": MODEL,
        "mode": "default",
        "route": None,
        "target": "default",
        "attempts": 1,
        "failover_path": ["default"],
        "status": 200,
        "streamed": True,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "stop_reason": None,
        "error": None,
        "client_disconnected": False,
    }
    fields.update(changes)
    return fields


class RequestLogCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.wall = WALL
        self.events: list[LogEvent] = []
        self._waiting: list[tuple[str, defer.Deferred[dict[str, Any]]]] = []
        #: The ids of the responses the client got, in order.
        self.responseIds: list[str] = []
        #: How many requests the proxy was sent.
        self.sent = 0
        # Cleanups run last first: this check comes after every connection
        # is gone, so a second event for any request would have shown.
        self.addCleanup(self.assertOneEventEach)
        globalLogPublisher.addObserver(self.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.observe)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    # The log

    def observe(self, event: LogEvent) -> None:
        self.events.append(event)
        if event.get("log_namespace") != REQUEST_LOG_NAMESPACE:
            return
        still = []
        for requestId, waiting in self._waiting:
            if event["request"]["request_id"] == requestId:
                waiting.callback(dict(event["request"]))
            else:
                still.append((requestId, waiting))
        self._waiting = still

    def requestEvents(self, requestId: str | None = None) -> list[LogEvent]:
        return [
            event
            for event in self.events
            if event.get("log_namespace") == REQUEST_LOG_NAMESPACE
            and (requestId is None or event["request_id"] == requestId)
        ]

    def logged(self, requestId: str) -> defer.Deferred[dict[str, Any]]:
        """
        Fires with the request log's fields for C{requestId}, once logged.
        """
        found = self.requestEvents(requestId)
        if found:
            return defer.succeed(dict(found[0]["request"]))
        waiting: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiting.append((requestId, waiting))
        return waiting.addTimeout(10, reactor)

    def assertOneEventEach(self) -> None:
        """
        Every request the proxy was sent has exactly one request log event,
        and every response id is one of theirs.
        """
        events = self.requestEvents()
        ids = [event["request_id"] for event in events]
        self.assertEqual(len(ids), self.sent, ids)
        self.assertEqual(len(set(ids)), len(ids), ids)
        for requestId in self.responseIds:
            self.assertIn(requestId, ids)

    def checkEvent(self, requestId: str) -> dict[str, Any]:
        """
        The request log event of C{requestId}: its text form is one line of
        JSON holding exactly its fields; returns those fields.
        """
        [event] = self.requestEvents(requestId)
        fields = dict(event["request"])
        self.assertEqual(event["request_id"], requestId)
        self.assertEqual(fields["request_id"], requestId)
        text = formatEvent(event)
        self.assertNotIn("\n", text)
        self.assertNotIn("\r", text)
        self.assertEqual(json.loads(text), fields)
        return fields

    def checkTimes(self, fields: dict[str, Any]) -> tuple[float, float]:
        """
        Take the durations out of C{fields}: both numbers, the first byte
        no later than the end.
        """
        ttfb, duration = fields.pop("ttfb_ms"), fields.pop("duration_ms")
        self.assertIsInstance(ttfb, float)
        self.assertIsInstance(duration, float)
        self.assertGreaterEqual(ttfb, 0.0)
        self.assertLessEqual(ttfb, duration)
        return ttfb, duration

    def checkRecord(
        self,
        requestId: str,
        expected: dict[str, Any],
        body: bytes,
        received: int | None = None,
    ) -> dict[str, Any]:
        """
        The event of C{requestId} is C{expected}, with C{body} as the
        request body and C{received} body bytes (if known) sent back.
        """
        fields = self.checkEvent(requestId)
        self.checkTimes(fields)
        self.assertTrue(fields.pop("request_id").startswith("ccr_"))
        self.assertEqual(fields.pop("bytes_in"), len(body))
        bytesOut = fields.pop("bytes_out")
        if received is not None:
            self.assertEqual(bytesOut, received)
        self.assertEqual(fields, expected)
        return fields

    def otherEvents(self, requestId: str) -> list[LogEvent]:
        return [
            event
            for event in self.events
            if event.get("log_namespace") != REQUEST_LOG_NAMESPACE
            and event.get("request_id") == requestId
        ]

    # The proxy

    def mock(self, behaviour: Behaviour) -> MockUpstream:
        upstream = MockUpstream(behaviour).listen()
        self.addCleanup(upstream.stop)
        # The mock's access lines hold what the client sent: they would be
        # ccrouter's leak only if ccrouter had written them.
        assert upstream.port is not None
        upstream.port.factory.log = lambda request: None  # type: ignore[attr-defined]
        return upstream

    def serve(
        self, text: str, environ: dict[str, str] | None = None, **limits: Any
    ) -> None:
        config = parseConfig(text, "c.yaml", environ or {})
        if limits:
            server = config.server
            config = evolve(
                config, server=evolve(server, limits=evolve(server.limits, **limits))
            )
        self.live = LiveState(config, now=time.monotonic, wallNow=lambda: self.wall)
        agents = PooledAgents(reactor)
        self.addCleanup(agents.stopService)
        self.site = ProxySite(
            resourceTree(self.live, agents.agentFor, reactor),
            lambda: self.live.config.server,
            reactor=reactor,
        )
        self.site.noisy = False
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.addCleanup(self.closeAll)
        self.addCleanup(port.stopListening)

    async def closeAll(self) -> None:
        for channel in list(self.site._channels):
            assert channel.transport is not None
            channel.transport.abortConnection()  # type: ignore[attr-defined]
        for _ in range(100):
            if self.site.openConnections == 0:
                return
            await deferLater(reactor, 0.01)
        self.fail("server connections still open")

    async def post(
        self, body: bytes, headers: dict[bytes, list[bytes]] | None = None
    ) -> tuple[IResponse, str]:
        """
        Send C{body} to C{/v1/messages}; the response (its body unread) and
        the request id it carries.
        """
        sent = {
            b"x-api-key": [CLIENT_KEY.encode()],
            b"content-type": [b"application/json"],
            b"anthropic-version": [b"2023-06-01"],
        }
        sent.update(headers or {})
        self.sent += 1
        response = await self.http.request(
            "POST",
            self.url + "/v1/messages",
            headers=sent,
            data=body,
            unbuffered=True,
        ).addTimeout(10, reactor)
        [requestId] = response.headers.getRawHeaders(REQUEST_ID_HEADER)
        self.responseIds.append(requestId.decode("ascii"))
        return response, requestId.decode("ascii")

    async def exchange(
        self, body: bytes, headers: dict[bytes, list[bytes]] | None = None
    ) -> tuple[int, bytes, str]:
        """
        Send C{body}, read the whole response: its status, its body and its
        request id, once the request log has its event.
        """
        response, requestId = await self.post(body, headers)
        content = await treq.content(response).addTimeout(10, reactor)
        await self.logged(requestId)
        return response.code, content, requestId

    async def get(self, path: str) -> bytes:
        response = await self.http.get(self.url + path).addTimeout(10, reactor)
        self.assertEqual(response.code, 200, path)
        content: bytes = await treq.content(response).addTimeout(10, reactor)
        return content

    def failovers(self, before: str, after: str) -> float | None:
        value: float | None = self.live.stats.registry.get_sample_value(
            "ccrouter_failovers_total", {"from_target": before, "to_target": after}
        )
        return value


class SuccessTests(RequestLogCase):
    async def test_streamed(self) -> None:
        """
        A streamed answer: the tokens of C{message_start} and
        C{message_delta}, the stop reason, and the body bytes the client
        received; the response carries the record's id.
        """
        upstream = self.mock(respondEvents(usageStream()))
        self.serve(f'default: {{url: "{upstream.url}"}}\n')
        body = messageBody()
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 200)
        self.assertEqual(content, b"".join(usageStream()))
        self.checkRecord(
            requestId,
            entry(
                input_tokens=21,
                output_tokens=17,
                cache_read_tokens=300,
                cache_write_tokens=40,
                stop_reason="max_tokens",
            ),
            body,
            received=len(content),
        )
        self.assertEqual(self.otherEvents(requestId), [])

    async def test_notStreamed(self) -> None:
        """
        A JSON answer: the usage and stop reason of its body.
        """
        upstream = self.mock(respondJSON(anthropicMessage("hello")))
        self.serve(f'default: {{url: "{upstream.url}"}}\n')
        body = messageBody(stream=False)
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 200)
        self.checkRecord(
            requestId,
            entry(
                streamed=False,
                input_tokens=12,
                output_tokens=3,
                stop_reason="end_turn",
            ),
            body,
            received=len(content),
        )

    async def test_translatedStream(self) -> None:
        """
        An OpenAI-format stream is logged as translated: the usage of its
        last chunk, cached prompt tokens apart, and the stop reason it was
        given.
        """
        upstream = self.mock(respondEvents(OPENAI_STREAM))
        self.serve(
            f"""
default: {{url: "http://127.0.0.1:9"}}
upstreams:
  deepseek:
    url: "{upstream.url}/v1"
    format: openai
    auth: {{header: authorization, value: "Bearer ${{DEEPSEEK_KEY}}"}}
routes:
  - match: "claude-*"
    model: deepseek-chat
    upstream: deepseek
""",
            {"DEEPSEEK_KEY": PROVIDER_KEY},
        )
        body = messageBody()
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 200)
        self.assertIn(b"event: message_stop", content)
        self.assertEqual(upstream.requests[0].uri, b"/v1/chat/completions")
        self.checkRecord(
            requestId,
            entry(
                upstream_model="deepseek-chat",
                route="claude-*",
                target="deepseek",
                failover_path=["deepseek"],
                input_tokens=20,
                output_tokens=8,
                cache_read_tokens=10,
                cache_write_tokens=0,
                stop_reason="end_turn",
            ),
            body,
            received=len(content),
        )


class FailoverTests(RequestLogCase):
    async def failOver(self, claudeURL: str, zai: MockUpstream) -> None:
        self.serve(
            FAILOVER_CONFIG.format(claude=claudeURL, zai=zai.url),
            {"Z_AI_API_KEY": PROVIDER_KEY},
        )
        self.assertIsNone(self.failovers("claude", "glm"))
        body = messageBody()
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 200)
        self.checkRecord(
            requestId,
            entry(
                upstream_model="glm-4.6",
                mode="auto",
                route="claude-*",
                target="glm",
                attempts=2,
                failover_path=["claude", "glm"],
                input_tokens=12,
                output_tokens=9,
                stop_reason="end_turn",
            ),
            body,
            received=len(content),
        )
        self.assertEqual(self.failovers("claude", "glm"), 1.0)
        # The warning about the failover is about this request.
        warnings = [
            event
            for event in self.otherEvents(requestId)
            if "trying the next target" in event.get("log_format", "")
        ]
        self.assertEqual(len(warnings), 1, self.otherEvents(requestId))
        self.assertEqual(warnings[0]["target"], "claude")

    async def test_overloaded(self) -> None:
        """
        The first target answers 529: two attempts, the second target's
        answer, no error; the failover counter moved.
        """
        claude = self.mock(respondJSON(OVERLOADED, status=529))
        zai = self.mock(respondEvents(anthropicStream("hi there", "glm-4.6")))
        await self.failOver(claude.url, zai)
        self.assertEqual(len(claude.requests), 1)

    async def test_refused(self) -> None:
        """
        The first target refuses the connection: the same.
        """
        zai = self.mock(respondEvents(anthropicStream("hi there", "glm-4.6")))
        await self.failOver(f"http://127.0.0.1:{freePort()}", zai)


class ClientGoneTests(RequestLogCase):
    async def test_clientAbortsStream(self) -> None:
        """
        A client that leaves mid-stream: the record says so, with the
        tokens of what was relayed until then (C{message_start}, not the
        final C{message_delta}) and no more bytes than were written.
        """
        events = anthropicStream(" ".join(["word"] * 2000))
        upstream = self.mock(respondEvents(events, spacing=0.01))
        self.serve(f'default: {{url: "{upstream.url}"}}\n')
        body = messageBody()
        response, requestId = await self.post(body)
        firstEvents: defer.Deferred[None] = defer.Deferred()

        def onEvent(event: bytes) -> None:
            if len(reader.events) == 3 and not firstEvents.called:
                firstEvents.callback(None)

        reader = EventReader(onEvent)
        response.deliverBody(reader)
        await firstEvents.addTimeout(10, reactor)
        assert reader.transport is not None
        reader.transport.stopProducing()
        await self.assertFailure(reader.done, ResponseFailed)
        await self.logged(requestId)
        fields = self.checkEvent(requestId)
        self.checkTimes(fields)
        bytesOut = fields.pop("bytes_out")
        self.assertGreaterEqual(bytesOut, len(reader.body))
        self.assertLess(bytesOut, len(b"".join(events)))
        del fields["request_id"], fields["bytes_in"]
        self.assertEqual(
            fields,
            entry(
                input_tokens=12,
                output_tokens=1,
                error="client_gone",
                client_disconnected=True,
            ),
        )
        [gone] = upstream.disconnects
        await gone.addTimeout(10, reactor)


class ErrorTests(RequestLogCase):
    async def test_upstreamStatus(self) -> None:
        """
        An upstream's 500, relayed (no failover): C{upstream_status}.
        """
        upstream = self.mock(respondJSON(SERVER_ERROR, status=500))
        self.serve(f'default: {{url: "{upstream.url}"}}\n')
        body = messageBody(stream=False)
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 500)
        self.assertEqual(json.loads(content), SERVER_ERROR)
        self.checkRecord(
            requestId,
            entry(status=500, streamed=False, error="upstream_status"),
            body,
            received=len(content),
        )

    async def test_brokenStream(self) -> None:
        """
        An upstream that drops the connection mid-stream: C{broken_stream},
        with the tokens of what came before, and the bytes of the error
        event ccrouter ended the stream with.
        """
        events = anthropicStream("one two three")[:4]

        def dropAfterEvents(request: Request) -> int:
            request.setHeader(b"content-type", b"text/event-stream")
            for event in events:
                request.write(event)
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        upstream = self.mock(dropAfterEvents)
        self.serve(f'default: {{url: "{upstream.url}"}}\n')
        body = messageBody()
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 200)
        self.assertIn(b"event: error", content)
        self.checkRecord(
            requestId,
            entry(input_tokens=12, output_tokens=1, error="broken_stream"),
            body,
            received=len(content),
        )

    async def test_brokenInsideAnEvent(self) -> None:
        """
        An upstream that drops the connection in the middle of an event:
        ccrouter aborts the client's connection itself, which the record
        calls C{broken_stream}, not a client that went away.
        """
        events = anthropicStream("one two three")[:4]

        def dropInsideEvent(request: Request) -> int:
            request.setHeader(b"content-type", b"text/event-stream")
            for event in events:
                request.write(event)
            request.write(b'event: content_block_delta\ndata: {"ty')
            request.channel.transport.loseConnection()
            return NOT_DONE_YET

        upstream = self.mock(dropInsideEvent)
        self.serve(f'default: {{url: "{upstream.url}"}}\n')
        response, requestId = await self.post(messageBody())
        self.assertEqual(response.code, 200)
        # The client sees the response break off: ccrouter aborted it.
        with self.assertRaises(ResponseFailed):
            await treq.content(response).addTimeout(10, reactor)
        fields = await self.logged(requestId)
        self.assertEqual(
            (fields["error"], fields["client_disconnected"]), ("broken_stream", False)
        )

    async def test_deadUpstream(self) -> None:
        """
        An upstream nobody listens at: C{connect}, and the warning about it
        carries the request's id.
        """
        self.serve(f'default: {{url: "http://127.0.0.1:{freePort()}"}}\n')
        body = messageBody()
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 502)
        self.checkRecord(
            requestId, entry(status=502, error="connect"), body, received=len(content)
        )
        [warning] = self.otherEvents(requestId)
        self.assertEqual(warning["upstream"], "default")

    async def test_streamCap(self) -> None:
        """
        A request over C{max_streams} is answered 529 without an upstream:
        C{overloaded}, no target, no attempt, no model planned.
        """
        held: list[Request] = []

        def hold(request: Request) -> int:
            held.append(request)
            return NOT_DONE_YET

        upstream = self.mock(hold)
        self.serve(f'default: {{url: "{upstream.url}"}}\n', maxStreams=1)
        arrived = upstream.nextRequest()
        first = defer.ensureDeferred(self.post(messageBody(stream=False)))
        await arrived.addTimeout(10, reactor)
        body = messageBody()
        status, content, requestId = await self.exchange(body)
        self.assertEqual(status, 529)
        self.assertEqual(json.loads(content)["error"]["type"], "overloaded_error")
        self.checkRecord(
            requestId,
            entry(
                client_model=None,
                upstream_model=None,
                target=None,
                attempts=0,
                failover_path=[],
                status=529,
                streamed=False,
                error="overloaded",
            ),
            body,
            received=len(content),
        )
        # The request that held the one stream ends well.
        [request] = held
        answer = respondJSON(anthropicMessage("hi"))(request)
        assert isinstance(answer, bytes)
        request.write(answer)
        request.finish()
        response, firstId = await first
        await treq.content(response).addTimeout(10, reactor)
        fields = await self.logged(firstId)
        self.assertEqual((fields["status"], fields["error"]), (200, None))


class SecretTests(RequestLogCase):
    async def test_noHeaderValueAnywhere(self) -> None:
        """
        No header value of the client's and no key of the config's reaches
        a log event (the request log or any other), C{/status/data} or
        C{/metrics}; yet they did reach the upstreams.
        """
        claude = self.mock(respondJSON(OVERLOADED, status=529))
        zai = self.mock(respondEvents(anthropicStream("hi there", "glm-4.6")))
        self.serve(
            FAILOVER_CONFIG.format(claude=claude.url, zai=zai.url),
            {"Z_AI_API_KEY": PROVIDER_KEY},
        )
        headers = {
            b"authorization": [CLIENT_AUTH.encode()],
            b"x-custom-thing": [CUSTOM_VALUE.encode()],
            b"user-agent": [AGENT.encode()],
        }
        for stream in (True, False):
            status, _, requestId = await self.exchange(
                messageBody(stream=stream), headers
            )
            self.assertEqual(status, 200)
            self.assertEqual(self.checkEvent(requestId)["attempts"], 2)
        self.assertIn(CLIENT_KEY.encode(), claude.allRaw)
        self.assertIn(CUSTOM_VALUE.encode(), claude.allRaw)
        self.assertIn(AGENT.encode(), claude.allRaw)
        self.assertIn(PROVIDER_KEY.encode(), zai.allRaw)
        statusData = await self.get("/status/data")
        self.assertEqual(len(json.loads(statusData)["recent"]), 2)
        metrics = await self.get("/metrics")
        self.assertIn(b"ccrouter_requests_total", metrics)
        texts = {
            "/status/data": statusData.decode("utf-8"),
            "/metrics": metrics.decode("utf-8"),
        }
        for index, event in enumerate(self.events):
            texts[f"event {index} as text"] = formatEvent(event)
            texts[f"event {index} as fields"] = repr(event)
        for where, text in texts.items():
            for canary in CANARIES:
                self.assertNotIn(canary, text, f"{where}: {text}")

    async def test_hostilePath(self) -> None:
        """
        The path is the client's to choose, like the model name: what the
        record keeps of it is cut short (the log writer cuts only top-level
        fields, never the record's) and has anything shaped like a key
        redacted (the log writer redacts its lines, but C{/status/data}
        serves the record as it is).
        """
        upstream = self.mock(respondJSON({"ok": True}))
        self.serve(f'default: {{url: "{upstream.url}"}}\n')
        key = "sk-ant-api03-PATHKEYCANARY0f3e9a"
        path = f"/v1/{key}/" + "p" * 6000
        self.sent += 1
        response = await self.http.get(self.url + path).addTimeout(10, reactor)
        self.assertEqual(response.code, 200)
        await treq.content(response).addTimeout(10, reactor)
        self.assertIn(key.encode(), upstream.allRaw)
        [requestId] = response.headers.getRawHeaders(REQUEST_ID_HEADER)
        fields = await self.logged(requestId.decode("ascii"))
        statusData = await self.get("/status/data")
        self.assertEqual(
            {
                "logged length": len(fields["path"]) <= FIELD_LIMIT,
                "key in /status/data": b"PATHKEYCANARY" in statusData,
            },
            {"logged length": True, "key in /status/data": False},
        )


class LocalAnswerTests(RequestLogCase):
    """
    Requests ccrouter answers itself, without an upstream: a token count
    an upstream cannot make.  The data contract: "a request answered
    locally has no target"; and C{attempts} counts upstream requests made.
    """

    async def countTokens(self) -> tuple[int, bytes, str]:
        self.sent += 1
        response = await self.http.request(
            "POST",
            self.url + "/v1/messages/count_tokens",
            headers={
                b"x-api-key": [CLIENT_KEY.encode()],
                b"content-type": [b"application/json"],
                b"anthropic-version": [b"2023-06-01"],
            },
            data=json.dumps(
                {
                    "model": "claude-haiku-4-5",
                    "messages": [{"role": "user", "content": "count these words"}],
                }
            ).encode(),
        ).addTimeout(10, reactor)
        [requestId] = response.headers.getRawHeaders(REQUEST_ID_HEADER)
        self.responseIds.append(requestId.decode("ascii"))
        content = await treq.content(response).addTimeout(10, reactor)
        await self.logged(requestId.decode("ascii"))
        return response.code, content, requestId.decode("ascii")

    async def test_translatedUpstreamCountsLocally(self) -> None:
        """
        An OpenAI-format upstream has no token counting: the count is
        estimated here, so no upstream was tried and none is the target,
        nor is the request counted against one.
        """
        upstream = self.mock(respondJSON({}))
        self.serve(
            f"""
default: {{url: "http://127.0.0.1:9"}}
upstreams:
  deepseek:
    url: "{upstream.url}/v1"
    format: openai
    auth: {{header: authorization, value: "Bearer ${{DEEPSEEK_KEY}}"}}
routes:
  - match: "claude-*"
    model: deepseek-chat
    upstream: deepseek
""",
            {"DEEPSEEK_KEY": PROVIDER_KEY},
        )
        status, content, requestId = await self.countTokens()
        self.assertEqual(status, 200)
        self.assertIsInstance(json.loads(content)["input_tokens"], int)
        self.assertEqual(upstream.requests, [])
        fields = self.checkEvent(requestId)
        self.assertEqual(
            (fields["target"], fields["attempts"], fields["failover_path"]),
            (None, 0, []),
        )
        self.assertIsNone(
            self.live.stats.registry.get_sample_value(
                "ccrouter_requests_total",
                {"target": "deepseek", "model": "deepseek-chat", "status_class": "2xx"},
            )
        )

    async def test_countTokensFallback(self) -> None:
        """
        A provider without C{count_tokens} (404): the same upstream is not
        "failed over" to itself; the request made one upstream attempt.
        The next count is estimated at once, with no upstream attempt.
        """
        claude = self.mock(respondJSON(anthropicMessage("hi")))
        zai = self.mock(respondJSON({"error": "not found"}, status=404))
        self.serve(
            f"""
default: {{url: "{claude.url}"}}
upstreams:
  zai:
    url: "{zai.url}/api/anthropic"
    auth: {{header: x-api-key, value: "${{Z_AI_API_KEY}}"}}
routes:
  - match: "claude-haiku"
    model: "glm-4.5-air"
    upstream: zai
""",
            {"Z_AI_API_KEY": PROVIDER_KEY},
        )
        status, _, first = await self.countTokens()
        self.assertEqual(status, 200)
        self.assertEqual(len(zai.requests), 1)
        status, _, second = await self.countTokens()
        self.assertEqual(status, 200)
        self.assertEqual(len(zai.requests), 1)

        def attempts(requestId: str) -> tuple[Any, ...]:
            fields = self.checkEvent(requestId)
            return (
                fields["target"],
                fields["attempts"],
                fields["failover_path"],
                fields["status"],
                fields["error"],
            )

        # All at once, so that a failure shows everything that is wrong.
        self.assertEqual(
            {
                "first": attempts(first),
                "failovers zai to zai": self.failovers("zai", "zai"),
                "second": attempts(second),
            },
            {
                "first": ("zai", 1, ["zai"], 200, None),
                "failovers zai to zai": None,
                "second": (None, 0, [], 200, None),
            },
        )
