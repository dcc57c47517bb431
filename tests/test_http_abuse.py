"""
HTTP abuse over real sockets: malformed framing, oversized and slow
requests, pipelining and HTTP/1.0, sent byte for byte to a L{ProxySite}
with the real resource tree listening on 127.0.0.1, in front of a mock
upstream that records the raw bytes it receives.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterable
from typing import Any

from attrs import evolve
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ccrouter.agents import PooledAgents
from ccrouter.config import parseConfig
from ccrouter.live import LiveState
from ccrouter.root import resourceTree
from ccrouter.server import ProxySite
from tests.mockupstream import (
    MockUpstream,
    anthropicMessage,
    anthropicStream,
    respondEvents,
    respondJSON,
)
from tests.rawclient import RawClient, rawConnect

#: Short client deadlines, so the real-time tests finish quickly.
HEADER_DEADLINE = 0.5
BODY_IDLE = 0.5

#: The channel's own 400: the resource tree never saw the request.
CHANNEL_400 = {"type": "invalid_request_error", "message": "malformed HTTP request"}

BODY = json.dumps(
    {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    },
    separators=(",", ":"),
).encode()
STREAM_BODY = BODY[:-1] + b',"stream":true}'
HEAD = (
    b"POST /v1/messages HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\n"
    b"Anthropic-Version: 2023-06-01\r\n"
)


def post(framing: bytes, body: bytes, head: bytes = HEAD) -> bytes:
    """
    A message request with the given framing headers and raw body.
    """
    return head + framing + b"\r\n" + body


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


Response = tuple[int, dict[bytes, bytes], bytes]


def parseResponses(raw: bytes) -> tuple[list[Response], bytes]:
    """
    Split C{raw} into complete responses (status, lower-cased headers,
    decoded body); a response without length or chunking runs to the end.
    Also returns what could not be parsed.
    """
    found: list[Response] = []
    while raw:
        head, separator, rest = raw.partition(b"\r\n\r\n")
        if not separator:
            break
        statusLine, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size, separator, rest = rest.partition(b"\r\n")
                if not separator:
                    return found, raw
                length = int(size, 16)
                if length == 0:
                    rest = rest[2:]
                    break
                body, rest = body + rest[:length], rest[length + 2 :]
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            body, rest = rest[:length], rest[length:]
        else:
            body, rest = rest, b""
        found.append((int(statusLine.split(b" ")[1]), headers, body))
        raw = rest
    return found, raw


class AbuseCase(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.upstream = self.mock(respondJSON(anthropicMessage("hello")))
        config = parseConfig(f'default:\n  url: "{self.upstream.url}"\n', "c.yaml", {})
        server = config.server
        limits = evolve(server.limits, headers=HEADER_DEADLINE, bodyIdle=BODY_IDLE)
        self.live = LiveState(
            evolve(config, server=evolve(server, limits=limits)),
            now=time.monotonic,
            wallNow=time.time,
        )
        agents = PooledAgents(reactor)
        self.addCleanup(agents.stopService)
        self.site = ProxySite(
            resourceTree(self.live, agents.agentFor, reactor),
            lambda: self.live.config.server,
            reactor=reactor,
        )
        self.site.noisy = False
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.port = port.getHost().port
        self.addCleanup(self.closeAll)
        self.addCleanup(port.stopListening)

    def mock(self, behaviour: Any) -> MockUpstream:
        mock = MockUpstream(behaviour).listen()
        self.addCleanup(mock.stop)
        return mock

    async def closeAll(self) -> None:
        """
        Abort what a failed test left open, and wait (bounded) until the
        site has seen every connection go.
        """
        for channel in list(self.site._channels):
            assert channel.transport is not None
            channel.transport.abortConnection()  # type: ignore[attr-defined]
        for _ in range(100):
            if self.site.openConnections == 0:
                return
            await deferLater(reactor, 0.01)
        self.fail("server connections still open")

    async def exchange(self, *pieces: bytes) -> tuple[list[Response], RawClient]:
        """
        Send C{pieces} in one write each, then read until the server closes
        the connection; every response must be complete.
        """
        client = await rawConnect(self.port)
        for piece in pieces:
            client.transport.write(piece)
        await client.closed.addTimeout(10, reactor)
        found, rest = parseResponses(client.received)
        self.assertEqual(rest, b"", client.received)
        return found, client

    async def assertRefused(self, request: bytes, status: int) -> dict[str, Any]:
        """
        Exactly one response, C{status} with an Anthropic-shaped error and
        C{Connection: close}, then EOF; and nothing reached the upstream.
        """
        found, client = await self.exchange(request)
        self.assertEqual(len(found), 1, client.received)
        [(code, headers, body)] = found
        self.assertEqual(code, status, client.received)
        self.assertEqual(headers.get(b"connection"), b"close")
        document = json.loads(body)
        self.assertEqual(document["type"], "error")
        self.assertUpstreamUntouched()
        return dict(document["error"])

    def assertUpstreamUntouched(self) -> None:
        self.assertEqual(self.upstream.requests, [])
        self.assertEqual(self.upstream.allRaw, b"")


class ControlTests(AbuseCase):
    async def test_wellFormedRequestsReachTheUpstream(self) -> None:
        """
        The requests the other tests break, sent well formed (by length and
        chunked), do reach the upstream: their refusals are not an accident.
        """
        for request in [
            post(b"Content-Length: %d\r\nConnection: close\r\n" % len(BODY), BODY),
            post(b"Transfer-Encoding: chunked\r\nConnection: close\r\n", chunked(BODY)),
        ]:
            [(status, _, body)], _ = await self.exchange(request)
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body), anthropicMessage("hello"))
        self.assertEqual(
            [request.body for request in self.upstream.requests], [BODY, BODY]
        )

    async def test_clientSocketsHaveNoDelay(self) -> None:
        """
        Accepted client sockets have TCP_NODELAY, so SSE events do not wait
        for Nagle's algorithm.
        """
        client = await rawConnect(self.port)
        for _ in range(100):
            if self.site.openConnections:
                break
            await deferLater(reactor, 0.01)
        [channel] = self.site._channels
        handle = channel.transport.getHandle()  # type: ignore[union-attr]
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        client.transport.loseConnection()
        await client.closed


class SmugglingTests(AbuseCase):
    async def test_contentLengthAndChunked(self) -> None:
        """
        H1: Content-Length with Transfer-Encoding: chunked, and a request
        smuggled after the chunked body, get one 400 then EOF; the smuggled
        request is never processed and nothing reaches the upstream.
        """
        smuggled = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        first = await self.assertRefused(
            post(
                b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(BODY),
                chunked(BODY) + smuggled,
            ),
            400,
        )
        second = await self.assertRefused(
            post(
                b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                b"0\r\n\r\n" + smuggled,
            ),
            400,
        )
        self.assertEqual([first, second], [CHANNEL_400] * 2)

    async def test_framingSeeds(self) -> None:
        """
        H2: each malformed framing seed of reliability.md appendix A gets
        400 then EOF, and nothing reaches the upstream.
        """
        length = b"%d" % len(BODY)
        seeds = [
            (b"Content-Length: " + length + b"\r\nContent-Length: " + length, BODY),
            (b"Content-Length: " + length + b"\r\nContent-Length: 2", BODY),
            (b"Content-Length: +" + length, BODY),
            (b"Content-Length: -1", BODY),
            (b"Content-Length: 1 2", BODY),
            (b"Content-Length: 0x" + b"%x" % len(BODY), BODY),
            (b"Transfer-Encoding: chunked, chunked", chunked(BODY)),
            (b"Transfer-Encoding: gzip, chunked", chunked(BODY)),
            (b"Transfer-Encoding: gzip", BODY),
            (
                b"Transfer-Encoding: chunked",
                b"0x%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
            ),
            (
                b"Transfer-Encoding: chunked",
                b"%x;a\nb\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
            ),
        ]
        for framing, body in seeds:
            error = await self.assertRefused(post(framing + b"\r\n", body), 400)
            self.assertEqual(error, CHANNEL_400, framing)

    async def test_lfOnlyChunkLines(self) -> None:
        """
        H2: chunk lines ended by a bare LF are never taken as chunks: the
        body stalls and gets 408 at the body idle deadline, then EOF;
        nothing reaches the upstream.
        """
        error = await self.assertRefused(
            post(
                b"Transfer-Encoding: chunked\r\n",
                b"%x\n%s\n0\n\n" % (len(BODY), BODY),
            ),
            408,
        )
        self.assertEqual(error["type"], "timeout_error")

    async def test_obsFoldNeverForwardedRaw(self) -> None:
        """
        H3: a folded header value reaches the upstream joined by one space,
        never as a raw fold.
        """
        [(status, _, _)], _ = await self.exchange(
            post(
                b"X-Folded: first\r\n  second\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n" % len(BODY),
                BODY,
            )
        )
        self.assertEqual(status, 200)
        [request] = self.upstream.requests
        self.assertEqual(request.header(b"x-folded"), [b"first second"])
        head = self.upstream.allRaw.partition(b"\r\n\r\n")[0]
        self.assertIn(b"first second", head)
        self.assertNotIn(b"\r\n ", head)
        self.assertNotIn(b"\r\n\t", head)

    async def test_malformedHeaders(self) -> None:
        """
        H4: NUL, a bare CR, a non-ASCII header name, a space before the
        colon, an empty header name, a bare LF, a non-ASCII target and an
        HTTP/2.0 request line all get 400 then EOF.
        """
        length = b"Content-Length: %d\r\n" % len(BODY)
        requests = [
            post(b"X-Nul: a\x00b\r\n" + length, BODY),
            post(b"X-Cr: a\rb\r\n" + length, BODY),
            post(b"X-N\xc3\xa4me: v\r\n" + length, BODY),
            post(b"X-Space : v\r\n" + length, BODY),
            post(b": v\r\n" + length, BODY),
            post(b"X-Lf: v\n" + length, BODY),
            b"GET /v1/m\xc3\xa4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            b"GET /health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
        ]
        for request in requests:
            error = await self.assertRefused(request, 400)
            self.assertEqual(error, CHANNEL_400, request)


def uploadThenRead(port: int, head: bytes, body: Iterable[bytes]) -> tuple[bytes, str]:
    """
    Do what blocking HTTP clients do: write the whole request, then read the
    response to the end.  Returns what was read and the socket errors met
    on the way (none, if all went well).
    """
    problems = []
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        try:
            client.sendall(head)
            for piece in body:
                client.sendall(piece)
        except OSError as failure:
            problems.append(f"sending: {failure!r}")
        try:
            while data := client.recv(65536):
                received += data
        except OSError as failure:
            problems.append(f"reading: {failure!r}")
    return received, "; ".join(problems)


class UploadRefusalTests(AbuseCase):
    """
    A refused upload's client must read its answer: closing with the rest of
    the body unread makes the kernel reset the connection, and a reset can
    overtake the answer (before ccrouter lingered, about a third of oversized
    uploads saw a connection error, and retried, instead of their 413).
    """

    piece = b"x" * 65536

    async def assertUploadRefused(
        self, head: bytes, body: Iterable[bytes], status: int
    ) -> None:
        received, problems = await threads.deferToThread(
            uploadThenRead, self.port, head, body
        )
        self.assertEqual(problems, "")
        found, rest = parseResponses(received)
        self.assertEqual((len(found), rest), (1, b""), received[:300])
        self.assertEqual(found[0][0], status)
        self.assertUpstreamUntouched()

    async def test_declaredOversizedUpload(self) -> None:
        """
        H8: a client that declares 33 MiB and writes all of it before
        reading gets its whole 413, then EOF, and no reset.
        """
        size = 33 * 1024 * 1024
        await self.assertUploadRefused(
            post(b"Content-Length: %d\r\n" % size, b""),
            (self.piece for _ in range(size // len(self.piece))),
            413,
        )

    async def test_chunkedOversizedUpload(self) -> None:
        """
        H8: a chunked upload cut off at the limit: its client writes the
        rest (40 MiB in all) and still reads the 413.
        """
        chunk = chunked(self.piece)[: -len(b"0\r\n\r\n")]
        count = 40 * 1024 * 1024 // len(self.piece)
        await self.assertUploadRefused(
            post(b"Transfer-Encoding: chunked\r\n", b""),
            itertools.chain((chunk for _ in range(count)), [b"0\r\n\r\n"]),
            413,
        )

    async def test_guardRefusalWithBody(self) -> None:
        """
        H8, S4: a request the guard refuses at its headers (here a
        foreign Host) gets its 403 even though its 8 MiB body follows.
        """
        size = 8 * 1024 * 1024
        head = post(
            b"Content-Length: %d\r\n" % size,
            b"",
            head=HEAD.replace(b"Host: 127.0.0.1", b"Host: attacker.example"),
        )
        await self.assertUploadRefused(
            head, (self.piece for _ in range(size // len(self.piece))), 403
        )


class LimitTests(AbuseCase):
    async def test_longHeaderLine(self) -> None:
        """
        H7: a 17 KiB header line gets 431 then EOF over a real socket
        (Twisted alone closes without a word).
        """
        await self.assertRefused(
            post(b"X-Big: " + b"b" * 17_000 + b"\r\nContent-Length: 2\r\n", b"{}"),
            431,
        )

    async def test_slowloris(self) -> None:
        """
        H9: a client dripping its headers a byte at a time, faster than any
        idle timeout, gets 408 at the header deadline, then EOF; nothing
        reaches the upstream.
        """
        client = await rawConnect(self.port)
        request = post(b"Content-Length: %d\r\n" % len(BODY), BODY)
        started = time.monotonic()

        def drip(offset: int) -> None:
            if client.closed.called or offset >= len(request):
                return
            client.transport.write(request[offset : offset + 1])
            pending.append(reactor.callLater(0.05, drip, offset + 1))

        pending = [reactor.callLater(0, drip, 0)]
        try:
            await client.closed.addTimeout(10, reactor)
        finally:
            for call in pending:
                if call.active():
                    call.cancel()
        elapsed = time.monotonic() - started
        found, rest = parseResponses(client.received)
        self.assertEqual(rest, b"")
        [(status, headers, body)] = found
        self.assertEqual((status, headers[b"connection"]), (408, b"close"))
        self.assertEqual(json.loads(body)["error"]["type"], "timeout_error")
        # Generous bounds: the deadline, not the idle timer nor the end of
        # the drip (which would take several seconds), closed it.
        self.assertGreaterEqual(elapsed, HEADER_DEADLINE * 0.8)
        self.assertLess(elapsed, 5)
        self.assertUpstreamUntouched()


class ConformanceTests(AbuseCase):
    async def test_pipelining(self) -> None:
        """
        H15: a streamed message request and C{GET /health} in one segment
        are answered in order, each complete.
        """
        events = anthropicStream("one two three")
        self.upstream.behaviour = respondEvents(events, spacing=0.02)
        found, _ = await self.exchange(
            post(b"Content-Length: %d\r\n" % len(STREAM_BODY), STREAM_BODY)
            + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        [(streamStatus, streamHeaders, stream), (healthStatus, _, health)] = found
        self.assertEqual((streamStatus, healthStatus), (200, 200))
        self.assertEqual(streamHeaders[b"content-type"], b"text/event-stream")
        self.assertEqual(stream, b"".join(events))
        self.assertIn("status", json.loads(health))
        self.assertEqual(len(self.upstream.requests), 1)

    async def test_http10(self) -> None:
        """
        H16: an HTTP/1.0 client gets its streamed answer whole, without
        chunking, delimited by the connection closing.
        """
        events = anthropicStream("one two three")
        self.upstream.behaviour = respondEvents(events, spacing=0.02)
        found, _ = await self.exchange(
            post(
                b"Content-Length: %d\r\n" % len(STREAM_BODY),
                STREAM_BODY,
                head=HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"),
            )
        )
        [(status, headers, body)] = found
        self.assertEqual(status, 200)
        self.assertNotIn(b"transfer-encoding", headers)
        self.assertEqual(body, b"".join(events))
        self.assertEqual(
            json.loads(self.upstream.requests[0].body), json.loads(STREAM_BODY)
        )

    async def test_http10Whole(self) -> None:
        """
        H16: the same for a whole (non-streamed) answer.
        """
        found, _ = await self.exchange(
            post(
                b"Content-Length: %d\r\n" % len(BODY),
                BODY,
                head=HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"),
            )
        )
        [(status, _, body)] = found
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), anthropicMessage("hello"))
