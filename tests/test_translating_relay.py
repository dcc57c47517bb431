"""
Tests for translated (C{format: openai}) upstreams through the whole proxy,
in memory: L{ccrouter.dialects.prepare}, L{ccrouter.proxy}'s translated
answers and L{ccrouter.relay.TranslatingRelay}.  As in L{tests.test_failover}:
a L{StubTreq} client over the resource tree, one controlled upstream per
provider behind L{RequestTraversalAgent}s, and a L{Clock}.  Every Anthropic
stream the client receives is checked with L{checkStream}.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import Request

from ccrouter.breaker import Outcome, Verdict
from ccrouter.config import Upstream, parseConfig
from ccrouter.live import LiveState
from ccrouter.relay import PING_INTERVAL, TranslatingRelay
from ccrouter.root import RootResource, resourceTree
from ccrouter.translate import stream
from ccrouter.translate.grammar import Event, checkStream
from ccrouter.translate.request import ToolNames
from tests.sseclient import EventReader
from tests.test_proxy import ControlledUpstream, message
from tests.test_relay import UPSTREAM, ClientRequest, UpstreamBody

PROVIDER_KEY = "sk-deepseek-RELAY-CANARY-51d0"
CLIENT_KEY = "sk-ant-api03-RELAY-CLIENT-CANARY-9b7e"
CLIENT_TOKEN = "sk-ant-oat01-RELAY-OAUTH-CANARY-33c1"
WALL = 1795262400.0
IDLE = 30.0
CONFIG = """
default: {url: "https://api.anthropic.com"}
upstreams:
  deepseek:
    url: "https://api.deepseek.com/v1"
    format: openai
    profile: deepseek
    auth: {header: authorization, value: "Bearer ${DEEPSEEK_API_KEY}"}
    timeouts: {idle: 30s}
default_mode: auto
breaker: {failures: 3, timeouts: 2, cooldowns: [30m, 60m]}
modes:
  ds:
    - match: "claude-*"
      model: "deepseek-chat"
      upstream: deepseek
  claude: []
  auto: {failover: [ds, claude]}
  back: {failover: [claude, ds]}
