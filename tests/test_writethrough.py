"""
Tests for L{ccrouter.writethrough}, on real loopback connections.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from zope.interface import implementer

from ccrouter.agents import UpstreamEndpoints
from ccrouter.writethrough import (
    disableWriteThrough,
    enableWriteThrough,
    gatherEachRead,
    gathering,
)


class _Accepted(Protocol):
    def __init__(self, accepted: Deferred[_Accepted]) -> None:
        self._accepted = accepted

    def connectionMade(self) -> None:
        self._accepted.callback(self)


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


class WriteThroughTests(TestCase):
    async def connect(
        self, sendBuffer: int | None = None
    ) -> tuple[_Accepted, socket.socket]:
        """
        A server-side protocol on a real TCP connection, and the blocking
        client socket at the other end.
        """
        accepted: Deferred[_Accepted] = Deferred()
        factory = Factory.forProtocol(lambda: _Accepted(accepted))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        protocol = await accepted
        if sendBuffer is not None:
            protocol.transport.socket.setsockopt(  # type: ignore[union-attr]
                socket.SOL_SOCKET, socket.SO_SNDBUF, sendBuffer
            )
        self.addCleanup(protocol.transport.abortConnection)  # type: ignore[union-attr]
        return protocol, client

    @staticmethod
    async def receive(client: socket.socket, size: int) -> bytes:
        """
        Read C{size} bytes from C{client}, letting the reactor run (it may
        have buffered writes to send) while none are there; at most 10 s.
        """
        client.setblocking(False)
        received = bytearray()
        deadline = reactor.seconds() + 10  # type: ignore[attr-defined]
        while len(received) < size and reactor.seconds() < deadline:  # type: ignore[attr-defined]
            try:
                chunk = client.recv(size - len(received))
            except BlockingIOError:
                await deferLater(reactor, 0.01, lambda: None)
                continue
            if not chunk:
                break
            received.extend(chunk)
        return bytes(received)

    async def test_writtenAtOnce(self) -> None:
        """
        A write reaches the socket before the reactor runs again: nothing is
        left in the transport's buffer, and the socket is not registered for
        writability.
        """
        protocol, client = await self.connect()
        transport = protocol.transport
        self.assertTrue(enableWriteThrough(transport))
        assert transport is not None
        transport.write(b"event: a\n\n")
        transport.writeSequence([b"1a\r\n", b"data: b\n\n", b"\r\n"])
        self.assertEqual(transport._tempDataLen, 0)  # type: ignore[attr-defined]
        self.assertNotIn(transport, reactor.getWriters())  # type: ignore[attr-defined]
        expected = b"event: a\n\n1a\r\ndata: b\n\n\r\n"
        self.assertEqual(await self.receive(client, len(expected)), expected)

    async def test_fullSocketKeepsOrderAndFlowControl(self) -> None:
        """
        When the socket takes only part of a write, the rest, and every
        write after it, waits in Twisted's buffer: the peer gets every byte
        in order, and a streaming producer is paused as the buffer fills.
        """
        protocol, client = await self.connect(sendBuffer=4096)
        transport = protocol.transport
        assert transport is not None
        producer = _Producer()
        transport.registerProducer(producer, True)  # type: ignore[attr-defined]
        enableWriteThrough(transport)
        pieces = [bytes([65 + i % 26]) * 1000 + b"%06d" % i for i in range(400)]
        for piece in pieces:
            transport.write(piece)
        self.assertGreater(transport._tempDataLen, 0)  # type: ignore[attr-defined]
        self.assertTrue(producer.paused)
        expected = b"".join(pieces)
        self.assertEqual(await self.receive(client, len(expected)), expected)
        transport.unregisterProducer()  # type: ignore[attr-defined]

    async def test_disabled(self) -> None:
        """
        Once disabled, writes are buffered by Twisted as before.
        """
        protocol, client = await self.connect()
        transport = protocol.transport
        assert transport is not None
        enableWriteThrough(transport)
        disableWriteThrough(transport)
        self.assertNotIn("write", vars(transport))
        self.assertNotIn("writeSequence", vars(transport))
        transport.write(b"later")
        self.assertEqual(transport._tempDataLen, 5)  # type: ignore[attr-defined]
        self.assertEqual(await self.receive(client, 5), b"later")

    async def test_closedConnection(self) -> None:
        """
        A connection closed by the peer is not written through; a write
        after the close is for Twisted to deal with, and raises nothing.
        """
        protocol, client = await self.connect()
        transport = protocol.transport
        assert transport is not None
        self.assertTrue(enableWriteThrough(transport))
        client.close()
        for _ in range(50):
            transport.write(b"x" * 1000)
        transport.loseConnection()

    async def test_refusesWhatTwistedRefuses(self) -> None:
        """
        A write of something that is not bytes fails as Twisted's does.
        """
        protocol, _ = await self.connect()
        transport = protocol.transport
        assert transport is not None
        enableWriteThrough(transport)
        self.assertRaises(TypeError, transport.write, "text")  # type: ignore[arg-type]
        self.assertRaises(TypeError, transport.writeSequence, ["text"])  # type: ignore[list-item]


class _CountingSocket:
    """
    A socket that counts the C{send} calls made on it.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self.sends: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sends.append(data)
        return self._socket.send(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._socket, name)


