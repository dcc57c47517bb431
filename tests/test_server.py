"""
Tests for L{ccrouter.server}: the channel's limits (body, headers, request
line, deadlines, keep-alive, the connection cap) and the request target
check, fed raw bytes through a L{StringTransport} on a fake clock.
"""

from __future__ import annotations

import json
from io import BytesIO

from attrs import evolve
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ccrouter.config import ClientLimits, ServerSettings, parseConfig
from ccrouter.live import LiveState
from ccrouter.root import resourceTree
from ccrouter.server import (
    LINGER_IDLE,
    LINGER_TOTAL,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    MAX_REQUEST_LINE,
    Phase,
    ProxyChannel,
    ProxySite,
)
from tests.test_proxy import FailingAgent


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render(self, request: Request) -> bytes:
        assert request.content is not None
        self.bodies.append(request.content.read())
        return b"ok"


class Holder(Resource):
    """
    Keeps requests for C{/hold...} open until the test finishes them, and
    answers the others at once.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> int | bytes:
        if not request.uri.startswith(b"/hold"):
            return b"ok"
        self.requests.append(request)
        return NOT_DONE_YET


def get(path: bytes = b"/", extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def responses(transport: StringTransport) -> list[tuple[int, bytes, dict[str, str]]]:
    """
    The status, head and JSON error (if any) of each response written.
    """
    found = []
    rest = transport.value()
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        if fields.get(b"transfer-encoding") == b"chunked":
            body, _, rest = rest.partition(b"0\r\n\r\n")
        else:
            length = int(fields.get(b"content-length", b"0"))
            body, rest = rest[:length], rest[length:]
        error = json.loads(body)["error"] if body.startswith(b"{") else {}
        found.append((int(head.split(b" ")[1]), head, error))
    return found


class HalfClosingTransport(StringTransport):
    """
    A L{StringTransport} that can close its sending side, as TCP and UNIX
    transports can.
    """

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


class ServerHarness(SynchronousTestCase):
    limit = 1000
    limits = ClientLimits()
    transportFactory: type[StringTransport] = StringTransport

    def settings(self) -> ServerSettings:
        return ServerSettings(
            listen=("tcp:0",), maxBodyBytes=self.limit, limits=self.limits
        )

    def connect(self, resource: Resource) -> tuple[ProxyChannel, StringTransport]:
        self.clock = MemoryReactorClock()
        self.site = ProxySite(resource, self.settings, reactor=self.clock)
        return self.open()

    def open(self) -> tuple[ProxyChannel, StringTransport]:
        """
        Open one more client connection to the current site.
        """
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert isinstance(channel, ProxyChannel)
        transport = self.transportFactory()
        channel.makeConnection(transport)
        return channel, transport

    def response(self, raw: bytes) -> tuple[bytes, bytes, StringTransport]:
        self.recorder = Recorder()
        channel, transport = self.connect(self.recorder)
        channel.dataReceived(raw)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        return head, body, transport


class BodyLimitTests(ServerHarness):
    def test_declaredLengthOverLimit(self) -> None:
        """
        H8: a Content-Length over the limit gets 413 at once, without
        C{100 Continue}, without reading the body, and the connection closes.
        """
        head, body, transport = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Expect: 100-continue\r\nContent-Length: 1001\r\n\r\n"
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertIn(b"Connection: close", head)
        self.assertEqual(
            json.loads(body),
            {
                "type": "error",
                "error": {
                    "type": "request_too_large",
                    "message": "request body is larger than 1000 bytes",
                },
            },
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.recorder.bodies, [])

    def test_guardBeforeTheBody(self) -> None:
        """
        H8, S2, S4: a request the guard refuses is answered as soon as its
        headers are in, before C{100 Continue} and before its body is held
        in memory, so a refused client cannot make ccrouter buffer up to the
        body limit on each of its connections.
        """
        for headers, status in [
            (b"Host: attacker.example\r\nContent-Type: application/json\r\n", 403),
            (b"Host: 127.0.0.1\r\nContent-Type: text/plain\r\n", 415),
            (
                b"Host: 127.0.0.1\r\nOrigin: https://evil.example\r\n"
                b"Content-Type: application/json\r\n",
                403,
            ),
        ]:
            head, _, transport = self.response(
                b"POST /v1/messages HTTP/1.1\r\n" + headers + b"Expect: 100-continue"
                b"\r\nContent-Length: 900\r\n\r\n"
            )
            self.assertTrue(head.startswith(b"HTTP/1.1 %d " % status), head)
            self.assertIn(b"x-should-retry: false", head)
            self.assertNotIn(b"100 Continue", transport.value())
            self.assertTrue(transport.disconnecting)
            self.assertEqual(self.recorder.bodies, [])

    def test_bodyAfterRefusalIgnored(self) -> None:
        """
        H8, H1: body bytes that arrive after the refusal are dropped unparsed.
        """
        head, _, transport = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
            + b"GET /smuggled HTTP/1.1\r\n\r\n" * 100
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "))
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)
        self.assertEqual(self.recorder.bodies, [])

    def test_chunkedBodyOverLimit(self) -> None:
        """
        H8: a chunked body is cut off with 413 once it grows past the limit, and
        is not dispatched even when its last chunk is in the same read.
        """
        chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
        head, _, transport = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 2
            + b"0\r\n\r\n"
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)
        self.assertEqual(self.recorder.bodies, [])

    def test_largeBodyStaysInMemory(self) -> None:
        """
        A body of Claude Code's usual size (over Twisted's 100 kB spooling
        threshold) is kept in memory, never in a temporary file.
        """
        self.limit = 1_000_000
        contents: list[object] = []

        class Inspector(Resource):
            isLeaf = True

            def render(self, request: Request) -> bytes:
                contents.append(request.content)
                return b"ok"

        channel, _ = self.connect(Inspector())
        channel.dataReceived(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n"
            + b"c" * 200_000
        )
        [content] = contents
        self.assertIsInstance(content, BytesIO)

    def test_bodyAtLimitAccepted(self) -> None:
        """
        H8: a body of exactly the limit is dispatched.
        """
        head, _body, _ = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b"b" * 1000
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.recorder.bodies, [b"b" * 1000])


class GuardTests(ServerHarness):
    config = parseConfig(
        "server:\n  allowed_hosts: [ccrouter.internal]\n"
        "  allowed_origins: ['https://trusted.example']\n",
        "c.yaml",
        {},
    )

    def statusFor(self, request: bytes) -> tuple[int, str | None, list[object]]:
        """
        Send raw request bytes through the real channel to the proxy
        resource; return the status, the error type and the upstreams the
        proxy asked for an agent (none, if the request was refused).
        """
        agents: list[object] = []

        def agentFor(upstream: object) -> IAgent:
            agents.append(upstream)
            return FailingAgent(error.ConnectionRefusedError())

        clock = MemoryReactorClock()
        live = LiveState(self.config, now=clock.seconds, wallNow=clock.seconds)
        channel, transport = self.connect(resourceTree(live, agentFor, clock))
        # The channel's early guard reads the same live settings as the tree.
        self.site.settings = lambda: live.config.server
        channel.dataReceived(request)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        kind = json.loads(body)["error"]["type"] if body else None
        return status, kind, agents

    def test_targetMustBeAPath(self) -> None:
        """
        Absolute-form and authority-form targets would let a client pick the
        upstream host; dot segments would climb out of an upstream's base
        path.  All get 400 and reach no upstream.
        """
        for target in [
            b"http://evil.example/v1/messages",
            b"evil.example:443",
            b"/../admin",
            b"/v1/%2e%2E/admin",
            b"/v1/./messages",
            b"/v1/..",
        ]:
            status, kind, agents = self.statusFor(
                b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            self.assertEqual(
                (status, kind, agents), (400, "invalid_request_error", []), target
            )

    def test_hostMustBeLoopback(self) -> None:
        """
        A Host that is not a loopback name (DNS rebinding) gets 403; two
        Host headers, or none, get 400; loopback and configured names pass.
        """
        refused = [
            (b"Host: attacker.example:8080\r\n", 403, "permission_error"),
            (b"Host: 127.0.0.1.nip.io\r\n", 403, "permission_error"),
            (
                b"Host: 127.0.0.1\r\nHost: evil.example\r\n",
                400,
                "invalid_request_error",
            ),
            (b"", 400, "invalid_request_error"),
        ]
        for host, expectedStatus, expectedKind in refused:
            status, kind, agents = self.statusFor(
                b"GET /v1/models HTTP/1.1\r\n" + host + b"\r\n"
            )
            self.assertEqual(
                (status, kind, agents), (expectedStatus, expectedKind, []), host
            )
        for host in [
            b"127.0.0.1:8080",
            b"localhost",
            b"[::1]:8080",
            b"127.1.2.3",
            b"CCROUTER.internal:1",
        ]:
            status, _, agents = self.statusFor(
                b"GET /v1/models HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
            )
            self.assertEqual((status, len(agents)), (502, 1), host)

    def test_browserOriginRefused(self) -> None:
        """
        A request carrying an Origin (a web page) gets 403 unless the origin
        is configured.
        """
        status, kind, agents = self.statusFor(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Origin: https://evil.example\r\nContent-Length: 2\r\n\r\n{}"
        )
        self.assertEqual((status, kind, agents), (403, "permission_error", []))
        status, _, agents = self.statusFor(
            b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Origin: https://trusted.example\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        self.assertEqual((status, len(agents)), (502, 1))


class ChannelHarness(ServerHarness):
    def setUp(self) -> None:
        self.recorder = Recorder()
        self.channel, self.transport = self.connect(self.recorder)

    def assertRefused(
        self, transport: StringTransport, status: int, kind: str | None = None
    ) -> dict[str, str]:
        """
        Exactly one response, C{status} with an Anthropic-shaped error body
        and C{Connection: close}, and the connection closing.
        """
        [(code, head, error)] = responses(transport)
        self.assertEqual(code, status, transport.value())
        self.assertIn(b"\r\nConnection: close", head)
        self.assertIn(b"\r\nContent-Type: application/json", head)
        if kind is not None:
            self.assertEqual(error["type"], kind)
        self.assertTrue(transport.disconnecting)
        return error

    def lost(self, channel: ProxyChannel) -> None:
        channel.connectionLost(Failure(error.ConnectionDone()))


class HeaderLimitTests(ChannelHarness):
    def test_requestLineTooLong(self) -> None:
        """
        H7: a request line of 8 KiB + 1 gets 414; one of 8 KiB is served.
        """
        line = b"GET /" + b"a" * (MAX_REQUEST_LINE - 14) + b" HTTP/1.1"
        self.assertEqual(len(line), MAX_REQUEST_LINE)
        self.channel.dataReceived(line + b"\r\nHost: 127.0.0.1\r\n\r\n")
        [(status, _, _)] = responses(self.transport)
        self.assertEqual(status, 200)
        channel, transport = self.open()
        channel.dataReceived(
            line.replace(b"GET /", b"GET /a") + b"\r\nHost: 127.0.0.1\r\n\r\n"
        )
        self.assertRefused(transport, 414, "invalid_request_error")
        self.assertEqual(len(self.recorder.bodies), 1)

    def test_requestLineTooLongBeforeItsEnd(self) -> None:
        """
        H7: a request line is refused with 414 as soon as it outgrows the
        limit, without waiting for its end.
        """
        self.channel.dataReceived(b"GET /" + b"a" * (MAX_REQUEST_LINE - 5))
        self.assertEqual(self.transport.value(), b"")
        self.channel.dataReceived(b"a")
        self.assertRefused(self.transport, 414)

    def test_seventeenKiBLine(self) -> None:
        """
        H7: one 17 KiB header line gets 431 (Twisted alone drops the
        connection without a word), whether it arrives whole or in pieces.
        """
        line = b"X-Big: " + b"b" * 17_000 + b"\r\n"
        self.channel.dataReceived(get(extra=line))
        self.assertRefused(self.transport, 431, "invalid_request_error")
        channel, transport = self.open()
        request = get(extra=line)
        for start in range(0, len(request), 1000):
            channel.dataReceived(request[start : start + 1000])
        self.assertRefused(transport, 431)
        self.assertEqual(self.recorder.bodies, [])

    def test_totalHeaderBytes(self) -> None:
        """
        H7: request line and headers of 16 KiB + 1 in all get 431; of
        exactly 16 KiB they are served.
        """
        head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        used = len(head) - 4
        fields = b""
        while used + 1008 < MAX_HEADER_BYTES:
            fields += b"X-F%03d: " % (len(fields) // 1000) + b"f" * 1000 + b"\r\n"
            used += 1008
        last = b"X-Last: " + b"l" * (MAX_HEADER_BYTES - used - 8) + b"\r\n"
        exact = head + fields + last + b"\r\n"
        self.assertEqual(
            sum(len(line) for line in exact.split(b"\r\n")), MAX_HEADER_BYTES
        )
        self.channel.dataReceived(exact)
        [(status, _, _)] = responses(self.transport)
        self.assertEqual(status, 200)
        channel, transport = self.open()
        channel.dataReceived(exact.replace(b"X-Last: ", b"X-Last: l"))
        self.assertRefused(transport, 431)
        self.assertEqual(len(self.recorder.bodies), 1)

    def test_headerFieldCount(self) -> None:
        """
        H7: 101 header fields get 431; 100 are served.
        """
        fields = b"".join(b"X-N%d: v\r\n" % n for n in range(MAX_HEADER_FIELDS - 1))
        self.channel.dataReceived(get(extra=fields))
        [(status, _, _)] = responses(self.transport)
        self.assertEqual(status, 200)
        channel, transport = self.open()
        channel.dataReceived(get(extra=fields + b"X-One-Too-Many: v\r\n"))
        error = self.assertRefused(transport, 431)
        self.assertIn(str(MAX_HEADER_FIELDS), error["message"])
        self.assertEqual(len(self.recorder.bodies), 1)

    def test_limitsApplyPerRequest(self) -> None:
        """
        The header budget starts again with each request on a connection.
        """
        fields = b"".join(b"X-N%d: v\r\n" % n for n in range(MAX_HEADER_FIELDS - 1))
        self.channel.dataReceived(get(extra=fields) * 3)
        self.assertEqual([r[0] for r in responses(self.transport)], [200] * 3)

    def test_bareLineEndings(self) -> None:
        """
        H4: bare LF or bare CR line endings get 400 at once (Twisted would
        wait for a CRLF that never comes).
        """
        for request in [
            b"GET / HTTP/1.1\nHost: 127.0.0.1\n\n",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\n\n",
            b"GET / HTTP/1.1\rHost: 127.0.0.1\r\n\r\n",
        ]:
            channel, transport = self.open()
            channel.dataReceived(request)
            self.assertRefused(transport, 400, "invalid_request_error")
        self.assertEqual(self.recorder.bodies, [])

    def test_twistedBadRequestIsJSON(self) -> None:
        """
        H2: where Twisted refuses malformed framing, the 400 is in
        Anthropic's shape and closes the connection.
        """
        self.channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        self.assertRefused(self.transport, 400, "invalid_request_error")
        self.assertEqual(self.recorder.bodies, [])


class HeaderDeadlineTests(ChannelHarness):
    def test_headerDeadline(self) -> None:
        """
        H9: headers not complete 10 s after the first byte get 408, and the
        connection closes.
        """
        self.channel.dataReceived(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        self.clock.advance(9.9)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.1)
        error = self.assertRefused(self.transport, 408, "timeout_error")
        self.assertIn("10 s", error["message"])
        self.channel.dataReceived(b"\r\n")
        self.assertEqual(self.recorder.bodies, [])

    def test_drippingClient(self) -> None:
        """
        H9: a client that sends one byte a second (which resets Twisted's
        idle timer every time) still gets 408 10 s after its first byte.
        """
        request = get()
        for second in range(10):
            self.channel.dataReceived(request[second : second + 1])
            self.clock.advance(1)
        self.assertRefused(self.transport, 408)

    def test_deadlineStartsWithTheRequest(self) -> None:
        """
        H9: the deadline runs from the first byte of each request, not from
        the connection or the previous request.
        """
        self.clock.advance(60)
        self.channel.dataReceived(get())
        self.clock.advance(60)
        self.channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(9)
        self.channel.dataReceived(b"Host: 127.0.0.1\r\n\r\n")
        self.assertEqual([r[0] for r in responses(self.transport)], [200, 200])
        self.assertFalse(self.transport.disconnecting)

    def test_pipelinedRequestGetsItsOwnDeadline(self) -> None:
        """
        H9, H15: the part of a next request read with the previous one
        starts that request's deadline when the previous one is answered.
        """
        holder = Holder()
        channel, transport = self.connect(holder)
        channel.dataReceived(get(b"/hold/one") + b"GET /hold/two HTTP/1.1\r\n")
        self.clock.advance(30)
        self.assertEqual(transport.value(), b"")
        [first] = holder.requests
        first.finish()
        self.assertEqual(channel.phase, Phase.HEADERS)
        self.clock.advance(10)
        self.assertEqual([r[0] for r in responses(transport)], [200, 408])
        self.assertEqual(len(holder.requests), 1)

    def test_pipelinedAfterQuickAnswer(self) -> None:
        """
        H9, H15: the same when the previous request is answered while its
        read is still being parsed.
        """
        self.channel.dataReceived(get() + b"GET / HT")
        self.assertEqual(self.channel.phase, Phase.HEADERS)
        self.clock.advance(10)
        self.assertEqual([r[0] for r in responses(self.transport)], [200, 408])

    def test_deadlineFollowsTheConfig(self) -> None:
        """
        A reloaded header deadline applies to the next request.
        """
        self.limits = evolve(self.limits, headers=2.0)
        self.channel.dataReceived(b"G")
        self.clock.advance(2)
        self.assertRefused(self.transport, 408)


class BodyDeadlineTests(ChannelHarness):
    head = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )

    def test_bodyIdle(self) -> None:
        """
        H10: a body that stalls for 30 s gets 408; each byte restarts the
        wait.
        """
        self.channel.dataReceived(self.head + b"a")
        for _ in range(3):
            self.clock.advance(29)
            self.channel.dataReceived(b"b")
        self.clock.advance(29.9)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.1)
        error = self.assertRefused(self.transport, 408, "timeout_error")
        self.assertIn("stalled for 30 s", error["message"])
        self.assertEqual(self.recorder.bodies, [])

    def test_bodyTotal(self) -> None:
        """
        H10: a body that keeps trickling gets 408 120 s after the headers.
        """
        self.channel.dataReceived(self.head)
        for _ in range(5):
            self.clock.advance(20)
            self.channel.dataReceived(b"c")
        self.clock.advance(19.9)
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.1)
        error = self.assertRefused(self.transport, 408)
        self.assertIn("longer than 120 s", error["message"])

    def test_chunkedBodyIdle(self) -> None:
        """
        H10: the same for a chunked body.
        """
        self.channel.dataReceived(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n"
        )
        self.clock.advance(30)
        self.assertRefused(self.transport, 408)

    def test_bodyInTime(self) -> None:
        """
        A body that arrives in time is served, and the body timers stop.
        """
        self.channel.dataReceived(self.head + b"d" * 50)
        self.clock.advance(25)
        self.channel.dataReceived(b"d" * 50)
        self.clock.advance(200)
        [(status, _, _)] = responses(self.transport)
        self.assertEqual(status, 200)
        self.assertEqual(self.recorder.bodies, [b"d" * 100])


class KeepAliveTests(ChannelHarness):
    def test_idleConnectionClosed(self) -> None:
        """
        H12: a connection idle for 75 s after its last response is closed,
        without a response.
        """
        self.channel.dataReceived(get())
        self.transport.clear()
        self.clock.advance(74.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")

    def test_silentConnectionClosed(self) -> None:
        """
        H12: a connection that never sends anything is closed at 75 s.
        """
        self.clock.advance(75)
        self.assertTrue(self.transport.disconnecting)

    def test_busyConnectionKept(self) -> None:
        """
        H12: no client timer runs while the resource handles a request,
        however long it takes.
        """
        holder = Holder()
        channel, transport = self.connect(holder)
        channel.dataReceived(get(b"/hold"))
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)
        holder.requests[0].finish()
        self.clock.advance(75)
        self.assertTrue(transport.disconnecting)

    def test_abortIfNotGone(self) -> None:
        """
        A closed connection that does not go away (its peer does not read)
        is aborted after Twisted's abort timeout.
        """
        self.clock.advance(75)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(self.channel.abortTimeout)
        self.assertTrue(self.transport.disconnected)

    def test_abortAfterConnectionClose(self) -> None:
        """
        H12: a C{Connection: close} request's connection closes after its
        response, and is aborted if its client never reads the end.
        """
        self.channel.dataReceived(get(extra=b"Connection: close\r\n"))
        [(status, _, _)] = responses(self.transport)
        self.assertEqual(status, 200)
        self.assertTrue(self.transport.disconnecting)
        self.clock.advance(self.channel.abortTimeout - 0.01)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.01)
        self.assertTrue(self.transport.disconnected)


class LingerTests(ChannelHarness):
    transportFactory = HalfClosingTransport
    limits = ClientLimits(maxConnections=2)
    oversized = (
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )

    def refused(self) -> tuple[ProxyChannel, HalfClosingTransport]:
        channel, transport = self.open()
        assert isinstance(transport, HalfClosingTransport)
        channel.dataReceived(self.oversized + b"x" * 100)
        self.assertEqual(responses(transport)[0][0], 413)
        return channel, transport

    def test_refusalLingers(self) -> None:
        """
        H8: after a refusal the sending side closes once the answer is out,
        and the rest of the upload is read and dropped, unparsed, while it
        keeps coming, for at most L{LINGER_TOTAL}; closing with it unread
        would reset the connection before the client has read its 413.
        """
        channel, transport = self.refused()
        self.assertTrue(transport.writeClosed)
        self.assertFalse(transport.disconnecting)
        answer = transport.value()
        fed = 0.0
        while fed + LINGER_IDLE * 0.9 < LINGER_TOTAL - 0.1:
            self.clock.advance(LINGER_IDLE * 0.9)
            fed += LINGER_IDLE * 0.9
            channel.dataReceived(b"GET /smuggled HTTP/1.1\r\n\r\n" + b"x" * 1000)
            self.assertFalse(transport.disconnecting, fed)
        self.clock.advance(LINGER_TOTAL - fed)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), answer)
        self.assertEqual(self.recorder.bodies, [])

    def test_quietClientClosedSooner(self) -> None:
        """
        H8: a client that sends nothing more after the refusal is closed
        L{LINGER_IDLE} later.
        """
        _, transport = self.refused()
        self.clock.advance(LINGER_IDLE - 0.01)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.01)
        self.assertTrue(transport.disconnecting)

    def test_lingeringIsCapped(self) -> None:
        """
        H8, H12: no more connections linger than may be open (here 2); a
        refusal past that closes at once, and a lingering connection that
        goes frees its place.
        """
        first, firstTransport = self.refused()
        _, secondTransport = self.refused()
        _, thirdTransport = self.refused()
        self.assertEqual(
            [t.writeClosed for t in (firstTransport, secondTransport, thirdTransport)],
            [True, True, False],
        )
        self.assertTrue(thirdTransport.disconnecting)
        self.lost(first)
        _, fourthTransport = self.refused()
        self.assertTrue(fourthTransport.writeClosed)

    def test_idleCloseDoesNotLinger(self) -> None:
        """
        H12: an idle keep-alive connection has nothing unread to wait for;
        it closes outright.
        """
        self.clock.advance(75)
        assert isinstance(self.transport, HalfClosingTransport)
        self.assertFalse(self.transport.writeClosed)
        self.assertTrue(self.transport.disconnecting)

    def test_lingeringAborted(self) -> None:
        """
        H8: a lingering client that never reads its answer is aborted after
        Twisted's abort timeout.
        """
        _, transport = self.refused()
        self.clock.advance(self.channel.abortTimeout - 0.01)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.01)
        self.assertTrue(transport.disconnected)


class ConnectionCapTests(ChannelHarness):
    limits = ClientLimits(maxConnections=3)

    def test_oldestIdleEvicted(self) -> None:
        """
        H12: at the cap, a new connection closes the connection idle the
        longest; a busy one is never chosen.
        """
        holder = Holder()
        busy, busyTransport = self.connect(holder)
        self.clock.advance(1)
        old, oldTransport = self.open()
        self.clock.advance(1)
        _, recentTransport = self.open()
        busy.dataReceived(get(b"/hold"))
        self.assertEqual((self.site.openConnections, self.site.busyConnections), (3, 1))
        self.clock.advance(1)
        newcomer, newTransport = self.open()
        self.assertTrue(oldTransport.disconnecting)
        self.assertEqual(oldTransport.value(), b"")
        self.assertFalse(busyTransport.disconnecting)
        self.assertFalse(recentTransport.disconnecting)
        self.assertFalse(newTransport.disconnecting)
        self.lost(old)
        self.assertEqual(self.site.openConnections, 3)
        newcomer.dataReceived(get())
        self.assertEqual(responses(newTransport)[0][0], 200)

    def test_slowHeadersEvictedAfterIdle(self) -> None:
        """
        H12: with no idle connection, the one longest in its headers (the
        slowloris) is closed with 408 to make room.
        """
        holder = Holder()
        busy, busyTransport = self.connect(holder)
        busy.dataReceived(get(b"/hold"))
        slow, slowTransport = self.open()
        slow.dataReceived(b"GET / HT")
        self.clock.advance(1)
        slower, slowerTransport = self.open()
        slower.dataReceived(b"GET / HT")
        self.clock.advance(1)
        self.open()
        self.assertRefused(slowTransport, 408)
        self.assertFalse(slowerTransport.disconnecting)
        self.assertFalse(busyTransport.disconnecting)

    def test_allBusyRefused(self) -> None:
        """
        H12: when every connection has a request past its headers, the new
        one gets 503 and is closed; the others are untouched.
        """
        holder = Holder()
        channel, transport = self.connect(holder)
        channels = [(channel, transport), self.open(), self.open()]
        channels[0][0].dataReceived(get(b"/hold"))
        channels[1][0].dataReceived(get(b"/hold"))
        channels[2][0].dataReceived(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n"
        )
        newcomer, newTransport = self.open()
        error = self.assertRefused(newTransport, 503, "overloaded_error")
        self.assertIn("3", error["message"])
        for _, transport in channels:
            self.assertFalse(transport.disconnecting)
        self.assertEqual(self.site.openConnections, 4)
        self.lost(newcomer)
        self.assertEqual(self.site.openConnections, 3)

    def test_capFollowsTheConfig(self) -> None:
        """
        A reloaded cap applies to the next connection.
        """
        self.limits = ClientLimits(maxConnections=1)
        _, transport = self.open()
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(transport.disconnecting)


class CloseIdleTests(ChannelHarness):
    def test_closeIdleConnections(self) -> None:
        """
        closeIdleConnections closes idle connections at once; a request in
        progress is answered with Connection: close and its connection then
        closes; no response keeps a connection open afterwards.
        """
        holder = Holder()
        busy, busyTransport = self.connect(holder)
        busy.dataReceived(get(b"/hold"))
        idle, idleTransport = self.open()
        idle.dataReceived(get(b"/done"))
        idleTransport.clear()
        starting, startingTransport = self.open()
        starting.dataReceived(b"GET /hold/late HTTP/1.1\r\n")

        self.site.closeIdleConnections()
        self.assertTrue(idleTransport.disconnecting)
        self.assertEqual(idleTransport.value(), b"")
        self.assertFalse(busyTransport.disconnecting)
        self.assertFalse(startingTransport.disconnecting)

        holder.requests[0].write(b"partial")
        holder.requests[0].finish()
        [(status, head, _)] = responses(busyTransport)
        self.assertEqual(status, 200)
        self.assertIn(b"\r\nConnection: close", head)
        self.assertTrue(busyTransport.disconnecting)

        starting.dataReceived(b"Host: 127.0.0.1\r\n\r\n")
        holder.requests[1].finish()
        [(status, head, _)] = responses(startingTransport)
        self.assertEqual(status, 200)
        self.assertIn(b"\r\nConnection: close", head)
        self.assertTrue(startingTransport.disconnecting)

    def test_counts(self) -> None:
        """
        openConnections counts connections until they are gone;
        busyConnections those with a request in progress.
        """
        holder = Holder()
        busy, _ = self.connect(holder)
        busy.dataReceived(get(b"/hold"))
        partial, _ = self.open()
        partial.dataReceived(b"GET")
        idle, _ = self.open()
        self.assertEqual((self.site.openConnections, self.site.busyConnections), (3, 2))
        self.site.closeIdleConnections()
        self.assertEqual((self.site.openConnections, self.site.busyConnections), (3, 2))
        self.lost(idle)
        self.assertEqual((self.site.openConnections, self.site.busyConnections), (2, 2))
        holder.requests[0].finish()
        self.lost(busy)
        self.assertEqual((self.site.openConnections, self.site.busyConnections), (1, 1))
