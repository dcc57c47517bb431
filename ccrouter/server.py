# -*- test-case-name: tests.test_server,tests.test_http_abuse -*-
"""
The HTTP server side: a Site whose channel bounds what one client may send
and how long it may take, and which caps the number of client connections.

Twisted's own limits are not enough here: its only timer measures silence
and stops while a request is handled, so a client dripping a byte a second
holds a connection for ever; a header line over 16 KiB drops the connection
without an answer; bodies have no size limit.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from io import BytesIO
from typing import Any, cast

from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IReactorTime,
    ITCPTransport,
)
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http import Request as HTTPRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from ccrouter.config import ServerSettings
from ccrouter.errors import (
    ProxyError,
    badRequest,
    headersTooLarge,
    requestLineTooLong,
    requestTimeout,
    requestTooLarge,
    tooManyConnections,
)
from ccrouter.guard import checkRequest
from ccrouter.writethrough import gathering

#: The longest request line (method, target and version, without CRLF).
MAX_REQUEST_LINE = 8192
#: The request line and every header line together, without their CRLFs
#: (Twisted's own measure, and its own limit).
MAX_HEADER_BYTES = 16384
#: Header fields in one request.
MAX_HEADER_FIELDS = 100
#: After refusing a request, how long to go on reading (and discarding) what
#: the client still sends: closing a socket with unread bytes makes the kernel
#: send a reset, which can reach the client before the refusal does (an
#: oversized upload then sees a connection error, and retries, instead of its
#: 413).  Reading stops after this long without a byte...
LINGER_IDLE = 2.0
#: ...or this long after the refusal, whichever comes first.
LINGER_TOTAL = 10.0

_REASONS = {
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class Phase(enum.Enum):
    """
    Where a client connection is, which decides the timer that runs on it.
    """

    #: No request in progress: the keep-alive timer runs.
    IDLE = "idle"
    #: A request has begun and its headers are arriving: the header deadline.
    HEADERS = "headers"
    #: The headers are in and the body is arriving: body idle and total timers.
    BODY = "body"
    #: The request is with the resource: no timer here (the proxy has its own).
    BUSY = "busy"
    #: Being closed; whatever the client still sends is ignored.
    CLOSING = "closing"


class ProxyRequest(Request):
    """
    A request whose body stays in memory, and stops growing once it outgrows
    the limit (for chunked bodies, whose size is not declared up front).
    """

    channel: ProxyChannel
    #: Whether the channel already ran the request guard on the headers,
    #: which the resource tree then need not repeat.
    guarded = False

    def gotLength(self, length: int | None) -> None:
        # Twisted spools bodies of 100 kB and more (a normal Claude Code turn)
        # to a temporary file: prompts would touch the disk on every request.
        # The channel caps the size, so memory is the better place.
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        assert self.content is not None
        limit = self.channel.site.settings().maxBodyBytes
        if self.content.tell() + len(data) > limit:
            self.channel.refuse(requestTooLarge(limit))
            return
        super().handleContentChunk(data)

    def _handleStar(self) -> None:
        # Twisted answers a "*" target itself (an empty 200 to OPTIONS);
        # the resource tree refuses it like any target that is not a path.
        assert self.site is not None
        self.render(self.site.getResourceFor(self))


class ProxyChannel(HTTPChannel):
    """
    An HTTP channel that enforces ccrouter's limits on one client connection
    and answers each breach with an Anthropic-shaped error, then closes:

      - 413 as soon as the headers declare a body over the limit (before
        C{100 Continue}, without reading it), or a chunked body outgrows it;
      - 414 for a request line over L{MAX_REQUEST_LINE} bytes;
      - 431 for headers over L{MAX_HEADER_BYTES} bytes in all (one long line
        included) or over L{MAX_HEADER_FIELDS} fields;
      - 400, with the same shape, wherever Twisted answers its bare 400, and
        for bare CR or LF line endings (which Twisted would wait on);
      - 408 when the headers are not complete within C{limits.headers} of the
        request's first byte, or the body stalls for C{limits.bodyIdle} or
        takes over C{limits.bodyTotal}.

    An idle connection is closed after C{limits.keepAlive}.  Limits are read
    from the site's settings when each phase starts, so a reload applies to
    the next request.

    @ivar phase: Where the connection is (see L{Phase}).
    @ivar phaseStarted: When it entered that phase, on the site's clock.
    """

    site: ProxySite
    phase = Phase.IDLE
    phaseStarted = 0.0
    _registered = False
    _timer: IDelayedCall | None = None
    _bodyIdle: IDelayedCall | None = None
    _abortCall: IDelayedCall | None = None
    _lingerCall: IDelayedCall | None = None
    _lingerUntil = 0.0
    _sawRequestLine = False
    _headerBytes = 0
    _headerFields = 0

    def connectionMade(self) -> None:
        # Twisted has set TCP_NODELAY on TCP transports since 24.10, so SSE
        # events do not wait for Nagle; tests.test_http_abuse checks it.
        super().connectionMade()
        self.site.track(self)
        self._registered = True
        self._enter(Phase.IDLE)
        if not self.site.makeRoom(self):
            self.refuse(tooManyConnections(self.site.settings().limits.maxConnections))

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.phase = Phase.CLOSING
        self._cancelTimers()
        for call in (self._abortCall, self._lingerCall):
            if call is not None and call.active():
                call.cancel()
        self._abortCall = self._lingerCall = None
        self.site.stopLingering(self)
        if self._registered:
            self.site.forget(self)
            self._registered = False
        super().connectionLost(reason)

    @property
    def busy(self) -> bool:
        """
        Whether a request is in progress: begun, and not yet answered.
        """
        return self.phase in (Phase.HEADERS, Phase.BODY, Phase.BUSY)

    def _enter(self, phase: Phase) -> None:
        self._cancelTimers()
        self.phase = phase
        clock = self.site.reactor
        self.phaseStarted = clock.seconds()
        limits = self.site.settings().limits
        if phase is Phase.IDLE:
            self._timer = clock.callLater(limits.keepAlive, self._close)
        elif phase is Phase.HEADERS:
            self._sawRequestLine = False
            self._headerBytes = 0
            self._headerFields = 0
            # The answer is made only if it is needed: most requests never
            # time out, and making it cost a share of every request.
            self._timer = clock.callLater(
                limits.headers, self._timedOut, "headers", limits.headers
            )
        elif phase is Phase.BODY:
            self._timer = clock.callLater(
                limits.bodyTotal, self._timedOut, "body", limits.bodyTotal
            )
            self._bodyIdle = clock.callLater(limits.bodyIdle, self._bodyStalled)

    def _cancelTimers(self) -> None:
        for call in (self._timer, self._bodyIdle):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._bodyIdle = None

    def _timedOut(self, part: str, seconds: float) -> None:
        self.refuse(
            requestTimeout(f"the request {part} took longer than {seconds:g} s")
        )

    def _bodyStalled(self) -> None:
        seconds = self.site.settings().limits.bodyIdle
        self.refuse(requestTimeout(f"the request body stalled for {seconds:g} s"))

    def refuse(
        self, error: ProxyError, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """
        Answer C{error} on the connection and close it; nothing the client
        sends afterwards is parsed, but it is read and discarded for a while
        (see L{LINGER_IDLE}) so that the answer is not lost to a reset.
        Only for requests the resource has not seen: the response goes
        straight to the transport.
        """
        if self.phase is Phase.CLOSING:
            return
        body = error.body()
        extra = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"%s"
            b"Connection: close\r\n\r\n"
            % (error.status, _REASONS.get(error.status, b"Error"), len(body), extra)
            + body
        )
        self._close(linger=True)

    def _close(self, linger: bool = False) -> None:
        if self.phase is Phase.CLOSING:
            return
        self._cancelTimers()
        self.phase = Phase.CLOSING
        if not (linger and self._startLingering()):
            self.loseConnection()
        self._armAbort()

    def _armAbort(self) -> None:
        # A client that does not read would keep the answer, and with it the
        # connection, in the send buffer for ever.
        self._abortCall = self.site.reactor.callLater(self.abortTimeout, self._abort)

    def _startLingering(self) -> bool:
        """
        Close the sending side once the answer is out, and keep reading.

        @return: Whether the connection lingers: not on a transport that
            cannot half-close (TLS), nor while too many others do already.
        """
        if not hasattr(self.transport, "loseWriteConnection"):
            return False
        if not self.site.startLingering(self):
            return False
        # The channel stops being the transport's producer: a full send
        # buffer must not pause the reading that keeps the reset away.
        self._networkProducer.resumeProducing()
        cast(IConsumer, self.transport).unregisterProducer()
        cast(ITCPTransport, self.transport).loseWriteConnection()
        clock = self.site.reactor
        self._lingerUntil = clock.seconds() + LINGER_TOTAL
        self._lingerCall = clock.callLater(LINGER_IDLE, self._stopLingering)
        return True

    def _keepLingering(self) -> None:
        call = self._lingerCall
        if call is not None and call.active():
            left = self._lingerUntil - self.site.reactor.seconds()
            call.reset(max(0.0, min(LINGER_IDLE, left)))

    def _stopLingering(self) -> None:
        self._lingerCall = None
        self.site.stopLingering(self)
        # Not self.loseConnection: the channel is no producer to unregister.
        assert self.transport is not None
        self.transport.loseConnection()

    def _abort(self) -> None:
        self._abortCall = None
        # TCP, UNIX and TLS transports can all abort (as Twisted assumes).
        cast(ITCPTransport, self.transport).abortConnection()

    def stopKeepAlive(self) -> None:
        """
        Close the connection now if it is idle, or else once the request in
        progress has been answered.
        """
        if self.phase is Phase.IDLE:
            self._close()
        elif self.phase in (Phase.BODY, Phase.BUSY):
            # The request's persistence was decided with its headers; a
            # request still in its headers asks the site in checkPersistence
            # (setting persistent now would make Twisted drop its request
            # line unanswered).
            self.persistent = False
            for request in self.requests:
                if not request.startedWriting:
                    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        if not self.site.keepAlive:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def dataReceived(self, data: bytes) -> None:
        if self.phase is Phase.CLOSING:
            self._keepLingering()
            return
        if self.phase is Phase.IDLE and data:
            self._enter(Phase.HEADERS)
        elif self.phase is Phase.BODY and self._bodyIdle is not None:
            self._bodyIdle.reset(self.site.settings().limits.bodyIdle)
        # A request finished during this call replays the bytes after it
        # through here; the outer call checks what is left once it is done.
        nested = self._busyReceiving
        # What handling these bytes writes (a request to its upstream, an
        # answer) goes out in one send per connection once it is done.
        with gathering:
            super().dataReceived(data)
        if not nested and self.phase is Phase.HEADERS and self.line_mode:
            self._checkPartialLine(self._buffer)

    def _checkPartialLine(self, pending: bytes) -> None:
        """
        Check the start of a line still waiting for its CRLF: every CRLF
        has been split off, so a CR or LF in it stands alone.
        """
        if b"\n" in pending or b"\r" in pending[:-1]:
            self.refuse(badRequest("request lines must end in CRLF"))
            return
        size = len(pending) - pending.endswith(b"\r")
        if not self._sawRequestLine:
            if size > MAX_REQUEST_LINE:
                self.refuse(requestLineTooLong(MAX_REQUEST_LINE))
        elif self._headerBytes + size > MAX_HEADER_BYTES:
            self.refuse(_headersTooBig())

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver would drop the connection without a word.
        if self._sawRequestLine:
            self.refuse(_headersTooBig())
        else:
            self.refuse(requestLineTooLong(MAX_REQUEST_LINE))

    def lineReceived(self, line: bytes) -> None:
        if self.phase is Phase.CLOSING:
            return
        if self.phase is Phase.IDLE:
            self._enter(Phase.HEADERS)
        # Twisted skips one empty line before a request line.
        if not self._sawRequestLine and line:
            self._sawRequestLine = True
            if len(line) > MAX_REQUEST_LINE:
                self.refuse(requestLineTooLong(MAX_REQUEST_LINE))
                return
        self._headerBytes += len(line)
        if self._headerBytes > MAX_HEADER_BYTES:
            self.refuse(_headersTooBig())
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        self._headerFields += 1
        if self._headerFields > MAX_HEADER_FIELDS:
            self.refuse(
                headersTooLarge(
                    f"request has more than {MAX_HEADER_FIELDS} header fields"
                )
            )
            return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        settings = self.site.settings()
        limit = settings.maxBodyBytes
        if self.length is not None and self.length > limit:
            self.refuse(requestTooLarge(limit))
            return
        if self.length != 0:
            # A request the guard refuses must not get to make ccrouter hold
            # its body first: every check needs the headers only.
            refusal = checkRequest(
                self._command,
                self._path,
                self.requests[-1].requestHeaders,
                settings.allowedHosts,
                settings.allowedOrigins,
                settings.token,
            )
            if refusal is not None:
                self.refuse(
                    refusal.error, ((b"x-should-retry", b"false"), *refusal.headers)
                )
                return
            self.requests[-1].guarded = True
            self._enter(Phase.BODY)
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self.phase is not Phase.CLOSING:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        # The chunked decoder carries on through the rest of the read that
        # crossed the limit; a request refused there must not be dispatched.
        if self.phase is Phase.CLOSING:
            return
        self._enter(Phase.BUSY)
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        if not self.persistent:
            self._cancelTimers()
            self.phase = Phase.CLOSING
            super().requestDone(request)
            self._armAbort()
            return
        # Before Twisted replays the bytes read after this request, which may
        # start (and even finish) the next one.
        self._enter(Phase.IDLE)
        super().requestDone(request)
        if self.phase is Phase.IDLE and self._buffer:
            # The rest of the current read, still to be parsed.
            self._enter(Phase.HEADERS)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's bare 400, for malformed framing and header syntax, in
        # the shape Claude Code reads.
        self.refuse(badRequest("malformed HTTP request"))


def _headersTooBig() -> ProxyError:
    return headersTooLarge(f"request headers are larger than {MAX_HEADER_BYTES} bytes")


def evictionCandidate(channels: Iterable[ProxyChannel]) -> ProxyChannel | None:
    """
    The connection to close to make room for a new one: the one idle the
    longest, or else the one that has spent longest on its headers (the
    slowloris signature; no request of its has reached the resource).  A
    connection whose request has its headers in is never chosen.
    """
    idle = [channel for channel in channels if channel.phase is Phase.IDLE]
    if not idle:
        idle = [channel for channel in channels if channel.phase is Phase.HEADERS]
    return min(idle, key=lambda channel: channel.phaseStarted, default=None)


class ProxySite(Site):
    """
    The site ccrouter listens with.  Twisted's idle timeout is off: the
    channel runs its own timers.

    @ivar settings: Returns the current server settings, so a config reload
        applies to the next connection, request or phase.
    @ivar keepAlive: Whether responses may leave connections open; cleared
        for good by L{closeIdleConnections}.
    """

    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        settings: Callable[[], ServerSettings],
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
        self.timeOut = None
        self.settings = settings
        self.keepAlive = True
        # Insertion-ordered: the oldest connection first.
        self._channels: dict[ProxyChannel, None] = {}
        self._lingering: set[ProxyChannel] = set()

    @property
    def openConnections(self) -> int:
        """
        Client connections open now, closing ones included until they are gone.
        """
        return len(self._channels)

    @property
    def busyConnections(self) -> int:
        """
        Client connections with a request in progress (begun, not answered).
        """
        return sum(1 for channel in self._channels if channel.busy)

    def track(self, channel: ProxyChannel) -> None:
        self._channels[channel] = None

    def forget(self, channel: ProxyChannel) -> None:
        self._channels.pop(channel, None)

    def startLingering(self, channel: ProxyChannel) -> bool:
        """
        Let C{channel} linger after its refusal, unless as many connections
        as may be open already do (a flood of refused uploads must not hold
        descriptors for the whole linger time).
        """
        if len(self._lingering) >= self.settings().limits.maxConnections:
            return False
        self._lingering.add(channel)
        return True

    def stopLingering(self, channel: ProxyChannel) -> None:
        self._lingering.discard(channel)

    def makeRoom(self, newcomer: ProxyChannel) -> bool:
        """
        Keep at most C{limits.maxConnections} connections that are not
        already closing, by closing one if C{newcomer} makes one too many.

        @return: Whether C{newcomer} may stay: C{False} if every other
            connection has a request past its headers.
        """
        others = [
            channel
            for channel in self._channels
            if channel is not newcomer and channel.phase is not Phase.CLOSING
        ]
        if len(others) < self.settings().limits.maxConnections:
            return True
        victim = evictionCandidate(others)
        if victim is None:
            return False
        if victim.phase is Phase.IDLE:
            victim.stopKeepAlive()
        else:
            victim.refuse(
                requestTimeout("ccrouter closed this connection to make room")
            )
        return True

    def log(self, request: HTTPRequest) -> None:
        # The root clears this for requests it let through (see there).
        if getattr(request, "accessLogged", True):
            super().log(request)

    def closeIdleConnections(self) -> None:
        """
        For a graceful stop: close every connection with no request in
        progress now, and make every other one close once its current
        request has been answered (no more keep-alive, for good).  This is
        also how to stop accepting keep-alive.
        """
        self.keepAlive = False
        for channel in list(self._channels):
            channel.stopKeepAlive()
