"""
Tests for L{ccrouter.relay.ResponseRelay} on its own, with fakes for the
client request and the upstream body transport.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed
from zope.interface import implementer

from ccrouter.config import parseConfig
from ccrouter.relay import ResponseRelay

UPSTREAM = parseConfig(
    "default: {url: 'https://api.z.ai', timeouts: {idle: 10}}", "c.yaml", {}
).default


@implementer(IPushProducer)
class UpstreamBody:
    """
    Stands in for the TransportProxyProducer deliverBody hands over.
    """

    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"

    def stopProducing(self) -> None:
        self.state = "stopped"


class FakeChannel:
    aborted = False

    def forceAbortClient(self) -> None:
        self.aborted = True


class ClientRequest:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: object = None
        self.finished = False
        self.channel = FakeChannel()

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True


class RelayTests(SynchronousTestCase):
    def relay(
        self, eventStream: bool = True, framedByLength: bool = False
    ) -> tuple[ResponseRelay, ClientRequest, UpstreamBody, Clock]:
        clock = Clock()
        request = ClientRequest()
        relay = ResponseRelay(
            request,  # type: ignore[arg-type]
            UPSTREAM,
            eventStream=eventStream,
            framedByLength=framedByLength,
            clock=clock,
        )
        body = UpstreamBody()
        relay.makeConnection(body)  # type: ignore[arg-type]
        return relay, request, body, clock

    def test_failingOnEndStillEndsTheResponse(self) -> None:
        """
        Whatever goes wrong where the end is reported (the breaker, its
        state file, the request log), the client's response still ends.
        """
        request = ClientRequest()

        def broken(outcome: object) -> None:
            raise RuntimeError("reporting failed")

        relay = ResponseRelay(
            request,  # type: ignore[arg-type]
            UPSTREAM,
            eventStream=True,
            framedByLength=False,
            clock=Clock(),
            onEnd=broken,
        )
        relay.makeConnection(UpstreamBody())  # type: ignore[arg-type]
        relay.connectionLost(Failure(ResponseDone()))
        self.assertTrue(request.finished)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_clientPausesUpstream(self) -> None:
        """
        H11: the relay is the request's producer; pausing it pauses the
        upstream.
        """
        relay, request, body, _ = self.relay()
        self.assertIs(request.producer, relay)
        relay.pauseProducing()
        self.assertEqual(body.state, "paused")
        relay.resumeProducing()
        self.assertEqual(body.state, "producing")

    def test_idleTimerStopsWhileClientHoldsBack(self) -> None:
        """
        F5: a stream the client has paused is not cut for upstream silence,
        however much longer than the idle timeout (only the client's write
        stall limit applies); once resumed, silence counts again from zero.
        """
        relay, request, body, clock = self.relay()
        relay.dataReceived(b"event: ping\ndata: {}\n\n")
        clock.advance(9)
        relay.pauseProducing()
        clock.advance(299)
        self.assertEqual(body.state, "paused")
        relay.resumeProducing()
        clock.advance(9)
        self.assertEqual(body.state, "producing")
        clock.advance(1)
        self.assertEqual(body.state, "stopped")
        relay.connectionLost(Failure(ResponseFailed([])))
        self.assertIn(b'"timeout_error"', request.written[-1])
        self.assertTrue(request.finished)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lengthFramedBodyIsAborted(self) -> None:
        """
        F6: a body framed by Content-Length cannot take an extra event: breaking
        off, even between events, aborts the client connection.
        """
        relay, request, _, _ = self.relay(framedByLength=True)
        relay.dataReceived(b"event: ping\ndata: {}\n\n")
        relay.connectionLost(Failure(ResponseFailed([])))
        self.assertTrue(request.channel.aborted)
        self.assertFalse(request.finished)
        self.assertEqual(request.written, [b"event: ping\ndata: {}\n\n"])

    def test_cleanEndFinishes(self) -> None:
        relay, request, _, clock = self.relay()
        relay.dataReceived(b"data")
        relay.connectionLost(Failure(ResponseDone()))
        self.assertTrue(request.finished)
        self.assertIsNone(request.producer)
        relay.resumeProducing()
        self.assertEqual(clock.getDelayedCalls(), [])
