# -*- test-case-name: tests.test_errors -*-
"""
Errors ccrouter makes itself, in Anthropic's error shape so that Claude Code
shows them and retries only what is worth retrying.
"""

from __future__ import annotations

import json

from attrs import frozen


@frozen
class ProxyError:
    """
    An error response: HTTP status, Anthropic C{error.type} and a message
    for the user.  Messages name upstreams by host, never by credential.
    """

    status: int
    type: str
    message: str

    def body(self) -> bytes:
        return json.dumps(
            {"type": "error", "error": {"type": self.type, "message": self.message}}
        ).encode("utf-8")

    def event(self) -> bytes:
        """
        The same error as an SSE C{error} event, for a stream whose status
        line has already gone out.
        """
        return b"event: error\ndata: " + self.body() + b"\n\n"


def badRequest(message: str) -> ProxyError:
    return ProxyError(400, "invalid_request_error", message)


def forbidden(message: str) -> ProxyError:
    return ProxyError(403, "permission_error", message)


def requestTooLarge(limit: int) -> ProxyError:
    return ProxyError(
        413, "request_too_large", f"request body is larger than {limit} bytes"
    )


def requestTimeout(message: str) -> ProxyError:
    return ProxyError(408, "timeout_error", message)


def requestLineTooLong(limit: int) -> ProxyError:
    return ProxyError(
        414, "invalid_request_error", f"request line is longer than {limit} bytes"
    )


def headersTooLarge(message: str) -> ProxyError:
    return ProxyError(431, "invalid_request_error", message)


def tooManyConnections(limit: int) -> ProxyError:
    return ProxyError(
        503,
        "overloaded_error",
        f"ccrouter already serves {limit} client connections, all busy",
    )


def upstreamUnavailable(message: str) -> ProxyError:
    return ProxyError(502, "api_error", message)


def upstreamTimeout(message: str) -> ProxyError:
    return ProxyError(504, "timeout_error", message)


#: Anthropic's error type for each status it uses.
_TYPE_FOR_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def errorForStatus(status: int, message: str) -> ProxyError:
    """
    An error with the type Anthropic gives C{status}.
    """
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    return ProxyError(status, _TYPE_FOR_STATUS.get(status, fallback), message)


def isAnthropicError(body: bytes) -> bool:
    """
    Whether C{body} is an error in Anthropic's shape, which Claude Code
    reads the type and message of (and must get unmodified).
    """
    try:
        document = json.loads(body)
    except ValueError:
        return False
    if not isinstance(document, dict) or document.get("type") != "error":
        return False
    detail = document.get("error")
    return (
        isinstance(detail, dict)
        and isinstance(detail.get("type"), str)
        and isinstance(detail.get("message"), str)
    )
