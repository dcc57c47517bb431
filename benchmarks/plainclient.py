"""
A lean asyncio HTTP/1.1 client for non-streaming requests: one
L{PlainConnection} sends a request, reads the whole response (a
C{Content-Length} or a chunked body) and sends the next on the same
connection.  A protocol rather than streams, so that at 64 connections the
load generator costs little of the CPU it shares with the mock.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

#: A response head larger than this is a problem, not a response.
MAX_HEAD = 64 * 1024


class ResponseError(Exception):
    """
    The response could not be read: a broken connection or bad framing.
    """


def requestBytes(
    host: str, port: int, body: bytes, path: str = "/v1/messages"
) -> bytes:
    """
    A whole C{POST} request, made once and sent as often as needed.
    """
    return (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Anthropic-Version: 2023-06-01\r\n"
        "X-Api-Key: sk-ant-api03-load-test-not-a-key\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class PlainConnection(asyncio.Protocol):
    """
    One keep-alive client connection; one request at a time.

    @ivar reusable: Whether another request may follow on it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._status = 0
        #: Body bytes still due (C{Content-Length}), or -1 while chunked.
        self._remaining: int | None = None
        self._body = bytearray()
        self.reusable = True

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        timeout: float = 10,
        tls: ssl.SSLContext | None = None,
        serverHostname: str | None = None,
    ) -> PlainConnection:
        """
        Connect, and with C{tls} complete a TLS handshake (verifying
        C{serverHostname}, by default C{host}) before returning.
        """
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(
                cls,
                host,
                port,
                ssl=tls,
                server_hostname=(serverHostname or host) if tls is not None else None,
            ),
            timeout,
        )
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(f"connection lost: {exc!r}")

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    async def request(self, data: bytes, timeout: float) -> tuple[int, bytes]:
        """
        Send C{data} (a whole request) and return the status and body of
        its response.

        @raise ResponseError: If none arrives whole within C{timeout} s.
        """
        if not self.reusable or self._transport is None:
            raise ResponseError("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._remaining = None
        self._body.clear()
        self._transport.write(data)
        try:
            return await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            self.close()
            raise ResponseError(f"no whole response within {timeout} s") from None

    def _fail(self, problem: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ResponseError(problem))

    def _done(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._status, bytes(self._body)))
        self._remaining = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            self._parse()
        except (ValueError, IndexError) as e:
            self.close()
            self._fail(f"bad response: {e!r}")

    def _parse(self) -> None:
        buffer = self._buffer
        while buffer:
            if self._remaining is None:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ValueError("response head too large")
                    return
                remaining = self._head(bytes(buffer[:end]))
                del buffer[: end + 4]
                self._remaining = remaining
                if remaining == 0:
                    self._done()
            elif self._remaining > 0:
                taken = buffer[: self._remaining]
                self._body += taken
                del buffer[: len(taken)]
                self._remaining -= len(taken)
                if self._remaining == 0:
                    self._done()
            elif not self._chunk():
                return

    def _head(self, head: bytes) -> int:
        """
        Take in a response head; how many body bytes follow (-1: chunked).
        """
        statusLine, *lines = head.split(b"\r\n")
        self._status = int(statusLine.split(b" ", 2)[1])
        length = None
        chunked = False
        for line in lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.strip().lower() == b"chunked"
            elif name == b"connection" and value.strip().lower() == b"close":
                self.reusable = False
        if chunked:
            return -1
        if length is None:
            raise ValueError("a response without a length")
        return length

    def _chunk(self) -> bool:
        """
        Take one chunk off the buffer; whether there was a whole one.
        """
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            return False
        size = int(bytes(buffer[:end]).split(b";")[0], 16)
        if size == 0:
            if len(buffer) < end + 4:
                return False
            del buffer[: end + 4]
            self._done()
            return True
        if len(buffer) < end + 2 + size + 2:
            return False
        self._body += buffer[end + 2 : end + 2 + size]
        del buffer[: end + 2 + size + 2]
        return True
