"""
Tests for L{ccrouter.headers}: hop-by-hop filtering and the credential swap.
No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from ccrouter.config import parseConfig
from ccrouter.headers import (
    clientResponseHeaders,
    copyHeaders,
    upstreamRequestHeaders,
)

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
            b"Cookie": [b"session=client-cookie"],
            b"X-Ccrouter-Token": [b"local-token-0123456789"],
        }
    )


def names(headers: Headers) -> set[bytes]:
    return {name.lower() for name, _ in headers.getAllRawHeaders()}


class RequestHeaderTests(SynchronousTestCase):
    def test_defaultKeepsClientCredentials(self) -> None:
        """
        S8, H5: Anthropic gets the client's own credentials and every
        end-to-end header, but no hop-by-hop ones, nothing named in
        Connection, and not ccrouter's local token.
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
                b"cookie",
            },
        )
        self.assertEqual(
            headers.getRawHeaders(b"authorization"), [b"Bearer sk-ant-oat01-client"]
        )
        self.assertEqual(headers.getRawHeaders(b"x-multi"), [b"a", b"b"])

    def test_routedUpstreamGetsOnlyItsKey(self) -> None:
        """
        S8: a routed upstream gets its configured key, once, and no client
        credential: neither the Anthropic login nor a cookie.
        """
        headers = upstreamRequestHeaders(claudeCodeHeaders(), ZAI)
        self.assertEqual(headers.getRawHeaders(b"x-api-key"), [b"zai-key"])
        self.assertIsNone(headers.getRawHeaders(b"authorization"))
        self.assertIsNone(headers.getRawHeaders(b"cookie"))
        self.assertIsNone(headers.getRawHeaders(b"x-ccrouter-token"))

    def test_routedAuthorizationReplaced(self) -> None:
        """
        S8: a provider keyed by C{Authorization} gets its own bearer in place
        of the client's, and no C{x-api-key}.
        """
        headers = upstreamRequestHeaders(claudeCodeHeaders(), BEARER)
        self.assertEqual(headers.getRawHeaders(b"authorization"), [b"Bearer provider"])
        self.assertIsNone(headers.getRawHeaders(b"x-api-key"))

    def test_routedWithoutAuthGetsNoCredentials(self) -> None:
        """
        S8: a routed upstream without configured auth (a local model server)
        still never sees the client's Anthropic credentials or cookies.
        """
        headers = upstreamRequestHeaders(claudeCodeHeaders(), LOCAL)
        self.assertIsNone(headers.getRawHeaders(b"authorization"))
        self.assertIsNone(headers.getRawHeaders(b"x-api-key"))
        self.assertIsNone(headers.getRawHeaders(b"cookie"))

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
        """
        S6: hop-by-hop headers, those named in Connection, CORS headers and
        cookies stay between ccrouter and the upstream.
        """
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
                b"Set-Cookie2": [b"c=3"],
                b"Access-Control-Allow-Origin": [b"*"],
                b"Access-Control-Allow-Credentials": [b"true"],
                b"ACCESS-CONTROL-EXPOSE-HEADERS": [b"request-id"],
                b"Access-Control-Max-Age": [b"86400"],
                b"Vary": [b"Origin"],
            }
        )
        headers = clientResponseHeaders(upstream)
        self.assertEqual(
            names(headers),
            {
                b"content-type",
                b"request-id",
                b"content-encoding",
                b"content-length",
                b"vary",
            },
        )


class ResponseIdTests(SynchronousTestCase):
    def test_upstreamCannotSetTheRequestId(self) -> None:
        """
        An upstream's own C{x-ccrouter-request-id} never reaches the client,
        where it would replace the id ccrouter logged.
        """
        headers = clientResponseHeaders(
            Headers({b"x-ccrouter-request-id": [b"ccr_FROM_UPSTREAM"], b"x-ok": [b"1"]})
        )
        self.assertIsNone(headers.getRawHeaders(b"x-ccrouter-request-id"))
        self.assertEqual(headers.getRawHeaders(b"x-ok"), [b"1"])


class CopyHeadersTests(SynchronousTestCase):
    def test_sameAsSetRawHeaders(self) -> None:
        """
        L{copyHeaders} leaves a L{Headers} exactly as setting each header
        with C{setRawHeaders} does: the same names (canonical, special
        cases included), values, order, and replaced values in place.
        """
        source = Headers()
        for name, value in (
            (b"content-type", b"text/event-stream"),
            (b"ETAG", b'"x"'),
            (b"te", b"trailers"),
            (b"www-authenticate", b"Bearer"),
            (b"x-xss-protection", b"0"),
            (b"X-Multi", b"a"),
            (b"x-multi", b"b"),
            (b"X-Folded", b"one\r\n two"),
            (b"x-ccrouter-request-id", b"ccr_upstream"),
        ):
            source.addRawHeader(name, value)
        expected = Headers({b"X-Ccrouter-Request-Id": [b"ccr_1"], b"Server": [b"x"]})
        copied = Headers({b"X-Ccrouter-Request-Id": [b"ccr_1"], b"Server": [b"x"]})
        for name, values in source.getAllRawHeaders():
            expected.setRawHeaders(name, list(values))
        copyHeaders(copied, source.getAllRawHeaders())
        self.assertEqual(
            list(copied.getAllRawHeaders()), list(expected.getAllRawHeaders())
        )
        # The copy has lists of its own.
        source.addRawHeader(b"x-multi", b"c")
        self.assertEqual(copied.getRawHeaders(b"x-multi"), [b"a", b"b"])

    def test_filteredHeadersCopy(self) -> None:
        """
        The headers sent upstream copy (as the Agent does, to add C{Host})
        into equal headers of their own.
        """
        headers = upstreamRequestHeaders(claudeCodeHeaders(), DEFAULT)
        copied = headers.copy()
        self.assertEqual(
            list(copied.getAllRawHeaders()), list(headers.getAllRawHeaders())
        )
        copied.addRawHeader(b"host", b"api.anthropic.com")
        copied.addRawHeader(b"x-multi", b"c")
        self.assertFalse(headers.hasHeader(b"host"))
        self.assertEqual(headers.getRawHeaders(b"x-multi"), [b"a", b"b"])
