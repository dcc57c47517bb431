"""
The treq client each upstream request goes out through: one per agent, with
a jar that keeps no cookie, and URLs parsed once into the form treq sends.
(That no cookie is carried between requests through the proxy is
C{tests.test_proxy.ProxyTests.test_noCookieCarriedBetweenRequests}.)
"""

from __future__ import annotations

from http.cookiejar import Cookie
from typing import Any

from hyperlink import EncodedURL
from treq.testing import RequestTraversalAgent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import Request

from ccrouter.config import Upstream
from ccrouter.upstreamclient import (
    CACHE_LIMIT,
    CookielessJar,
    PreparedURL,
    UpstreamClients,
)

URLS = [
    "http://127.0.0.1:8080/v1/messages?beta=true",
    "https://api.z.ai/api/anthropic/v1/messages",
    "https://h.example/a%20b/c?x=%E2%82%AC&y",
    "https://h.example/a b/é?q=ü v",
    "http://127.0.0.1:1/p?",
    "http://127.0.0.1:1/p?a=1&a=2&",
    "https://user:pw@h.example:8443/x#frag",
    "https://h.example/%2F..%2Fescape?%zz",
]


class PreparedURLTests(SynchronousTestCase):
    def test_sameTextAsHyperlink(self) -> None:
        """
        What treq sends for a prepared URL (C{to_uri().to_text()}) is what
        it sends for the same URL parsed by hyperlink, every time.
        """
        for text in URLS:
            expected = EncodedURL.from_text(text).to_uri().to_text()
            prepared = PreparedURL.from_text(text)
            self.assertEqual(prepared.to_uri().to_text(), expected, text)
            self.assertEqual(prepared.to_uri().to_text(), expected, text)
            self.assertEqual(
                prepared.to_text(with_password=True),
                EncodedURL.from_text(text).to_text(with_password=True),
            )

    def test_remembered(self) -> None:
        """
        The URI form is worked out once, and parsing is done once per URL.
        """
        clients = UpstreamClients(lambda upstream: _agent())
        first = clients.parsedURL(URLS[0].encode())
        self.assertIs(clients.parsedURL(URLS[0].encode()), first)
        self.assertIs(first.to_uri(), first.to_uri())
        self.assertIsNot(clients.parsedURL(URLS[1].encode()), first)

    def test_notASCII(self) -> None:
        """
        A URL that is not ASCII is refused as treq refuses it.
        """
        clients = UpstreamClients(lambda upstream: _agent())
        self.assertRaises(UnicodeDecodeError, clients.parsedURL, b"http://h/\xff")

    def test_bounded(self) -> None:
        """
        However many URLs a client names, the cache keeps at most
        C{CACHE_LIMIT}.
        """
        clients = UpstreamClients(lambda upstream: _agent())
        for n in range(CACHE_LIMIT * 2 + 3):
            clients.parsedURL(b"http://127.0.0.1:1/p?n=%d" % n)
        self.assertLessEqual(len(clients._urls), CACHE_LIMIT)


class ClientTests(SynchronousTestCase):
    def test_onePerAgent(self) -> None:
        """
        The same agent gets the same client; another agent its own.
        """
        agents = [_agent(), _agent()]
        chosen = [agents[0]]
        clients = UpstreamClients(lambda upstream: chosen[0])
        upstream: Any = object()
        first = clients.clientFor(upstream)
        self.assertIs(clients.clientFor(upstream), first)
        chosen[0] = agents[1]
        self.assertIsNot(clients.clientFor(upstream), first)

    def test_boundedClients(self) -> None:
        """
        An C{agentFor} that makes a new agent each time cannot grow the
        cache without limit.
        """
        clients = UpstreamClients(lambda upstream: _agent())
        upstream: Any = object()
        for _ in range(CACHE_LIMIT + 5):
            clients.clientFor(upstream)
        self.assertLessEqual(len(clients._clients), CACHE_LIMIT)

    def test_jarKeepsNothing(self) -> None:
        """
        The jar refuses every way a cookie could be stored, and adds none.
        """
        jar = CookielessJar()
        cookie = Cookie(
            0, "a", "1", None, False, "h.example", True, False, "/", True,
            False, None, False, None, None, {},
        )  # fmt: skip
        jar.set_cookie(cookie)
        jar.set_cookie_if_ok(cookie, object())
        self.assertEqual(list(jar), [])

    def test_setCookieNotSentBack(self) -> None:
        """
        Through a cached client, a cookie one response sets is not sent
        with the next request.
        """
        resource = _CookieSetter()
        agent = RequestTraversalAgent(resource)
        clients = UpstreamClients(lambda upstream: agent)
        upstream: Upstream = object()  # type: ignore[assignment]
        for _ in range(2):
            client = clients.clientFor(upstream)
            done = client.request(
                "GET",
                clients.parsedURL(b"http://127.0.0.1:1/x"),
                cookies=clients.noCookies,
                unbuffered=True,
            )
            self.assertEqual(self.successResultOf(done).code, 200)
        self.assertEqual(resource.cookies, [None, None])


class _CookieSetter(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.cookies: list[object] = []

    def render_GET(self, request: Request) -> bytes:
        self.cookies.append(request.requestHeaders.getRawHeaders(b"cookie"))
        request.addCookie(b"session", b"upstream-secret", path=b"/")
        return b"ok"


def _agent() -> IAgent:
    return RequestTraversalAgent(Resource())
