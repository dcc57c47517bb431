# -*- test-case-name: tests.test_proxy -*-
"""
The proxy resource: check the request, decide where it goes, forward it
with treq and relay the response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from attrs import frozen
from treq.client import HTTPClient
from treq.response import _Response
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ccrouter.config import Config, Upstream
from ccrouter.errors import ProxyError
from ccrouter.failures import describeFailure, describeHeadersTimeout
from ccrouter.guard import checkRequest
from ccrouter.headers import clientResponseHeaders, upstreamRequestHeaders
from ccrouter.relay import ResponseRelay
from ccrouter.routing import Attempt, Plan, planRequest

#: Returns the agent that reaches an upstream (one shared connection pool).
AgentFor = Callable[[Upstream], IAgent]

#: Response headers Twisted sets by itself that must not mask the upstream's.
_SERVER_DEFAULTS = (b"server", b"date", b"content-type")


def writeError(request: Request, error: ProxyError) -> None:
    """
    Answer with an error ccrouter made itself.
    """
    body = error.body()
    request.setResponseCode(error.status)
    request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    request.write(body)
    request.finish()


class ProxyResource(Resource):
    """
    Forwards every request it is given to the upstream the routing plan
    names.  A leaf: the raw request target is used, never the path segments
    Twisted decoded from it.
    """

    isLeaf = True

    def __init__(
        self,
        currentConfig: Callable[[], Config],
        agentFor: AgentFor,
        clock: IReactorTime,
    ) -> None:
        super().__init__()
        self._currentConfig = currentConfig
        self._agentFor = agentFor
        self._clock = clock

    def render(self, request: Request) -> int | bytes:
        config = self._currentConfig()
        headers = request.requestHeaders
        # Two Host headers are as suspect as a foreign one.
        hosts = headers.getRawHeaders(b"host", [])
        origins = headers.getRawHeaders(b"origin", [])
        refusal = checkRequest(
            request.uri,
            hosts[0] if len(hosts) == 1 else None,
            b", ".join(origins) if origins else None,
            config.server.allowedHosts,
            config.server.allowedOrigins,
        )
        if refusal is not None:
            writeError(request, refusal)
            return NOT_DONE_YET
        target = request.uri
        assert request.content is not None
        request.content.seek(0)
        body = request.content.read()
        path = target.split(b"?", 1)[0]
        plan = planRequest(config, request.method, path, body)
        hasBody = headers.hasHeader(b"content-length") or headers.hasHeader(
            b"transfer-encoding"
        )
        _Exchange(
            request=request,
            plan=plan,
            attempt=plan.attempts[0],
            agent=self._agentFor(plan.attempts[0].upstream),
            clock=self._clock,
            sendBody=hasBody,
        ).start()
        return NOT_DONE_YET


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body that is already in memory, written in one go.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IResponse)
class _UndecodedResponse:
    """
    An upstream response as treq's wrappers are allowed to see it: without
    C{Content-Encoding}, so treq never decodes it.  The body reaches the
    client byte for byte, with the upstream's real headers, which stay in
    C{upstreamHeaders}.
    """

    def __init__(self, original: IResponse) -> None:
        self._original = original
        self.upstreamHeaders = original.headers
        self.headers = original.headers.copy()
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
class _VerbatimAgent:
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
            _UndecodedResponse
        )


class _Discard(Protocol):
    """
    Takes the body of a response nobody wants and closes its connection.
    """

    def connectionMade(self) -> None:
        cast(IPushProducer, self.transport).stopProducing()


class _Exchange:
    """
    One client request and its upstream counterpart, from sending the
    request to the last byte relayed.
    """

    _log = Logger()

    def __init__(
        self,
        request: Request,
        plan: Plan,
        attempt: Attempt,
        agent: IAgent,
        clock: IReactorTime,
        sendBody: bool,
    ) -> None:
        self._request = request
        self._plan = plan
        self._attempt = attempt
        self._agent = agent
        self._clock = clock
        self._sendBody = sendBody
        self._clientGone = False
        self._timedOut = False
        self._headersTimer: IDelayedCall | None = None
        self._pending: Deferred[_Response] | None = None
        self._relay: ResponseRelay | None = None

    @property
    def _upstream(self) -> Upstream:
        return self._attempt.upstream

    @property
    def _headersTimeout(self) -> float:
        return self._upstream.timeouts.forHeaders(self._plan.streaming)

    def start(self) -> None:
        self._request.notifyFinish().addErrback(self._clientDisconnected)
        request = self._request
        headers = upstreamRequestHeaders(request.requestHeaders, self._upstream)
        # A fresh HTTPClient per request: its cookie jar must not carry one
        # upstream's cookies into another client's request.
        client = HTTPClient(_VerbatimAgent(self._agent))
        self._headersTimer = self._clock.callLater(
            self._headersTimeout, self._headersTimedOut
        )
        pending = client.request(
            request.method.decode("ascii"),
            self._upstream.urlFor(request.uri),
            headers=headers,
            data=_BytesProducer(self._attempt.body) if self._sendBody else None,
            allow_redirects=False,
            unbuffered=True,
        )
        self._pending = pending
        pending.addCallbacks(self._gotResponse, self._failedBeforeResponse)
        pending.addErrback(self._bug)

    def _headersTimedOut(self) -> None:
        self._timedOut = True
        if self._pending is not None:
            self._pending.cancel()

    def _stopHeadersTimer(self) -> None:
        if self._headersTimer is not None and self._headersTimer.active():
            self._headersTimer.cancel()

    def _clientDisconnected(self, reason: Failure) -> None:
        self._clientGone = True
        if self._relay is not None:
            self._relay.clientDisconnected()
        elif self._pending is not None:
            self._pending.cancel()

    def _gotResponse(self, response: _Response) -> None:
        self._pending = None
        self._stopHeadersTimer()
        if self._clientGone:
            response.deliverBody(_Discard())
            return
        try:
            self._relayResponse(response)
        except BaseException:
            # Whatever went wrong, the upstream connection must not stay
            # stuck with an unread body.
            if self._relay is None:
                response.deliverBody(_Discard())
            raise

    def _relayResponse(self, response: _Response) -> None:
        request = self._request
        original = response.original
        assert isinstance(original, _UndecodedResponse)
        headers = clientResponseHeaders(original.upstreamHeaders)
        request.setResponseCode(response.code, response.phrase)
        for name in _SERVER_DEFAULTS:
            request.responseHeaders.removeHeader(name)
        request.defaultContentType = None
        for name, values in headers.getAllRawHeaders():
            request.responseHeaders.setRawHeaders(name, list(values))
        framedByLength = (
            isinstance(original.length, int)
            and request.method != b"HEAD"
            and response.code not in NO_BODY_CODES
        )
        if framedByLength:
            # Twisted's client keeps Content-Length out of the headers it
            # hands over; the body is relayed as is, so its length still holds.
            request.responseHeaders.setRawHeaders(
                b"content-length", [b"%d" % original.length]
            )
        contentType = headers.getRawHeaders(b"content-type", [b""])[0]
        eventStream = contentType.split(b";", 1)[0].strip().lower() == (
            b"text/event-stream"
        )
        # Status and headers go out now, before any body byte, so the client
        # sees the stream start as soon as the upstream does.
        request.write(b"")
        self._relay = ResponseRelay(
            request, self._upstream, eventStream, framedByLength, self._clock
        )
        response.deliverBody(self._relay)

    def _failedBeforeResponse(self, failure: Failure) -> None:
        self._pending = None
        self._stopHeadersTimer()
        if self._clientGone:
            return
        if self._timedOut:
            error = describeHeadersTimeout(self._upstream, self._headersTimeout)
        else:
            error = describeFailure(failure, self._upstream)
        self._log.warn(
            "{method} {path} to {upstream} failed: {problem}",
            method=self._request.method.decode("ascii"),
            path=self._request.path.decode("ascii", "replace"),
            upstream=self._upstream.name,
            problem=error.message,
        )
        writeError(self._request, error)

    def _bug(self, failure: Failure) -> None:
        self._log.failure("proxying a request failed unexpectedly", failure)
        if not self._clientGone:
            self._request.channel.forceAbortClient()
