"""
A client that reads a streamed response event by event, as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import PotentialDataLoss, ResponseDone


class EventReader(Protocol):
    """
    Splits a body on blank lines and calls C{onEvent} with each complete
    event the moment its last byte arrives.  C{done} fires with the whole
    body on a clean end, or fails with the reason the body broke off.
    """

    def __init__(self, onEvent: Callable[[bytes], None] | None = None) -> None:
        self.onEvent = onEvent or (lambda event: None)
        self.events: list[bytes] = []
        self.body = b""
        self._pending = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.body += data
        self._pending += data
        while b"\n\n" in self._pending:
            event, self._pending = self._pending.split(b"\n\n", 1)
            self.events.append(event + b"\n\n")
            self.onEvent(event + b"\n\n")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.body)
        else:
            self.done.errback(reason)
