"""
Tests for the graceful stop (L{ccrouter.drain}): the registry of requests
in flight and the drain deadline with a L{Clock}; the stop sequence with
fake services; ending requests through the whole proxy in memory; and
C{SIGTERM} to a real C{twistd -n ccrouter} child with streams in flight.
"""

from __future__ import annotations

import json
import os
import signal

from twisted.application.service import Service
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.server import Request

from ccrouter.breaker import Verdict
from ccrouter.drain import (
    SHUTTING_DOWN,
    GracefulStop,
    InFlight,
    drain,
    waitForClose,
)
from ccrouter.errors import ProxyError
from ccrouter.translate.grammar import checkStream
from tests.mockupstream import anthropicStream, respondEvents, sse
from tests.rawclient import rawConnect
from tests.sseclient import EventReader
from tests.test_end_to_end import completeResponse, messageBody
from tests.test_end_to_end_modes import ModesCase, waitFor
from tests.test_proxy import ProxyHarness, message
from tests.test_translating_relay import ROLE, TranslatingHarness, chunk


class Member:
    """
    An exchange in flight that ends when told to.
    """

    def __init__(self, inflight: InFlight, fails: bool = False) -> None:
        self.inflight = inflight
        self.endedWith: list[ProxyError] = []
        self.fails = fails
        inflight.add(self)

    def endNow(self, error: ProxyError) -> None:
        self.endedWith.append(error)
        if self.fails:
            raise RuntimeError("broken")

    def finish(self) -> None:
        self.inflight.discard(self)


class InFlightTests(SynchronousTestCase):
    def test_whenEmpty(self) -> None:
        """
        F20: L{InFlight.whenEmpty} fires at once when nothing is in flight,
        otherwise when the last exchange ends; a second end is harmless.
        """
        inflight = InFlight()
        self.successResultOf(inflight.whenEmpty())
        first, second = Member(inflight), Member(inflight)
        self.assertEqual(len(inflight), 2)
        d = inflight.whenEmpty()
        first.finish()
        first.finish()
        self.assertNoResult(d)
        second.finish()
        self.successResultOf(d)
        self.assertEqual(len(inflight), 0)


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.inflight = InFlight()

    def test_nothingInFlight(self) -> None:
        """
        F20: with nothing in flight the drain is over at once, and new
        requests are refused from then on.
        """
        self.assertEqual(self.successResultOf(drain(self.inflight, self.clock, 30)), 0)
        self.assertTrue(self.inflight.draining)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_allFinishInTime(self) -> None:
        """
        F20: requests that finish before the deadline are left alone, and
        the drain is over as soon as the last one finishes.
        """
        members = [Member(self.inflight) for _ in range(3)]
        d = drain(self.inflight, self.clock, 30)
        self.assertTrue(self.inflight.draining)
        self.clock.advance(29)
        for member in members:
            self.assertNoResult(d)
            member.finish()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual([m.endedWith for m in members], [[], [], []])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restEndedAtTheDeadline(self) -> None:
        """
        F20: at the deadline the requests still in flight are ended with a
        529 C{overloaded_error} saying ccrouter is shutting down.
        """
        early, late, later = (Member(self.inflight) for _ in range(3))
        d = drain(self.inflight, self.clock, 30)
        self.clock.advance(10)
        early.finish()
        self.clock.advance(19.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(early.endedWith, [])
        self.assertEqual(late.endedWith, [SHUTTING_DOWN])
        self.assertEqual(later.endedWith, [SHUTTING_DOWN])
        self.assertEqual(
            (SHUTTING_DOWN.status, SHUTTING_DOWN.type, SHUTTING_DOWN.message),
            (529, "overloaded_error", "ccrouter is shutting down"),
        )
        self.assertEqual(len(self.inflight), 0)

    def test_oneFailingToEnd(self) -> None:
        """
        F20: an exchange that fails to end (a bug) does not hold up the
        stop or the others.
        """
        broken = Member(self.inflight, fails=True)
        fine = Member(self.inflight)
        d = drain(self.inflight, self.clock, 1)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(fine.endedWith, [SHUTTING_DOWN])
        self.assertEqual(broken.endedWith, [SHUTTING_DOWN])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class WaitForCloseTests(SynchronousTestCase):
    def test_closed(self) -> None:
        """
        F20: the wait is over once no client connection is left.
        """
        clock = Clock()
        open_ = [2]
        d = waitForClose(lambda: open_[0], clock, 1.5)
        clock.advance(0.5)
        self.assertNoResult(d)
        open_[0] = 0
        clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), 0)

    def test_givesUp(self) -> None:
        """
        F20: a connection that does not close is waited for no longer than
        the grace period.
        """
        clock = Clock()
        d = waitForClose(lambda: 1, clock, 1.5)
        clock.pump([0.1] * 14)
        self.assertNoResult(d)
        clock.pump([0.1] * 2)
        self.assertEqual(self.successResultOf(d), 1)


