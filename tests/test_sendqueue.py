"""
Tests for L{ccrouter.sendqueue}: the unsent bytes of a real TCP connection
whose peer stops reading, then reads.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ccrouter.sendqueue import unsentBytes
from tests.rawclient import RawClient

SIZE = 8 * 1024 * 1024


class Writer(Protocol):
    """
    Holds on to its transport, for the test to write to.
    """

    def __init__(self, connected: defer.Deferred[Writer]) -> None:
        self._connected = connected

    def connectionMade(self) -> None:
        self._connected.callback(self)


class UnsentBytesTests(TestCase):
    timeout = 30

    async def test_realConnection(self) -> None:
        """
        H11: everything written counts until the peer reads it; as the peer
        reads, the figure drops by about what it read (a few segments of
        acknowledgement may lag), down to nothing.
        """
        connected: defer.Deferred[Writer] = defer.Deferred()
        port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: Writer(connected)), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        client = RawClient()
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        client.transport.pauseProducing()
        self.addCleanup(client.transport.abortConnection)
        writer = await connected
        self.assertEqual(unsentBytes(writer.transport), 0)
        writer.transport.write(b"x" * SIZE)
        self.assertEqual(unsentBytes(writer.transport), SIZE)
        client.transport.resumeProducing()
        await client.until(lambda raw: len(raw) >= SIZE // 2)
        taken = len(client.received)
        unsent = unsentBytes(writer.transport)
        assert unsent is not None
        self.assertLessEqual(unsent, SIZE - taken + 1024 * 1024)
        await client.until(lambda raw: len(raw) == SIZE)
        self.assertLessEqual(unsentBytes(writer.transport) or 0, 1024 * 1024)


class UnknownTransportTests(SynchronousTestCase):
    def test_noBuffer(self) -> None:
        """
        H11: a transport that is not a socket's (TLS, a test's) is unknown,
        not zero.
        """
        self.assertIsNone(unsentBytes(StringTransport()))
        self.assertIsNone(unsentBytes(None))
