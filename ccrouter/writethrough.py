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
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet import tcp

#: The attributes an enabled transport carries on its instance, in front of
#: its class's methods.
_OVERRIDES = ("write", "writeSequence")


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

    def writeSequence(iovec: Iterable[bytes]) -> None:
        iovec = list(iovec)
        if (
            transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._writeDisconnected
            and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer)
            and not transport.TLS
            and all(type(piece) is bytes for piece in iovec)
        ):
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

    def write(data: bytes) -> None:
        if type(data) is not bytes:
            # Twisted's own write refuses it, as it always did.
            type(transport).write(transport, data)
            return
        writeSequence((data,))

    transport.writeSequence = writeSequence  # type: ignore[method-assign]
    transport.write = write  # type: ignore[method-assign]
    return True


def disableWriteThrough(transport: object) -> None:
    """
    Let Twisted buffer every write to C{transport} again.
    """
    attributes = getattr(transport, "__dict__", None)
    if attributes is None:
        return
    for name in _OVERRIDES:
        attributes.pop(name, None)
