"""
Tests for the client write stall (a client that stops reading a response is
cut after C{server.client_timeouts.write_stall}) and for long quiet
streams, which must survive: on the relays alone with fakes and a
L{Clock}, through the whole proxy in memory, and with real sockets against
a C{twistd -n ccrouter} child.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor, threads
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed

from ccrouter.breaker import CLIENT_LEFT, SUCCEEDED, Outcome, Verdict
from ccrouter.config import parseConfig
from ccrouter.live import LiveState
from ccrouter.relay import ResponseRelay, TranslatingRelay
from ccrouter.root import resourceTree
from ccrouter.translate.request import ToolNames
from ccrouter.translate.stream import StreamTranslator
from tests.mockupstream import FloodingBody, sse
from tests.rawclient import rawConnect
from tests.sseclient import EventReader
from tests.test_end_to_end_modes import ModesCase
from tests.test_proxy import ProxyHarness, message
from tests.test_relay import UPSTREAM, ClientRequest, UpstreamBody
from tests.test_translating_relay import (
    CONFIG,
    PROVIDER_KEY,
    ROLE,
    WALL,
    RecordingRoot,
    TranslatingHarness,
    chunk,
)

#: The write stall used in these tests, in seconds.
STALL = 60.0


def trickle(port: int, seconds: float) -> tuple[int, str, socket.socket]:
    """
    Ask for an endless body and read it 4 KiB every 0.1 s for C{seconds},
    through a small receive buffer; then check the connection still
    delivers.  Returns the bytes read, what went wrong, if anything, and
    the socket, still open: the caller closes it once it has checked the
    proxy's side (closing it here would race those checks).
    """
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(10)
    client.connect(("127.0.0.1", port))
    client.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            data = client.recv(4096)
            if not data:
                return received, "the proxy closed the connection", client
            received += len(data)
            # The reading pace under test, not a synchronisation.
            time.sleep(0.1)
        if not client.recv(4096):
            return received, "the proxy closed the connection", client
    except OSError as failure:
        return received, repr(failure), client
    return received, "", client


class RelayStallTests(SynchronousTestCase):
    """
    L{ResponseRelay} and L{TranslatingRelay} on their own: the client's
    channel pauses and resumes them as its send buffer fills and drains.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.request = ClientRequest()
        self.body = UpstreamBody()
        self.outcomes: list[Outcome] = []

    def plain(self) -> ResponseRelay:
        relay = ResponseRelay(
            self.request,  # type: ignore[arg-type]
            UPSTREAM,
            eventStream=True,
            framedByLength=False,
            clock=self.clock,
            onEnd=self.outcomes.append,
            writeStall=STALL,
        )
        relay.makeConnection(self.body)  # type: ignore[arg-type]
        return relay

    def translating(self) -> TranslatingRelay:
        relay = TranslatingRelay(
            self.request,  # type: ignore[arg-type]
            UPSTREAM,
            StreamTranslator("claude-sonnet-4-5", ToolNames(), "msg_1"),
            self.clock,
            onEnd=self.outcomes.append,
            writeStall=STALL,
        )
        relay.makeConnection(self.body)  # type: ignore[arg-type]
        return relay

    def assertStallCuts(self, relay: ResponseRelay) -> None:
        relay.pauseProducing()
        self.clock.advance(STALL - 0.1)
        self.assertFalse(self.request.channel.aborted)
        self.assertEqual(self.body.state, "paused")
        self.clock.advance(0.1)
        self.assertTrue(self.request.channel.aborted)
        self.assertEqual(self.body.state, "stopped")
        self.assertFalse(self.request.finished)
        relay.connectionLost(Failure(ResponseFailed([])))
        self.assertEqual(self.outcomes, [CLIENT_LEFT])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stallCutsBothSides(self) -> None:
        """
        H11: a client that reads nothing for the write stall limit has its
        connection aborted and the upstream closed; the upstream's end then
        counts as the client's doing (neutral), not as a failure.
        """
        relay = self.plain()
        relay.dataReceived(b"event: ping\ndata: {}\n\n")
        self.assertStallCuts(relay)

    def test_stallCutsATranslatedStream(self) -> None:
        """
        H11: the same for a translated stream, whose pings stop while the
        client holds it back.
        """
        relay = self.translating()
        relay.dataReceived(ROLE)
        self.assertStallCuts(relay)
        self.assertNotIn(b"event: error", b"".join(self.request.written))

    def test_resumingCancels(self) -> None:
        """
        H11: a client that reads again in time is not cut; the next stall is
        timed from its own start.
        """
        relay = self.plain()
        relay.pauseProducing()
        self.clock.advance(STALL - 1)
        relay.resumeProducing()
        self.assertEqual(self.body.state, "producing")
        relay.dataReceived(b"event: ping\ndata: {}\n\n")
        relay.pauseProducing()
        self.clock.advance(STALL - 1)
        self.assertFalse(self.request.channel.aborted)
        relay.pauseProducing()
        self.clock.advance(1)
        self.assertTrue(self.request.channel.aborted)

    def test_noStallTimerAfterTheEnd(self) -> None:
        """
        H11: a relay that ends while the client holds it back leaves no
        stall timer behind (the response is complete; the channel's own
        timeouts take it from there).
        """
        relay = self.plain()
        relay.dataReceived(sse("message_stop", {"type": "message_stop"}))
        relay.pauseProducing()
        relay.connectionLost(Failure(ResponseDone()))
        self.assertTrue(self.request.finished)
        self.assertEqual(self.outcomes, [SUCCEEDED])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slowReaderGetsAnotherPeriod(self) -> None:
        """
        H11: a client that holds the stream back but takes some bytes within
        each period (its connection's unsent bytes drop) is not cut; the
        first period in which it takes nothing cuts it.
        """
        readings = iter([90_000, 89_000, 80_000, 80_000])
        relay = ResponseRelay(
            self.request,  # type: ignore[arg-type]
            UPSTREAM,
            eventStream=True,
            framedByLength=False,
            clock=self.clock,
            onEnd=self.outcomes.append,
            writeStall=STALL,
            unsent=lambda: next(readings),
        )
        relay.makeConnection(self.body)  # type: ignore[arg-type]
        relay.pauseProducing()
        self.clock.advance(STALL)
        self.clock.advance(STALL)
        self.assertFalse(self.request.channel.aborted)
        self.assertEqual(self.body.state, "paused")
        self.clock.advance(STALL)
        self.assertTrue(self.request.channel.aborted)
        self.assertEqual(self.body.state, "stopped")
        self.assertEqual(list(readings), [])

    def test_bytesArrivingMeanwhileAreNotProgressLost(self) -> None:
        """
        H11: bytes the upstream still delivers after the pause add to what
        waits for the client; a client that took some of it is reading, even
        though more waits than before; one that took none is cut.
        """
        event = b"event: ping\ndata: {}\n\n"
        # Before each period, then at its end: 1000 waiting, the event
        # written meanwhile, and the client took 10 bytes of it.
        readings = iter([1000, 1000 + len(event) - 10, 1000 + 2 * len(event) - 10])
        relay = ResponseRelay(
            self.request,  # type: ignore[arg-type]
            UPSTREAM,
            eventStream=True,
            framedByLength=False,
            clock=self.clock,
            onEnd=self.outcomes.append,
            writeStall=STALL,
            unsent=lambda: next(readings),
        )
        relay.makeConnection(self.body)  # type: ignore[arg-type]
        relay.pauseProducing()
        relay.dataReceived(event)
        self.clock.advance(STALL)
        self.assertFalse(self.request.channel.aborted)
        relay.dataReceived(event)
        self.clock.advance(STALL)
        self.assertTrue(self.request.channel.aborted)

    def test_unknownProgressCuts(self) -> None:
        """
        H11: where the connection cannot tell what the client took (TLS),
        a stream held back for the whole period is cut.
        """
        relay = ResponseRelay(
            self.request,  # type: ignore[arg-type]
            UPSTREAM,
            eventStream=True,
            framedByLength=False,
            clock=self.clock,
            onEnd=self.outcomes.append,
            writeStall=STALL,
            unsent=lambda: None,
        )
        relay.makeConnection(self.body)  # type: ignore[arg-type]
        self.assertStallCuts(relay)

    def test_clientGoneCancels(self) -> None:
        """
        H11: a client that goes away while holding the stream back stops
        the stall timer along with the upstream.
        """
        relay = self.plain()
        relay.pauseProducing()
        relay.clientDisconnected()
        self.assertEqual(self.body.state, "stopped")
        relay.connectionLost(Failure(ResponseFailed([])))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.request.channel.aborted)


