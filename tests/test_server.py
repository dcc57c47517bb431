"""
Tests for L{ccrouter.server}: the channel's body limit and the request
target check, fed raw bytes through a L{StringTransport}.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from ccrouter.proxy import ProxyResource
from ccrouter.server import ProxySite


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
        A chunked body is cut off with 413 once it grows past the limit.
        """
        chunk = b"%x\r\n%s\r\n" % (600, b"a" * 600)
        head, _, transport = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 2
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.recorder.bodies, [])

    def test_bodyAtLimitAccepted(self) -> None:
        head, _body, _ = self.response(
            b"POST /v1/messages HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"
            + b"b" * 1000
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.recorder.bodies, [b"b" * 1000])


class TargetTests(ServerHarness):
    def test_absoluteFormRefused(self) -> None:
        """
        An absolute-form or authority-form target would let a client pick
        the upstream host; both get 400 and never reach an upstream.
        """
        for target in [b"http://evil.example/v1/messages", b"evil.example:443"]:
            agents: list[object] = []
            proxy = ProxyResource(
                lambda: None,  # type: ignore[arg-type,return-value]
                agents.append,  # type: ignore[arg-type]
                MemoryReactorClock(),
            )
            channel, transport = self.connect(proxy)
            channel.dataReceived(  # type: ignore[attr-defined]
                b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            head, _, body = transport.value().partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 400 "), (target, head))
            self.assertEqual(
                json.loads(body)["error"]["type"], "invalid_request_error", target
            )
            self.assertEqual(agents, [])