class GatheringTests(TestCase):
    connect = WriteThroughTests.connect
    receive = staticmethod(WriteThroughTests.receive)

    async def countedConnection(self) -> tuple[object, _CountingSocket, socket.socket]:
        """
        A written-through transport whose sends are counted, and the client
        socket at its other end.
        """
        protocol, client = await self.connect()
        transport = protocol.transport
        assert transport is not None
        counting = _CountingSocket(transport.socket)  # type: ignore[attr-defined]
        transport.socket = counting  # type: ignore[attr-defined]
        self.assertTrue(enableWriteThrough(transport))
        return transport, counting, client

    async def test_heldUntilTheBlockEnds(self) -> None:
        """
        Writes inside a gathering block, nested or not, reach neither the
        socket nor Twisted's buffer until the outermost block ends; then
        they go out in one send, in order.
        """
        transport, counting, client = await self.countedConnection()
        with gathering:
            transport.writeSequence([b"HTTP/1.1 200 OK\r\n", b"\r\n"])  # type: ignore[attr-defined]
            with gathering:
                transport.write(b"body")  # type: ignore[attr-defined]
            self.assertEqual(counting.sends, [])
            transport.write(b"!")  # type: ignore[attr-defined]
            self.assertEqual(counting.sends, [])
            self.assertEqual(transport._tempDataLen, 0)  # type: ignore[attr-defined]
        expected = b"HTTP/1.1 200 OK\r\n\r\nbody!"
        self.assertEqual(counting.sends, [expected])
        self.assertEqual(await self.receive(client, len(expected)), expected)

    async def test_outsideABlockAtOnce(self) -> None:
        """
        Without a block, each write is its own send, as before.
        """
        transport, counting, _ = await self.countedConnection()
        transport.write(b"a")  # type: ignore[attr-defined]
        transport.write(b"b")  # type: ignore[attr-defined]
        self.assertEqual(counting.sends, [b"a", b"b"])

    async def test_sentEvenWhenTheBlockRaises(self) -> None:
        """
        A block left by an exception still sends what it held.
        """
        transport, counting, client = await self.countedConnection()
        with self.assertRaises(ZeroDivisionError):
            with gathering:
                transport.write(b"held")  # type: ignore[attr-defined]
                raise ZeroDivisionError()
        self.assertEqual(counting.sends, [b"held"])
        self.assertEqual(await self.receive(client, 4), b"held")

    async def test_disableReleasesFirst(self) -> None:
        """
        Disabling write-through inside a block sends what the block held
        for that transport first, so a later (buffered) write comes after
        it.
        """
        transport, counting, client = await self.countedConnection()
        with gathering:
            transport.write(b"first ")  # type: ignore[attr-defined]
            disableWriteThrough(transport)
            self.assertEqual(counting.sends, [b"first "])
            transport.write(b"second")  # type: ignore[attr-defined]
        self.assertEqual(await self.receive(client, 12), b"first second")

    async def test_closedAfterHeldWrites(self) -> None:
        """
        A connection closed inside the block, after writes it held, still
        sends them before it closes, as Twisted does with what it buffered.
        """
        transport, _, client = await self.countedConnection()
        with gathering:
            transport.write(b"last words")  # type: ignore[attr-defined]
            transport.loseConnection()  # type: ignore[attr-defined]
        self.assertEqual(await self.receive(client, 11), b"last words")

    async def test_abortedDropsHeldWrites(self) -> None:
        """
        A connection aborted inside the block sends nothing it held, as
        Twisted drops what an aborted connection had buffered.
        """
        transport, counting, _ = await self.countedConnection()
        with gathering:
            transport.write(b"never")  # type: ignore[attr-defined]
            transport.abortConnection()  # type: ignore[attr-defined]
        self.assertEqual(counting.sends, [])

    async def test_eachReadGathered(self) -> None:
        """
        L{gatherEachRead} makes what a protocol writes while handling one
        read go out in one send.
        """

        class Answering(Protocol):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(b"head ")
                self.transport.write(b"body")

        accepted: Deferred[Protocol] = Deferred()
        factory = Factory.forProtocol(Answering)

        def built(address: object) -> Protocol:
            protocol = Answering()
            protocol.factory = factory
            original = protocol.connectionMade

            def connectionMade() -> None:
                original()
                accepted.callback(protocol)

            protocol.connectionMade = connectionMade  # type: ignore[method-assign]
            return protocol

        factory.buildProtocol = built  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        protocol = await accepted
        transport = protocol.transport
        assert transport is not None
        self.addCleanup(transport.abortConnection)  # type: ignore[attr-defined]
        counting = _CountingSocket(transport.socket)  # type: ignore[attr-defined]
        transport.socket = counting  # type: ignore[attr-defined]
        enableWriteThrough(transport)
        gatherEachRead(protocol)
        client.sendall(b"ping")
        self.assertEqual(await self.receive(client, 9), b"head body")
        self.assertEqual(counting.sends, [b"head body"])


