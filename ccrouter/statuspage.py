# -*- test-case-name: tests.test_status_page -*-
"""
C{GET /status}: one self-contained HTML page that shows, in a browser,
what C{/health} and C{/status/data} report, and refreshes itself from them.

The page loads nothing from anywhere else, so it works offline and tells
no third party that ccrouter runs.  Its Content-Security-Policy allows
exactly the page's own inline script and style, by hash, and connections
to its own origin: even if a hostile model name got into the page as
markup, the browser would not run it.
"""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from importlib.resources import files

from twisted.web.server import Request

from ccrouter.health import ReadOnlyResource


class _InlineBlocks(HTMLParser):
    """
    Collects the text of every C{<script>} and C{<style>} element.
    """

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.blocks:
            self._open = tag
            self.blocks[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.blocks[self._open][-1] += data


def inlineBlocks(page: str) -> dict[str, list[str]]:
    """
    The text of each inline C{script} and C{style} element of C{page}, in
    document order, exactly as a browser hashes it.

    @return: C{{"script": [...], "style": [...]}}
    """
    parser = _InlineBlocks()
    parser.feed(page)
    parser.close()
    return parser.blocks


def _sourceHash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def contentSecurityPolicy(page: str) -> str:
    """
    The Content-Security-Policy that lets C{page} run its one inline
    script and apply its one inline style, and nothing else.

    @raise ValueError: if C{page} has not exactly one of each.
    """
    blocks = inlineBlocks(page)
    if len(blocks["script"]) != 1 or len(blocks["style"]) != 1:
        raise ValueError(
            "the status page must have exactly one inline script and one style"
        )
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + _sourceHash(blocks["script"][0]),
            "style-src " + _sourceHash(blocks["style"][0]),
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


#: The page, read once from the package.
PAGE: bytes = (files("ccrouter") / "status.html").read_bytes()

#: The policy C{PAGE} is served with.
CONTENT_SECURITY_POLICY: str = contentSecurityPolicy(PAGE.decode("utf-8"))

_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
]


class StatusPageResource(ReadOnlyResource):
    """
    Serves L{PAGE} to C{GET} and C{HEAD}.  The root resource has already
    checked the request and chosen this resource by exact path.
    """

    path = "/status"

    def render_GET(self, request: Request) -> bytes:
        for name, value in _HEADERS:
            request.setHeader(name, value)
        return PAGE