"""
OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}'


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    """
    One OpenAI chat completion chunk, framed as an SSE data event.
    """
    document = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "deepseek-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(document).encode() + b"\n\n"


ROLE = chunk({"role": "assistant", "content": ""})
USAGE = (
    b"data: "
    + json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "deepseek-chat",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        }
    ).encode()
    + b"\n\n"
)
DONE = b"data: [DONE]\n\n"
#: Each upstream chunk of a text answer, and the Anthropic events it must
#: complete on its own.
TEXT_STREAM: list[tuple[bytes, list[str]]] = [
    (ROLE, ["message_start"]),
    (
        chunk({"reasoning_content": "The user greets me."}),
        ["content_block_start", "content_block_delta"],
    ),
    (
        chunk({"content": "Hello"}),
        [
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
        ],
    ),
    (chunk({"content": " from DeepSeek"}), ["content_block_delta"]),
    (chunk({}, "stop"), ["content_block_stop"]),
    (USAGE, []),
    (DONE, ["message_delta", "message_stop"]),
]
COMPLETION = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1,
    "model": "deepseek-chat",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Plain answer"},
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38},
}
PROVIDER_ERROR = (
    b'data: {"error": {"message": "overloaded", "type": "server_error",'
    b' "code": 529}}\n\n'
)


class RecordingRoot(Resource):
    """
    The real root resource, remembering each request it serves so a test
    can reach the client connection (its L{HTTPChannel}) from the server
    side.
    """

    isLeaf = True

    def __init__(self, root: RootResource) -> None:
        super().__init__()
        self._root = root
        self.requests: list[Request] = []

    def render(self, request: Request) -> int | bytes:
        self.requests.append(request)
        return self._root.render(request)


def eventNames(events: list[Event]) -> list[str]:
    return [event.name for event in events]


class TranslatingHarness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        config = parseConfig(CONFIG, "c.yaml", {"DEEPSEEK_API_KEY": PROVIDER_KEY})
        self.live = LiveState(
            config, now=self.clock.seconds, wallNow=lambda: WALL + self.clock.seconds()
        )
        self.outcomes: list[tuple[str | None, Outcome]] = []
        record = self.live.record

        def recording(target: str | None, outcome: Outcome, ticket: Any) -> None:
            self.outcomes.append((target, outcome))
            record(target, outcome, ticket)

        self.live.record = recording  # type: ignore[method-assign]
        self.deepseek = ControlledUpstream()
        self.anthropic = ControlledUpstream()
        self.traversals = [
            RequestTraversalAgent(self.deepseek),
            RequestTraversalAgent(self.anthropic),
        ]
        self.agents: dict[str, IAgent] = {
            "deepseek": self.traversals[0],
            "default": self.traversals[1],
        }
        self.root = RecordingRoot(resourceTree(self.live, self.agentFor, self.clock))
        self.client = StubTreq(self.root)

    def agentFor(self, upstream: Upstream) -> IAgent:
        return self.agents[upstream.name]

    def flush(self) -> None:
        for _ in range(3):
            for agent in self.traversals:
                agent.flush()
            self.client.flush()
            # What the relays leave for the next reactor turn (an upstream
            # stopped after the translated stream has ended).
            self.clock.advance(0)

    def post(
        self,
        body: bytes | None = None,
        path: str = "/v1/messages?beta=true",
        headers: dict[bytes, list[bytes]] | None = None,
    ) -> Deferred[Any]:
        sent = {
            b"x-api-key": [CLIENT_KEY.encode()],
            b"content-type": [b"application/json"],
        }
        sent.update(headers or {})
        d: Deferred[Any] = self.client.request(
            "POST",
            "http://127.0.0.1:8080" + path,
            headers=sent,
            data=message("claude-sonnet-4-5", stream=False) if body is None else body,
            unbuffered=True,
        )
        self.flush()
        return d

    def answer(
        self,
        request: Request,
        status: int,
        body: bytes = b"{}",
        headers: dict[bytes, bytes] | None = None,
    ) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        for name, value in (headers or {}).items():
            request.setHeader(name, value)
        request.write(body)
        request.finish()
        self.flush()

    def result(self, d: Deferred[Any]) -> tuple[int, Any, bytes]:
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response.code, response.headers, body

    def report(self, target: str) -> Any:
        breaker = self.live.breaker(target)
        assert breaker is not None
        return breaker.report(self.clock.seconds())

    def primeFailure(self, target: str = "ds") -> None:
        """
        One failure on the books, so that a success shows (it clears the
        count) and a neutral outcome shows too (it does not).
        """
        breaker = self.live.breaker(target)
        assert breaker is not None
        breaker.record(Outcome(Verdict.FAILURE, "primed"), self.clock.seconds())
        self.assertEqual(self.report(target).consecutiveFailures, 1)

    def tick(self, seconds: float) -> None:
        """
        Let C{seconds} pass one second at a time, as a real clock would.
        """
        for _ in range(int(seconds)):
            self.clock.advance(1)
            self.flush()

    def verdicts(self) -> list[tuple[str | None, Verdict]]:
        return [(target, outcome.verdict) for target, outcome in self.outcomes]

    def openStream(self) -> tuple[Request, EventReader, Any]:
        """
        A streaming request to the translated route whose upstream has sent
        its 200 headers and nothing else; the client reads the body.
        """
        d = self.post(message("claude-sonnet-4-5", stream=True))
        [upstreamRequest] = self.deepseek.requests
        upstreamRequest.setResponseCode(200)
        upstreamRequest.setHeader(b"content-type", b"text/event-stream")
        upstreamRequest.write(b"")
        self.flush()
        response = self.successResultOf(d)
        reader = EventReader()
        response.deliverBody(reader)
        self.flush()
        self.assertEqual(reader.events, [])
        return upstreamRequest, reader, response

    def send(self, upstreamRequest: Request, data: bytes) -> None:
        upstreamRequest.write(data)
        self.flush()

    def seen(self, reader: EventReader, complete: bool = False) -> list[str]:
        """
        The names of the events the client has so far, checked against the
        Anthropic grammar.
        """
        return eventNames(checkStream(reader.body, complete=complete))

    def finalError(self, reader: EventReader) -> dict[str, Any]:
        """
        The client's stream ended (cleanly, at the HTTP level) with an
        C{error} event: its C{error} object.
        """
        self.successResultOf(reader.done)
        events = checkStream(reader.body)
        self.assertEqual(events[0].name, "message_start")
        self.assertEqual(events[-1].name, "error")
        error = events[-1].data["error"]
        assert isinstance(error, dict)
        return error


class StreamTests(TranslatingHarness):
    def test_eventByEvent(self) -> None:
        """
        Each upstream chunk reaches the client as exactly the Anthropic
        events it completes, before the next chunk is sent; the whole
        stream is a valid, complete Anthropic stream.
        """
        upstreamRequest, reader, response = self.openStream()
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"),
            [b"text/event-stream; charset=utf-8"],
        )
        expected: list[str] = []
        for data, names in TEXT_STREAM[:-1]:
            self.send(upstreamRequest, data)
            expected += names
            self.assertEqual(self.seen(reader), expected)
        self.assertNoResult(reader.done)
        self.send(upstreamRequest, TEXT_STREAM[-1][0])
        expected += TEXT_STREAM[-1][1]
        self.successResultOf(reader.done)
        events = checkStream(reader.body)
        self.assertEqual(eventNames(events), expected)
        start = events[0].data["message"]
        assert isinstance(start, dict)
        self.assertEqual(start["model"], "claude-sonnet-4-5")
        text = "".join(
            str(event.data["delta"]["text"])  # type: ignore[index]
            for event in events
            if event.name == "content_block_delta"
            and event.data["delta"]["type"] == "text_delta"  # type: ignore[index]
        )
        self.assertEqual(text, "Hello from DeepSeek")
        self.assertEqual(events[-2].data["usage"]["output_tokens"], 5)  # type: ignore[index]

    def test_chunkSplitAnywhere(self) -> None:
        """
        Z2: an upstream chunk cut in two completes its events only with its last
        byte.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        text = chunk({"content": "Hello"})
        self.send(upstreamRequest, text[:20])
        self.assertEqual(self.seen(reader), ["message_start"])
        self.send(upstreamRequest, text[20:])
        self.assertEqual(
            self.seen(reader),
            ["message_start", "content_block_start", "content_block_delta"],
        )

    def test_doneEndsTheResponseAndClosesTheUpstream(self) -> None:
        """
        C{[DONE]} completes the message: the client's response ends at
        once even if the upstream keeps its connection open, which is
        closed; the target's breaker hears a success.
        """
        self.primeFailure()
        upstreamRequest, reader, _ = self.openStream()
        for data, _names in TEXT_STREAM:
            self.send(upstreamRequest, data)
        self.successResultOf(reader.done)
        self.assertEqual(self.seen(reader, complete=True)[-1], "message_stop")
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.verdicts(), [("ds", Verdict.SUCCESS)])
        self.assertEqual(self.report("ds").consecutiveFailures, 0)
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_doneThenCleanEnd(self) -> None:
        upstreamRequest, reader, _ = self.openStream()
        for data, _names in TEXT_STREAM:
            upstreamRequest.write(data)
        upstreamRequest.finish()
        self.flush()
        self.successResultOf(reader.done)
        self.assertEqual(self.seen(reader, complete=True)[-1], "message_stop")
        self.assertEqual(self.verdicts(), [("ds", Verdict.SUCCESS)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_finishReasonThenCleanEndWithoutDone(self) -> None:
        """
        A stream that reported its C{finish_reason} and ends cleanly
        without C{[DONE]} is whole.
        """
        self.primeFailure()
        upstreamRequest, reader, _ = self.openStream()
        for data, _names in TEXT_STREAM[:-1]:
            upstreamRequest.write(data)
        upstreamRequest.finish()
        self.flush()
        self.successResultOf(reader.done)
        names = self.seen(reader, complete=True)
        self.assertEqual(names[-2:], ["message_delta", "message_stop"])
        self.assertEqual(self.verdicts(), [("ds", Verdict.SUCCESS)])
        self.assertEqual(self.report("ds").consecutiveFailures, 0)

    def test_cleanEndWithoutFinishReason(self) -> None:
        """
        F6: a stream the upstream ends cleanly before any C{finish_reason} was
        cut short: an C{error} event, never a clean-looking message.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        upstreamRequest.finish()
        self.flush()
        error = self.finalError(reader)
        self.assertEqual(error["type"], "api_error")
        self.assertIn("finish_reason", error["message"])
        self.assertNotIn("message_stop", self.seen(reader, complete=True))
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_upstreamDropsMidStream(self) -> None:
        """
        F6: an upstream connection that breaks off mid-stream ends the client's
        stream with an C{api_error} event (the stream has started: no failover)
        and counts against the target.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        self.send(upstreamRequest, b'data: {"id": "chatcmpl-1", "cho')
        upstreamRequest.channel.transport.abortConnection()
        self.flush()
        error = self.finalError(reader)
        self.assertEqual(error["type"], "api_error")
        self.assertIn("api.deepseek.com:443", error["message"])
        self.assertNotIn(PROVIDER_KEY, reader.body.decode())
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_upstreamDropsBeforeAnyChunk(self) -> None:
        """
        Even with nothing translated yet the client gets a valid stream:
        C{message_start}, then the error.
        """
        upstreamRequest, reader, _ = self.openStream()
        upstreamRequest.channel.transport.abortConnection()
        self.flush()
        self.assertEqual(self.finalError(reader)["type"], "api_error")
        self.assertEqual(self.seen(reader, complete=True), ["message_start", "error"])
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])

    def test_providerErrorChunk(self) -> None:
        """
        F7: an in-stream provider error ends the client's stream at once with an
        C{error} event, without waiting for the upstream to end, and the
        upstream connection is closed: nothing it sends afterwards is read.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        self.send(upstreamRequest, PROVIDER_ERROR)
        error = self.finalError(reader)
        self.assertEqual(error["message"], "overloaded")
        # The OpenAI type (server_error) wins over the numeric code (529).
        self.assertIn(error["type"], ("api_error", "overloaded_error"))
        self.assertEqual(len(self.deepseek.lost), 1)
        body = reader.body
        self.send(upstreamRequest, chunk({"content": "lo"}) + DONE)
        self.assertEqual(reader.body, body)
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_overlongLine(self) -> None:
        """
        F17: an upstream line that never ends is not buffered without bound: the
        stream ends with an error and the upstream connection is closed.
        """
        self.patch(stream, "MAX_LINE", 4096)
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        self.send(upstreamRequest, b"data: " + b"x" * 4000)
        self.assertNoResult(reader.done)
        self.send(upstreamRequest, b"x" * 200)
        self.assertEqual(self.finalError(reader)["type"], "api_error")
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_plainJSONErrorInA200Stream(self) -> None:
        """
        F17: an upstream that answers a streaming request with 200 and a plain
        JSON error body (no SSE) gives an C{error} event too.
        """
        upstreamRequest, reader, _ = self.openStream()
        upstreamRequest.write(
            b'{"error": {"message": "Insufficient Balance", "type": "unknown_error",'
            b' "code": "invalid_request_error"}}'
        )
        upstreamRequest.finish()
        self.flush()
        error = self.finalError(reader)
        self.assertEqual(error["message"], "Insufficient Balance")
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])

    def test_clientDisconnects(self) -> None:
        """
        F14: a client that leaves mid-stream closes the upstream connection,
        leaves no timer behind, and is neutral for the breaker.
        """
        self.primeFailure()
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        assert reader.transport is not None
        reader.transport.stopProducing()
        self.flush()
        self.failureResultOf(reader.done)
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.verdicts(), [("ds", Verdict.NEUTRAL)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)
        self.clock.advance(1000)
        self.flush()
        self.assertEqual(self.anthropic.requests, [])

    def test_clientDisconnectsWhilePaused(self) -> None:
        """
        F14: a client that leaves while it holds the stream back closes the
        upstream too, and leaves no timer.
        """
        self.primeFailure()
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        self.root.requests[-1].channel.pauseProducing()
        assert reader.transport is not None
        reader.transport.stopProducing()
        self.flush()
        self.failureResultOf(reader.done)
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.verdicts(), [("ds", Verdict.NEUTRAL)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)


class PingTests(TranslatingHarness):
    def test_silenceBeforeAnything(self) -> None:
        """
        An upstream silent from the start: after 10 s the client gets
        C{message_start} and one C{ping}, then a C{ping} every 10 s.
        """
        _, reader, _ = self.openStream()
        self.clock.advance(PING_INTERVAL - 0.5)
        self.flush()
        self.assertEqual(reader.events, [])
        self.clock.advance(0.5)
        self.flush()
        self.assertEqual(self.seen(reader), ["message_start", "ping"])
        self.clock.advance(PING_INTERVAL - 0.5)
        self.flush()
        self.assertEqual(self.seen(reader), ["message_start", "ping"])
        self.clock.advance(0.5)
        self.flush()
        self.assertEqual(self.seen(reader), ["message_start", "ping", "ping"])
        self.assertNoResult(reader.done)

    def test_silenceAfterData(self) -> None:
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        before = self.seen(reader)
        self.clock.advance(PING_INTERVAL)
        self.flush()
        self.assertEqual(self.seen(reader), [*before, "ping"])

    def test_dataResetsThePingTimer(self) -> None:
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        self.clock.advance(PING_INTERVAL - 1)
        self.send(upstreamRequest, chunk({"content": "Hel"}))
        names = self.seen(reader)
        self.assertNotIn("ping", names)
        self.clock.advance(PING_INTERVAL - 1)
        self.flush()
        self.assertEqual(self.seen(reader), names)
        self.clock.advance(1)
        self.flush()
        self.assertEqual(self.seen(reader), [*names, "ping"])

    def test_upstreamCommentsAreForwardedAsPings(self) -> None:
        """
        An upstream keep-alive comment (OpenRouter's C{: PROCESSING}) is
        upstream activity: it becomes a ping and resets the timer.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        self.clock.advance(PING_INTERVAL - 1)
        self.send(upstreamRequest, b": PROCESSING\n\n")
        self.assertEqual(self.seen(reader), ["message_start", "ping"])
        self.clock.advance(PING_INTERVAL - 1)
        self.flush()
        self.assertEqual(self.seen(reader), ["message_start", "ping"])

    def test_noPingsWhileTheClientIsPaused(self) -> None:
        """
        While the client connection is not taking data (its channel paused
        the relay, its registered push producer), no pings are written and
        the idle timeout does not run; once it resumes, pings resume.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        channel = self.root.requests[-1].channel
        channel.pauseProducing()
        self.clock.advance(IDLE * 3)
        self.flush()
        self.assertEqual(self.seen(reader), ["message_start"])
        self.assertEqual(self.deepseek.lost, [])
        channel.resumeProducing()
        self.clock.advance(PING_INTERVAL)
        self.flush()
        self.assertEqual(self.seen(reader), ["message_start", "ping"])

    def test_noPingsWhilePausedAfterLateData(self) -> None:
        """
        Bytes the upstream connection had already read when the client
        paused still reach the relay (a real transport stops reading, but
        the rest of the buffer it read is still parsed and delivered).  They
        must not restart pings while the client is paused.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        channel = self.root.requests[-1].channel
        channel.pauseProducing()
        self.send(upstreamRequest, chunk({"content": "Hel"}))
        names = self.seen(reader)
        self.clock.advance(PING_INTERVAL * 2)
        self.flush()
        self.assertEqual(self.seen(reader), names)

    def test_noTimersAfterTheEnd(self) -> None:
        upstreamRequest, reader, _ = self.openStream()
        self.clock.advance(PING_INTERVAL)
        for data, _names in TEXT_STREAM:
            self.send(upstreamRequest, data)
        self.successResultOf(reader.done)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(
            self.seen(reader, complete=True)[:2], ["message_start", "ping"]
        )


class IdleTimeoutTests(TranslatingHarness):
    def test_idleUpstreamCut(self) -> None:
        """
        F5: no upstream byte for C{timeouts.idle}: pings meanwhile (which do not
        count as upstream activity), then a C{timeout_error} event ends the
        stream, the upstream connection is closed and the target's breaker
        records a timeout.
        """
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        self.tick(IDLE - 1)
        self.assertNoResult(reader.done)
        self.assertEqual(self.deepseek.lost, [])
        self.clock.advance(1)
        self.flush()
        error = self.finalError(reader)
        self.assertEqual(error["type"], "timeout_error")
        names = self.seen(reader, complete=True)
        self.assertEqual(
            [name for name in names if name != "ping"],
            ["message_start", "content_block_start", "content_block_delta", "error"],
        )
        # At 10 s and 20 s; one due at 30 s may go out just before the error.
        self.assertIn(names.count("ping"), (2, 3))
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.verdicts(), [("ds", Verdict.TIMEOUT)])
        report = self.report("ds")
        self.assertEqual(
            (report.consecutiveTimeouts, report.consecutiveFailures), (1, 1)
        )
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleFromTheStart(self) -> None:
        _, reader, _ = self.openStream()
        self.clock.advance(IDLE)
        self.flush()
        self.assertEqual(self.finalError(reader)["type"], "timeout_error")
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.verdicts(), [("ds", Verdict.TIMEOUT)])

    def test_dataResetsTheIdleTimer(self) -> None:
        upstreamRequest, reader, _ = self.openStream()
        for _ in range(3):
            self.clock.advance(IDLE - 1)
            self.send(upstreamRequest, ROLE)
        self.assertNoResult(reader.done)
        self.assertEqual(self.deepseek.lost, [])


