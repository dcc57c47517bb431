"""
Tests for L{ccrouter.server}: the channel's body limit and the request
target check, fed raw bytes through a L{StringTransport}.
"""

from __future__ import annotations

import json
from io import BytesIO

from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import Request

from ccrouter.config import parseConfig
from ccrouter.live import LiveState
from ccrouter.root import resourceTree
from ccrouter.server import ProxySite
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


class ServerHarness(SynchronousTestCase):
    limit = 1000

    def connect(self, resource: Resource) -> tuple[object, StringTransport]:
        site = ProxySite(resource, lambda: self.limit, reactor=MemoryReactorClock())
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def response(self, raw: bytes) -> tuple[bytes, bytes, StringTransport]:
        self.recorder = Recorder()
        channel, transport = self.connect(self.recorder)
        channel.dataReceived(raw)  # type: ignore[attr-defined]
        head, _, body = transport.value().partition(b"\r\n\r\n")
        return head, body, transport


class BodyLimitTests(ServerHarness):
    def test_declaredLengthOverLimit(self) -> None:
        """
        A Content-Length over the limit gets 413 at once, without
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

    def test_bodyAfterRefusalIgnored(self) -> None:
        """
        Body bytes that arrive after the refusal are dropped unparsed.
        """
        head, _, transport = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n"
            + b"GET /smuggled HTTP/1.1\r\n\r\n" * 100
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "))
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)
        self.assertEqual(self.recorder.bodies, [])

    def test_chunkedBodyOverLimit(self) -> None:
        """
        A chunked body is cut off with 413 once it grows past the limit, and
        is not dispatched even when its last chunk is in the same read.
        """
        chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
        head, _, transport = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
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
        channel.dataReceived(  # type: ignore[attr-defined]
            b"POST /v1/messages HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n"
            + b"c" * 200_000
        )
        [content] = contents
        self.assertIsInstance(content, BytesIO)

    def test_bodyAtLimitAccepted(self) -> None:
        head, _body, _ = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"
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
        channel.dataReceived(request)  # type: ignore[attr-defined]
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
        A Host that is not a loopback name (DNS rebinding), two Host
        headers, or none, get 403; loopback and configured names pass.
        """
        refused = [
            b"Host: attacker.example:8080\r\n",
            b"Host: 127.0.0.1.nip.io\r\n",
            b"Host: 127.0.0.1\r\nHost: evil.example\r\n",
            b"",
        ]
        for host in refused:
            status, kind, agents = self.statusFor(
                b"GET /v1/models HTTP/1.1\r\n" + host + b"\r\n"
            )
            self.assertEqual(
                (status, kind, agents), (403, "permission_error", []), host
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
            b"Origin: https://trusted.example\r\nContent-Length: 2\r\n\r\n{}"
        )
        self.assertEqual((status, len(agents)), (502, 1))
