# -*- test-case-name: tests.test_upstreamclient -*-
"""
The treq client each upstream request goes out through.

treq wraps its agent in a cookie agent and a gzip decoder on every request,
parses the URL with hyperlink, and, for a new L{HTTPClient}, makes a cookie
jar with its own lock and policy.  Done for every request, that cost more
than anything ccrouter itself does to one.  So one client is kept per
agent, with a jar that never holds a cookie (so nothing one upstream sets
reaches another request, which a client per request used to ensure), and
the URLs a client uses are parsed once.
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookiejar import Cookie
from typing import Any, cast

from attrs import frozen
from hyperlink import EncodedURL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from ccrouter.config import Upstream
from ccrouter.headers import copyHeaders

#: How many clients, and parsed URLs, are kept before the cache starts over
#: (a client names its own paths and queries; agents are few).
CACHE_LIMIT = 512


class CookielessJar(IndexableCookieJar):
    """
    A cookie jar that keeps nothing and sends nothing: ccrouter forwards
    the client's own C{Cookie} header where a route allows one, and must
    never add one an upstream set earlier.
    """

    def add_cookie_header(self, request: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Cookie) -> None:
        pass

    def set_cookie_if_ok(self, cookie: Cookie, request: Any) -> None:
        pass


@implementer(IResponse)
class UndecodedResponse:
    """
    An upstream response as treq's wrappers are allowed to see it: without
    C{Content-Encoding}, so treq never decodes it.  The body reaches the
    client byte for byte, with the upstream's real headers, which stay in
    C{upstreamHeaders}.
    """

    def __init__(self, original: IResponse) -> None:
        self._original = original
        self.upstreamHeaders = original.headers
        self.headers = Headers()
        copyHeaders(self.headers, original.headers.getAllRawHeaders())
        self.headers.removeHeader(b"content-encoding")
        self.version = original.version
        self.code = original.code
        self.phrase = original.phrase
        self.length = original.length
        self.request = original.request
        self.previousResponse = original.previousResponse

    def deliverBody(self, protocol: IProtocol) -> None:
        self._original.deliverBody(protocol)

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response


@implementer(IAgent)
@frozen
class VerbatimAgent:
    """
    Sits under treq's own agent wrappers, which always ask for gzip and
    decode it.  An upstream that honours that compresses the SSE stream, and
    gzip only decodes per deflate block, holding events back; so the request
    asks for C{identity} only, and whatever encoding comes back anyway is
    passed through untouched.
    """

    _agent: IAgent

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        pinned = Headers() if headers is None else headers.copy()
        pinned.setRawHeaders(b"accept-encoding", [b"identity"])
        return self._agent.request(method, uri, pinned, bodyProducer).addCallback(
            UndecodedResponse
        )


class PreparedURL(EncodedURL):
    """
    A URL that works out its URI form, and that form its text, once: treq
    sends C{url.to_uri().to_text()}, which costs hyperlink more than
    everything else ccrouter does to a request's head.  A URL is immutable,
    so the remembered forms stay right.
    """

    def to_uri(self) -> PreparedURL:
        uri = self.__dict__.get("_uri")
        if uri is None:
            uri = self.__dict__["_uri"] = super().to_uri()
        return cast(PreparedURL, uri)

    def to_text(self, with_password: bool = False) -> str:
        if with_password:
            return super().to_text(with_password)
        text = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = super().to_text()
        return cast(str, text)


class UpstreamClients:
    """
    The treq client for an upstream, and its URLs parsed, both remembered.

    @param agentFor: The agent that reaches an upstream (the shared pool).
    """

    def __init__(self, agentFor: Callable[[Upstream], IAgent]) -> None:
        self._agentFor = agentFor
        self._clients: dict[IAgent, HTTPClient] = {}
        self._urls: dict[bytes, PreparedURL] = {}
        self.noCookies = CookielessJar()

    def clientFor(self, upstream: Upstream) -> HTTPClient:
        agent = self._agentFor(upstream)
        client = self._clients.get(agent)
        if client is None:
            if len(self._clients) >= CACHE_LIMIT:
                self._clients.clear()
            client = self._clients[agent] = HTTPClient(
                VerbatimAgent(agent), cookiejar=self.noCookies
            )
        return client

    def parsedURL(self, url: bytes) -> PreparedURL:
        """
        C{url} parsed as treq would parse it.

        @raise UnicodeDecodeError: For a URL that is not ASCII, as treq.
        """
        parsed = self._urls.get(url)
        if parsed is None:
            # from_text makes an instance of the class it is called on.
            parsed = cast(PreparedURL, PreparedURL.from_text(url.decode("ascii")))
            if len(self._urls) >= CACHE_LIMIT:
                self._urls.clear()
            self._urls[url] = parsed
        return parsed