class FakeService(Service):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.stopping: defer.Deferred[None] | None = None

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.log.append(f"stop {self.name}")
        self.stopping = defer.Deferred()
        return self.stopping


class FakeClients:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.openConnections = 3

    def closeIdleConnections(self) -> None:
        self.log.append("close idle")
        self.openConnections = max(0, self.openConnections - 1)


class GracefulStopTests(SynchronousTestCase):
    def test_order(self) -> None:
        """
        F20: the stop goes listeners, idle connections, drain, client
        connections, and only then the other services (the upstream pool),
        each stage waiting for the one before.
        """
        clock = Clock()
        log: list[str] = []
        inflight = InFlight()
        clients = FakeClients(log)
        drainTimeout = [30.0]
        top = GracefulStop(inflight, clock, lambda: drainTimeout[0], clients)
        pool = FakeService("pool", log)
        pool.setServiceParent(top)
        listener = FakeService("listener", log)
        top.addListener(listener)
        top.startService()
        stream = Member(inflight)
        drainTimeout[0] = 5.0
        d = top.stopService()
        self.assertTrue(inflight.draining)
        self.assertEqual(log, ["stop listener"])
        assert listener.stopping is not None
        listener.stopping.callback(None)
        self.assertEqual(log, ["stop listener", "close idle"])
        clock.advance(4.9)
        self.assertEqual(stream.endedWith, [])
        clock.advance(0.1)
        self.assertEqual(stream.endedWith, [SHUTTING_DOWN])
        self.assertEqual(log, ["stop listener", "close idle"])
        clients.openConnections = 0
        clock.advance(0.1)
        self.assertEqual(log, ["stop listener", "close idle", "stop pool"])
        self.assertNoResult(d)
        assert pool.stopping is not None
        pool.stopping.callback(None)
        self.successResultOf(d)
        self.assertFalse(top.running)

    def test_quickWhenIdle(self) -> None:
        """
        F20: with nothing in flight and no connection open, the stop does
        not wait at all.
        """
        clock = Clock()
        log: list[str] = []
        clients = FakeClients(log)
        clients.openConnections = 0
        top = GracefulStop(InFlight(), clock, lambda: 30.0, clients)
        Service().setServiceParent(top)
        top.addListener(Service())
        top.startService()
        self.successResultOf(top.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])


