# -*- test-case-name: tests.test_server -*-
"""
The HTTP server side: a Site whose channel refuses oversized bodies before
reading them.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ccrouter.errors import requestTooLarge


class ProxyRequest(Request):
    """
    A request whose body stays in memory, and stops growing once it outgrows
    the limit (for chunked bodies, whose size is not declared up front).
    """

    channel: ProxyChannel

    def gotLength(self, length: int | None) -> None:
        # Twisted spools bodies of 100 kB and more (a normal Claude Code turn)
        # to a temporary file: prompts would touch the disk on every request.
        # The channel caps the size, so memory is the better place.
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        assert self.content is not None
        limit = self.channel.maxBodyBytes()
        if self.content.tell() + len(data) > limit:
            self.channel.refuseOversizedBody(limit)
            return
        super().handleContentChunk(data)


class ProxyChannel(HTTPChannel):
    """
    An HTTP channel that answers 413 as soon as the headers declare a body
    over the limit: before C{100 Continue}, and without reading or storing
    the body.
    """

    site: ProxySite
    _refused = False

    def maxBodyBytes(self) -> int:
        return self.site.maxBodyBytes()

    def allHeadersReceived(self) -> None:
        limit = self.maxBodyBytes()
        if self.length is not None and self.length > limit:
            self.refuseOversizedBody(limit)
            return
        super().allHeadersReceived()

    def refuseOversizedBody(self, limit: int) -> None:
        if self._refused:
            return
        self._refused = True
        body = requestTooLarge(limit).body()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body
        )
        self.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if not self._refused:
            super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        # The chunked decoder carries on through the rest of the read that
        # crossed the limit; a request refused there must not be dispatched.
        if not self._refused:
            super().allContentReceived()


class ProxySite(Site):
    """
    @ivar maxBodyBytes: Returns the current request body limit, so a config
        reload applies to the next request.
    """

    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        maxBodyBytes: Callable[[], int],
        reactor: IReactorTime | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            resource,
            requestFactory=ProxyRequest,
            parsePOSTFormSubmission=False,
            reactor=reactor,
            **kwargs,
        )
        self.maxBodyBytes = maxBodyBytes
