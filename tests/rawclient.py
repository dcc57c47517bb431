"""
A raw TCP client for requests no HTTP library would send, and for reading
(or refusing to read) a response byte by byte.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure


class RawClient(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._waiting: list[tuple[Callable[[bytes], bool], defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._check()
        for _, waiting in self._waiting:
            waiting.errback(Failure(ConnectionError(f"closed: {self.received!r}")))
        self._waiting = []
        self.closed.callback(None)

    def until(
        self, condition: Callable[[bytes], bool], timeout: float = 10
    ) -> defer.Deferred[bytes]:
        """
        Fires with everything received once C{condition} holds for it.
        """
        waiting: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append((condition, waiting))
        self._check()
        return waiting.addTimeout(timeout, reactor)

    def _check(self) -> None:
        remaining = []
        for condition, waiting in self._waiting:
            if waiting.called:
                continue
            if condition(self.received):
                waiting.callback(self.received)
            else:
                remaining.append((condition, waiting))
        self._waiting = remaining


async def rawConnect(port: int) -> RawClient:
    client = RawClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return client
