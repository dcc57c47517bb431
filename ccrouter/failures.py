# -*- test-case-name: tests.test_failures -*-
"""
Turning a failed upstream exchange into an honest, specific error.
"""

from __future__ import annotations

from collections.abc import Iterator

from OpenSSL import SSL
from twisted.internet import error
from twisted.python.failure import Failure
from twisted.web.client import (  # type: ignore[attr-defined]
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

from ccrouter.config import Upstream
from ccrouter.errors import ProxyError, upstreamTimeout, upstreamUnavailable


def describeHeadersTimeout(upstream: Upstream, seconds: float) -> ProxyError:
    """
    The error for an upstream that sent no response headers in time.
    """
    return upstreamTimeout(
        f"upstream {upstream.host}:{upstream.port} sent no response within"
        f" {seconds:g} s"
    )


def isConnectTimeout(failure: Failure) -> bool:
    return failure.check(error.TimeoutError) is not None


def describeFailure(failure: Failure, upstream: Upstream) -> ProxyError:
    """
    The error to answer with when no response came from C{upstream}.

    @param failure: Why the request Deferred failed.
    """
    where = f"{upstream.host}:{upstream.port}"
    if failure.check(error.TimeoutError):
        return upstreamTimeout(
            f"connecting to upstream {where} timed out after"
            f" {upstream.timeouts.connect:g} s"
        )
    tls = _tlsProblem(failure)
    if tls is not None:
        return upstreamUnavailable(f"TLS with upstream {where} failed: {tls}")
    if failure.check(error.DNSLookupError):
        return upstreamUnavailable(f"cannot resolve upstream host {upstream.host}")
    if failure.check(error.ConnectionRefusedError):
        return upstreamUnavailable(
            f"cannot connect to upstream {where}: connection refused"
        )
    if failure.check(error.ConnectError):
        reason = failure.getErrorMessage()
        return upstreamUnavailable(f"cannot connect to upstream {where}: {reason}")
    if failure.check(ResponseNeverReceived):
        return upstreamUnavailable(
            f"upstream {where} closed the connection without responding"
        )
    if failure.check(RequestTransmissionFailed, RequestNotSent):
        return upstreamUnavailable(f"sending the request to upstream {where} failed")
    if failure.check(ResponseFailed):
        return upstreamUnavailable(f"upstream {where} sent a broken response")
    return upstreamUnavailable(
        f"request to upstream {where} failed ({type(failure.value).__name__})"
    )


def describeIdleTimeout(upstream: Upstream) -> ProxyError:
    """
    The error for a response body that went silent for too long.
    """
    return upstreamTimeout(
        f"upstream {upstream.host}:{upstream.port} sent nothing for"
        f" {upstream.timeouts.idle:g} s"
    )


def describeBrokenBody(failure: Failure, upstream: Upstream) -> ProxyError:
    """
    Why a response body stopped before its end, for the error event that
    tells the client.
    """
    where = f"{upstream.host}:{upstream.port}"
    tls = _tlsProblem(failure)
    if tls is not None:
        return upstreamUnavailable(
            f"TLS with upstream {where} failed mid-response: {tls}"
        )
    return upstreamUnavailable(f"upstream {where} dropped the connection mid-response")


def _causes(failure: Failure) -> Iterator[BaseException]:
    pending = [failure.value]
    seen = 0
    while pending and seen < 32:
        seen += 1
        exception = pending.pop()
        if exception is None:
            continue
        yield exception
        for nested in getattr(exception, "reasons", None) or ():
            if isinstance(nested, Failure):
                pending.append(nested.value)


def _tlsProblem(failure: Failure) -> str | None:
    for cause in _causes(failure):
        if isinstance(cause, SSL.Error):
            return _opensslReason(cause)
        if type(cause).__name__ == "VerificationError":
            return "certificate does not match the host name"
    return None


def _opensslReason(exception: SSL.Error) -> str:
    details = exception.args[0] if exception.args else None
    if isinstance(details, list):
        reasons = [entry[-1] for entry in details if isinstance(entry, tuple) and entry]
        if reasons:
            return "; ".join(str(reason) for reason in reasons)
    return str(exception) or "handshake failed"