class ProxyEndTests(ProxyHarness):
    """
    Requests ended at the drain deadline, through the whole proxy in memory.
    """

    def test_streamEndsWithAnErrorEvent(self) -> None:
        """
        F20: a stream in flight at the deadline ends with an
        C{overloaded_error} event after the events already relayed, on a
        cleanly ended response; the upstream connection is closed and the
        target's breaker hears nothing.
        """
        upstreamRequest, reader = self.openStream()
        first = sse("message_start", {"type": "message_start"})
        upstreamRequest.write(first)
        self.flush()
        self.assertEqual(len(self.live.inflight), 1)
        self.assertEqual(self.live.inflight.endAll(SHUTTING_DOWN), 1)
        self.flush()
        body = self.successResultOf(reader.done)
        self.assertEqual(reader.events[0], first)
        self.assertEqual(reader.events[1:], [SHUTTING_DOWN.event()])
        self.assertEqual(body, first + SHUTTING_DOWN.event())
        self.assertEqual(len(self.upstream.lost), 1)
        self.assertEqual(len(self.live.inflight), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_streamCutMidEventIsAborted(self) -> None:
        """
        F20: a stream stopped in the middle of an event cannot take an
        error event: the client connection is aborted.
        """
        upstreamRequest, reader = self.openStream()
        upstreamRequest.write(b'event: content_block_delta\ndata: {"tr')
        self.flush()
        self.live.inflight.endAll(SHUTTING_DOWN)
        self.flush()
        self.failureResultOf(reader.done, ResponseFailed)
        self.assertEqual(len(self.upstream.lost), 1)

    def test_unansweredRequestGets529(self) -> None:
        """
        F20: a request whose upstream has not answered yet gets a 529
        C{overloaded_error}, and the upstream request is cancelled.
        """
        d = self.post(message("claude-haiku-4-5", stream=False))
        self.assertNoResult(d)
        self.live.inflight.endAll(SHUTTING_DOWN)
        self.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 529)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(
            body,
            {
                "type": "error",
                "error": {
                    "type": "overloaded_error",
                    "message": "ccrouter is shutting down",
                },
            },
        )
        self.assertEqual(len(self.upstream.lost), 1)
        self.assertEqual(len(self.live.inflight), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_newRequestsRefusedWhileDraining(self) -> None:
        """
        F20: once the stop has begun, a request arriving on a connection
        still open gets the same 529 at once and never reaches an upstream.
        """
        self.live.inflight.draining = True
        d = self.post(message("claude-haiku-4-5"))
        response = self.successResultOf(d)
        self.assertEqual(response.code, 529)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body["error"]["message"], "ccrouter is shutting down")
        self.assertEqual(self.upstream.requests, [])

    def test_drainLetsAStreamFinish(self) -> None:
        """
        F20: a stream that finishes before the deadline is relayed whole.
        """
        upstreamRequest, reader = self.openStream()
        d = drain(self.live.inflight, self.clock, 30)
        events = anthropicStream("all of it")
        for event in events:
            self.clock.advance(1)
            upstreamRequest.write(event)
            self.flush()
        self.assertNoResult(d)
        upstreamRequest.finish()
        self.flush()
        self.assertEqual(self.successResultOf(reader.done), b"".join(events))
        self.assertEqual(self.successResultOf(d), 0)


