# -*- test-case-name: tests.test_guard -*-
"""
The checks a request passes before anything is forwarded: the proxy holds
provider keys and relays the user's Anthropic login, so only local,
non-browser clients addressing a plain path may use it.  Pure.

A web page in the user's browser can reach 127.0.0.1 in three ways, and
each is closed here:

  - by DNS rebinding, with the attacker's host name in C{Host}: only
    loopback names (and configured ones) are served;
  - by a cross-site request, which browsers mark with C{Origin} (every
    C{POST}, every CORS request) or C{Sec-Fetch-Site}: refused unless the
    origin is configured;
  - by a "simple" request (C{text/plain}, form or multipart bodies, which
    need no CORS preflight): bodies must be JSON, which a browser only
    sends after a preflight, and the preflight (C{OPTIONS}) is refused.

Requests are never forwarded to an address taken from the request: the
target must be a plain path that stays under the upstream's base path.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import re
from collections.abc import Collection

from attrs import frozen
from twisted.web.http_headers import Headers

from ccrouter.config import TOKEN_HEADER
from ccrouter.errors import ProxyError, badRequest, forbidden
from ccrouter.routing import ROUTED_PATHS

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})

HEALTH_PATH = b"/health"
STATUS_PATH = b"/status"
STATUS_DATA_PATH = b"/status/data"
METRICS_PATH = b"/metrics"
#: ccrouter's own read-only pages, answered here and never forwarded.  They
#: need no local token, as C{/health} never did: a browser cannot send one,
#: and nothing in them is a secret, a header value or a body.
LOCAL_PATHS = frozenset({HEALTH_PATH, STATUS_PATH, STATUS_DATA_PATH, METRICS_PATH})
#: Every method ccrouter passes on.  The rest are never forwarded:
#: C{CONNECT} would make it a forward proxy, C{TRACE} reflects the request
#: (credentials included), C{OPTIONS} is the CORS preflight a browser must
#: not get past, and unknown methods have no business with an LLM API.
PROXIED_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE")
HEALTH_METHODS = (b"GET", b"HEAD")
#: The routed Messages paths take nothing but C{POST}.
ROUTED_METHODS = (b"POST",)
#: Methods whose requests carry a body, even an empty one.
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
#: What browsers send in C{Sec-Fetch-Site} for a request a page on another
#: origin made; C{none} (typed by the user) and C{same-origin} are not.
_CROSS_SITE = frozenset({b"cross-site", b"same-site"})

# RFC 3986: a path segment's characters (pchar), and a query's.
_PCHAR = rb"A-Za-z0-9\-._~!$&'()*+,;=:@%"
_PATH = re.compile(rb"(?:/[" + _PCHAR + rb"]*)+\Z")
_QUERY = re.compile(rb"[" + _PCHAR + rb"/?]*\Z")
#: A C{%} not followed by two hex digits.
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
#: Encoded C{/} and C{\}, which some servers decode into separators, and
#: encoded control characters (C{%00} to C{%1F}, C{%7F}).
_ENCODED_SEPARATOR = re.compile(rb"%(?:2[Ff]|5[Cc])")
_ENCODED_CONTROL = re.compile(rb"%(?:[01][0-9A-Fa-f]|7[Ff])")
#: C{Host}: a DNS name or IPv4 address, or a bracketed IPv6 address, and an
#: optional port (RFC 9110 section 7.2).
_HOST = re.compile(
    rb"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))"
    rb"(?::[0-9]{0,5})?\Z"
)


@frozen
class Refusal:
    """
    Why a request is answered by ccrouter itself instead of being forwarded.

    @ivar headers: Response headers the refusal needs (C{Allow} for 405).
    """

    error: ProxyError
    headers: tuple[tuple[bytes, bytes], ...] = ()


def parseHost(value: bytes) -> str | None:
    """
    The name part of a C{Host} header value, lower-cased, without the port
    or IPv6 brackets; L{None} if the value is not a host and optional port.
    """
    match = _HOST.match(value.strip())
    if match is None:
        return None
    name = match.group("ipv6") or match.group("name")
    return name.decode("ascii").lower()


@functools.lru_cache(maxsize=256)
def isLoopback(name: str) -> bool:
    # Remembered: every request asks about its Host, and parsing an address
    # costs a third of all the checks here.
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowedMethods(path: bytes) -> tuple[bytes, ...]:
    """
    The methods a request to C{path} (without the query) may use.
    """
    if path in LOCAL_PATHS:
        return HEALTH_METHODS
    if path in ROUTED_PATHS:
        return ROUTED_METHODS
    return PROXIED_METHODS


def checkTarget(target: bytes) -> ProxyError | None:
    """
    Why a request target cannot be forwarded, or L{None} if it is a plain
    path (and query) that stays under any upstream's base path once
    appended to it.  The messages never repeat the target.
    """
    if not target.startswith(b"/"):
        # Absolute-form (http://169.254.169.254/...), authority-form
        # (host:443), asterisk-form and "@evil.example/..." would all let
        # the client choose where the request goes.
        return badRequest("the request target must be a path starting with '/'")
    path, hasQuery, query = target.partition(b"?")
    if (
        not _PATH.match(path)
        or (hasQuery and not _QUERY.match(query))
        or _BAD_ESCAPE.search(target)
        or b"%00" in target
    ):
        # Also control characters, spaces, backslashes, non-ASCII bytes and
        # a fragment ('#'), which no HTTP client sends.
        return badRequest(
            "the request target must be a URL path and query of RFC 3986"
            " characters, with no fragment"
        )
    if path.startswith(b"//"):
        # A network-path reference: resolved against a base URL it names
        # another host.
        return badRequest("the request path must not start with '//'")
    if _ENCODED_SEPARATOR.search(path) or _ENCODED_CONTROL.search(path):
        return badRequest(
            "the request path must not contain encoded slashes, backslashes"
            " or control characters"
        )
    for segment in path.split(b"/"):
        if segment.lower().replace(b"%2e", b".") in (b".", b".."):
            return badRequest("the request path must not contain '.' or '..' segments")
    return None


def checkRequest(
    method: bytes,
    target: bytes,
    headers: Headers,
    allowedHosts: Collection[str] = frozenset(),
    allowedOrigins: Collection[str] = frozenset(),
    token: str | None = None,
) -> Refusal | None:
    """
    Why a request must be refused, or L{None} if it may go on: to one of
    L{LOCAL_PATHS} or to an upstream.

    In order: a method no path takes (405), the target (400), C{Host}
    (400 if missing, repeated or malformed, 403 if foreign), a browser
    (403), the local token (401), the method for this path (405), a body
    that is not JSON (415).

    @param target: The raw request target.
    @param allowedHosts: C{Host} names accepted besides loopback ones.
    @param allowedOrigins: Browser origins accepted (none by default).
    @param token: The local token every request but those to L{LOCAL_PATHS}
        must carry in L{TOKEN_HEADER}, if one is configured.
    """
    path = target.split(b"?", 1)[0]
    methods = allowedMethods(path)
    if method not in methods and method not in PROXIED_METHODS:
        return _methodNotAllowed(method, methods)
    error = (
        checkTarget(target)
        or _checkHost(headers, allowedHosts)
        or _checkBrowser(headers, allowedOrigins)
        or (None if path in LOCAL_PATHS else _checkToken(headers, token))
    )
    if error is not None:
        return Refusal(error)
    if method not in methods:
        return _methodNotAllowed(method, methods)
    error = _checkContentType(method, headers)
    return None if error is None else Refusal(error)


def _methodNotAllowed(method: bytes, methods: tuple[bytes, ...]) -> Refusal:
    allow = b", ".join(methods)
    return Refusal(
        ProxyError(
            405,
            "invalid_request_error",
            "this path only answers " + allow.decode("ascii"),
        ),
        ((b"allow", allow),),
    )


def _checkHost(headers: Headers, allowedHosts: Collection[str]) -> ProxyError | None:
    """
    A page that reaches 127.0.0.1 by DNS rebinding sends its own host name
    in C{Host}: a loopback name proves the client meant this machine.  The
    port is not checked: a page cannot make a browser send a loopback name
    with any port but by being on a loopback origin itself, which then
    shows in C{Origin}; and a port that differs from ours is how port
    forwards (C{ssh -L}) and a C{listen} override reach ccrouter.
    """
    hosts = headers.getRawHeaders(b"host", [])
    if len(hosts) != 1:
        return badRequest("a request must carry exactly one Host header")
    name = parseHost(hosts[0])
    if name is None:
        return badRequest("the Host header is not a host name and port")
    if not (isLoopback(name) or name in allowedHosts):
        return forbidden(
            "ccrouter answers only requests addressed to a loopback host name"
            " (add other names to server.allowed_hosts)",
        )
    return None


def _checkBrowser(
    headers: Headers, allowedOrigins: Collection[str]
) -> ProxyError | None:
    """
    Claude Code (Node) sends neither C{Origin} nor C{Sec-Fetch-Site}; a
    browser sends C{Origin} with every C{POST} and CORS request (C{null}
    from sandboxed frames and files) and C{Sec-Fetch-Site} with the rest.
    """
    origins = headers.getRawHeaders(b"origin")
    trusted = False
    if origins is not None:
        allowed = {origin.lower() for origin in allowedOrigins}
        if len(origins) != 1 or (
            origins[0].decode("latin-1").strip().lower() not in allowed
        ):
            return forbidden(
                "requests from web pages are refused (add trusted origins to"
                " server.allowed_origins)",
            )
        trusted = True
    sites = headers.getRawHeaders(b"sec-fetch-site", [])
    if not trusted and any(site.strip().lower() in _CROSS_SITE for site in sites):
        return forbidden("requests from other web sites are refused")
    return None


def _checkToken(headers: Headers, token: str | None) -> ProxyError | None:
    if token is None:
        return None
    presented = headers.getRawHeaders(TOKEN_HEADER.encode("ascii"), [])
    # compare_digest takes as long whatever prefix matches.
    if len(presented) == 1 and hmac.compare_digest(presented[0], token.encode("utf-8")):
        return None
    return ProxyError(
        401,
        "authentication_error",
        f"ccrouter wants its local token in the {TOKEN_HEADER}"
        " header (set ANTHROPIC_CUSTOM_HEADERS for Claude Code)",
    )


def _checkContentType(method: bytes, headers: Headers) -> ProxyError | None:
    """
    A body must be declared JSON: the content types a page may send without
    a CORS preflight (C{text/plain}, forms, multipart, or none at all) are
    how a cross-site request gets through without asking first.
    """
    if not _hasBody(method, headers):
        return None
    types = headers.getRawHeaders(b"content-type", [])
    if len(types) == 1 and isJSON(types[0]):
        return None
    return ProxyError(
        415,
        "invalid_request_error",
        "ccrouter only forwards request bodies sent as Content-Type: application/json",
    )


def _hasBody(method: bytes, headers: Headers) -> bool:
    if headers.hasHeader(b"transfer-encoding"):
        return True
    lengths = headers.getRawHeaders(b"content-length", [])
    if not lengths:
        # No framing: an HTTP/1.1 request without a length has no body, but
        # a body-carrying method is held to the JSON rule all the same.
        return method in _BODY_METHODS
    for length in headers.getRawHeaders(b"content-length", []):
        try:
            if int(length) != 0:
                return True
        except ValueError:
            return True
    return False


def isJSON(contentType: bytes) -> bool:
    """
    Whether a C{Content-Type} value names JSON: C{application/json} or a
    C{+json} type, with any parameters.
    """
    mediaType = contentType.split(b";", 1)[0].strip().lower()
    return mediaType == b"application/json" or (
        mediaType.startswith(b"application/")
        and mediaType.endswith(b"+json")
        and b" " not in mediaType
    )