class ProxyStallTests(TranslatingHarness):
    """
    Through the whole proxy in memory, with C{write_stall: 60}: the client
    connection's channel pauses the relay as a full send buffer would.
    """

    def setUp(self) -> None:
        super().setUp()
        config = parseConfig(
            CONFIG + "server: {client_timeouts: {write_stall: 60}}\n",
            "c.yaml",
            {"DEEPSEEK_API_KEY": PROVIDER_KEY},
        )
        self.live.applyConfig(config)
        self.root = RecordingRoot(resourceTree(self.live, self.agentFor, self.clock))
        self.client = StubTreq(self.root)

    def health(self) -> dict[str, Any]:
        d = self.client.request("GET", "http://127.0.0.1:8080/health")
        self.flush()
        document: dict[str, Any] = json.loads(self.result(d)[2])
        return document

    def test_translatedStreamStalled(self) -> None:
        """
        H11: a translated stream whose client stops reading for 60 s: the
        client connection is aborted, the upstream closed, the breaker sees
        nothing against the target, and the request no longer counts as in
        flight.
        """
        self.primeFailure()
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        self.assertEqual(len(self.live.inflight), 1)
        channel = self.root.requests[-1].channel
        channel.pauseProducing()
        self.clock.advance(STALL - 1)
        self.flush()
        self.assertEqual(self.deepseek.lost, [])
        self.clock.advance(1)
        self.flush()
        self.failureResultOf(reader.done, ResponseFailed)
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.verdicts(), [("ds", Verdict.NEUTRAL)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)
        self.assertEqual(len(self.live.inflight), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_passthroughStreamStalled(self) -> None:
        """
        H11: the same for an Anthropic stream relayed as it is.
        """
        self.live.applyModeFile(b"claude")
        d = self.post(message("claude-sonnet-4-5", stream=True))
        [upstreamRequest] = self.anthropic.requests
        upstreamRequest.setResponseCode(200)
        upstreamRequest.setHeader(b"content-type", b"text/event-stream")
        upstreamRequest.write(b"event: ping\ndata: {}\n\n")
        self.flush()
        reader = EventReader()
        self.successResultOf(d).deliverBody(reader)
        self.flush()
        self.root.requests[-1].channel.pauseProducing()
        self.clock.advance(STALL)
        self.flush()
        self.failureResultOf(reader.done, ResponseFailed)
        self.assertEqual(len(self.anthropic.lost), 1)
        self.assertEqual(len(self.live.inflight), 0)
        self.assertEqual(self.health()["active_requests"], 0)

    def test_reloadedLimitAppliesToNewStreams(self) -> None:
        """
        H11: the limit is read when a response starts, so a reload applies
        to the streams that start after it.
        """
        self.live.applyConfig(
            parseConfig(
                CONFIG + "server: {client_timeouts: {write_stall: 5}}\n",
                "c.yaml",
                {"DEEPSEEK_API_KEY": PROVIDER_KEY},
            )
        )
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE)
        self.root.requests[-1].channel.pauseProducing()
        self.clock.advance(5)
        self.flush()
        self.failureResultOf(reader.done, ResponseFailed)


