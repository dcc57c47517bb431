# -*- test-case-name: tests.test_proxy,tests.test_write_stall -*-
"""
The body-delivery protocol: relays an upstream response body to the client
chunk by chunk, as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (  # type: ignore[attr-defined]
    PotentialDataLoss,
    ResponseDone,
)
from twisted.web.server import Request
from zope.interface import implementer

from ccrouter.breaker import CLIENT_LEFT, SUCCEEDED, Outcome, Verdict
from ccrouter.config import ClientLimits, Upstream
from ccrouter.drain import STOPPED
from ccrouter.errors import ProxyError, upstreamUnavailable
from ccrouter.failures import describeBrokenBody, describeIdleTimeout
from ccrouter.sendqueue import unsentBytes
from ccrouter.sse import EventBoundary, EventNames
from ccrouter.translate.stream import StreamTranslator


@implementer(IPushProducer)
def _ignoreOutcome(outcome: Outcome) -> None:
    pass


class ResponseRelay(Protocol):
    """
    Given to C{IResponse.deliverBody}: every chunk is written to the client
    the moment it is received, with nothing buffered or re-encoded.

    The relay is the client request's push producer and passes pause and
    resume on to the upstream socket, so a client that stops reading holds
    the upstream back instead of growing memory.  An upstream silent for the
    idle timeout is cut, but only while the client is reading: a stream held
    back by the client is not the upstream's silence.  A client that reads
    nothing for C{writeStall} seconds is the one cut: its connection is
    aborted and the upstream's closed, with nothing counted against the
    upstream; a client whose connection takes bytes, however slowly, is
    reading (see L{unsentBytes}).  A body that breaks off ends in a way the
    client can see: an SSE C{error} event when the stream is between events
    (and not framed by a Content-Length), otherwise an aborted connection,
    never a clean end on a truncated body.

    When the body ends, C{onEnd} hears what it says about the upstream
    (before the client's response is finished, so that whoever watches that
    end knows how it went): an Anthropic stream is only a success if it
    reached C{message_stop} without an C{error} event.
    """

    _log = Logger()

    def __init__(
        self,
        request: Request,
        upstream: Upstream,
        eventStream: bool,
        framedByLength: bool,
        clock: IReactorTime,
        onEnd: Callable[[Outcome], None] = _ignoreOutcome,
        expectMessageStop: bool = False,
        writeStall: float = ClientLimits().writeStall,
        unsent: Callable[[], int | None] | None = None,
        requestId: str | None = None,
    ) -> None:
        """
        @param expectMessageStop: Whether the body is an Anthropic Messages
            stream, which must end with C{message_stop}.
        @param writeStall: How long the client may hold the stream back
            (read nothing) before both connections are cut.
        @param unsent: Returns how many written bytes the client has yet to
            take, or L{None} if that is unknown; by default, measured on the
            client's connection.
        @param requestId: The request's id, for the log events about it.
        """
        self._request = request
        self._upstream = upstream
        self._clock = clock
        self._onEnd = onEnd
        self._boundary = EventBoundary() if eventStream and not framedByLength else None
        self._events = EventNames() if eventStream else None
        self._expectMessageStop = expectMessageStop and eventStream
        self._writeStall = writeStall
        self._requestId = requestId
        self._idleCall: IDelayedCall | None = None
        self._idleExpired = False
        self._stallCall: IDelayedCall | None = None
        self._unsent = unsent or (
            lambda: unsentBytes(getattr(request.channel, "transport", None))
        )
        self._unsentWhenTimed: int | None = None
        self._writtenWhenTimed = 0
        #: Body bytes written to the client (translated ones, for a
        #: translated stream).
        self.bytesWritten = 0
        self._clientGone = False
        self._ended = False
        self.bytesRelayed = 0

    def connectionMade(self) -> None:
        self._request.registerProducer(self, True)
        self._startIdleTimer()

    def dataReceived(self, data: bytes) -> None:
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(self._upstream.timeouts.idle)
        if self._boundary is not None:
            self._boundary.feed(data)
        if self._events is not None:
            self._events.feed(data)
        self.bytesRelayed += len(data)
        self._send(data)

    def clientDisconnected(self) -> None:
        """
        The client went away: close the upstream connection now rather than
        let it stream into the void.
        """
        self._clientGone = True
        self._cancelStallTimer()
        self._stopUpstream()

    def endNow(self, error: ProxyError) -> None:
        """
        End the response before the upstream has (ccrouter is stopping):
        with C{error} as an SSE C{error} event where one fits, or else an
        aborted connection; then close both connections.  Nothing counts
        against the upstream.
        """
        if self._ended or self._clientGone:
            return
        self._ended = True
        self._cancelTimers()
        # Twisted lets go of the channel once the request is finished.
        channel = self._request.channel
        self._request.unregisterProducer()
        self._report(STOPPED)
        if self._endWithError(error.event()):
            channel.loseConnection()
        self._stopUpstream()

    # IPushProducer, driven by the client connection

    def pauseProducing(self) -> None:
        self._cancelIdleTimer()
        self._startStallTimer()
        self._upstreamProducer().pauseProducing()

    def resumeProducing(self) -> None:
        self._cancelStallTimer()
        self._startIdleTimer()
        self._upstreamProducer().resumeProducing()

    def stopProducing(self) -> None:
        self._stopUpstream()

    def _send(self, data: bytes) -> None:
        self.bytesWritten += len(data)
        self._request.write(data)

    def _report(self, outcome: Outcome) -> None:
        """
        Tell C{onEnd} how the body ended; whatever goes wrong there, the
        client's response still ends.
        """
        # Once only; and letting go of C{onEnd} (the exchange's, which holds
        # this relay) leaves no reference cycle for the garbage collector.
        onEnd, self._onEnd = self._onEnd, _ignoreOutcome
        try:
            onEnd(outcome)
        except Exception:  # noqa: BLE001 - the response must still end
            self._log.failure(
                "reporting the end of a response failed", request_id=self._requestId
            )

    def _startIdleTimer(self) -> None:
        self._cancelIdleTimer()
        if self._ended:
            return
        self._idleCall = self._clock.callLater(
            self._upstream.timeouts.idle, self._stopIdleUpstream
        )

    def _cancelIdleTimer(self) -> None:
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None

    def _stopIdleUpstream(self) -> None:
        self._idleExpired = True
        self._stopUpstream()

    def _startStallTimer(self) -> None:
        if self._ended or self._clientGone or self._stallCall is not None:
            return
        self._unsentWhenTimed = self._unsent()
        self._writtenWhenTimed = self.bytesWritten
        self._stallCall = self._clock.callLater(self._writeStall, self._clientStalled)

    def _cancelStallTimer(self) -> None:
        if self._stallCall is not None and self._stallCall.active():
            self._stallCall.cancel()
        self._stallCall = None

    def _cancelTimers(self) -> None:
        self._cancelIdleTimer()
        self._cancelStallTimer()

    def _clientStalled(self) -> None:
        """
        The client has not drained its connection for the write-stall
        limit.  If it has read nothing either, it is the one at fault, so it
        is cut and the upstream closed, as when a client goes away; a client
        that read something, however little, gets another period.
        """
        self._stallCall = None
        before, now = self._unsentWhenTimed, self._unsent()
        # Bytes still arriving from the upstream after the pause are added
        # to what waits for the client: what it took is what left.
        written = self.bytesWritten - self._writtenWhenTimed
        if before is not None and now is not None and before + written > now:
            self._unsentWhenTimed = now
            self._writtenWhenTimed = self.bytesWritten
            self._stallCall = self._clock.callLater(
                self._writeStall, self._clientStalled
            )
            return
        self._log.warn(
            "the client read nothing for {seconds:g} s"
            " (server.client_timeouts.write_stall): closing its connection"
            " and the upstream's",
            seconds=self._writeStall,
            request_id=self._requestId,
        )
        self._clientGone = True
        self._stopUpstream()
        self._request.channel.forceAbortClient()

    def _upstreamProducer(self) -> IPushProducer:
        # deliverBody hands over a TransportProxyProducer: a push producer
        # with no other transport methods (no abortConnection).
        return cast(IPushProducer, self.transport)

    def _stopUpstream(self) -> None:
        if self.transport is not None:
            self._upstreamProducer().stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._ended:
            # Ended here already (ccrouter is stopping).
            return
        self._ended = True
        self._cancelTimers()
        if self._clientGone:
            self._report(CLIENT_LEFT)
            return
        self._request.unregisterProducer()
        if not self._idleExpired and reason.check(ResponseDone, PotentialDataLoss):
            self._endedCleanly()
            return
        error, outcome = self._describeBreak(reason)
        self._report(outcome)
        self._endWithError(error.event())

    def _describeBreak(self, reason: Failure) -> tuple[ProxyError, Outcome]:
        """
        Why the body broke off (silence past the idle timeout, or a broken
        connection), logged once, and what that says about the upstream.
        """
        if self._idleExpired:
            error = describeIdleTimeout(self._upstream)
            verdict = Verdict.TIMEOUT
        else:
            error = describeBrokenBody(reason, self._upstream)
            verdict = Verdict.FAILURE
        self._log.warn(
            "response from {upstream} broke off after {relayed} bytes: {problem}",
            upstream=self._upstream.name,
            relayed=self.bytesRelayed,
            problem=error.message,
            request_id=self._requestId,
        )
        return error, Outcome(verdict, error.message)

    def _endedCleanly(self) -> None:
        events = self._events
        if events is not None and events.sawError:
            self._report(Outcome(Verdict.FAILURE, "the stream carried an error event"))
            self._request.finish()
        elif self._expectMessageStop and not (
            events is not None and events.sawMessageStop
        ):
            error = upstreamUnavailable(
                f"upstream {self._upstream.host}:{self._upstream.port} ended the"
                " stream before message_stop"
            )
            self._log.warn(
                "response from {upstream} ended early: {problem}",
                upstream=self._upstream.name,
                problem=error.message,
                request_id=self._requestId,
            )
            self._report(Outcome(Verdict.FAILURE, error.message))
            self._endWithError(error.event())
        else:
            self._report(SUCCEEDED)
            self._request.finish()

    def _endWithError(self, event: bytes) -> bool:
        """
        End a broken body where the client can tell: an error event between
        events, or else a dropped connection.

        @return: Whether the event was sent (and the response finished).
        """
        if self._boundary is not None and self._boundary.atBoundary:
            self._send(event)
            self._request.finish()
            return True
        self._request.channel.forceAbortClient()
        return False


#: Seconds of upstream silence after which a translated stream gets a
#: C{ping}, as Anthropic's own streams do, so the client's idle limit never
#: fires while the upstream thinks.
PING_INTERVAL = 10.0


class TranslatingRelay(ResponseRelay):
    """
    Relays an OpenAI-format stream as the Anthropic stream a
    L{StreamTranslator} makes of it: each translated event is written as
    soon as the upstream bytes that complete it arrive, with pings during
    upstream silence.  Backpressure, the idle timeout and disconnects work
    as for L{ResponseRelay}.
    """

    def __init__(
        self,
        request: Request,
        upstream: Upstream,
        translator: StreamTranslator,
        clock: IReactorTime,
        onEnd: Callable[[Outcome], None],
        pingInterval: float = PING_INTERVAL,
        writeStall: float = ClientLimits().writeStall,
        requestId: str | None = None,
    ) -> None:
        super().__init__(
            request,
            upstream,
            False,
            False,
            clock,
            onEnd,
            writeStall=writeStall,
            requestId=requestId,
        )
        self._translator = translator
        self._pingInterval = pingInterval
        self._pingCall: IDelayedCall | None = None
        #: While the client holds the stream back, no ping is due: bytes
        #: already read from the upstream may still arrive.
        self._paused = False
        self._bodyEnded = False
        self._stopCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._schedulePing()

    def _schedulePing(self) -> None:
        if self._paused:
            return
        if self._pingCall is not None and self._pingCall.active():
            self._pingCall.reset(self._pingInterval)
        elif not self._ended:
            self._pingCall = self._clock.callLater(self._pingInterval, self._ping)

    def _ping(self) -> None:
        self._pingCall = None
        if self._ended or self._clientGone:
            return
        self._send(self._translator.ping())
        self._schedulePing()

    def _cancelPing(self) -> None:
        if self._pingCall is not None and self._pingCall.active():
            self._pingCall.cancel()
        self._pingCall = None

    def dataReceived(self, data: bytes) -> None:
        if self._ended or self._clientGone:
            return
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.reset(self._upstream.timeouts.idle)
        self._schedulePing()
        self.bytesRelayed += len(data)
        translated = self._translator.feed(data)
        if translated:
            self._send(translated)
        if self._translator.ended:
            # The stream said all it will (message_stop, or an error): the
            # rest of the upstream body, if any, is not wanted.  Not stopped
            # at once: when the body's end is in this same read, Twisted
            # puts the connection back in the pool after this call, and a
            # connection stopped now would be pooled while it closes (the
            # next request on it fails).
            self._end(self._verdict())
            self._stopCall = self._clock.callLater(0, self._stopUnfinished)

    def _stopUnfinished(self) -> None:
        self._stopCall = None
        if not self._bodyEnded:
            self._stopUpstream()

    def _verdict(self) -> Outcome:
        if self._translator.complete:
            return SUCCEEDED
        return Outcome(Verdict.FAILURE, "the upstream stream carried an error")

    def _end(self, outcome: Outcome) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancelTimers()
        self._cancelPing()
        self._request.unregisterProducer()
        self._report(outcome)
        self._request.finish()

    def endNow(self, error: ProxyError) -> None:
        """
        End the translated stream now (ccrouter is stopping): translated
        events are always whole, so C{error} can always follow as an
        C{error} event.
        """
        if self._ended or self._clientGone:
            return
        channel = self._request.channel
        self._send(self._translator.fail(error.type, error.message))
        self._end(STOPPED)
        channel.loseConnection()
        self._stopUpstream()

    def pauseProducing(self) -> None:
        self._paused = True
        self._cancelPing()
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedulePing()
        super().resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._bodyEnded = True
        if self._stopCall is not None and self._stopCall.active():
            self._stopCall.cancel()
        self._stopCall = None
        self._cancelPing()
        if self._ended:
            return
        if self._clientGone:
            self._ended = True
            self._cancelTimers()
            self._report(CLIENT_LEFT)
            return
        if not self._idleExpired and reason.check(ResponseDone, PotentialDataLoss):
            self._send(self._translator.finish())
            if self._translator.complete:
                self._end(SUCCEEDED)
            else:
                self._end(Outcome(Verdict.FAILURE, "the stream ended early"))
            return
        error, outcome = self._describeBreak(reason)
        self._send(self._translator.fail(error.type, error.message))
        self._end(outcome)
