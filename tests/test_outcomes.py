"""
Tests for L{ccrouter.outcomes}: which answers count against a target, and
rate-limit reset times.  No reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.breaker import Verdict
from ccrouter.outcomes import outcomeOfStatus, rateLimitReset

# 2026-11-21T12:00:00Z
NOW = 1795262400.0


def headers(**values: str) -> object:
    table = {name.replace("_", "-"): value for name, value in values.items()}
    return table.get


class StatusTests(SynchronousTestCase):
    def test_classification(self) -> None:
        """
        F8, F9: the target's faults count; the request's own do not.
        """
        expected = {
            200: Verdict.SUCCESS,
            204: Verdict.SUCCESS,
            301: Verdict.NEUTRAL,
            400: Verdict.NEUTRAL,
            401: Verdict.FAILURE,
            402: Verdict.FAILURE,
            403: Verdict.FAILURE,
            404: Verdict.NEUTRAL,
            408: Verdict.NEUTRAL,
            413: Verdict.NEUTRAL,
            422: Verdict.NEUTRAL,
            429: Verdict.FAILURE,
            500: Verdict.FAILURE,
            502: Verdict.FAILURE,
            503: Verdict.FAILURE,
            529: Verdict.FAILURE,
        }
        actual = {
            status: outcomeOfStatus(status, headers(), NOW).verdict
            for status in expected
        }
        self.assertEqual(actual, expected)

    def test_reasonsNameTheStatus(self) -> None:
        self.assertEqual(
            outcomeOfStatus(529, headers(), NOW).reason, "HTTP 529 (overloaded)"
        )
        self.assertEqual(
            outcomeOfStatus(429, headers(), NOW).reason, "HTTP 429 (rate limited)"
        )

    def test_429CarriesItsReset(self) -> None:
        """
        F10: a 429 carries the time its limit resets, from C{retry-after}.
        """
        outcome = outcomeOfStatus(429, headers(retry_after="17"), NOW)
        self.assertEqual(outcome.resetAfter, 17.0)
        self.assertIsNone(outcomeOfStatus(429, headers(), NOW).resetAfter)
        self.assertIsNone(
            outcomeOfStatus(503, headers(retry_after="5"), NOW).resetAfter
        )


class ResetTests(SynchronousTestCase):
    def test_retryAfterForms(self) -> None:
        """
        F10: C{retry-after} in seconds or as an HTTP date, relative to the wall
        clock; a date in the past is a reset now.
        """
        self.assertEqual(rateLimitReset(headers(retry_after="2.5"), NOW), 2.5)
        self.assertEqual(rateLimitReset(headers(retry_after_ms="1500"), NOW), 1.5)
        self.assertEqual(
            rateLimitReset(headers(retry_after="Sat, 21 Nov 2026 12:01:00 GMT"), NOW),
            60.0,
        )
        self.assertEqual(
            rateLimitReset(headers(retry_after="Sat, 21 Nov 2026 11:00:00 GMT"), NOW),
            0.0,
        )

    def test_garbageIgnored(self) -> None:
        """
        F10: a C{retry-after} that is neither a number nor a date is ignored,
        not taken as a reset time.
        """
        for value in ["soon", "-5", "nan", "inf", ""]:
            self.assertIsNone(rateLimitReset(headers(retry_after=value), NOW), value)

    def test_anthropicResetHeaders(self) -> None:
        """
        F10: without C{retry-after}, the exhausted limit's reset is used; when
        no limit shows as exhausted, the latest reset.
        """
        lookup = headers(
            anthropic_ratelimit_requests_remaining="0",
            anthropic_ratelimit_requests_reset="2026-11-21T12:00:30Z",
            anthropic_ratelimit_tokens_remaining="5000",
            anthropic_ratelimit_tokens_reset="2026-11-21T12:05:00Z",
        )
        self.assertEqual(rateLimitReset(lookup, NOW), 30.0)
        lookup = headers(
            anthropic_ratelimit_input_tokens_reset="2026-11-21T12:00:10+00:00",
            anthropic_ratelimit_output_tokens_reset="2026-11-21T12:02:00Z",
        )
        self.assertEqual(rateLimitReset(lookup, NOW), 120.0)
        self.assertIsNone(
            rateLimitReset(headers(anthropic_ratelimit_tokens_reset="never"), NOW)
        )
