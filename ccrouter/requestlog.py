# -*- test-case-name: tests.test_requestlog -*-
"""
The record of one proxied request, filled in as the request goes and logged
once, as one structured event, when its response is over.

The record never holds a header value, a body or a secret: names from the
config, the model names, numbers, and short reasons ccrouter wrote itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timezone

from attrs import define, evolve, field
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from ccrouter.logs import JSONFields, loggable
from ccrouter.usage import Usage, UsageReader

#: The response header that carries the request's id back to the client.
REQUEST_ID_HEADER = b"x-ccrouter-request-id"
#: The log namespace of the request log's events.
REQUEST_LOG_NAMESPACE = "ccrouter.requests"
#: Paths whose responses carry Anthropic message usage.
_MESSAGE_PATHS = (b"/v1/messages",)

_log = Logger(namespace=REQUEST_LOG_NAMESPACE)


def timestamp(wall: float) -> str:
    """
    C{wall} as ISO 8601 in UTC, to the millisecond, with a C{Z}.
    """
    moment = datetime.fromtimestamp(wall, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The longest model name (or stop reason) a record keeps.
NAME_LIMIT = 128


def cleanName(value: str | None, limit: int = NAME_LIMIT) -> str | None:
    """
    A name from a client or an upstream (a model, a stop reason) as a
    record keeps it: it reaches log lines, metric labels and the status
    page, so control characters are escaped and its length is bounded.
    """
    return None if value is None else loggable(value, limit)


def newRequestId() -> str:
    """
    A fresh request id: C{ccr_} and 24 random hex digits.
    """
    return "ccr_" + secrets.token_hex(12)


#: Why a request did not end well, as the request log and the status page
#: show it.
ERROR_CLASSES = (
    "timeout",
    "connect",
    "upstream_status",
    "broken_stream",
    "client_gone",
    "overloaded",
    "local",
    "stopped",
    "internal",
    "bad_response",
)


@define
class RequestRecord:
    """
    What one proxied request did.  Times are on the monotonic clock of
    C{LiveState.now}, except C{wallStart}.

    @ivar attempts: Upstream requests made (0 if none was).
    @ivar failoverPath: The target (or upstream) of each attempt, in order.
    @ivar error: One of L{ERROR_CLASSES}, or L{None} when it went well.
    """

    requestId: str
    method: str
    path: str
    startedAt: float
    wallStart: float
    bytesIn: int = 0
    clientModel: str | None = None
    mode: str | None = None
    streamed: bool = False
    upstreamModel: str | None = None
    route: str | None = None
    target: str | None = None
    attempts: int = 0
    failoverPath: list[str] = field(factory=list)
    status: int | None = None
    firstByteAt: float | None = None
    endedAt: float | None = None
    bytesOut: int = 0
    usage: Usage = field(factory=Usage)
    error: str | None = None
    clientDisconnected: bool = False

    def fields(self) -> JSONFields:
        """
        The record as the request log and C{/status/data} show it.
        """

        def milliseconds(moment: float | None) -> float | None:
            if moment is None:
                return None
            return round((moment - self.startedAt) * 1000, 1)

        usage = self.usage
        return JSONFields(
            request_id=self.requestId,
            at=timestamp(self.wallStart),
            method=self.method,
            path=self.path,
            client_model=self.clientModel,
            upstream_model=self.upstreamModel,
            mode=self.mode,
            route=self.route,
            target=self.target,
            attempts=self.attempts,
            failover_path=list(self.failoverPath),
            status=self.status,
            streamed=self.streamed,
            ttfb_ms=milliseconds(self.firstByteAt),
            duration_ms=milliseconds(self.endedAt),
            bytes_in=self.bytesIn,
            bytes_out=self.bytesOut,
            input_tokens=usage.inputTokens,
            output_tokens=usage.outputTokens,
            cache_read_tokens=usage.cacheReadTokens,
            cache_write_tokens=usage.cacheWriteTokens,
            stop_reason=usage.stopReason,
            error=self.error,
            client_disconnected=self.clientDisconnected,
        )


def logRequest(record: RequestRecord, shown: JSONFields | None = None) -> None:
    """
    The request log's one event for C{record}.

    @param shown: C{record.fields()}, when the caller has made it already.
    """
    if shown is None:
        shown = record.fields()
    _log.info("{request}", request=shown, request_id=record.requestId)


class ResponseMeter:
    """
    Watches what a request's response writes, without touching a byte: when
    the first byte (the status line and headers) went out, how many body
    bytes followed, and the token usage they carry.
    """

    def __init__(self, record: RequestRecord, now: Callable[[], float]) -> None:
        self._record = record
        self._now = now
        self._reader: UsageReader | None = None
        self._readsUsage = False
        self._off = False

    def attach(self, request: Request, path: bytes) -> None:
        """
        Meter C{request}'s writes from now on.
        """
        self._readsUsage = path in _MESSAGE_PATHS
        write = request.write

        def meteredWrite(data: bytes) -> None:
            self._wrote(request, data)
            write(data)

        # Every way a response is written ends in this one method, whether
        # the relay, a translated answer or an error ccrouter makes.
        request.write = meteredWrite  # type: ignore[method-assign]

    def _wrote(self, request: Request, data: bytes) -> None:
        if self._off:
            return
        try:
            self._meter(request, data)
        except Exception:  # noqa: BLE001 - metering must never break a write
            self._off = True
            _log.failure(
                "metering request {request_id} failed",
                request_id=self._record.requestId,
            )

    def _meter(self, request: Request, data: bytes) -> None:
        record = self._record
        if record.firstByteAt is None:
            record.firstByteAt = self._now()
            record.status = request.code
            if self._readsUsage:
                headers = request.responseHeaders
                self._reader = UsageReader(
                    headers.getRawHeaders(b"content-type", [None])[0],
                    headers.getRawHeaders(b"content-encoding", [None])[0],
                )
        if data:
            record.bytesOut += len(data)
            if self._reader is not None:
                self._reader.feed(data)

    def usage(self) -> Usage:
        if self._reader is None:
            return Usage()
        usage = self._reader.result()
        return evolve(usage, stopReason=cleanName(usage.stopReason))

    def detach(self, request: Request) -> None:
        """
        Stop metering: the write wrapper and the usage reader (which may
        hold a whole body) are let go at once, not at the next garbage
        collection of the cycle through C{request}.
        """
        request.__dict__.pop("write", None)
        self._reader = None


def watchRequest(
    request: Request,
    record: RequestRecord,
    now: Callable[[], float],
    ended: Callable[[RequestRecord, JSONFields], None],
) -> None:
    """
    Give C{request}'s response its id, meter what it writes, and once it
    is over (sent, or its client gone) log C{record} and hand it to
    C{ended}.
    """
    request.responseHeaders.setRawHeaders(
        REQUEST_ID_HEADER, [record.requestId.encode("ascii")]
    )
    meter = ResponseMeter(record, now)
    meter.attach(request, record.path.encode("ascii", "replace"))

    def over(result: object) -> None:
        try:
            record.endedAt = now()
            record.usage = meter.usage()
            meter.detach(request)
            if isinstance(result, Failure) and record.error in (None, "client_gone"):
                # Not when ccrouter cut the connection itself (a broken
                # stream, a stop): the error says so already.
                record.clientDisconnected = True
                record.error = "client_gone"
            # Made once for the log line and the status page's list.
            shown = record.fields()
            logRequest(record, shown)
            ended(record, shown)
        except Exception:  # noqa: BLE001 - the count must not break a response
            _log.failure(
                "counting request {request_id} failed", request_id=record.requestId
            )

    request.notifyFinish().addBoth(over)
