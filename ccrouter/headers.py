# -*- test-case-name: tests.test_headers -*-
"""
Which headers cross the proxy, in each direction, and which credential the
upstream receives.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from twisted.web.http_headers import Headers

from ccrouter.config import Upstream

#: Meaningful only for one connection (RFC 9110 section 7.6.1), plus the
#: non-standard Proxy-Connection some clients still send.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: The headers a client's own credentials travel in: Claude Code's Anthropic
#: login, and any cookie (ccrouter uses none, and a provider must not see
#: what the client keeps for another site).
CLIENT_CREDENTIALS = frozenset({b"authorization", b"x-api-key", b"cookie", b"cookie2"})

#: Never relayed to the client: ccrouter sends no CORS headers (a permissive
#: C{Access-Control-Allow-Origin: *} from an OpenAI-compatible provider
#: would let any web page read the answers it gets through ccrouter), and
#: keeps no cookies, so an upstream's would only be stored for 127.0.0.1
#: and sent back by any browser to every local port.  The request id is
#: ccrouter's own (an upstream's could not be found in ccrouter's log).
_UPSTREAM_ONLY = frozenset({b"set-cookie", b"set-cookie2", b"x-ccrouter-request-id"})
_CORS_PREFIX = b"access-control-"

#: Recomputed for the upstream hop rather than copied: the Agent derives Host
#: from the URL (so SNI and Host agree) and writes its own framing, Twisted has
#: already answered any Expect, and Accept-Encoding is pinned to identity so
#: streams arrive uncompressed and can be relayed event by event.
_RECOMPUTED_UPSTREAM = frozenset(
    # ccrouter's own local token is for ccrouter, never for an upstream.
    {b"host", b"content-length", b"expect", b"accept-encoding", b"x-ccrouter-token"}
)


def connectionTokens(headers: Headers) -> frozenset[bytes]:
    """
    The lower-cased header names listed in C{Connection}, which are
    hop-by-hop too.
    """
    tokens = set()
    for value in headers.getRawHeaders(b"connection", ()):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return frozenset(tokens)


def copyHeaders(
    target: Headers, source: Iterable[tuple[bytes, Sequence[bytes]]]
) -> None:
    """
    Set each header of C{source} (names and values as another L{Headers}
    holds them) in C{target}, as C{target.setRawHeaders(name, values)} would.

    Those names are canonical already and those values already sanitised,
    and C{setRawHeaders} would encode and check each name and value again:
    done for every header of every request and response, that cost more
    than the rest of filtering them.  So they go into the mapping
    L{Headers} keeps, which is what C{setRawHeaders} ends in.
    (C{tests.test_headers} checks the two agree.)
    """
    raw: dict[bytes, list[bytes]] = target._rawHeaders
    for name, values in source:
        raw[name] = list(values)


class _Headers(Headers):
    """
    L{Headers} whose C{copy} is L{copyHeaders}: the Agent copies the
    headers of every request it is given (to add C{Host}).
    """

    __slots__ = ()

    def copy(self) -> Headers:
        copied = _Headers()
        copyHeaders(copied, self.getAllRawHeaders())
        return copied


def _copyExcept(
    source: Headers, drop: Iterable[bytes], dropPrefix: bytes | None = None
) -> Headers:
    dropped = frozenset(drop)
    copied = _Headers()
    copyHeaders(
        copied,
        (
            (name, values)
            for name, values in source.getAllRawHeaders()
            if (lowered := name.lower()) not in dropped
            and (dropPrefix is None or not lowered.startswith(dropPrefix))
        ),
    )
    return copied


def upstreamRequestHeaders(client: Headers, upstream: Upstream) -> Headers:
    """
    The headers to send upstream for a client request.

    The client's credentials reach only an upstream that
    L{forwards them<Upstream.forwardsClientCredentials>}; an upstream with
    configured C{auth} receives that credential and nothing the client sent
    under the same name.
    """
    drop = set(HOP_BY_HOP | _RECOMPUTED_UPSTREAM | connectionTokens(client))
    if not upstream.forwardsClientCredentials:
        drop |= CLIENT_CREDENTIALS
    if upstream.auth is not None:
        drop.add(upstream.auth.header.lower().encode("ascii"))
    headers = _copyExcept(client, drop)
    if upstream.auth is not None:
        headers.setRawHeaders(
            upstream.auth.header.encode("ascii"), [upstream.auth.value.encode("utf-8")]
        )
    return headers


def clientResponseHeaders(upstream: Headers) -> Headers:
    """
    The upstream response headers to relay to the client: all but the
    hop-by-hop ones, CORS headers and cookies.  The body is relayed
    verbatim, so C{Content-Length} and C{Content-Encoding} stay true.
    """
    return _copyExcept(
        upstream,
        HOP_BY_HOP | _UPSTREAM_ONLY | connectionTokens(upstream),
        _CORS_PREFIX,
    )
