# -*- test-case-name: tests.test_writethrough -*-
"""
Writing to a TCP connection at once.

Twisted buffers whatever a protocol writes and sends it once the reactor
next finds the socket writable: for every write it registers the socket
for writability, goes round the event loop, sends, and unregisters it (two
C{epoll_ctl} calls and a loop iteration per write).  For a proxy that is
one extra turn of the loop on every hop: the request to the upstream, the
answer to the client, and each event of a relayed SSE stream, each of
which also waited for every other connection's reads of the same turn.

While write-through is on, a write that finds nothing buffered is handed to
the socket there and then; whatever the socket does not take (and every
write while anything is still buffered, so the order never changes) goes
through Twisted's buffer as before, with its flow control.  The bytes are
the same; only when they leave changes.  Only a plain TCP connection (the
client's, or one to a plain-HTTP upstream) is written through; TLS and any
other transport are left as they are.

Inside a L{gathering} block (ccrouter handles each read of a client or
upstream connection in one), writes wait until the block ends and then go
out together: a response head and its body in one C{send}, a request head
and its body in one, a chunk of several SSE events in one.  Nothing waits
past the end of the handling of the read that caused it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from twisted.internet import tcp

#: The attributes an enabled transport carries on its instance, in front of
#: its class's methods.
_OVERRIDES = ("write", "writeSequence")

#: The one type of piece a transport takes (not even a subclass).
_ONLY_BYTES = frozenset({bytes})


class _Gathering:
    """
    Writes held back while a L{gathering} block runs: for each transport,
    its send-now function and its pieces in the order written.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending: dict[
            object, tuple[Callable[[list[bytes]], None], list[bytes]]
        ] = {}

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.flush()

    def hold(
        self,
        transport: object,
        sendNow: Callable[[list[bytes]], None],
        pieces: list[bytes],
    ) -> None:
        entry = self.pending.get(transport)
        if entry is None:
            self.pending[transport] = (sendNow, pieces)
        else:
            entry[1].extend(pieces)

    def flush(self) -> None:
        # One at a time, so that whatever one send might raise leaves the
        # others held for the next block's end rather than lost.
        pending = self.pending
        while pending:
            sendNow, pieces = pending.pop(next(iter(pending)))
            sendNow(pieces)

    def release(self, transport: object) -> None:
        entry = self.pending.pop(transport, None)
        if entry is not None:
            entry[0](entry[1])


#: The one gathering of this process (the reactor runs on one thread).
gathering = _Gathering()


def gatherEachRead(protocol: Any) -> None:
    """
    Handle each read of C{protocol}'s connection inside L{gathering}, by
    wrapping its C{dataReceived}.
    """
    received = protocol.dataReceived

    def dataReceived(data: bytes) -> None:
        with gathering:
            received(data)

    protocol.dataReceived = dataReceived


def enableWriteThrough(transport: object) -> bool:
    """
    Write to C{transport} through to its socket from now on, until
    L{disableWriteThrough}.

    @return: Whether it is written through (a plain TCP connection, either
        end, that is still open).
    """
    if type(transport) not in (tcp.Server, tcp.Client):
        return False
    assert isinstance(transport, tcp.Connection)
    if "writeSequence" in vars(transport):
        return True
    if transport.TLS or not transport.connected:
        return False
    buffered = type(transport).writeSequence.__get__(transport)
    sock = transport.socket

    def sendNow(iovec: list[bytes]) -> None:
        if (
            transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._writeDisconnected
            and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer)
            and not transport.TLS
        ):
            if getattr(transport, "_aborting", False):
                # Aborted while the write was held: dropped, as Twisted
                # drops whatever an aborted connection had buffered.
                return
            data = b"".join(iovec)
            if not data:
                return
            try:
                sent = sock.send(data)
            except OSError:
                # Full (EAGAIN) or broken: Twisted's own write finds out
                # which, and handles it as it always does.
                sent = 0
            if sent == len(data):
                return
            iovec = [data[sent:]]
        buffered(iovec)

    def writeSequence(iovec: Iterable[bytes]) -> None:
        iovec = list(iovec)
        if not _ONLY_BYTES.issuperset(map(type, iovec)):
            # Twisted's own write refuses it, as it always did.
            buffered(iovec)
            return
        if gathering.depth:
            gathering.hold(transport, sendNow, iovec)
        else:
            sendNow(iovec)

    def write(data: bytes) -> None:
        if type(data) is not bytes:
            type(transport).write(transport, data)
            return
        if gathering.depth:
            gathering.hold(transport, sendNow, [data])
        else:
            sendNow([data])

    transport.writeSequence = writeSequence  # type: ignore[method-assign]
    transport.write = write  # type: ignore[method-assign]
    return True


def disableWriteThrough(transport: object) -> None:
    """
    Let Twisted buffer every write to C{transport} again, once what a
    L{gathering} block holds for it has gone out.
    """
    gathering.release(transport)
    attributes = getattr(transport, "__dict__", None)
    if attributes is None:
        return
    for name in _OVERRIDES:
        attributes.pop(name, None)
