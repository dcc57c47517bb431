# -*- test-case-name: tests.test_guard -*-
"""
The checks a request passes before anything is forwarded: the proxy holds
provider keys and relays the user's Anthropic login, so only local,
non-browser clients addressing a plain path may use it.  Pure.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from ccrouter.errors import ProxyError, badRequest, forbidden

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def hostName(host: bytes) -> str:
    """
    The name part of a C{Host} header value, lower-cased, without the port
    or IPv6 brackets.
    """
    text = host.decode("ascii", "replace").strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def isLoopback(name: str) -> bool:
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def checkRequest(
    target: bytes,
    host: bytes | None,
    origin: bytes | None,
    allowedHosts: Collection[str],
    allowedOrigins: Collection[str],
) -> ProxyError | None:
    """
    Why a request must be refused, or L{None} if it may go on.

    @param target: The raw request target.
    @param host: The C{Host} header, if any.
    @param origin: The C{Origin} header, if any: browsers send it, Claude
        Code does not.
    """
    if not target.startswith(b"/") or not target.isascii():
        return badRequest("the request target must be a path starting with '/'")
    path = target.split(b"?", 1)[0]
    for segment in path.split(b"/"):
        if segment.lower().replace(b"%2e", b".") in (b".", b".."):
            return badRequest("the request path must not contain '.' or '..' segments")
    name = hostName(host) if host else ""
    if not name or not (isLoopback(name) or name in allowedHosts):
        return forbidden(
            "ccrouter answers only requests addressed to a loopback host name"
            " (add other names to server.allowed_hosts)",
        )
    if origin is not None and origin.decode("ascii", "replace") not in allowedOrigins:
        return forbidden(
            "requests from web pages are refused (add trusted origins to"
            " server.allowed_origins)",
        )
    return None
