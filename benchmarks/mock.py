"""
A mock Anthropic upstream for load scripts, meant to run in its own process
(so it does not share an event loop with the proxy or the load generator)::

    python -m benchmarks.mock [--refuse 0.05] [--seed 1]
                              [--tls-cert PEM --tls-key PEM]

It prints one JSON line with its ports, C{{"upstream": P, "control": C}}
(and C{"tls": T} with C{--tls-cert}), then serves until killed.
C{POST .../v1/messages} streams the L{Plan} the request body carries (see
L{benchmarks.wire}); the control port answers C{GET /stats} (open
connections, active streams, when each stream's peer went away) and C{POST
/close-idle} (close every keep-alive connection that is between requests,
so a proxy's pool empties and its descriptors can be counted against a
baseline).

C{--refuse P} resets a fraction P of new connections right after accepting
them, the nearest a listening socket gets to refusing some connections.

C{--tls-cert} and C{--tls-key} add a TLS listener on C{127.0.0.1} (and on
C{::1} at the same port when it can, so C{https://localhost:T} never waits
for a refused address) that serves exactly what the plain one does.  Its
connections are counted apart in C{/stats}: C{tls_accepted} (completed
handshakes: asyncio reports a TLS connection only once its handshake is
done) and C{tls_open}; C{accepted} counts plain connections only.

A plan with C{stream} false gets one JSON message (L{messageBody}); a
request to a path ending in C{/chat/completions} gets its stream in OpenAI
chat-completions format (L{OpenAIStreamEncoder}), for the performance
suite's translated streams.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import ssl
import struct
import sys
import time
from typing import Any

from benchmarks.perfwire import OpenAIStreamEncoder, messageBody
from benchmarks.wire import Plan, StreamEncoder, errorBody, planFromBody

#: Largest request head or body the mock reads; larger requests are refused.
MAX_REQUEST = 64 * 1024 * 1024


class Stats:
    def __init__(self) -> None:
        self.accepted = 0
        #: TLS connections whose handshake completed.
        self.tlsAccepted = 0
        self.refused = 0
        self.requests = 0
        self.completed = 0
        self.killed = 0
        self.statuses = 0
        self.streamsActive = 0
        self.lostPeer = 0
        #: Plan id -> monotonic ns when the peer went away mid-stream.
        self.disconnects: dict[int, int] = {}


class UpstreamServer:
    def __init__(self, refuse: float, seed: int) -> None:
        self.stats = Stats()
        self.connections: set[UpstreamConnection] = set()
        self._random = random.Random(seed)  # noqa: S311 - seeded, for repeatable runs
        self._refuse = refuse

    def shouldRefuse(self) -> bool:
        return self._refuse > 0 and self._random.random() < self._refuse

    def snapshot(self, details: bool) -> dict[str, Any]:
        stats = self.stats
        result: dict[str, Any] = {
            "now_ns": time.monotonic_ns(),
            "connections_open": len(self.connections),
            "connections_idle": sum(1 for c in self.connections if c.idle),
            "streams_active": stats.streamsActive,
            "accepted": stats.accepted,
            "tls_accepted": stats.tlsAccepted,
            "tls_open": sum(1 for c in self.connections if c.tls),
            "refused": stats.refused,
            "requests": stats.requests,
            "completed": stats.completed,
            "killed": stats.killed,
            "statuses": stats.statuses,
            "lost_peer": stats.lostPeer,
        }
        if details:
            result["disconnects"] = {
                str(key): value for key, value in stats.disconnects.items()
            }
        return result

    def closeIdle(self) -> int:
        idle = [connection for connection in self.connections if connection.idle]
        for connection in idle:
            connection.close()
        return len(idle)


def _reset(transport: asyncio.BaseTransport) -> None:
    """
    Close with an RST instead of a FIN.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert isinstance(transport, asyncio.WriteTransport)
    transport.abort()


