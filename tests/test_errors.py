"""
Tests for L{ccrouter.errors}.  No reactor.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.errors import ProxyError, errorForStatus, isAnthropicError


class ErrorShapeTests(SynchronousTestCase):
    def test_bodyAndEvent(self) -> None:
        error = ProxyError(502, "api_error", "upstream h:1 refused")
        expected = {
            "type": "error",
            "error": {"type": "api_error", "message": "upstream h:1 refused"},
        }
        self.assertEqual(json.loads(error.body()), expected)
        self.assertEqual(
            error.event(), b"event: error\ndata: " + error.body() + b"\n\n"
        )

    def test_typeForStatus(self) -> None:
        types = {
            status: errorForStatus(status, "m").type
            for status in (400, 401, 402, 403, 404, 409, 413, 429, 500, 503, 504, 529)
        }
        self.assertEqual(
            types,
            {
                400: "invalid_request_error",
                401: "authentication_error",
                402: "billing_error",
                403: "permission_error",
                404: "not_found_error",
                409: "invalid_request_error",
                413: "request_too_large",
                429: "rate_limit_error",
                500: "api_error",
                503: "api_error",
                504: "timeout_error",
                529: "overloaded_error",
            },
        )

    def test_recognisesAnthropicErrors(self) -> None:
        self.assertTrue(
            isAnthropicError(b'{"type":"error","error":{"type":"x","message":"y"}}')
        )
        for body in [
            b"",
            b"<html>",
            b"[]",
            b'{"type":"error"}',
            b'{"type":"message","error":{"type":"x","message":"y"}}',
            b'{"type":"error","error":{"type":"x"}}',
            b'{"type":"error","error":{"type":1,"message":"y"}}',
            b"\xff\xfe",
        ]:
            self.assertFalse(isAnthropicError(body), body)