class TranslatedEndTests(TranslatingHarness):
    def test_translatedStreamEndsWithAnErrorEvent(self) -> None:
        """
        F20: a translated stream ended at the deadline ends with a valid
        Anthropic C{error} event; nothing counts against the target.
        """
        self.primeFailure()
        upstreamRequest, reader, _ = self.openStream()
        self.send(upstreamRequest, ROLE + chunk({"content": "Hel"}))
        self.live.inflight.endAll(SHUTTING_DOWN)
        self.flush()
        error = self.finalError(reader)
        self.assertEqual(
            error, {"type": "overloaded_error", "message": "ccrouter is shutting down"}
        )
        checkStream(reader.body)
        self.assertEqual(len(self.deepseek.lost), 1)
        self.assertEqual(self.verdicts(), [("ds", Verdict.NEUTRAL)])
        self.assertEqual(self.report("ds").consecutiveFailures, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SigtermTests(ModesCase):
    """
    C{SIGTERM} to a C{twistd -n ccrouter} child.
    """

    async def refused(self, port: int) -> bool:
        """
        Whether a new connection to C{port} is refused now.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)
        try:
            probe = await connectProtocol(endpoint, Protocol())
        except ConnectionRefusedError:
            return True
        assert probe.transport is not None
        probe.transport.abortConnection()
        return False

    async def test_streamsInFlight(self) -> None:
        """
        F20: with streams in flight, C{SIGTERM}: new connections are refused
        at once, an idle keep-alive connection is closed at once, streams
        that finish within C{drain_timeout} (3 s) arrive byte for byte,
        the others end with an C{overloaded_error} event at the deadline,
        and the process exits with status 0 soon after.
        """
        short = anthropicStream(" ".join(["short"] * 8))
        long = anthropicStream(" ".join(["long"] * 400))

        respondShort = respondEvents(short, spacing=0.05)
        respondLong = respondEvents(long, spacing=0.05)

        def behaviour(request: Request) -> bytes | int:
            assert request.content is not None
            model = json.loads(request.content.getvalue())["model"]
            if model == "claude-opus-4-1":
                return respondLong(request)
            return respondShort(request)

        mock = self.upstream(behaviour)
        proxy = await self.start(
            self.configFile(
                f'default: {{url: "{mock.url}"}}\nserver: {{drain_timeout: 3}}\n'
            )
        )
        assert proxy.url is not None and proxy.pid is not None
        port = int(proxy.url.rsplit(":", 1)[1])

        idle = await rawConnect(port)
        idle.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await idle.until(completeResponse)

        readers: dict[str, list[EventReader]] = {"short": [], "long": []}
        started: list[defer.Deferred[None]] = []
        for kind, model, count in (
            ("short", "claude-sonnet-4-5", 3),
            ("long", "claude-opus-4-1", 2),
        ):
            for _ in range(count):
                response = await self.post(proxy, messageBody(model))
                self.assertEqual(response.code, 200)
                first: defer.Deferred[None] = defer.Deferred()
                reader = EventReader(
                    lambda event, first=first: (
                        None if first.called else first.callback(None)
                    )
                )
                response.deliverBody(reader)
                readers[kind].append(reader)
                started.append(first)
        await defer.gatherResults(started).addTimeout(10, reactor)

        stoppedAt = reactor.seconds()
        os.kill(proxy.pid, signal.SIGTERM)
        await idle.closed.addTimeout(1, reactor)
        await waitFor(lambda: self.refused(port), 1, "new connections to be refused")

        for reader in readers["short"]:
            body = await reader.done.addTimeout(10, reactor)
            self.assertEqual(body, b"".join(short))
        for reader in readers["long"]:
            body = await reader.done.addTimeout(10, reactor)
            *relayed, last = reader.events
            self.assertEqual(relayed, long[: len(relayed)])
            self.assertLess(len(relayed), len(long))
            self.assertEqual(last, SHUTTING_DOWN.event())
        exitCode = await proxy.exited.addTimeout(10, reactor)
        elapsed = reactor.seconds() - stoppedAt
        self.assertEqual(exitCode, 0, proxy.output.decode(errors="replace"))
        self.assertIsNone(proxy.exitSignal)
        # drain + 2 s, with room for a loaded machine.
        self.assertLess(elapsed, 3 + 4, f"the stop took {elapsed:.1f} s")
        self.assertGreater(elapsed, 2.5, f"the stop took only {elapsed:.1f} s")
        self.assertIn(b"ended 2 request(s) still in flight", proxy.output)
        # The upstream requests of the streams ended at the deadline were
        # closed, not left to stream into the void.
        cut = [
            disconnect
            for request, disconnect in zip(mock.requests, mock.disconnects, strict=True)
            if request.json()["model"] == "claude-opus-4-1"
        ]
        self.assertEqual(len(cut), 2)
        await defer.gatherResults(cut).addTimeout(5, reactor)

    async def test_idleStopsAtOnce(self) -> None:
        """
        F20: with nothing in flight, C{SIGTERM} closes an idle keep-alive
        connection at once and the process exits 0 without waiting for the
        drain timeout.
        """
        mock = self.upstream()
        proxy = await self.start(
            self.configFile(
                f'default: {{url: "{mock.url}"}}\nserver: {{drain_timeout: 30}}\n'
            )
        )
        assert proxy.url is not None and proxy.pid is not None
        idle = await rawConnect(int(proxy.url.rsplit(":", 1)[1]))
        idle.transport.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await idle.until(completeResponse)
        stoppedAt = reactor.seconds()
        os.kill(proxy.pid, signal.SIGTERM)
        await idle.closed.addTimeout(1, reactor)
        self.assertEqual(await proxy.exited.addTimeout(5, reactor), 0)
        self.assertLess(reactor.seconds() - stoppedAt, 5)
