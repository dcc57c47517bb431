# -*- test-case-name: tests.test_breaker -*-
"""
Circuit breakers, one per failover target: consecutive failures are
counted, enough of them take the target out of rotation for the next
cooldown of the schedule, and when the cooldown ends exactly one real
request probes it before traffic returns.

Pure: every method is given the current time (monotonic seconds), so tests
walk a four-hour schedule in microseconds and a wall-clock jump cannot end a
cooldown early.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import frozen

DEFAULT_COOLDOWNS = (30 * 60.0, 60 * 60.0, 120 * 60.0, 240 * 60.0)


class Verdict(enum.Enum):
    """
    What one finished attempt says about its target's health.
    """

    #: A 2xx that was relayed to its end: resets the count, closes the breaker.
    SUCCESS = "success"
    #: Connection, TLS or DNS error, 429/401/402/403/5xx, a broken stream.
    FAILURE = "failure"
    #: A connect, response-header or idle timeout.
    TIMEOUT = "timeout"
    #: The request's own fault (400, 404, 413, 422...) or a client that left:
    #: says nothing about the target.
    NEUTRAL = "neutral"


@frozen
class Outcome:
    """
    @ivar reason: Short and secret-free, for logs and C{/health}.
    @ivar resetAfter: For a rate limit that said when it resets: seconds from
        now until then.
    """

    verdict: Verdict
    reason: str
    resetAfter: float | None = None

    @property
    def isFailure(self) -> bool:
        return self.verdict in (Verdict.FAILURE, Verdict.TIMEOUT)


#: The shortest time a rate limit takes a target out of rotation, however
#: soon it says it resets (C{retry-after: 0}, or a reset time a skewed clock
#: already sees in the past).
MIN_RATE_LIMIT_WAIT = 1.0

SUCCEEDED = Outcome(Verdict.SUCCESS, "ok")
CLIENT_LEFT = Outcome(Verdict.NEUTRAL, "the client disconnected")


@frozen
class BreakerPolicy:
    """
    @ivar failures: Consecutive failures of any kind that open the breaker.
    @ivar timeouts: Consecutive timeouts that open it.
    @ivar cooldowns: The schedule: the Nth opening lasts C{cooldowns[N]},
        and every opening after the last step lasts as long as the last step.
    """

    failures: int = 3
    timeouts: int = 2
    cooldowns: tuple[float, ...] = DEFAULT_COOLDOWNS

    @property
    def longestCooldown(self) -> float:
        return max(self.cooldowns)


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CooldownSource(enum.Enum):
    SCHEDULE = "schedule"
    #: The upstream said when its rate limit resets.
    RATE_LIMIT = "rate-limit-reset"


@frozen
class Ticket:
    """
    Given to an attempt when it starts, and handed back with its outcome.

    @ivar probe: Whether it is the one request probing a half-open breaker.
    @ivar opening: How many times the breaker had opened when it started: an
        attempt that began before the latest opening says nothing about the
        state that opening started.
    """

    probe: bool
    opening: int


@frozen
class FailureRecord:
    reason: str
    at: float


@frozen
class Transition:
    """
    A change worth logging and saving: the breaker opened or closed.

    @ivar cooldown: For an opening, how long it lasts.
    """

    opened: bool
    cooldown: float
    source: CooldownSource | None
    reason: str


@frozen
class BreakerReport:
    """
    A breaker as C{/health} shows it, at one moment.
    """

    state: State
    consecutiveFailures: int
    consecutiveTimeouts: int
    cooldownRemaining: float
    cooldownSource: CooldownSource | None
    opens: int
    nextCooldown: float
    lastFailure: FailureRecord | None
    requests: int
    failures: int
    probing: bool


class Breaker:
    """
    The health of one target.  Not thread-safe; everything happens on the
    reactor thread.
    """

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self._consecutiveFailures = 0
        self._consecutiveTimeouts = 0
        #: When the current cooldown ends; L{None} while closed.
        self._openUntil: float | None = None
        self._source: CooldownSource | None = None
        #: Index into the schedule of the next scheduled opening.
        self._step = 0
        self._lastCooldown = 0.0
        #: When the breaker last closed after being open.
        self._closedAt: float | None = None
        self._opens = 0
        self._probing = False
        self._lastFailure: FailureRecord | None = None
        self._requests = 0
        self._failures = 0

    def adopt(self, policy: BreakerPolicy, now: float) -> None:
        """
        Go by a new policy from now on.
        """
        self.policy = policy
        if self._openUntil is not None:
            self._openUntil = min(self._openUntil, now + policy.longestCooldown)

    def state(self, now: float) -> State:
        if self._openUntil is None:
            return State.CLOSED
        if now < self._openUntil:
            return State.OPEN
        return State.HALF_OPEN

    def available(self, now: float) -> bool:
        """
        Whether a request may be sent here by choice: closed, or half-open
        with nobody probing yet.
        """
        state = self.state(now)
        return state is State.CLOSED or (state is State.HALF_OPEN and not self._probing)

    @property
    def cooldownEnd(self) -> float:
        """
        When the cooldown ends (or ended); minus infinity while closed.
        """
        return float("-inf") if self._openUntil is None else self._openUntil

    def begin(self, now: float) -> Ticket:
        """
        A request is being sent here.

        @return: What to pass back to L{record} with its outcome.
        """
        self._requests += 1
        probe = self.state(now) is State.HALF_OPEN and not self._probing
        if probe:
            self._probing = True
        return Ticket(probe, self._opens)

    def record(
        self, outcome: Outcome, now: float, ticket: Ticket | None = None
    ) -> Transition | None:
        """
        Take one attempt's outcome into account.

        @param ticket: What L{begin} returned for that attempt; L{None} for
            one that began just now.
        @return: The transition it caused, if any.
        """
        if ticket is None:
            ticket = Ticket(False, self._opens)
        if ticket.probe:
            self._probing = False
        verdict = outcome.verdict
        if verdict is Verdict.NEUTRAL:
            return None
        if ticket.opening != self._opens and not ticket.probe:
            # Sent before the breaker last opened: it only adds to the
            # counters, the opening already took such failures into account.
            if verdict is not Verdict.SUCCESS:
                self._failures += 1
                self._lastFailure = FailureRecord(outcome.reason, now)
            return None
        if verdict is Verdict.SUCCESS:
            self._consecutiveFailures = 0
            self._consecutiveTimeouts = 0
            if self._openUntil is None:
                return None
            self._openUntil = None
            self._source = None
            self._closedAt = now
            return Transition(False, 0.0, None, outcome.reason)
        self._failures += 1
        self._lastFailure = FailureRecord(outcome.reason, now)
        self._consecutiveFailures += 1
        if verdict is Verdict.TIMEOUT:
            self._consecutiveTimeouts += 1
        else:
            self._consecutiveTimeouts = 0
        state = self.state(now)
        if outcome.resetAfter is not None:
            wait = max(
                MIN_RATE_LIMIT_WAIT,
                min(outcome.resetAfter, self.policy.longestCooldown),
            )
            if state is State.OPEN:
                assert self._openUntil is not None
                if now + wait > self._openUntil:
                    # Already out of rotation: only the end moves.
                    self._openUntil = now + wait
                    self._source = CooldownSource.RATE_LIMIT
                return None
            return self._open(now, wait, CooldownSource.RATE_LIMIT, outcome.reason)
        if state is State.OPEN:
            # Tried although open (every target was): already out of rotation.
            return None
        if state is State.HALF_OPEN and self._probing and not ticket.probe:
            # Tried beside the probe because nothing else was left: the
            # probe's own outcome decides.
            return None
        if state is State.HALF_OPEN or (
            self._consecutiveFailures >= self.policy.failures
            or self._consecutiveTimeouts >= self.policy.timeouts
        ):
            return self._openOnSchedule(now, outcome.reason)
        return None

    def _openOnSchedule(self, now: float, reason: str) -> Transition:
        # Only an opening from closed can follow a healthy spell; a failed
        # probe always moves on to the next step.
        if (
            self._openUntil is None
            and self._closedAt is not None
            and now - self._closedAt >= self._lastCooldown
        ):
            self._step = 0
        cooldown = self._scheduled(self._step)
        self._step += 1
        self._lastCooldown = cooldown
        return self._open(now, cooldown, CooldownSource.SCHEDULE, reason)

    def _open(
        self, now: float, cooldown: float, source: CooldownSource, reason: str
    ) -> Transition:
        self._openUntil = now + cooldown
        self._source = source
        self._opens += 1
        self._consecutiveFailures = 0
        self._consecutiveTimeouts = 0
        return Transition(True, cooldown, source, reason)

    def _scheduled(self, step: int) -> float:
        cooldowns = self.policy.cooldowns
        return cooldowns[min(step, len(cooldowns) - 1)]

    def _nextCooldown(self, now: float) -> float:
        step = self._step
        if (
            self._openUntil is None
            and self._closedAt is not None
            and now - self._closedAt >= self._lastCooldown
        ):
            step = 0
        return self._scheduled(step)

    def report(self, now: float) -> BreakerReport:
        remaining = 0.0 if self._openUntil is None else max(0.0, self._openUntil - now)
        return BreakerReport(
            state=self.state(now),
            consecutiveFailures=self._consecutiveFailures,
            consecutiveTimeouts=self._consecutiveTimeouts,
            cooldownRemaining=remaining,
            cooldownSource=self._source,
            opens=self._opens,
            nextCooldown=self._nextCooldown(now),
            lastFailure=self._lastFailure,
            requests=self._requests,
            failures=self._failures,
            probing=self._probing,
        )

    # Saving across restarts.  Times are stored relative to "now" so that a
    # monotonic clock, which restarts with the process, can be used.

    def export(self, now: float) -> dict[str, Any]:
        return {
            "open_for": None if self._openUntil is None else self._openUntil - now,
            "source": None if self._source is None else self._source.value,
            "step": self._step,
            "last_cooldown": self._lastCooldown,
            "closed_ago": None if self._closedAt is None else now - self._closedAt,
            "opens": self._opens,
            "last_failure": (
                None
                if self._lastFailure is None
                else {
                    "reason": self._lastFailure.reason,
                    "ago": now - self._lastFailure.at,
                }
            ),
        }

    def restore(self, saved: dict[str, Any], now: float, elapsed: float) -> None:
        """
        Take back what L{export} gave, C{elapsed} seconds later.

        @raise ValueError: If C{saved} is not something L{export} wrote.
        """
        try:
            openFor = _optionalNumber(saved["open_for"])
            source = saved["source"]
            step = _count(saved["step"])
            lastCooldown = max(0.0, _number(saved["last_cooldown"]))
            closedAgo = _optionalNumber(saved["closed_ago"])
            if closedAgo is not None:
                closedAgo = max(0.0, closedAgo)
            opens = _count(saved["opens"])
            failure = saved["last_failure"]
            lastFailure = (
                None
                if failure is None
                else FailureRecord(
                    str(failure["reason"])[:_MAX_REASON],
                    now - max(0.0, _number(failure["ago"])) - elapsed,
                )
            )
            cooldownSource = None if source is None else CooldownSource(source)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a saved breaker: {e}") from None
        if openFor is not None:
            # Never longer than the schedule allows now (it may have shrunk).
            openFor = min(openFor, self.policy.longestCooldown)
        self._openUntil = None if openFor is None else now + openFor - elapsed
        self._source = cooldownSource if openFor is not None else None
        self._step = step
        self._lastCooldown = lastCooldown
        self._closedAt = None if closedAgo is None else now - closedAgo - elapsed
        self._opens = opens
        self._lastFailure = lastFailure


_MAX_REASON = 500
#: Saved times beyond this (a century) are not something ccrouter wrote.
_MAX_SECONDS = 100 * 365 * 86400.0


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, found {type(value).__name__}")
    number = float(value)
    if not abs(number) <= _MAX_SECONDS:
        raise ValueError(f"{number} is out of range")
    return number


def _optionalNumber(value: object) -> float | None:
    return None if value is None else _number(value)


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("expected a count")
    return value


class BreakerBoard:
    """
    The breakers of every failover target, by target name.
    """

    def __init__(self, policy: BreakerPolicy) -> None:
        self._policy = policy
        self._breakers: dict[str, Breaker] = {}

    def reconcile(
        self, names: Iterable[str], policy: BreakerPolicy, now: float
    ) -> None:
        """
        Follow a new config: targets that stay keep their state (under the
        new policy, so a cooldown never outlasts its new longest step), new
        ones start closed, dropped ones are forgotten.
        """
        self._policy = policy
        kept: dict[str, Breaker] = {}
        for name in names:
            breaker = self._breakers.get(name) or Breaker(policy)
            breaker.adopt(policy, now)
            kept[name] = breaker
        self._breakers = kept

    def get(self, name: str | None) -> Breaker | None:
        return None if name is None else self._breakers.get(name)

    def names(self) -> list[str]:
        return list(self._breakers)

    def pick(self, targets: Sequence[str | None], now: float) -> int:
        """
        Which of C{targets} (in order of preference, at least one) to try
        next: the first one available, or, when none is, the one whose
        cooldown ends first, rather than refusing service.
        """
        breakers = [self.get(name) for name in targets]
        for index, breaker in enumerate(breakers):
            if breaker is None or breaker.available(now):
                return index
        ends = [b.cooldownEnd if b is not None else float("-inf") for b in breakers]
        return ends.index(min(ends))
