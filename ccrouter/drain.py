# -*- test-case-name: tests.test_drain -*-
"""
The exchanges in flight to upstreams, counted for the stream cap and
waited for by a graceful stop; and that stop's sequence: stop listening,
close idle client connections, let what is in flight finish until a
deadline, end the rest with an C{overloaded_error}, and only then close
the upstream connection pool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ccrouter.breaker import Outcome, Verdict
from ccrouter.errors import ProxyError

#: What the requests still in flight at the drain deadline end with.
SHUTTING_DOWN = ProxyError(529, "overloaded_error", "ccrouter is shutting down")
#: What an exchange ended that way says about its upstream: nothing.
STOPPED = Outcome(Verdict.NEUTRAL, "ccrouter stopped")
#: After the drain, how long client connections get to take their last
#: bytes before the reactor drops them.
CLOSE_GRACE = 1.5
#: How often the connections are counted during that grace.
_CLOSE_POLL = 0.02


def tooManyStreams(limit: int) -> ProxyError:
    """
    The fast answer to a request over the stream cap.
    """
    return ProxyError(
        529,
        "overloaded_error",
        f"ccrouter already has {limit} requests in flight, as many as"
        " server.max_streams allows; try again shortly",
    )


class Endable(Protocol):
    """
    An exchange that can be ended before its upstream is done.
    """

    def endNow(self, error: ProxyError) -> None:
        """
        End at once with C{error}: as an answer if nothing was sent yet, as
        an SSE C{error} event (or an aborted connection) otherwise; the
        upstream request is closed either way.
        """


class ClientConnections(Protocol):
    """
    The server side's connections, as a graceful stop needs them.
    """

    @property
    def openConnections(self) -> int:
        """
        How many client connections are open, closing ones included.
        """

    def closeIdleConnections(self) -> None:
        """
        Close the connections that have no request in progress; the others
        close once their response is complete.
        """


class InFlight:
    """
    The exchanges in flight to upstreams, from their start to their end
    (the response finished, failed, or the client gone).

    @ivar draining: Set once ccrouter stops: new exchanges are refused.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._members: set[Endable] = set()
        self._whenEmpty: list[Deferred[None]] = []
        self.draining = False

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: Endable) -> None:
        self._members.add(member)

    def discard(self, member: Endable) -> None:
        """
        C{member} has ended (a second call does nothing).
        """
        self._members.discard(member)
        if not self._members:
            waiting, self._whenEmpty = self._whenEmpty, []
            for d in waiting:
                d.callback(None)

    def whenEmpty(self) -> Deferred[None]:
        """
        Fires once nothing is in flight (at once if nothing is now).
        """
        if not self._members:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenEmpty.append(d)
        return d

    def endAll(self, error: ProxyError) -> int:
        """
        End every exchange still in flight with C{error}.

        @return: How many there were.
        """
        members = list(self._members)
        for member in members:
            try:
                member.endNow(error)
            except Exception:  # noqa: BLE001 - the others must still end
                self._log.failure("ending a request in flight failed")
            self.discard(member)
        return len(members)


def drain(inflight: InFlight, clock: IReactorTime, timeout: float) -> Deferred[int]:
    """
    Refuse new exchanges, let those in flight finish for up to C{timeout}
    seconds, then end the rest with L{SHUTTING_DOWN}.

    @return: Fires once nothing is in flight, with how many exchanges had
        to be ended at the deadline.
    """
    inflight.draining = True
    ended = 0

    def atDeadline() -> None:
        nonlocal ended
        # Counted first: the last one ended empties the registry, which
        # fires the result.
        ended = len(inflight)
        inflight.endAll(SHUTTING_DOWN)

    deadline = clock.callLater(timeout, atDeadline)

    def emptied(_: None) -> int:
        if deadline.active():
            deadline.cancel()
        return ended

    return inflight.whenEmpty().addCallback(emptied)


def waitForClose(
    openCount: Callable[[], int], clock: IReactorTime, grace: float
) -> Deferred[int]:
    """
    Wait until no client connection is open, for at most C{grace} seconds:
    the last bytes of a response are still in the transport's buffer when
    it finishes, and the reactor drops every connection, unsent bytes and
    all, once the stop is over.

    @param openCount: How many client connections are open now.
    @return: Fires with how many were still open at the end.
    """
    done: Deferred[int] = Deferred()
    deadline = clock.seconds() + grace

    def look() -> None:
        count = openCount()
        if not count or clock.seconds() >= deadline:
            done.callback(count)
            return
        clock.callLater(_CLOSE_POLL, look)

    look()
    return done


