# -*- test-case-name: tests.test_outcomes -*-
"""
What an upstream's answer says about its health: which statuses count
against a target, and when a rate limit says it resets.  Pure.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import datetime

from ccrouter.breaker import Outcome, Verdict

#: Header lookup: the first value of a (lower-case) header, or None.
HeaderLookup = Callable[[str], "str | None"]

#: Statuses that are the target's fault, not the request's: a different
#: target may well answer.  402 is a provider out of credit.
_FAILING_CLIENT_STATUSES = {
    401: "authentication failed",
    402: "billing problem",
    403: "permission denied",
    429: "rate limited",
}

#: Anthropic's rate-limit families, each with -remaining and -reset headers.
_RATE_LIMIT_FAMILIES = ("requests", "tokens", "input-tokens", "output-tokens")


def outcomeOfStatus(status: int, header: HeaderLookup, wallNow: float) -> Outcome:
    """
    The verdict on a response, from its status line and headers alone.

    A 2xx is only provisionally a success: a stream can still break.

    @param wallNow: The wall-clock time (C{time.time()}), for reset
        timestamps.
    """
    if 200 <= status < 300:
        return Outcome(Verdict.SUCCESS, f"HTTP {status}")
    if status >= 500:
        name = "overloaded" if status == 529 else "server error"
        return Outcome(Verdict.FAILURE, f"HTTP {status} ({name})")
    if status in _FAILING_CLIENT_STATUSES:
        reason = f"HTTP {status} ({_FAILING_CLIENT_STATUSES[status]})"
        if status == 429:
            return Outcome(Verdict.FAILURE, reason, rateLimitReset(header, wallNow))
        return Outcome(Verdict.FAILURE, reason)
    return Outcome(Verdict.NEUTRAL, f"HTTP {status}")


def rateLimitReset(header: HeaderLookup, wallNow: float) -> float | None:
    """
    Seconds until a rate limit resets, if the response says: C{retry-after-ms},
    C{retry-after} (seconds or an HTTP date), or else Anthropic's
    C{anthropic-ratelimit-*-reset} timestamps (the exhausted limits', or the
    latest when none shows as exhausted).
    """
    milliseconds = _number(header("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    retryAfter = header("retry-after")
    if retryAfter is not None:
        seconds = _number(retryAfter)
        if seconds is not None:
            return seconds
        when = _httpDate(retryAfter)
        if when is not None:
            return max(0.0, when - wallNow)
    exhausted: list[float] = []
    every: list[float] = []
    for family in _RATE_LIMIT_FAMILIES:
        reset = _rfc3339(header(f"anthropic-ratelimit-{family}-reset"))
        if reset is None:
            continue
        every.append(reset)
        if _number(header(f"anthropic-ratelimit-{family}-remaining")) == 0:
            exhausted.append(reset)
    chosen = exhausted or every
    if not chosen:
        return None
    return max(0.0, max(chosen) - wallNow)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _httpDate(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _rfc3339(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()