class LongThinkingTests(ProxyHarness):
    """
    Streams that are quiet for a long time, but not silent, live on.
    """

    def test_tenMinutesOfPings(self) -> None:
        """
        F4: after C{message_start}, only a C{ping} every 15 s for 10 minutes
        (the default idle timeout is 300 s), then the content: nothing
        times out, every byte reaches the client, and the stream counts as
        a success.
        """
        config = parseConfig(
            "default: {url: 'https://api.anthropic.com'}\n", "c.yaml", {}
        )
        self.live = LiveState(config, now=self.clock.seconds, wallNow=lambda: WALL)
        self.client = StubTreq(resourceTree(self.live, self.agentFor, self.clock))
        outcomes: list[Outcome] = []
        record = self.live.record

        def recording(target: str | None, outcome: Outcome, ticket: Any) -> None:
            outcomes.append(outcome)
            record(target, outcome, ticket)

        self.live.record = recording  # type: ignore[method-assign]
        d = self.post(message("claude-sonnet-4-5"))
        upstreamRequest = self.upstream.requests[0]
        self.startStream(upstreamRequest)
        reader = EventReader()
        self.successResultOf(d).deliverBody(reader)
        sent = [sse("message_start", {"type": "message_start"})]
        upstreamRequest.write(sent[0])
        self.flush()
        for _ in range(40):
            self.clock.advance(15)
            ping = sse("ping", {"type": "ping"})
            upstreamRequest.write(ping)
            sent.append(ping)
            self.flush()
        self.assertEqual(self.clock.seconds(), 600)
        self.assertEqual(self.upstream.lost, [])
        self.assertEqual(len(reader.events), 41)
        tail = [
            sse("content_block_delta", {"type": "content_block_delta"}),
            sse("message_stop", {"type": "message_stop"}),
        ]
        for event in tail:
            upstreamRequest.write(event)
            sent.append(event)
        upstreamRequest.finish()
        self.flush()
        self.assertEqual(self.successResultOf(reader.done), b"".join(sent))
        self.assertEqual([outcome.verdict for outcome in outcomes], [Verdict.SUCCESS])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RealSocketStallTests(ModesCase):
    """
    A C{twistd -n ccrouter} child with C{write_stall: 1}, a mock upstream
    that floods, and a raw client that never reads.
    """

    async def test_clientThatNeverReads(self) -> None:
        """
        H11: while the upstream would send 1 GiB, a client that reads
        nothing holds the upstream back (bounded proxy memory), and after
        the 1 s write stall its connection is aborted and the upstream's
        closed; nothing is left in flight.
        """
        total = 1024 * 1024 * 1024
        flood = FloodingBody(total)
        mock = self.upstream(flood)
        proxy = await self.start(
            self.configFile(
                f'default: {{url: "{mock.url}"}}\n'
                "server: {client_timeouts: {write_stall: 1}}\n"
            )
        )
        assert proxy.url is not None
        rssBefore = proxy.rssKiB()
        client = await rawConnect(int(proxy.url.rsplit(":", 1)[1]))
        client.transport.getHandle().setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        client.transport.write(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await client.until(lambda raw: b"\r\n\r\n" in raw)
        client.transport.pauseProducing()
        [upstreamGone] = mock.disconnects
        await upstreamGone.addTimeout(15, reactor)
        self.assertGreater(flood.pauseCount, 0, "the upstream was never held back")
        self.assertLess(flood.written, 64 * 1024 * 1024)
        growthKiB = proxy.rssKiB() - rssBefore
        self.assertLess(growthKiB, 16 * 1024, f"proxy RSS grew {growthKiB} KiB")
        client.transport.resumeProducing()
        await client.closed.addTimeout(10, reactor)
        self.assertLess(len(client.received), 64 * 1024 * 1024)
        await self.waitForLog(proxy, b"read nothing for 1 s")
        health = await self.waitForHealth(
            proxy, lambda h: h["active_requests"] == 0, "nothing in flight"
        )
        self.assertEqual(health["active_requests"], 0)

    async def test_trickleReaderIsNotCut(self) -> None:
        """
        H11: a client that reads all the time, but only 4 KiB every 0.1 s,
        never drains ccrouter's send buffer; against a stall limit of 1 s it
        is still not cut, because its connection keeps taking bytes.
        """
        mock = self.upstream(FloodingBody(1024 * 1024 * 1024))
        proxy = await self.start(
            self.configFile(
                f'default: {{url: "{mock.url}"}}\n'
                "server: {client_timeouts: {write_stall: 1}}\n"
            )
        )
        assert proxy.url is not None
        port = int(proxy.url.rsplit(":", 1)[1])
        received, problem, client = await threads.deferToThread(trickle, port, 3.5)
        self.addCleanup(client.close)
        self.assertEqual(problem, "")
        self.assertGreater(received, 3 * 4096)
        self.assertFalse(mock.disconnects[0].called)
        self.assertNotIn(b"read nothing", proxy.output)

    async def test_slowButSteadyReaderIsNotCut(self) -> None:
        """
        H11: a client that reads, however slowly, is never cut: for 3 s it
        holds the stream back 0.1 s at a time, against a stall limit of
        1 s, and the stream goes on.
        """
        flood = FloodingBody(1024 * 1024 * 1024)
        mock = self.upstream(flood)
        proxy = await self.start(
            self.configFile(
                f'default: {{url: "{mock.url}"}}\n'
                "server: {client_timeouts: {write_stall: 1}}\n"
            )
        )
        assert proxy.url is not None
        client = await rawConnect(int(proxy.url.rsplit(":", 1)[1]))
        client.transport.write(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await client.until(lambda raw: b"\r\n\r\n" in raw)
        # The reading pattern, not a synchronisation: 0.1 s without reading,
        # then a moment of reading, for 3 s.
        deadline = reactor.seconds() + 3
        while reactor.seconds() < deadline:
            client.transport.pauseProducing()
            await deferLater(reactor, 0.1, lambda: None)
            client.transport.resumeProducing()
            await deferLater(reactor, 0.02, lambda: None)
        self.assertGreater(flood.pauseCount, 1, "the client never held it back")
        self.assertEqual(mock.disconnects[0].called, False)
        self.assertFalse(client.closed.called)
        received = len(client.received)
        await client.until(lambda raw: len(raw) > received)
        self.assertNotIn(b"read nothing", proxy.output)
        client.transport.loseConnection()
        await client.closed