class GracefulStop(MultiService):
    """
    The top of ccrouter's service tree, stopped in order rather than all
    children at once (closing the upstream pool together with the listener
    would cut the very streams the stop waits for):

      1. the listeners (added with L{addListener}) stop accepting;
      2. idle client connections are closed, busy ones close after their
         response;
      3. the exchanges in flight get up to C{drainTimeout()} seconds;
         the rest are ended with an C{overloaded_error};
      4. the client connections get L{CLOSE_GRACE} seconds to send what
         they still hold;
      5. every other child stops (the file watcher, the upstream pool).

    A stop that got this far is a clean exit: the process ends with status
    0, not killed by the C{SIGTERM} that began it.
    """

    _log = Logger()

    def __init__(
        self,
        inflight: InFlight,
        clock: IReactorTime,
        drainTimeout: Callable[[], float],
        clients: ClientConnections | None = None,
        closeGrace: float = CLOSE_GRACE,
    ) -> None:
        """
        @param drainTimeout: Read when the stop begins, so a reloaded
            config's C{server.drain_timeout} applies.
        @param clients: The site whose connections are closed and waited for.
        """
        super().__init__()
        self._inflight = inflight
        self._clock = clock
        self._drainTimeout = drainTimeout
        self.clients = clients
        self._closeGrace = closeGrace
        self._listeners: list[IService] = []

    def addListener(self, listener: IService) -> None:
        """
        Add a child that accepts connections: the first to stop.
        """
        listener.setServiceParent(self)
        self._listeners.append(listener)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self._inflight.draining = True
        listeners = [child for child in reversed(list(self)) if self._isListener(child)]
        others = [
            child for child in reversed(list(self)) if not self._isListener(child)
        ]
        stopping = _stopEach(listeners)
        stopping.addCallback(lambda _: self._closeIdle())
        stopping.addCallback(lambda _: self._drain())
        stopping.addCallback(lambda _: self._waitForClients())
        stopping.addCallback(lambda _: _stopEach(others))
        stopping.addCallback(lambda _: self._exitCleanly())
        return stopping

    def _exitCleanly(self) -> None:
        # twistd and twist send themselves the signal that stopped the
        # reactor once it has stopped, so that the exit status says "killed
        # by SIGTERM"; after a completed drain the stop is an orderly exit.
        if getattr(self._clock, "_exitSignal", None) is not None:
            setattr(self._clock, "_exitSignal", None)  # noqa: B010

    def _isListener(self, child: IService) -> bool:
        return any(child is listener for listener in self._listeners)

    def _closeIdle(self) -> None:
        if self.clients is not None:
            self.clients.closeIdleConnections()

    def _drain(self) -> Deferred[int]:
        timeout = self._drainTimeout()
        active = len(self._inflight)
        if active:
            self._log.info(
                "stopping: waiting up to {timeout:g} s for {active} request(s)"
                " in flight",
                timeout=timeout,
                active=active,
            )

        def report(ended: int) -> int:
            if ended:
                self._log.warn(
                    "ended {ended} request(s) still in flight after {timeout:g} s"
                    " (server.drain_timeout)",
                    ended=ended,
                    timeout=timeout,
                )
            return ended

        return drain(self._inflight, self._clock, timeout).addCallback(report)

    def _waitForClients(self) -> Deferred[int]:
        if self.clients is None:
            return succeed(0)
        clients = self.clients
        return waitForClose(
            lambda: clients.openConnections, self._clock, self._closeGrace
        )


def _stopEach(services: Iterable[IService]) -> Deferred[None]:
    """
    Stop C{services} together; fires when all have stopped, whether or not
    they stopped cleanly (a failure is logged).
    """
    stopping = [
        maybeDeferred(service.stopService).addErrback(_logStopFailure)
        for service in services
    ]
    return DeferredList(stopping).addCallback(lambda _: None)


_log = Logger()


def _logStopFailure(failure: Failure) -> None:
    _log.failure("a service failed to stop cleanly", failure)