class WholeAnswerTests(TranslatingHarness):
    def test_translatedAnswer(self) -> None:
        self.primeFailure()
        d = self.post()
        [upstreamRequest] = self.deepseek.requests
        self.answer(upstreamRequest, 200, json.dumps(COMPLETION).encode())
        status, headers, body = self.result(d)
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        document = json.loads(body)
        self.assertEqual(document["type"], "message")
        self.assertEqual(document["model"], "claude-sonnet-4-5")
        self.assertEqual(
            document["content"], [{"type": "text", "text": "Plain answer"}]
        )
        self.assertEqual(document["stop_reason"], "max_tokens")
        self.assertEqual(document["usage"]["output_tokens"], 8)
        self.assertEqual(self.verdicts(), [("ds", Verdict.SUCCESS)])
        self.assertEqual(self.report("ds").consecutiveFailures, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_rateLimited(self) -> None:
        """
        A 429 from the only target: Anthropic's C{rate_limit_error}, with
        the upstream's C{retry-after} kept.
        """
        self.live.applyModeFile(b"ds")
        d = self.post()
        self.answer(
            self.deepseek.requests[0],
            429,
            b'{"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}',
            {b"retry-after": b"7"},
        )
        status, headers, body = self.result(d)
        self.assertEqual(status, 429)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"7"])
        self.assertIsNone(headers.getRawHeaders(b"x-should-retry"))
        error = json.loads(body)
        self.assertEqual(error["type"], "error")
        self.assertEqual(error["error"]["type"], "rate_limit_error")
        self.assertIn("Rate limit reached", error["error"]["message"])
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])

    def test_rateLimitedStreaming(self) -> None:
        """
        A streaming request's error status is a whole JSON error too.
        """
        self.live.applyModeFile(b"ds")
        d = self.post(message("claude-sonnet-4-5", stream=True))
        self.answer(
            self.deepseek.requests[0],
            429,
            b'{"error": {"message": "Rate limit reached"}}',
            {b"retry-after": b"3"},
        )
        status, headers, body = self.result(d)
        self.assertEqual(status, 429)
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"3"])
        self.assertEqual(json.loads(body)["error"]["type"], "rate_limit_error")

    def test_rateLimitedFailsOver(self) -> None:
        """
        F10: a 429 from a translated target fails over to the next target,
        unseen by the client.
        """
        d = self.post()
        self.answer(self.deepseek.requests[0], 429, b'{"error": {"message": "slow"}}')
        self.answer(self.anthropic.requests[0], 200, b'{"ok": 1}')
        self.assertEqual(self.result(d)[::2], (200, b'{"ok": 1}'))
        self.assertEqual(
            self.verdicts(), [("ds", Verdict.FAILURE), ("claude", Verdict.SUCCESS)]
        )

    def test_lastTargetRateLimited(self) -> None:
        """
        A translated target that is the last of a failover mode: its error
        is translated, and the client is told not to retry.
        """
        self.live.applyModeFile(b"back")
        d = self.post()
        self.answer(self.anthropic.requests[0], 529, OVERLOADED)
        self.answer(
            self.deepseek.requests[0],
            429,
            b'{"error": {"message": "slow"}}',
            {b"retry-after": b"9"},
        )
        status, headers, body = self.result(d)
        self.assertEqual(status, 429)
        self.assertEqual(headers.getRawHeaders(b"x-should-retry"), [b"false"])
        self.assertEqual(headers.getRawHeaders(b"retry-after"), [b"9"])
        self.assertEqual(json.loads(body)["error"]["type"], "rate_limit_error")

    def test_contextLength(self) -> None:
        """
        A context-length 400 becomes Claude Code's C{prompt is too long}
        wording; it is the request's fault, not the target's.
        """
        self.primeFailure()
        d = self.post()
        self.answer(
            self.deepseek.requests[0],
            400,
            json.dumps(
                {
                    "error": {
                        "message": "This model's maximum context length is 65536"
                        " tokens. However, you requested 70000 tokens.",
                        "type": "invalid_request_error",
                        "code": "context_length_exceeded",
                    }
                }
            ).encode(),
        )
        status, _, body = self.result(d)
        self.assertEqual(status, 400)
        error = json.loads(body)["error"]
        self.assertEqual(error["type"], "invalid_request_error")
        self.assertTrue(
            error["message"].startswith("prompt is too long"), error["message"]
        )
        self.assertEqual(self.anthropic.requests, [])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)

    def test_nonJSONSuccess(self) -> None:
        """
        F17: a 200 that is not a chat completion (a captive portal's page)
        counts against the target, and, since nothing has reached the client
        yet, the next target answers instead.
        """
        d = self.post()
        self.answer(self.deepseek.requests[0], 200, b"<html>hello</html>")
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)
        self.answer(self.anthropic.requests[0], 200, b'{"ok": true}')
        status, _, body = self.result(d)
        self.assertEqual((status, body), (200, b'{"ok": true}'))

    def test_nonJSONSuccessFromTheLastTarget(self) -> None:
        self.live.applyModeFile(b"back")
        d = self.post()
        self.answer(self.anthropic.requests[0], 529, b"{}")
        self.answer(self.deepseek.requests[0], 200, b"<html>hello</html>")
        status, headers, body = self.result(d)
        self.assertEqual(status, 502)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(headers.getRawHeaders(b"x-should-retry"), [b"false"])
        error = json.loads(body)
        self.assertEqual(error["type"], "error")
        self.assertEqual(error["error"]["type"], "api_error")

    def test_stalledAnswerGivesUp(self) -> None:
        d = self.post()
        upstreamRequest = self.deepseek.requests[0]
        upstreamRequest.setResponseCode(200)
        upstreamRequest.write(b'{"id": "chatcmpl-2",')
        self.flush()
        self.clock.advance(IDLE)
        self.flush()
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.verdicts(), [("ds", Verdict.FAILURE)])
        self.answer(self.anthropic.requests[0], 200, b"{}")
        self.assertEqual(self.result(d)[0], 200)

    def test_clientLeavesWhileTheAnswerIsRead(self) -> None:
        d = self.post()
        upstreamRequest = self.deepseek.requests[0]
        upstreamRequest.setResponseCode(200)
        upstreamRequest.write(b'{"id": "chatcmpl-2",')
        self.flush()
        d.cancel()
        self.failureResultOf(d)
        self.flush()
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.verdicts(), [("ds", Verdict.NEUTRAL)])