class UpstreamConnection(asyncio.Protocol):
    """
    One connection from the proxy: reads requests one after another and
    answers each by its plan.
    """

    def __init__(self, server: UpstreamServer, tls: bool = False) -> None:
        self._server = server
        #: Whether this connection came in on the TLS listener.
        self.tls = tls
        self._buffer = bytearray()
        self._wakeup: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle = True
        #: The plan of the stream in progress, if any.
        self._streaming: Plan | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.tls:
            self._server.stats.tlsAccepted += 1
        else:
            self._server.stats.accepted += 1
        if self._server.shouldRefuse():
            self._server.stats.refused += 1
            self.closed = True
            _reset(transport)
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server.connections.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._peerGone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._peerGone()
        self._server.connections.discard(self)
        self._wake()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _peerGone(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._streaming is not None:
            stats = self._server.stats
            stats.lostPeer += 1
            stats.disconnects[self._streaming.id] = time.monotonic_ns()
        self._wake()

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _more(self) -> bool:
        if self.closed:
            return False
        self._wakeup = asyncio.get_running_loop().create_future()
        await self._wakeup
        # Data, a close, or both: the caller looks at the buffer again, and
        # the next call sees the close.
        return True

    async def _readRequest(
        self,
    ) -> tuple[bytes, bytes, dict[bytes, bytes], bytes] | None:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > 65536 or not await self._more():
                return None
        self.idle = False
        end = self._buffer.index(b"\r\n\r\n")
        head = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        requestLine, *lines = head.split(b"\r\n")
        method, target, _ = requestLine.split(b" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        if length > MAX_REQUEST:
            return None
        while len(self._buffer) < length:
            if not await self._more():
                return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return method, target, headers, body

    async def _serve(self) -> None:
        try:
            while not self.closed:
                self.idle = True
                request = await self._readRequest()
                if request is None:
                    break
                keepOpen = await self._answer(*request)
                if not keepOpen:
                    break
        finally:
            self.close()

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def _drained(self) -> None:
        if self._writable is not None:
            await self._writable

    async def _answer(
        self, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> bool:
        stats = self._server.stats
        stats.requests += 1
        path = target.split(b"?")[0]
        openai = path.endswith(b"/chat/completions")
        if method != b"POST" or not (openai or path.endswith(b"/v1/messages")):
            self._respond(404, errorBody("not_found_error", "no such path"), False)
            return False
        try:
            plan = planFromBody(body)
        except ValueError as e:
            self._respond(400, errorBody("invalid_request_error", str(e)), False)
            return False
        if plan.status is not None:
            stats.statuses += 1
            errorType = "overloaded_error" if plan.status == 529 else "api_error"
            self._respond(plan.status, errorBody(errorType, "planned"), plan.close)
            return not plan.close
        if not plan.stream:
            stats.completed += 1
            self._respond(200, messageBody(plan), plan.close)
            return not plan.close
        stats.streamsActive += 1
        self._streaming = plan
        try:
            return await self._stream(
                plan, OpenAIStreamEncoder(plan) if openai else StreamEncoder(plan)
            )
        finally:
            self._streaming = None
            stats.streamsActive -= 1

    def _respond(self, status: int, body: bytes, close: bool) -> None:
        self._write(
            b"HTTP/1.1 %d Planned\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n"
            % (status, len(body), b"Connection: close\r\n" if close else b"")
            + body
        )

    async def _stream(
        self, plan: Plan, encoder: StreamEncoder | OpenAIStreamEncoder
    ) -> bool:
        stats = self._server.stats
        loop = asyncio.get_running_loop()
        self._write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
            + (b"Connection: close\r\n" if plan.close else b"")
            + b"\r\n"
        )
        self._chunk(encoder.opening())
        started = loop.time()
        for seq in range(plan.events):
            if plan.kill is not None and seq == plan.killAfter:
                stats.killed += 1
                self._streaming = None
                assert self.transport is not None
                if plan.kill == "rst":
                    _reset(self.transport)
                else:
                    self.transport.close()
                return False
            # An absolute schedule, so a late wake-up does not delay the rest.
            delay = started + (seq + 1) * plan.spacing - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._drained()
            if self.closed:
                return False
            self._chunk(encoder.delta(seq, time.monotonic_ns()))
        if isinstance(encoder, OpenAIStreamEncoder):
            # The last chunk and the end of the body in one write, as many
            # OpenAI-compatible servers send them: a proxy must cope with
            # C{[DONE]} and the body's end arriving in the same read.
            closing = encoder.closing()
            self._write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(closing), closing))
        else:
            self._chunk(encoder.closing())
            self._write(b"0\r\n\r\n")
        stats.completed += 1
        return not plan.close

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))


async def _control(
    server: UpstreamServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if method == b"GET" and target.startswith(b"/stats"):
            payload = server.snapshot(details=b"details" in target)
        elif method == b"POST" and target == b"/close-idle":
            payload = {"closed": server.closeIdle()}
        else:
            payload = {"error": "unknown"}
        body = json.dumps(payload).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
        )
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
        pass
    finally:
        writer.close()


def tlsContext(certificate: str, key: str) -> ssl.SSLContext:
    """
    The server side of the TLS listener.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    return context


async def _tlsListener(
    server: UpstreamServer, context: ssl.SSLContext
) -> tuple[list[asyncio.Server], int]:
    """
    The TLS listener on C{127.0.0.1}, and on C{::1} at the same port where
    the machine has it; the servers and the port.
    """
    loop = asyncio.get_running_loop()

    def factory() -> UpstreamConnection:
        return UpstreamConnection(server, tls=True)

    first = await loop.create_server(factory, "127.0.0.1", 0, backlog=1024, ssl=context)
    port: int = first.sockets[0].getsockname()[1]
    servers = [first]
    with contextlib.suppress(OSError):
        servers.append(
            await loop.create_server(factory, "::1", port, backlog=1024, ssl=context)
        )
    return servers, port


async def serve(refuse: float, seed: int, tls: ssl.SSLContext | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = UpstreamServer(refuse, seed)
    upstream = await loop.create_server(
        lambda: UpstreamConnection(server), "127.0.0.1", 0, backlog=1024
    )
    control = await asyncio.start_server(
        lambda reader, writer: _control(server, reader, writer), "127.0.0.1", 0
    )
    ports = {
        "upstream": upstream.sockets[0].getsockname()[1],
        "control": control.sockets[0].getsockname()[1],
    }
    if tls is not None:
        # Kept referenced until the process ends.
        _tlsServers, ports["tls"] = await _tlsListener(server, tls)
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()
    # Until the parent kills the process (or stdin closes with the parent).
    await loop.run_in_executor(None, sys.stdin.read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refuse", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tls-cert", default=None, help="PEM certificate chain")
    parser.add_argument("--tls-key", default=None, help="PEM private key")
    arguments = parser.parse_args()
    if (arguments.tls_cert is None) != (arguments.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    context = (
        None
        if arguments.tls_cert is None
        else tlsContext(arguments.tls_cert, arguments.tls_key)
    )
    asyncio.run(serve(arguments.refuse, arguments.seed, context))


if __name__ == "__main__":
    main()
