# -*- test-case-name: tests.test_proxy,tests.test_stream_cap,tests.test_drain -*-
"""
The proxy resource: check the request, decide where it goes, forward it
with treq and relay the response.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable
from typing import Any, cast

from treq.response import _Response
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (  # type: ignore[attr-defined]
    PotentialDataLoss,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ccrouter.breaker import (
    CLIENT_LEFT,
    SUCCEEDED,
    Breaker,
    Outcome,
    State,
    Ticket,
    Verdict,
)
from ccrouter.config import Upstream
from ccrouter.dialects import (
    COUNT_TOKENS_PATH,
    LocalAnswer,
    Outbound,
    Translation,
    prepare,
)
from ccrouter.drain import SHUTTING_DOWN, STOPPED, tooManyStreams
from ccrouter.errors import (
    ProxyError,
    errorForStatus,
    isAnthropicError,
    upstreamUnavailable,
)
from ccrouter.failures import (
    describeFailure,
    describeHeadersTimeout,
    isConnectTimeout,
)
from ccrouter.hardening import withoutCredential
from ccrouter.headers import clientResponseHeaders, copyHeaders
from ccrouter.live import LiveState
from ccrouter.logs import loggable
from ccrouter.outcomes import outcomeOfStatus
from ccrouter.relay import ResponseRelay, TranslatingRelay
from ccrouter.requestlog import (
    RequestRecord,
    cleanName,
    newRequestId,
    watchRequest,
)
from ccrouter.routing import Plan, planRequest
from ccrouter.translate.response import messageId, translateError, translateResponse
from ccrouter.translate.stream import StreamTranslator
from ccrouter.upstreamclient import UndecodedResponse, UpstreamClients
from ccrouter.writethrough import disableWriteThrough, enableWriteThrough

#: Returns the agent that reaches an upstream (one shared connection pool).
AgentFor = Callable[[Upstream], IAgent]

#: Response headers Twisted sets by itself that must not mask the upstream's.
_SERVER_DEFAULTS = (b"server", b"date", b"content-type")

#: An upstream error body larger than this is not passed on whole.
_ERROR_BODY_LIMIT = 64 * 1024
#: A translated (non-streaming) answer larger than this is refused.
_TRANSLATED_BODY_LIMIT = 32 * 1024 * 1024
#: The longest silence waited out while reading an error body.
_ERROR_BODY_IDLE = 30.0


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
    names, failing over between the targets of a failover mode.  A leaf: the
    raw request target is used, never the path segments Twisted decoded
    from it.  The root resource has already checked the request.

    At most C{server.max_streams} requests are in flight at once: one more
    is answered 529 at once, without an upstream.  Once ccrouter stops, new
    requests get the same answer.
    """

    isLeaf = True

    def __init__(
        self,
        live: LiveState,
        agentFor: AgentFor,
        clock: IReactorTime,
    ) -> None:
        super().__init__()
        self._live = live
        self._clients = UpstreamClients(agentFor)
        self._clock = clock

    def render(self, request: Request) -> int | bytes:
        live = self._live
        inflight = live.inflight
        headers = request.requestHeaders
        assert request.content is not None
        request.content.seek(0)
        body = request.content.read()
        path = request.uri.split(b"?", 1)[0]
        record = RequestRecord(
            requestId=newRequestId(),
            method=request.method.decode("ascii", "replace"),
            path=loggable(path.decode("ascii", "replace")),
            startedAt=live.now(),
            wallStart=live.wallNow(),
            bytesIn=len(body),
            mode=live.modeName,
        )
        watchRequest(request, record, live.now, live.stats.observe)
        if inflight.draining:
            record.error = "stopped"
            writeError(request, SHUTTING_DOWN)
            return NOT_DONE_YET
        limit = live.config.server.limits.maxStreams
        if len(inflight) >= limit:
            record.error = "overloaded"
            writeError(request, tooManyStreams(limit))
            return NOT_DONE_YET
        # Config and mode are read once: a reload or a mode switch applies
        # to the requests that start after it.
        plan = planRequest(live.config, request.method, path, body, live.modeName)
        record.clientModel = cleanName(plan.clientModel)
        record.streamed = plan.streaming
        hasBody = headers.hasHeader(b"content-length") or headers.hasHeader(
            b"transfer-encoding"
        )
        _Exchange(
            request=request,
            plan=plan,
            live=live,
            clients=self._clients,
            clock=self._clock,
            sendBody=hasBody,
            record=record,
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


class _Discard(Protocol):
    """
    Takes the body of a response nobody wants and closes its connection.
    """

    def connectionMade(self) -> None:
        cast(IPushProducer, self.transport).stopProducing()


class _ErrorBody(Protocol):
    """
    Reads a small error response body whole; gives up (with L{None}) beyond
    C{limit} bytes or after C{idle} seconds of silence.
    """

    def __init__(self, limit: int, idle: float, clock: IReactorTime) -> None:
        self.finished: Deferred[bytes | None] = Deferred()
        self._limit = limit
        self._idle = idle
        self._chunks: list[bytes] = []
        self._size = 0
        self._complete = True
        self._timer = clock.callLater(idle, self._giveUp)

    def dataReceived(self, data: bytes) -> None:
        if self._timer.active():
            self._timer.reset(self._idle)
        self._size += len(data)
        if self._size > self._limit:
            self._giveUp()
            return
        self._chunks.append(data)

    def _giveUp(self) -> None:
        self._complete = False
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def stop(self) -> None:
        """
        Nobody wants the body any more: close the upstream connection.
        """
        if self._timer.active():
            self._timer.cancel()
        self._giveUp()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer.active():
            self._timer.cancel()
        complete = (
            self._complete and reason.check(ResponseDone, PotentialDataLoss) is not None
        )
        self.finished.callback(b"".join(self._chunks) if complete else None)


class _Exchange:
    """
    One client request and its upstream counterparts: each attempt in turn
    (the next target as soon as one fails, while nothing has been written
    to the client), then the response relayed to its last byte.
    """

    _log = Logger()

    def __init__(
        self,
        request: Request,
        plan: Plan,
        live: LiveState,
        clients: UpstreamClients,
        clock: IReactorTime,
        sendBody: bool,
        record: RequestRecord,
    ) -> None:
        self._request = request
        self._requestRecord = record
        self._plan = plan
        self._live = live
        self._clients = clients
        self._clock = clock
        self._sendBody = sendBody
        self._remaining = list(plan.attempts)
        self._attempt = plan.attempts[0]
        self._ticket: Ticket | None = None
        self._recorded = True
        self._failures: list[str] = []
        self._clientGone = False
        self._timedOut = False
        self._headersTimer: IDelayedCall | None = None
        self._pending: Deferred[_Response] | None = None
        self._relay: ResponseRelay | None = None
        self._errorBody: _ErrorBody | None = None
        self._translation: Translation | None = None

    @property
    def _upstream(self) -> Upstream:
        return self._attempt.upstream

    @property
    def _headersTimeout(self) -> float:
        return self._upstream.timeouts.forHeaders(self._plan.streaming)

    def start(self) -> None:
        # In flight from now until the client's response is over, whichever
        # way it ends.
        inflight = self._live.inflight
        inflight.add(self)
        self._request.notifyFinish().addBoth(lambda _: inflight.discard(self))
        self._request.notifyFinish().addErrback(self._clientDisconnected)
        # Targets out of rotation are not tried at all while another one is
        # available; only when none is are they all tried, soonest first.
        live, now = self._live, self._live.now()
        available = [
            attempt
            for attempt in self._remaining
            if (breaker := live.breaker(attempt.target)) is None
            or breaker.available(now)
        ]
        if available:
            for attempt in self._remaining:
                if attempt not in available:
                    breaker = live.breaker(attempt.target)
                    assert breaker is not None
                    self._failures.append(
                        f"{attempt.target}: {_whyUnavailable(breaker, now)}"
                    )
            self._remaining = available
        self._attemptNext()

    def _attemptNext(self) -> None:
        live = self._live
        index = live.board.pick(
            [attempt.target for attempt in self._remaining], live.now()
        )
        self._attempt = self._remaining.pop(index)
        self._ticket = live.begin(self._attempt.target)
        self._recorded = False
        self._timedOut = False
        request = self._request
        try:
            outbound = prepare(
                self._attempt,
                request.method,
                request.uri,
                request.requestHeaders,
                self._plan.clientModel,
                countsTokens=self._upstream.urlFor(b"")
                not in self._live.noTokenCounting,
            )
        except Exception:  # noqa: BLE001 - a probe must never stay out
            self._log.failure(
                "preparing a request failed unexpectedly",
                request_id=self._requestRecord.requestId,
            )
            outbound = ProxyError(500, "api_error", "ccrouter could not send this on")
        if not isinstance(outbound, Outbound):
            self._answerLocally(outbound)
            return
        # Only what goes upstream counts as an attempt.
        self._noteAttempt()
        self._translation = outbound.translation
        clients = self._clients
        client = clients.clientFor(self._upstream)
        url = clients.parsedURL(outbound.url)
        self._headersTimer = self._clock.callLater(
            self._headersTimeout, self._headersTimedOut
        )
        sendBody = self._sendBody or outbound.translation is not None
        pending = client.request(
            request.method.decode("ascii"),
            url,
            headers=outbound.headers,
            cookies=clients.noCookies,
            data=_BytesProducer(outbound.body) if sendBody else None,
            allow_redirects=False,
            unbuffered=True,
        )
        self._pending = pending
        pending.addCallbacks(self._gotResponse, self._failedBeforeResponse)
        pending.addErrback(self._bug)

    def _noteAttempt(self) -> None:
        attempt, record = self._attempt, self._requestRecord
        record.attempts += 1
        # A failover target by its name; otherwise the upstream (the mode's
        # name would say nothing about where the request went).
        if self._plan.failover and attempt.target is not None:
            record.target = attempt.target
        else:
            record.target = attempt.upstream.name
        record.failoverPath.append(record.target)
        record.upstreamModel = cleanName(
            attempt.upstreamModel or self._plan.clientModel
        )
        record.route = None if attempt.route is None else attempt.route.pattern.text
        record.error = None

    def _relayEnded(self, outcome: Outcome) -> None:
        """
        A relay's end: what it says about the upstream, and about the
        request.
        """
        record = self._requestRecord
        if outcome is CLIENT_LEFT:
            record.error = "client_gone"
        elif outcome is STOPPED:
            record.error = "stopped"
        elif outcome.verdict is Verdict.TIMEOUT:
            record.error = "timeout"
        elif outcome.verdict is Verdict.FAILURE:
            record.error = "broken_stream"
        self._record(outcome)

    def _record(self, outcome: Outcome) -> None:
        """
        Tell the target's breaker how this attempt went (once).
        """
        if self._recorded:
            return
        self._recorded = True
        self._live.record(self._attempt.target, outcome, self._ticket)
        if outcome.isFailure:
            where = self._attempt.target or self._upstream.name
            self._failures.append(f"{where}: {outcome.reason}")

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
        elif self._errorBody is not None:
            self._errorBody.stop()
        elif self._pending is not None:
            self._pending.cancel()

    def endNow(self, error: ProxyError) -> None:
        """
        End this exchange at once (ccrouter is stopping): a response already
        started ends with C{error} as an SSE C{error} event (or an abort),
        one not yet started is C{error} itself; the upstream request is
        closed and the client connection after it.
        """
        request = self._request
        if self._clientGone or request.finished:
            return
        if self._relay is not None:
            self._relay.endNow(error)
            return
        self._clientGone = True
        self._stopHeadersTimer()
        self._requestRecord.error = "stopped"
        self._record(STOPPED)
        if self._errorBody is not None:
            self._errorBody.stop()
        elif self._pending is not None:
            self._pending.cancel()
        channel = request.channel
        if request.startedWriting:
            channel.forceAbortClient()
            return
        writeError(request, error)
        channel.loseConnection()

    def _failOver(self, problem: str) -> None:
        assert self._remaining
        self._live.failovers += 1
        self._log.warn(
            "{target} failed ({problem}); trying the next target",
            target=self._attempt.target,
            problem=problem,
            request_id=self._requestRecord.requestId,
        )
        self._attemptNext()

    def _gotResponse(self, response: _Response) -> None:
        self._pending = None
        self._stopHeadersTimer()
        if self._clientGone:
            self._record(CLIENT_LEFT)
            response.deliverBody(_Discard())
            return
        original = response.original
        assert isinstance(original, UndecodedResponse)
        upstreamHeaders = original.upstreamHeaders
        outcome = outcomeOfStatus(
            response.code,
            lambda name: _firstHeader(upstreamHeaders, name),
            self._live.wallNow(),
        )
        if outcome.verdict is not Verdict.SUCCESS:
            self._record(outcome)
        if response.code >= 400:
            self._requestRecord.error = "upstream_status"
        if self._cannotCount(response):
            # An Anthropic-compatible provider without count_tokens: Claude
            # Code gets an estimate, now and from then on.
            response.deliverBody(_Discard())
            self._live.noTokenCounting.add(self._upstream.urlFor(b""))
            self._log.info(
                "{upstream} cannot count tokens: estimating them here",
                upstream=self._upstream.name,
                request_id=self._requestRecord.requestId,
            )
            self._attemptAgain()
        elif outcome.isFailure and self._remaining:
            response.deliverBody(_Discard())
            self._failOver(outcome.reason)
        elif self._translation is not None:
            self._answerTranslated(
                response, self._translation, outcome.isFailure and self._plan.failover
            )
        elif outcome.isFailure and self._plan.failover:
            self._answerExhausted(response)
        elif response.code >= 400 and self._upstream.auth is not None:
            self._answerWithoutCredential(response)
        else:
            try:
                self._relayResponse(response)
            except BaseException:
                # Whatever went wrong, the upstream connection must not
                # stay stuck with an unread body.
                if self._relay is None:
                    response.deliverBody(_Discard())
                raise

    def _relayResponse(self, response: _Response) -> None:
        request = self._request
        original = response.original
        assert isinstance(original, UndecodedResponse)
        headers = clientResponseHeaders(original.upstreamHeaders)
        self._copyResponseHead(response.code, response.phrase, headers)
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
        self._writeThrough()
        # Status and headers go out now, before any body byte, so the client
        # sees the stream start as soon as the upstream does.
        request.write(b"")
        self._relay = ResponseRelay(
            request,
            self._upstream,
            eventStream,
            framedByLength,
            self._clock,
            onEnd=self._relayEnded,
            expectMessageStop=(
                self._plan.streaming
                and self._plan.clientModel is not None
                and 200 <= response.code < 300
            ),
            writeStall=self._live.config.server.limits.writeStall,
            requestId=self._requestRecord.requestId,
        )
        response.deliverBody(self._relay)

    def _writeThrough(self) -> None:
        """
        What the response writes (the head, a body, each event of a stream)
        goes to the client as soon as it is written (see
        L{ccrouter.writethrough}), until the response is over.
        """
        transport = getattr(self._request.channel, "transport", None)
        if enableWriteThrough(transport):
            self._request.notifyFinish().addBoth(
                lambda _: disableWriteThrough(transport)
            )

    def _copyResponseHead(self, code: int, phrase: bytes, headers: Headers) -> None:
        request = self._request
        request.setResponseCode(code, phrase)
        for name in _SERVER_DEFAULTS:
            request.responseHeaders.removeHeader(name)
        request.defaultContentType = None
        copyHeaders(request.responseHeaders, headers.getAllRawHeaders())

    def _answerExhausted(self, response: _Response) -> None:
        """
        Every target failed and the last one answered with an error: give
        the client that status, with the upstream's own error body when it
        is in Anthropic's shape, and tell it not to retry what ccrouter has
        just tried everywhere.
        """
        collector = _ErrorBody(
            _ERROR_BODY_LIMIT,
            min(self._upstream.timeouts.idle, _ERROR_BODY_IDLE),
            self._clock,
        )
        self._errorBody = collector
        response.deliverBody(collector)
        original = response.original
        assert isinstance(original, UndecodedResponse)
        headers = clientResponseHeaders(original.upstreamHeaders)

        def answer(body: bytes | None) -> None:
            self._errorBody = None
            self._logExhausted()
            if self._clientGone:
                return
            if body is None or not isAnthropicError(body):
                fallback = errorForStatus(response.code, self._summary())
                body = fallback.body()
            body = withoutCredential(body, self._upstream)
            for name in (b"content-encoding", b"content-length", b"content-type"):
                headers.removeHeader(name)
            self._copyResponseHead(response.code, response.phrase, headers)
            _writeFinal(self._request, body)

        collector.finished.addCallback(answer).addErrback(self._bug)

    def _answerWithoutCredential(self, response: _Response) -> None:
        """
        An error from an upstream ccrouter added a key for: read whole (it
        is small) and relayed with that key taken out, since some providers
        echo the key they refuse, and it is not the client's to see (S13).
        """
        collector = _ErrorBody(
            _ERROR_BODY_LIMIT,
            min(self._upstream.timeouts.idle, _ERROR_BODY_IDLE),
            self._clock,
        )
        self._errorBody = collector
        response.deliverBody(_decoded(response, collector, _ERROR_BODY_LIMIT))
        original = response.original
        assert isinstance(original, UndecodedResponse)
        headers = clientResponseHeaders(original.upstreamHeaders)
        encoding = _firstHeader(original.upstreamHeaders, "content-encoding")
        # Only gzip is read through; a body in another coding could be
        # neither searched for the key nor relayed without its header.
        unreadable = encoding is not None and encoding.strip().lower() not in (
            "",
            "identity",
            "gzip",
            "x-gzip",
        )

        def answer(body: bytes | None) -> None:
            self._errorBody = None
            if self._clientGone:
                return
            if body is None or unreadable:
                error = errorForStatus(
                    response.code,
                    f"upstream {self._upstream.name} answered HTTP {response.code}",
                )
                body = error.body()
                headers.setRawHeaders(b"content-type", [b"application/json"])
            for name in (b"content-encoding", b"content-length"):
                headers.removeHeader(name)
            self._copyResponseHead(response.code, response.phrase, headers)
            body = withoutCredential(body, self._upstream)
            request = self._request
            request.responseHeaders.setRawHeaders(
                b"content-length", [b"%d" % len(body)]
            )
            request.write(body)
            request.finish()

        collector.finished.addCallback(answer).addErrback(self._bug)

    def _cannotCount(self, response: _Response) -> bool:
        upstream = self._upstream
        return (
            response.code == 404
            and self._plan.clientModel is not None
            and not upstream.forwardsClientCredentials
            and self._request.uri.split(b"?", 1)[0] == COUNT_TOKENS_PATH
        )

    def _attemptAgain(self) -> None:
        self._remaining.insert(0, self._attempt)
        self._attemptNext()

    def _answerLocally(self, answer: LocalAnswer | ProxyError) -> None:
        """
        Answer without an upstream: a token count estimated here, or a
        request the attempt's upstream cannot take.
        """
        self._record(Outcome(Verdict.NEUTRAL, "answered locally"))
        if isinstance(answer, ProxyError):
            self._requestRecord.error = "local"
            writeError(self._request, answer)
            return
        # An upstream's 404 to count_tokens may have come first.
        self._requestRecord.error = None
        request = self._request
        request.setResponseCode(answer.status)
        for name, value in answer.headers:
            request.responseHeaders.setRawHeaders(name, [value])
        request.responseHeaders.setRawHeaders(
            b"content-length", [b"%d" % len(answer.body)]
        )
        request.write(answer.body)
        request.finish()

    def _answerTranslated(
        self, response: _Response, translation: Translation, exhausted: bool
    ) -> None:
        """
        Answer from an OpenAI-format upstream, in Anthropic's format: a
        stream translated event by event, or a whole body translated once
        it is in.
        """
        request = self._request
        success = 200 <= response.code < 300
        if success and translation.streaming:
            request.setResponseCode(200)
            for name in _SERVER_DEFAULTS:
                request.responseHeaders.removeHeader(name)
            request.defaultContentType = None
            request.responseHeaders.setRawHeaders(
                b"content-type", [b"text/event-stream; charset=utf-8"]
            )
            request.responseHeaders.setRawHeaders(b"cache-control", [b"no-cache"])
            request.write(b"")
            translator = StreamTranslator(
                translation.model,
                translation.toolNames,
                messageId("stream-" + uuid.uuid4().hex),
                translation.profile.reasoningFields,
                translation.inputTokens,
            )
            self._relay = TranslatingRelay(
                request,
                self._upstream,
                translator,
                self._clock,
                onEnd=self._relayEnded,
                writeStall=self._live.config.server.limits.writeStall,
                requestId=self._requestRecord.requestId,
            )
            response.deliverBody(_decoded(response, self._relay))
            return
        limit = _TRANSLATED_BODY_LIMIT if success else _ERROR_BODY_LIMIT
        idle = self._upstream.timeouts.idle
        collector = _ErrorBody(
            limit, idle if success else min(idle, _ERROR_BODY_IDLE), self._clock
        )
        self._errorBody = collector
        response.deliverBody(_decoded(response, collector, limit))
        original = response.original
        assert isinstance(original, UndecodedResponse)
        retryAfter = _firstHeader(original.upstreamHeaders, "retry-after")

        def answer(body: bytes | None) -> None:
            self._errorBody = None
            if self._clientGone:
                self._record(CLIENT_LEFT)
                return
            if success:
                status, translated = self._translateSuccess(body, translation)
                if status != 200 and self._remaining:
                    # Nothing has gone to the client yet: another target
                    # may answer properly.
                    self._failOver("an answer that could not be translated")
                    return
                exhaustedHere = status != 200 and self._plan.failover
            else:
                exhaustedHere = exhausted
                if exhausted:
                    self._logExhausted()
                status, translated = translateError(
                    response.code,
                    withoutCredential(body or b"", self._upstream),
                    retryAfter,
                )
            request.setResponseCode(status)
            request.responseHeaders.setRawHeaders(
                b"content-type", [b"application/json"]
            )
            request.responseHeaders.setRawHeaders(
                b"content-length", [b"%d" % len(translated)]
            )
            if retryAfter is not None and not success:
                request.responseHeaders.setRawHeaders(
                    b"retry-after", [retryAfter.encode("latin-1")]
                )
            if exhaustedHere:
                request.responseHeaders.setRawHeaders(b"x-should-retry", [b"false"])
            request.write(translated)
            request.finish()

        collector.finished.addCallback(answer).addErrback(self._bug)

    def _translateSuccess(
        self, body: bytes | None, translation: Translation
    ) -> tuple[int, bytes]:
        problem = "sent a response that could not be read"
        if body is not None:
            try:
                document = json.loads(body)
                message = translateResponse(
                    document,
                    translation.model,
                    translation.toolNames,
                    translation.profile,
                )
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                problem = f"sent a response that is not a chat completion ({e})"
            else:
                self._record(SUCCEEDED)
                return 200, json.dumps(message).encode("ascii")
        error = upstreamUnavailable(f"upstream {self._upstream.name} {problem}")
        self._requestRecord.error = "bad_response"
        self._record(Outcome(Verdict.FAILURE, error.message))
        return error.status, error.body()

    def _summary(self) -> str:
        return "every target failed: " + "; ".join(self._failures)

    def _logExhausted(self) -> None:
        self._log.warn(
            "{method} {path}: {summary}",
            method=self._request.method.decode("ascii"),
            path=self._request.path.decode("ascii", "replace"),
            summary=self._summary(),
            request_id=self._requestRecord.requestId,
        )

    def _failedBeforeResponse(self, failure: Failure) -> None:
        self._pending = None
        self._stopHeadersTimer()
        if self._clientGone:
            self._record(CLIENT_LEFT)
            return
        if self._timedOut:
            error = describeHeadersTimeout(self._upstream, self._headersTimeout)
        else:
            error = describeFailure(failure, self._upstream)
        timedOut = self._timedOut or isConnectTimeout(failure)
        self._requestRecord.error = "timeout" if timedOut else "connect"
        self._record(
            Outcome(Verdict.TIMEOUT if timedOut else Verdict.FAILURE, error.message)
        )
        if self._remaining:
            self._failOver(error.message)
            return
        if self._plan.failover:
            self._logExhausted()
            exhausted = ProxyError(error.status, error.type, self._summary())
            self._request.responseHeaders.setRawHeaders(b"x-should-retry", [b"false"])
            writeError(self._request, exhausted)
            return
        self._log.warn(
            "{method} {path} to {upstream} failed: {problem}",
            method=self._request.method.decode("ascii"),
            path=self._request.path.decode("ascii", "replace"),
            upstream=self._upstream.name,
            problem=error.message,
            request_id=self._requestRecord.requestId,
        )
        writeError(self._request, error)

    def _bug(self, failure: Failure) -> None:
        self._log.failure(
            "proxying a request failed unexpectedly",
            failure,
            request_id=self._requestRecord.requestId,
        )
        self._requestRecord.error = "internal"
        self._stopHeadersTimer()
        # A probe must not stay out for good because of a bug.
        self._record(Outcome(Verdict.NEUTRAL, "internal error"))
        if not self._clientGone:
            self._request.channel.forceAbortClient()


def _whyUnavailable(breaker: Breaker, now: float) -> str:
    if breaker.state(now) is State.HALF_OPEN:
        return "being probed by another request"
    minutes = max(0.0, breaker.cooldownEnd - now) / 60
    return f"out of rotation for another {minutes:.1f} min"


class _Gunzip(Protocol):
    """
    Decompresses a gzip body on its way to C{inner}, for an answer that must
    be read (translated) rather than relayed: an upstream that compresses
    although asked for C{identity}.  No more than C{limit} bytes come out of
    any one chunk, so a compression bomb cannot fill memory.
    """

    def __init__(self, inner: Protocol, limit: int) -> None:
        self._inner = inner
        self._limit = limit
        self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._broken = False

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self._inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            decoded = self._decompressor.decompress(data, self._limit)
        except zlib.error:
            self._broken = True
            cast(IPushProducer, self.transport).stopProducing()
            return
        if self._decompressor.unconsumed_tail:
            # More than the limit from one chunk: not a body worth reading.
            self._broken = True
            cast(IPushProducer, self.transport).stopProducing()
            return
        if decoded:
            self._inner.dataReceived(decoded)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._broken and reason.check(ResponseDone, PotentialDataLoss):
            reason = Failure(ResponseFailed([Failure(ValueError("bad gzip body"))]))
        self._inner.connectionLost(reason)


def _decoded(response: _Response, protocol: Protocol, limit: int = 1 << 24) -> Protocol:
    original = response.original
    assert isinstance(original, UndecodedResponse)
    encoding = _firstHeader(original.upstreamHeaders, "content-encoding")
    if encoding is not None and encoding.strip().lower() in ("gzip", "x-gzip"):
        return _Gunzip(protocol, limit)
    return protocol


def _firstHeader(headers: Headers, name: str) -> str | None:
    values = headers.getRawHeaders(name.encode("ascii"))
    if not values:
        return None
    return values[0].decode("latin-1")


def _writeFinal(request: Request, body: bytes) -> None:
    request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    request.responseHeaders.setRawHeaders(b"x-should-retry", [b"false"])
    request.write(body)
    request.finish()
