"""
Tests for L{ccrouter.failures}: each failure gives an honest status and a
message naming the upstream and the cause.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.internet import error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseNeverReceived

from ccrouter.config import parseConfig
from ccrouter.failures import describeFailure, describeHeadersTimeout

UPSTREAM = parseConfig(
    "default: {url: 'https://api.z.ai/api/anthropic', timeouts: {connect: 7}}",
    "c.yaml",
    {},
).default


def describe(exception: BaseException) -> tuple[int, str, str]:
    error_ = describeFailure(Failure(exception), UPSTREAM)
    return error_.status, error_.type, error_.message


class DescribeFailureTests(SynchronousTestCase):
    def test_refused(self) -> None:
        self.assertEqual(
            describe(error.ConnectionRefusedError()),
            (
                502,
                "api_error",
                "cannot connect to upstream api.z.ai:443: connection refused",
            ),
        )

    def test_dns(self) -> None:
        self.assertEqual(
            describe(error.DNSLookupError()),
            (502, "api_error", "cannot resolve upstream host api.z.ai"),
        )

    def test_connectTimeout(self) -> None:
        self.assertEqual(
            describe(error.TimeoutError()),
            (
                504,
                "timeout_error",
                "connecting to upstream api.z.ai:443 timed out after 7 s",
            ),
        )

    def test_headersTimeout(self) -> None:
        timeout = describeHeadersTimeout(UPSTREAM, 60)
        self.assertEqual(
            (timeout.status, timeout.type, timeout.message),
            (
                504,
                "timeout_error",
                "upstream api.z.ai:443 sent no response within 60 s",
            ),
        )

    def test_tlsInsideResponseNeverReceived(self) -> None:
        """
        A TLS verification failure, however deeply wrapped, is reported as
        one.
        """
        tls = SSL.Error([("SSL routines", "", "certificate verify failed")])
        status, kind, message = describe(ResponseNeverReceived([Failure(tls)]))
        self.assertEqual((status, kind), (502, "api_error"))
        self.assertEqual(
            message, "TLS with upstream api.z.ai:443 failed: certificate verify failed"
        )

    def test_closedWithoutResponse(self) -> None:
        status, kind, message = describe(
            ResponseNeverReceived([Failure(error.ConnectionDone())])
        )
        self.assertEqual(
            (status, kind, message),
            (
                502,
                "api_error",
                "upstream api.z.ai:443 closed the connection without responding",
            ),
        )