class LocalAndPassthroughTests(TranslatingHarness):
    def test_countTokensAnsweredLocally(self) -> None:
        body = json.dumps(
            {
                "model": "claude-sonnet-4-5",
                "messages": [{"role": "user", "content": "hello there " * 50}],
            }
        ).encode()
        d = self.post(body, "/v1/messages/count_tokens?beta=true")
        status, headers, answer = self.result(d)
        self.assertEqual(status, 200)
        self.assertEqual(
            headers.getRawHeaders(b"x-ccrouter-token-count"), [b"estimate"]
        )
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        count = json.loads(answer)["input_tokens"]
        self.assertIsInstance(count, int)
        self.assertGreater(count, 50)
        self.assertEqual((self.deepseek.requests, self.anthropic.requests), ([], []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherPathsGoToTheDefaultUpstream(self) -> None:
        d = self.client.request(
            "GET",
            "http://127.0.0.1:8080/v1/models?limit=5",
            headers={b"x-api-key": [CLIENT_KEY.encode()]},
        )
        self.flush()
        self.assertEqual(self.deepseek.requests, [])
        [request] = self.anthropic.requests
        self.assertEqual(request.uri, b"/v1/models?limit=5")
        self.assertEqual(
            request.requestHeaders.getRawHeaders(b"x-api-key"), [CLIENT_KEY.encode()]
        )
        self.answer(request, 200, b'{"data": []}')
        self.assertEqual(self.result(d)[::2], (200, b'{"data": []}'))

    def test_unmodelledPostGoesToTheDefaultUpstream(self) -> None:
        self.post(b'{"requests": []}', "/v1/messages/batches")
        self.assertEqual(self.deepseek.requests, [])
        self.assertEqual(self.anthropic.requests[0].uri, b"/v1/messages/batches")


class OutboundRequestTests(TranslatingHarness):
    def test_headersAndPath(self) -> None:
        """
        S8: the OpenAI upstream gets the configured Authorization and none of
        the client's credentials or Anthropic headers, at
        C{/v1/chat/completions}.
        """
        self.post(
            message("claude-sonnet-4-5", stream=True),
            headers={
                b"authorization": [b"Bearer " + CLIENT_TOKEN.encode()],
                b"anthropic-beta": [
                    b"oauth-2025-04-20,interleaved-thinking-2025-05-14"
                ],
                b"anthropic-version": [b"2023-06-01"],
                b"anthropic-dangerous-direct-browser-access": [b"true"],
                b"x-stainless-lang": [b"js"],
                b"x-claude-code-session-id": [b"abc"],
                b"user-agent": [b"claude-cli/2.0"],
            },
        )
        [request] = self.deepseek.requests
        self.assertEqual(request.method, b"POST")
        self.assertEqual(request.uri, b"/v1/chat/completions")
        headers = request.requestHeaders
        self.assertEqual(
            headers.getRawHeaders(b"authorization"),
            [b"Bearer " + PROVIDER_KEY.encode()],
        )
        self.assertIsNone(headers.getRawHeaders(b"x-api-key"))
        self.assertEqual(headers.getRawHeaders(b"host"), [b"api.deepseek.com"])
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(headers.getRawHeaders(b"accept"), [b"text/event-stream"])
        names = [name.lower() for name, _ in headers.getAllRawHeaders()]
        for name in names:
            self.assertFalse(
                name.startswith((b"anthropic-", b"x-stainless-", b"x-claude-code")),
                name,
            )
        everything = repr(list(headers.getAllRawHeaders())) + repr(
            self.deepseek.bodies[0]
        )
        for canary in (CLIENT_KEY, CLIENT_TOKEN):
            self.assertNotIn(canary, everything)
        body = json.loads(self.deepseek.bodies[0])
        self.assertEqual(body["model"], "deepseek-chat")
        self.assertTrue(body["stream"])
        self.assertEqual(body["messages"][-1], {"role": "user", "content": "hi"})

    def test_nonStreamingAccept(self) -> None:
        self.post()
        [request] = self.deepseek.requests
        self.assertEqual(
            request.requestHeaders.getRawHeaders(b"accept"), [b"application/json"]
        )
        self.assertFalse(json.loads(self.deepseek.bodies[0]).get("stream", False))


class PooledConnectionTests(SynchronousTestCase):
    def relay(self) -> tuple[TranslatingRelay, UpstreamBody, Clock]:
        clock = Clock()
        body = UpstreamBody()
        relay = TranslatingRelay(
            ClientRequest(),  # type: ignore[arg-type]
            UPSTREAM,
            stream.StreamTranslator("claude-sonnet-4-5", ToolNames(), "msg_1"),
            clock,
            onEnd=lambda outcome: None,
        )
        relay.makeConnection(body)  # type: ignore[arg-type]
        return relay, body, clock

    def test_bodyEndingInTheSameReadIsNotStopped(self) -> None:
        """
        When C{[DONE]} and the end of the upstream body come in one read,
        the connection is not stopped: Twisted returns it to the pool, and
        stopping it would pool a closing connection, on which the next
        request fails.
        """
        relay, body, clock = self.relay()
        relay.dataReceived(ROLE + chunk({"content": "hi"}, finish="stop") + DONE)
        relay.connectionLost(Failure(ResponseDone()))
        clock.advance(0)
        self.assertEqual(body.state, "producing")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_upstreamThatKeepsSendingIsStopped(self) -> None:
        """
        An upstream body that goes on after C{[DONE]} is stopped on the
        next turn.
        """
        relay, body, clock = self.relay()
        relay.dataReceived(ROLE + chunk({"content": "hi"}, finish="stop") + DONE)
        self.assertEqual(body.state, "producing")
        clock.advance(0)
        self.assertEqual(body.state, "stopped")
