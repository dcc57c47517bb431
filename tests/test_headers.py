"""
Tests for L{ccrouter.headers}: hop-by-hop filtering and the credential swap.
No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from ccrouter.config import parseConfig
from ccrouter.headers import clientResponseHeaders, upstreamRequestHeaders

CONFIG = parseConfig(
    """
routes:
  - match: haiku
    upstream: {url: "https://api.z.ai", auth: {header: x-api-key, value: zai-key}}
  - match: sonnet
    upstream: {url: "https://bearer.example", auth: {header: Authorization,
               value: "Bearer provider"}}
  - match: local
    upstream: {url: "http://localhost:1234"}
""",
    "c.yaml",
    {},
)
DEFAULT = CONFIG.default
ZAI, BEARER, LOCAL = (route.upstream for route in CONFIG.routes)


def claudeCodeHeaders() -> Headers:
    return Headers(
        {
            b"Host": [b"127.0.0.1:8080"],
            b"Authorization": [b"Bearer sk-ant-oat01-client"],
            b"X-Api-Key": [b"sk-ant-api03-client"],
            b"Anthropic-Beta": [b"oauth-2025-04-20,claude-code-20250219"],
            b"Anthropic-Version": [b"2023-06-01"],
            b"Content-Type": [b"application/json"],
            b"Content-Length": [b"87000"],
            b"Accept-Encoding": [b"gzip, deflate, br, zstd"],
            b"Connection": [b"keep-alive, X-Hop"],
            b"X-Hop": [b"1"],
            b"Keep-Alive": [b"timeout=5"],
            b"Proxy-Authorization": [b"Basic cHJveHk="],
            b"TE": [b"trailers"],
            b"Expect": [b"100-continue"],
            b"X-Multi": [b"a", b"b"],
        }
    )


def names(headers: Headers) -> set[bytes]:
    return {name.lower() for name, _ in headers.getAllRawHeaders()}


class RequestHeaderTests(SynchronousTestCase):
    def test_defaultKeepsClientCredentials(self) -> None:
        """
        Anthropic gets the client's own credentials and every end-to-end
        header, but no hop-by-hop ones and nothing named in Connection.
        """
        headers = upstreamRequestHeaders(claudeCodeHeaders(), DEFAULT)
        self.assertEqual(
            names(headers),
            {
                b"authorization",
                b"x-api-key",
                b"anthropic-beta",
                b"anthropic-version",
                b"content-type",
                b"x-multi",
            },
        )
        self.assertEqual(
            headers.getRawHeaders(b"authorization"), [b"Bearer sk-ant-oat01-client"]
        )
        self.assertEqual(headers.getRawHeaders(b"x-multi"), [b"a", b"b"])

    def test_routedUpstreamGetsOnlyItsKey(self) -> None:
        """
        A routed upstream gets its configured key and neither client
        credential.
        """
        headers = upstreamRequestHeaders(claudeCodeHeaders(), ZAI)
        self.assertEqual(headers.getRawHeaders(b"x-api-key"), [b"zai-key"])
        self.assertIsNone(headers.getRawHeaders(b"authorization"))

    def test_routedAuthorizationReplaced(self) -> None:
        headers = upstreamRequestHeaders(claudeCodeHeaders(), BEARER)
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer provider"])
        self.assertIsNone(headers.getRawHeaders(b"x-api-key"))

    def test_routedWithoutAuthGetsNoCredentials(self) -> None:
        """
        A routed upstream without configured auth (a local model server)
        still never sees the client's Anthropic credentials.
        """
        headers = upstreamRequestHeaders(claudeCodeHeaders(), LOCAL)
        self.assertIsNone(headers.getRawHeaders(b"authorization"))
        self.assertIsNone(headers.getRawHeaders(b"x-api-key"))

    def test_credentialsInConnectionAreDropped(self) -> None:
        """
        Naming a header in Connection makes it hop-by-hop, even a credential.
        """
        client = claudeCodeHeaders()
        client.setRawHeaders(b"connection", [b"x-api-key"])
        self.assertIsNone(
            upstreamRequestHeaders(client, DEFAULT).getRawHeaders(b"x-api-key")
        )


class ResponseHeaderTests(SynchronousTestCase):
    def test_hopByHopRemoved(self) -> None:
        upstream = Headers(
            {
                b"Content-Type": [b"text/event-stream"],
                b"Transfer-Encoding": [b"chunked"],
                b"Connection": [b"close, X-Internal"],
                b"X-Internal": [b"1"],
                b"Request-Id": [b"req_1"],
                b"Set-Cookie": [b"a=1", b"b=2"],
                b"Content-Encoding": [b"gzip"],
                b"Content-Length": [b"12"],
            }
        )
        headers = clientResponseHeaders(upstream)
        self.assertEqual(
            names(headers),
            {
                b"content-type",
                b"request-id",
                b"set-cookie",
                b"content-encoding",
                b"content-length",
            },
        )
        self.assertEqual(headers.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2"])
