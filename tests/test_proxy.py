"""
Tests for L{ccrouter.proxy} and L{ccrouter.relay}, in memory: the client is
a L{StubTreq} over the proxy resource, the upstream a resource behind a
L{RequestTraversalAgent}, and time a L{Clock}.
"""

from __future__ import annotations

import gc
import gzip
import json
import zlib
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet import error
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ccrouter.config import Config, Upstream, parseConfig
from ccrouter.live import LiveState
from ccrouter.root import resourceTree
from tests.sseclient import EventReader

CONFIG = """
default:
  url: "https://api.anthropic.com"
timeouts:
  stream_headers: 60
  headers: 600
  idle: 300
routes:
  - match: "claude-haiku"
    model: "glm-4.5-air"
    upstream:
      url: "https://api.z.ai/api/anthropic"
      auth: {header: "x-api-key", value: "${Z_AI_API_KEY}"}
"""
ZAI_KEY = "zai-CANARY-3f1c"
WALL = 1795262400.0
CLIENT_KEY = "sk-ant-api03-CLIENT-CANARY"


class ControlledUpstream(Resource):
    """
    Holds every request open for the test to answer by hand.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.lost: list[Any] = []

    def render(self, request: Request) -> int:
        assert request.content is not None
        self.requests.append(request)
        self.bodies.append(request.content.read())
        request.notifyFinish().addErrback(self.lost.append)
        return NOT_DONE_YET


@implementer(IAgent)
class FailingAgent:
    def __init__(self, exception: Exception) -> None:
        self.exception = exception

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        return fail(self.exception)


def message(model: str, stream: bool = True) -> bytes:
    return json.dumps(
        {
            "model": model,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
    ).encode()


class ProxyHarness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.config: Config = parseConfig(CONFIG, "c.yaml", {"Z_AI_API_KEY": ZAI_KEY})
        self.upstream = ControlledUpstream()
        self.upstreamAgent = RequestTraversalAgent(self.upstream)
        self.agent: IAgent = self.upstreamAgent
        self.chosen: list[Upstream] = []
        self.live = LiveState(self.config, now=self.clock.seconds, wallNow=lambda: WALL)
        self.tree = resourceTree(self.live, self.agentFor, self.clock)
        self.client = StubTreq(self.tree)

    def agentFor(self, upstream: Upstream) -> IAgent:
        self.chosen.append(upstream)
        return self.agent

    def flush(self) -> None:
        for _ in range(3):
            self.upstreamAgent.flush()
            self.client.flush()

    def post(
        self, body: bytes, headers: dict[bytes, list[bytes]] | None = None
    ) -> Deferred[Any]:
        sent = {
            b"x-api-key": [CLIENT_KEY.encode()],
            b"content-type": [b"application/json"],
        }
        sent.update(headers or {})
        d: Deferred[Any] = self.client.request(
            "POST",
            "http://127.0.0.1:8080/v1/messages?beta=true",
            headers=sent,
            data=body,
            unbuffered=True,
            allow_redirects=False,
        )
        self.flush()
        return d

    def startStream(self, request: Request) -> None:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"request-id", b"req_1")
        request.write(b"")
        self.flush()

    def openStream(self) -> tuple[Request, EventReader]:
        """
        A routed streaming request whose response headers have arrived.
        """
        response = self.successResultOf(self.startedStream())
        reader = EventReader()
        response.deliverBody(reader)
        self.flush()
        return self.upstream.requests[0], reader

    def startedStream(self) -> Deferred[Any]:
        d = self.post(message("claude-haiku-4-5"))
        self.assertNoResult(d)
        self.startStream(self.upstream.requests[0])
        return d


class ForwardingTests(ProxyHarness):
    def test_passthroughIsTransparent(self) -> None:
        """
        S8, H5: an unrouted request reaches the default upstream with its path,
        query, body bytes and the client's credentials; the response comes
        back with its status, headers and body.
        """
        body = message("claude-sonnet-4-5", stream=False)
        d = self.post(body, {b"anthropic-beta": [b"oauth-2025-04-20"]})
        [upstreamRequest] = self.upstream.requests
        self.assertEqual(self.chosen, [self.config.default])
        self.assertEqual(upstreamRequest.uri, b"/v1/messages?beta=true")
        self.assertEqual(self.upstream.bodies, [body])
        headers = upstreamRequest.requestHeaders
        self.assertEqual(headers.getRawHeaders(b"x-api-key"), [CLIENT_KEY.encode()])
        self.assertEqual(
            headers.getRawHeaders(b"anthropic-beta"), [b"oauth-2025-04-20"]
        )
        self.assertEqual(headers.getRawHeaders(b"host"), [b"api.anthropic.com"])
        self.assertEqual(headers.getRawHeaders(b"accept-encoding"), [b"identity"])

        upstreamRequest.setResponseCode(201)
        upstreamRequest.setHeader(b"content-type", b"application/json")
        upstreamRequest.setHeader(b"request-id", b"req_42")
        upstreamRequest.setHeader(b"server", b"upstream-server")
        upstreamRequest.setHeader(b"content-length", b"11")
        upstreamRequest.write(b'{"ok": true}'[:11])
        upstreamRequest.finish()
        self.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 201)
        self.assertEqual(response.headers.getRawHeaders(b"request-id"), [b"req_42"])
        # Twisted's client moves Content-Length out of the headers.
        self.assertEqual(response.length, 11)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertEqual(
            response.headers.getRawHeaders(b"server"), [b"upstream-server"]
        )
        self.assertEqual(self.successResultOf(response.content()), b'{"ok": true'[:11])

    def test_routedRequestGetsProviderKeyAndModel(self) -> None:
        """
        S8: a routed request carries the provider's key, never the client's, and
        the rewritten model; the path is appended to the base path.
        """
        self.post(message("claude-haiku-4-5"), {b"authorization": [b"Bearer oat"]})
        [upstreamRequest] = self.upstream.requests
        self.assertEqual(self.chosen[0].name, "api.z.ai")
        self.assertEqual(upstreamRequest.uri, b"/api/anthropic/v1/messages?beta=true")
        headers = upstreamRequest.requestHeaders
        self.assertEqual(headers.getRawHeaders(b"x-api-key"), [ZAI_KEY.encode()])
        self.assertIsNone(headers.getRawHeaders(b"authorization"))
        self.assertEqual(headers.getRawHeaders(b"host"), [b"api.z.ai"])
        self.assertEqual(self.upstream.bodies, [message("glm-4.5-air")])

    def test_redirectRelayedNotFollowed(self) -> None:
        """
        S9: a redirect goes back to the client; the upstream sees one request.
        """
        d = self.post(message("claude-haiku-4-5"))
        [upstreamRequest] = self.upstream.requests
        upstreamRequest.redirect(b"https://elsewhere.example/steal")
        upstreamRequest.finish()
        self.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 302)
        self.assertEqual(
            response.headers.getRawHeaders(b"location"),
            [b"https://elsewhere.example/steal"],
        )
        self.assertEqual(len(self.upstream.requests), 1)

    def test_noCookieCarriedBetweenRequests(self) -> None:
        """
        S6: a cookie an upstream sets is neither relayed to the client nor
        replayed on the next request.
        """
        first = self.post(message("claude-haiku-4-5", stream=False))
        self.upstream.requests[0].addCookie(b"cdn", b"tracking")
        self.upstream.requests[0].finish()
        self.flush()
        response = self.successResultOf(first)
        self.assertIsNone(response.headers.getRawHeaders(b"set-cookie"))
        # A new client, so that only a cookie the proxy kept could be sent.
        self.client = StubTreq(self.tree)
        self.post(message("claude-haiku-4-5", stream=False))
        self.assertIsNone(
            self.upstream.requests[1].requestHeaders.getRawHeaders(b"cookie")
        )


class StreamingTests(ProxyHarness):
    def test_eachChunkRelayedAsItArrives(self) -> None:
        """
        Status and headers reach the client before any event, and each event
        reaches it before the upstream sends the next.
        """
        d = self.startedStream()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"request-id"), [b"req_1"])
        reader = EventReader()
        response.deliverBody(reader)
        upstreamRequest = self.upstream.requests[0]
        events = [b'event: ping\ndata: {"n": %d}\n\n' % i for i in range(5)]
        events.append(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
        for count, event in enumerate(events, 1):
            upstreamRequest.write(event)
            self.flush()
            self.assertEqual(reader.events, events[:count])
        upstreamRequest.finish()
        self.flush()
        self.assertEqual(self.successResultOf(reader.done), b"".join(events))

    def test_cleanEndBeforeMessageStop(self) -> None:
        """
        F6: a stream the upstream ends cleanly but without C{message_stop} is
        not complete: the client gets an error event after what was sent,
        never a clean-looking truncated stream.
        """
        upstreamRequest, reader = self.openStream()
        partial = b'event: message_start\ndata: {"type": "message_start"}\n\n'
        upstreamRequest.write(partial)
        upstreamRequest.finish()
        self.flush()
        body = self.successResultOf(reader.done)
        self.assertTrue(body.startswith(partial))
        self.assertEqual(reader.events[-1].split(b"\n")[0], b"event: error")
        self.assertIn(b"before message_stop", reader.events[-1])

    def test_upstreamDropBetweenEvents(self) -> None:
        """
        F6: an upstream that breaks off between events is reported with an
        Anthropic error event, not a clean-looking end.
        """
        upstreamRequest, reader = self.openStream()
        upstreamRequest.write(b"event: ping\ndata: {}\n\n")
        self.flush()
        upstreamRequest.channel.transport.abortConnection()
        self.flush()
        body = self.successResultOf(reader.done)
        self.assertTrue(body.startswith(b"event: ping\ndata: {}\n\n"))
        last = reader.events[-1]
        self.assertTrue(last.startswith(b"event: error\ndata: "), last)
        error_ = json.loads(last.split(b"data: ", 1)[1])
        self.assertEqual(error_["type"], "error")
        self.assertEqual(error_["error"]["type"], "api_error")
        self.assertIn("api.z.ai:443", error_["error"]["message"])
        self.assertNotIn(ZAI_KEY, body.decode())

    def test_upstreamDropInsideEvent(self) -> None:
        """
        F6: an upstream that breaks off in the middle of an event makes the
        client's response fail, since no event can be added safely.
        """
        upstreamRequest, reader = self.openStream()
        upstreamRequest.write(b'event: content_block_delta\ndata: {"trunc')
        self.flush()
        upstreamRequest.channel.transport.abortConnection()
        self.flush()
        self.failureResultOf(reader.done, ResponseFailed)

    def test_idleUpstreamCut(self) -> None:
        """
        F5: an upstream silent for the idle timeout is closed and the client gets
        a timeout error event.
        """
        upstreamRequest, reader = self.openStream()
        upstreamRequest.write(b"event: ping\ndata: {}\n\n")
        self.flush()
        self.clock.advance(299)
        upstreamRequest.write(b"event: ping\ndata: {}\n\n")
        self.flush()
        self.clock.advance(299)
        self.flush()
        self.assertNoResult(reader.done)
        self.assertEqual(self.upstream.lost, [])
        self.clock.advance(1)
        self.flush()
        self.successResultOf(reader.done)
        self.assertIn(b'"timeout_error"', reader.events[-1])
        self.assertEqual(len(self.upstream.lost), 1)

    def test_clientDisconnectClosesUpstream(self) -> None:
        """
        F14: a client that goes away mid-stream closes the upstream connection.
        """
        upstreamRequest, reader = self.openStream()
        upstreamRequest.write(b"event: ping\ndata: {}\n\n")
        self.flush()
        assert reader.transport is not None
        reader.transport.stopProducing()
        self.flush()
        self.failureResultOf(reader.done, ResponseFailed)
        self.assertEqual(len(self.upstream.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_clientDisconnectBeforeHeaders(self) -> None:
        """
        F14: a client that goes away while the upstream has not answered yet
        cancels the upstream request.
        """
        d = self.post(message("claude-haiku-4-5"))
        d.cancel()
        self.failureResultOf(d)
        self.flush()
        self.assertEqual(len(self.upstream.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ErrorTests(ProxyHarness):
    def errorOf(self, d: Deferred[Any]) -> tuple[int, dict[str, Any]]:
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        return response.code, json.loads(body)

    def providerEcho(self, coding: bytes | None, body: bytes) -> Any:
        """
        The response the client gets when the provider answers a routed
        request with 401 and C{body} in C{coding}.
        """
        d = self.post(message("claude-haiku-4-5", stream=False))
        [upstreamRequest] = self.upstream.requests
        upstreamRequest.setResponseCode(401)
        upstreamRequest.setHeader(b"content-type", b"application/json")
        if coding is not None:
            upstreamRequest.setHeader(b"content-encoding", coding)
        upstreamRequest.write(body)
        upstreamRequest.finish()
        self.flush()
        return self.successResultOf(d)

    def assertNoCoding(self, response: Any) -> None:
        # treq's decoder turns a missing Content-Encoding into an empty one.
        self.assertEqual(
            response.headers.getRawHeaders(b"content-encoding", [b""]), [b""]
        )

    def test_echoedKeyRemovedFromGzip(self) -> None:
        """
        S13: a gzipped error that echoes ccrouter's provider key reaches the
        client decoded, with the key taken out and no C{Content-Encoding}.
        """
        echo = json.dumps(
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": f"bad {ZAI_KEY}"},
            }
        ).encode()
        response = self.providerEcho(b"gzip", gzip.compress(echo))
        self.assertEqual(response.code, 401)
        self.assertNoCoding(response)
        body = self.successResultOf(response.content())
        self.assertNotIn(ZAI_KEY.encode(), body)
        self.assertEqual(json.loads(body)["error"]["type"], "authentication_error")

    def test_echoInUnreadableCodingReplaced(self) -> None:
        """
        S13: an error body in a coding ccrouter does not read (deflate, br)
        could hide the key, so it is replaced by ccrouter's own error for
        the status, as JSON without the upstream's C{Content-Encoding}.
        """
        echo = json.dumps({"error": {"message": f"bad key {ZAI_KEY}"}}).encode()
        for coding, body in [(b"deflate", zlib.compress(echo)), (b"br", echo)]:
            self.upstream.requests.clear()
            response = self.providerEcho(coding, body)
            self.assertEqual(response.code, 401, coding)
            self.assertNoCoding(response)
            self.assertEqual(
                response.headers.getRawHeaders(b"content-type"), [b"application/json"]
            )
            answer = self.successResultOf(response.content())
            self.assertNotIn(ZAI_KEY.encode(), answer)
            self.assertNotIn(b"bad key", answer)
            error = json.loads(answer)["error"]
            self.assertEqual(error["type"], "authentication_error")
            self.assertIn("answered HTTP 401", error["message"])

    def test_headersTimeoutStreaming(self) -> None:
        """
        F2: a streaming request whose upstream sends no headers within
        C{stream_headers} gets 504 C{timeout_error}.
        """
        d = self.post(message("claude-haiku-4-5"))
        self.clock.advance(59)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(1)
        self.flush()
        status, body = self.errorOf(d)
        self.assertEqual(status, 504)
        self.assertEqual(
            body,
            {
                "type": "error",
                "error": {
                    "type": "timeout_error",
                    "message": "upstream api.z.ai:443 sent no response within 60 s",
                },
            },
        )
        self.assertEqual(len(self.upstream.lost), 1)

    def test_headersTimeoutNonStreaming(self) -> None:
        """
        F2: a non-streaming request waits up to C{headers} (600 s) for its
        response headers, then gets 504.
        """
        d = self.post(message("claude-haiku-4-5", stream=False))
        self.clock.advance(599)
        self.flush()
        self.assertNoResult(d)
        self.clock.advance(1)
        self.flush()
        self.assertEqual(self.errorOf(d)[0], 504)

    def test_connectionRefused(self) -> None:
        self.agent = FailingAgent(error.ConnectionRefusedError())
        status, body = self.errorOf(self.post(message("claude-haiku-4-5")))
        self.assertEqual(status, 502)
        self.assertEqual(body["error"]["type"], "api_error")
        self.assertEqual(
            body["error"]["message"],
            "cannot connect to upstream api.z.ai:443: connection refused",
        )

    def test_connectTimeout(self) -> None:
        """
        F3: the Agent's connect timeout error gives 504.  (A real one is produced
        in the end-to-end tests; a memory reactor never times out a connect.)
        """
        self.agent = FailingAgent(error.TimeoutError())
        status, body = self.errorOf(self.post(message("claude-haiku-4-5")))
        self.assertEqual(status, 504)
        self.assertEqual(
            body["error"]["message"],
            "connecting to upstream api.z.ai:443 timed out after 5 s",
        )


class GarbageTests(ProxyHarness):
    """
    An exchange that is over leaves nothing for the cyclic garbage
    collector: plain reference counting frees it.  At 64 requests in
    flight, each exchange outlives a few young-generation collections, so
    what a cycle holds reaches the oldest generation, and collecting that
    cost a tenth of the proxy's CPU.
    """

    #: The classes of one exchange that a reference cycle has held.
    KINDS = ("_Exchange", "ResponseRelay", "UsageReader", "RequestRecord")

    def setUp(self) -> None:
        super().setUp()
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    def alive(self) -> dict[str, int]:
        counts = dict.fromkeys(self.KINDS, 0)
        for thing in gc.get_objects():
            name = type(thing).__name__
            if name in counts and type(thing).__module__.startswith("ccrouter."):
                counts[name] += 1
        return counts

    def test_plainAnswerFreed(self) -> None:
        """
        A non-streamed answer relayed whole leaves no exchange, relay,
        usage reader or record behind.
        """
        for _ in range(3):
            d = self.post(message("claude-sonnet-4-5", stream=False))
            upstreamRequest = self.upstream.requests.pop()
            upstreamRequest.setHeader(b"content-type", b"application/json")
            upstreamRequest.write(b'{"usage": {"input_tokens": 3}}')
            upstreamRequest.finish()
            self.flush()
            response = self.successResultOf(d)
            reader = EventReader()
            response.deliverBody(reader)
            self.flush()
            self.successResultOf(reader.done)
        del d, response, reader, upstreamRequest
        self.assertEqual(self.alive(), dict.fromkeys(self.KINDS, 0))

    def test_streamFreed(self) -> None:
        """
        So does a relayed stream.
        """
        upstreamRequest, reader = self.openStream()
        upstreamRequest.write(
            b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
        )
        upstreamRequest.finish()
        self.flush()
        self.successResultOf(reader.done)
        del upstreamRequest, reader
        self.upstream.requests.clear()
        self.assertEqual(self.alive(), dict.fromkeys(self.KINDS, 0))
