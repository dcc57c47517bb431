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


def upstreamUnavailable(message: str) -> ProxyError:
    return ProxyError(502, "api_error", message)


def upstreamTimeout(message: str) -> ProxyError:
    return ProxyError(504, "timeout_error", message)