class OtherTransportTests(SynchronousTestCase):
    def test_notTCPLeftAlone(self) -> None:
        """
        Any transport but a plain TCP server connection is left as it is.
        """
        transport = StringTransport()
        self.assertFalse(enableWriteThrough(transport))
        self.assertFalse(enableWriteThrough(None))
        disableWriteThrough(transport)
        disableWriteThrough(None)
        transport.write(b"x")
        self.assertEqual(transport.value(), b"x")


class ClientEndTests(TestCase):
    async def test_upstreamConnectionsWriteThrough(self) -> None:
        """
        A connection ccrouter makes to a plain-HTTP upstream (the client end,
        through the pool's endpoint) writes a request through at once.
        """
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        endpoints = UpstreamEndpoints(reactor, 5.0, BrowserLikePolicyForHTTPS())
        address = f"http://127.0.0.1:{server.getsockname()[1]}/"
        endpoint = endpoints.endpointForURI(URI.fromBytes(address.encode()))
        protocol = await endpoint.connect(Factory.forProtocol(Protocol))
        transport = protocol.transport
        assert transport is not None
        self.addCleanup(transport.abortConnection)  # type: ignore[attr-defined]
        self.assertIn("writeSequence", vars(transport))
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        transport.write(b"POST /v1/messages HTTP/1.1\r\n")
        self.assertEqual(transport._tempDataLen, 0)  # type: ignore[attr-defined]
        self.assertNotIn(transport, reactor.getWriters())  # type: ignore[attr-defined]
        expected = b"POST /v1/messages HTTP/1.1\r\n"
        self.assertEqual(
            await WriteThroughTests.receive(accepted, len(expected)), expected
        )
