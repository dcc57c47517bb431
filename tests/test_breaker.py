"""
Tests for L{ccrouter.breaker}: the cooldown schedule, thresholds, the
half-open probe and saving state.  No reactor: time is a number the test
moves.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.breaker import (
    SUCCEEDED,
    Breaker,
    BreakerBoard,
    BreakerPolicy,
    CooldownSource,
    Outcome,
    State,
    Ticket,
    Verdict,
)

MINUTE = 60.0
FAILED = Outcome(Verdict.FAILURE, "HTTP 529 (overloaded)")
TIMED_OUT = Outcome(Verdict.TIMEOUT, "no response within 60 s")
NEUTRAL = Outcome(Verdict.NEUTRAL, "HTTP 400")


class Driver:
    """
    A breaker and the time, with one request at a time.
    """

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.now = 1000.0
        self.breaker = Breaker(policy or BreakerPolicy())

    def request(self, outcome: Outcome) -> bool:
        """
        Send one request (if the breaker lets one through by choice) and
        record its outcome.  Returns whether it was sent.
        """
        if not self.breaker.available(self.now):
            return False
        probe = self.breaker.begin(self.now)
        self.breaker.record(outcome, self.now, probe)
        return True

    def openFor(self) -> float:
        return self.breaker.report(self.now).cooldownRemaining

    def state(self) -> State:
        return self.breaker.state(self.now)


class ThresholdTests(SynchronousTestCase):
    def test_threeFailuresOpen(self) -> None:
        """
        F11: three consecutive qualifying failures open the breaker for the
        first cooldown, 30 minutes.
        """
        driver = Driver()
        driver.request(FAILED)
        driver.request(FAILED)
        self.assertEqual(driver.state(), State.CLOSED)
        driver.request(FAILED)
        self.assertEqual(driver.state(), State.OPEN)
        self.assertEqual(driver.openFor(), 30 * MINUTE)

    def test_twoTimeoutsOpen(self) -> None:
        """
        F11: two consecutive timeouts are enough to open it.
        """
        driver = Driver()
        driver.request(TIMED_OUT)
        self.assertEqual(driver.state(), State.CLOSED)
        driver.request(TIMED_OUT)
        self.assertEqual(driver.state(), State.OPEN)

    def test_timeoutsMustBeConsecutive(self) -> None:
        """
        F11: a timeout, another failure, a timeout: two failures in a row but
        not two timeouts in a row; a third failure of any kind opens.
        """
        driver = Driver()
        for outcome in (TIMED_OUT, FAILED):
            driver.request(outcome)
        driver.request(TIMED_OUT)
        self.assertEqual(driver.state(), State.OPEN)
        driver = Driver(BreakerPolicy(failures=5, timeouts=2))
        for outcome in (TIMED_OUT, FAILED, TIMED_OUT, FAILED):
            driver.request(outcome)
        self.assertEqual(driver.state(), State.CLOSED)

    def test_successResets(self) -> None:
        """
        F11: a success resets the count of consecutive failures; the totals go
        on.
        """
        driver = Driver()
        for outcome in (FAILED, FAILED, SUCCEEDED, FAILED, FAILED):
            driver.request(outcome)
        self.assertEqual(driver.state(), State.CLOSED)
        report = driver.breaker.report(driver.now)
        self.assertEqual(report.consecutiveFailures, 2)
        self.assertEqual(report.failures, 4)
        self.assertEqual(report.requests, 5)

    def test_neutralOutcomesDoNotCount(self) -> None:
        """
        F9, F11: the request's own faults neither count nor reset: 400s between
        failures leave the count where it was.
        """
        driver = Driver()
        for outcome in [FAILED, NEUTRAL, FAILED] + [NEUTRAL] * 100:
            driver.request(outcome)
        self.assertEqual(driver.state(), State.CLOSED)
        driver.request(FAILED)
        self.assertEqual(driver.state(), State.OPEN)


class ScheduleTests(SynchronousTestCase):
    def openIt(self, driver: Driver) -> float:
        for _ in range(3):
            driver.request(FAILED)
        self.assertEqual(driver.state(), State.OPEN)
        return driver.openFor()

    def test_noTrafficWhileOpen(self) -> None:
        """
        F11: no request is let through by choice while the breaker is open, up
        to the last moment of its cooldown.
        """
        driver = Driver()
        self.openIt(driver)
        driver.now += 30 * MINUTE - 0.001
        self.assertFalse(driver.request(SUCCEEDED))
        self.assertEqual(driver.state(), State.OPEN)

    def test_escalatesThenStaysAtTheLongest(self) -> None:
        """
        F11: each failed probe re-opens with the next step: 30, 60, 120, 240 and
        then 240 minutes again.
        """
        driver = Driver()
        cooldowns = [self.openIt(driver)]
        for _ in range(5):
            driver.now += cooldowns[-1]
            self.assertEqual(driver.state(), State.HALF_OPEN)
            self.assertTrue(driver.request(FAILED))
            cooldowns.append(driver.openFor())
        self.assertEqual([c / MINUTE for c in cooldowns], [30, 60, 120, 240, 240, 240])
        self.assertEqual(driver.breaker.report(driver.now).opens, 6)

    def test_exactlyOneProbe(self) -> None:
        """
        F11: half-open lets one request through; the next must wait for its
        outcome.
        """
        driver = Driver()
        self.openIt(driver)
        driver.now += 30 * MINUTE
        breaker = driver.breaker
        self.assertTrue(breaker.available(driver.now))
        probe = breaker.begin(driver.now)
        self.assertTrue(probe.probe)
        self.assertFalse(breaker.available(driver.now))
        self.assertFalse(breaker.begin(driver.now).probe)
        breaker.record(SUCCEEDED, driver.now, probe)
        self.assertEqual(driver.state(), State.CLOSED)

    def test_inconclusiveProbeFreesTheSlot(self) -> None:
        """
        F11: a probe whose client left (or whose request was bad) says nothing:
        the next request probes.
        """
        driver = Driver()
        self.openIt(driver)
        driver.now += 30 * MINUTE
        driver.request(NEUTRAL)
        self.assertEqual(driver.state(), State.HALF_OPEN)
        self.assertTrue(driver.breaker.available(driver.now))

    def test_escalationResetsAfterAHealthyCooldown(self) -> None:
        """
        F11: closed for as long as the last cooldown, the next opening starts
        the schedule again; closed for less, it goes on escalating.
        """
        driver = Driver()
        self.openIt(driver)
        driver.now += 30 * MINUTE
        driver.request(FAILED)
        self.assertEqual(driver.openFor(), 60 * MINUTE)
        driver.now += 60 * MINUTE
        driver.request(SUCCEEDED)
        self.assertEqual(driver.state(), State.CLOSED)
        driver.now += 59 * MINUTE
        self.assertEqual(driver.breaker.report(driver.now).nextCooldown, 120 * MINUTE)
        self.assertEqual(self.openIt(driver), 120 * MINUTE)
        driver.now += 120 * MINUTE
        driver.request(SUCCEEDED)
        driver.now += 120 * MINUTE
        self.assertEqual(driver.breaker.report(driver.now).nextCooldown, 30 * MINUTE)
        self.assertEqual(self.openIt(driver), 30 * MINUTE)

    def test_failedProbeEscalatesAfterAnEarlierClose(self) -> None:
        """
        F11: a breaker that closed once and opened again does not take the time
        spent open for a healthy spell: its failed probe moves on to the next
        step.
        """
        driver = Driver()
        self.openIt(driver)
        driver.now += 30 * MINUTE
        driver.request(SUCCEEDED)
        driver.now += MINUTE
        self.assertEqual(self.openIt(driver), 60 * MINUTE)
        driver.now += 60 * MINUTE
        self.assertEqual(driver.breaker.report(driver.now).nextCooldown, 120 * MINUTE)
        driver.request(FAILED)
        self.assertEqual(driver.openFor(), 120 * MINUTE)

    def test_failureBesideTheProbeLeavesItToTheProbe(self) -> None:
        """
        F11: a request sent to a half-open target while its probe is out (every
        other target was worse) does not decide the breaker: the probe does.
        """
        driver = Driver()
        self.openIt(driver)
        driver.now += 30 * MINUTE
        breaker = driver.breaker
        probe = breaker.begin(driver.now)
        other = breaker.begin(driver.now)
        self.assertFalse(other.probe)
        self.assertIsNone(breaker.record(FAILED, driver.now, other))
        self.assertEqual(driver.state(), State.HALF_OPEN)
        breaker.record(SUCCEEDED, driver.now, probe)
        report = breaker.report(driver.now)
        self.assertEqual((report.state, report.opens), (State.CLOSED, 1))

    def test_failureWhileOpenDoesNotEscalate(self) -> None:
        """
        F11: when every target is open they are tried anyway; a failure then
        leaves the cooldown as it was.
        """
        driver = Driver()
        self.openIt(driver)
        breaker = driver.breaker
        driver.now += MINUTE
        breaker.record(FAILED, driver.now, breaker.begin(driver.now))
        report = breaker.report(driver.now)
        self.assertEqual(report.cooldownRemaining, 29 * MINUTE)
        self.assertEqual(report.opens, 1)
        self.assertEqual(report.nextCooldown, 60 * MINUTE)

    def test_successWhileOpenCloses(self) -> None:
        """
        F11: a success, even from a request sent while the breaker was open
        (every target was), closes it.
        """
        driver = Driver()
        self.openIt(driver)
        breaker = driver.breaker
        transition = breaker.record(SUCCEEDED, driver.now, breaker.begin(driver.now))
        assert transition is not None
        self.assertFalse(transition.opened)
        self.assertEqual(driver.state(), State.CLOSED)


class RateLimitTests(SynchronousTestCase):
    def test_resetTimeOpensAtOnce(self) -> None:
        """
        F10: one 429 that says when the limit resets opens until then, without
        using a step of the schedule.
        """
        driver = Driver()
        driver.request(Outcome(Verdict.FAILURE, "HTTP 429", resetAfter=90.0))
        report = driver.breaker.report(driver.now)
        self.assertEqual(report.state, State.OPEN)
        self.assertEqual(report.cooldownRemaining, 90.0)
        self.assertEqual(report.cooldownSource, CooldownSource.RATE_LIMIT)
        self.assertEqual(report.nextCooldown, 30 * MINUTE)

    def test_resetTimeCapped(self) -> None:
        """
        F10: a reset time beyond the longest cooldown is capped at it (240
        minutes).
        """
        driver = Driver()
        driver.request(Outcome(Verdict.FAILURE, "HTTP 429", resetAfter=86400.0))
        self.assertEqual(driver.openFor(), 240 * MINUTE)

    def test_immediateResetStillOpensBriefly(self) -> None:
        """
        F10: C{retry-after: 0} (or a reset a skewed clock sees as past) takes
        the target out for a second, and never moves along the schedule, not
        even from a probe.
        """
        driver = Driver()
        driver.request(Outcome(Verdict.FAILURE, "HTTP 429", resetAfter=0.0))
        self.assertEqual(driver.openFor(), 1.0)
        driver.now += 1.0
        self.assertTrue(driver.request(Outcome(Verdict.FAILURE, "429", resetAfter=0.5)))
        report = driver.breaker.report(driver.now)
        self.assertEqual((report.cooldownRemaining, report.nextCooldown), (1.0, 1800.0))

    def test_attemptFromBeforeTheOpeningIsNotAProbe(self) -> None:
        """
        F10, F11: a request that started while the breaker was closed and fails
        after a rate limit opened (and ended) says nothing about the new state:
        it does not escalate to the schedule.
        """
        driver = Driver()
        breaker = driver.breaker
        early = breaker.begin(driver.now)
        breaker.record(Outcome(Verdict.FAILURE, "429", resetAfter=2.0), driver.now)
        driver.now += 3.0
        self.assertEqual(driver.state(), State.HALF_OPEN)
        self.assertIsNone(breaker.record(FAILED, driver.now, early))
        self.assertEqual(driver.state(), State.HALF_OPEN)
        self.assertEqual(breaker.report(driver.now).failures, 2)

    def test_laterResetExtendsAnOpenBreaker(self) -> None:
        """
        F10: a later reset time extends an open breaker's cooldown, an earlier
        one does not shorten it, and neither counts as another opening.
        """
        driver = Driver()
        breaker = driver.breaker
        breaker.record(Outcome(Verdict.FAILURE, "429", resetAfter=60.0), 1000.0, None)
        breaker.record(Outcome(Verdict.FAILURE, "429", resetAfter=10.0), 1000.0, None)
        self.assertEqual(driver.openFor(), 60.0)
        breaker.record(Outcome(Verdict.FAILURE, "429", resetAfter=600.0), 1000.0, None)
        self.assertEqual(driver.openFor(), 600.0)
        self.assertEqual(breaker.report(driver.now).opens, 1)


class PersistenceTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        """
        F22: a breaker restored after a restart keeps its cooldown end, its step
        and its last failure, measured from the new process's clock.
        """
        driver = Driver()
        for _ in range(3):
            driver.request(FAILED)
        saved = driver.breaker.export(driver.now)
        restored = Breaker(BreakerPolicy())
        restored.restore(saved, now=5.0, elapsed=10 * MINUTE)
        report = restored.report(5.0)
        self.assertEqual(report.state, State.OPEN)
        self.assertEqual(report.cooldownRemaining, 20 * MINUTE)
        self.assertEqual(report.nextCooldown, 60 * MINUTE)
        self.assertEqual(report.opens, 1)
        assert report.lastFailure is not None
        self.assertEqual(report.lastFailure.reason, FAILED.reason)
        self.assertEqual(report.lastFailure.at, 5.0 - 10 * MINUTE)
        self.assertEqual(restored.state(5.0 + 20 * MINUTE), State.HALF_OPEN)

    def test_garbageRefused(self) -> None:
        driver = Driver()
        driver.request(FAILED)
        good = driver.breaker.export(driver.now)
        for changes in [
            {"open_for": "x"},
            {"open_for": True},
            {"open_for": float("inf")},
            {"open_for": float("nan")},
            {"step": "1"},
            {"opens": -1},
            {"last_cooldown": 1e300},
            {"source": "whim"},
            {"last_failure": {"reason": "x", "ago": float("inf")}},
        ]:
            with self.assertRaises(ValueError, msg=changes):
                Breaker(BreakerPolicy()).restore({**good, **changes}, 0.0, 0.0)
        with self.assertRaises(ValueError):
            Breaker(BreakerPolicy()).restore({}, 0.0, 0.0)

    def test_restoredCooldownFitsTheCurrentSchedule(self) -> None:
        driver = Driver()
        for _ in range(3):
            driver.request(FAILED)
        saved = driver.breaker.export(driver.now)
        restored = Breaker(BreakerPolicy(cooldowns=(5.0,)))
        restored.restore(saved, 0.0, 0.0)
        self.assertEqual(restored.report(0.0).cooldownRemaining, 5.0)


class BoardTests(SynchronousTestCase):
    def test_pickPrefersAvailableInOrder(self) -> None:
        board = BreakerBoard(BreakerPolicy())
        board.reconcile(["a", "b", "c"], BreakerPolicy(), 0.0)
        self.assertEqual(board.pick(["a", "b", "c"], 0.0), 0)
        a = board.get("a")
        assert a is not None
        a.record(Outcome(Verdict.FAILURE, "429", resetAfter=50.0), 0.0, None)
        self.assertEqual(board.pick(["a", "b", "c"], 0.0), 1)
        self.assertEqual(board.pick(["a", None], 0.0), 1)

    def test_allOpenPicksTheSoonestEnd(self) -> None:
        board = BreakerBoard(BreakerPolicy())
        board.reconcile(["a", "b"], BreakerPolicy(), 0.0)
        for name, seconds in (("a", 500.0), ("b", 100.0)):
            breaker = board.get(name)
            assert breaker is not None
            breaker.record(Outcome(Verdict.FAILURE, "429", resetAfter=seconds), 0.0)
        self.assertEqual(board.pick(["a", "b"], 0.0), 1)
        self.assertEqual(board.pick(["a"], 0.0), 0)

    def test_reconcileKeepsStateOfKeptTargets(self) -> None:
        """
        C9: a reload keeps the breaker (and its state) of every target still
        configured, under the new policy, and drops the others.
        """
        board = BreakerBoard(BreakerPolicy())
        board.reconcile(["a", "b"], BreakerPolicy(), 0.0)
        a = board.get("a")
        newPolicy = BreakerPolicy(failures=1)
        board.reconcile(["a", "c"], newPolicy, 0.0)
        self.assertIs(board.get("a"), a)
        assert a is not None
        self.assertIs(a.policy, newPolicy)
        self.assertIsNone(board.get("b"))
        self.assertEqual(board.names(), ["a", "c"])

    def test_shorterScheduleShortensAnOpenCooldown(self) -> None:
        board = BreakerBoard(BreakerPolicy())
        board.reconcile(["a"], BreakerPolicy(), 0.0)
        a = board.get("a")
        assert a is not None
        for _ in range(3):
            a.record(Outcome(Verdict.FAILURE, "x"), 0.0, None)
        board.reconcile(["a"], BreakerPolicy(cooldowns=(2.0, 4.0)), 1.0)
        self.assertEqual(a.report(1.0).cooldownRemaining, 4.0)


OUTCOMES = st.sampled_from([SUCCEEDED, FAILED, TIMED_OUT, NEUTRAL])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 300 * MINUTE)),
        st.tuples(st.just("begin"), st.just(0.0)),
        st.tuples(st.just("record"), OUTCOMES),
    ),
    max_size=60,
)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(STEPS)
    def test_invariants(self, steps: list[tuple[str, object]]) -> None:
        """
        F11, Z2: over any sequence of requests, outcomes and waits: at most one
        probe is out while half-open, every cooldown is a step of the schedule,
        an open breaker lets nothing through by choice, and a success always
        leaves it closed (unless it was sent before the latest opening).
        """
        policy = BreakerPolicy(cooldowns=(10.0, 20.0, 40.0))
        breaker = Breaker(policy)
        now = 0.0
        inFlight: list[Ticket] = []
        for action, value in steps:
            if action == "advance":
                assert isinstance(value, float)
                now += value
            elif action == "begin":
                if breaker.available(now):
                    inFlight.append(breaker.begin(now))
            elif inFlight:
                assert isinstance(value, Outcome)
                ticket = inFlight.pop(0)
                current = ticket.opening == breaker.report(now).opens
                transition = breaker.record(value, now, ticket)
                if transition is not None and transition.opened:
                    self.assertIn(transition.cooldown, policy.cooldowns)
                if value.verdict is Verdict.SUCCESS and current:
                    self.assertEqual(breaker.state(now), State.CLOSED)
            self.assertLessEqual(sum(ticket.probe for ticket in inFlight), 1)
            if breaker.state(now) is State.OPEN:
                self.assertFalse(breaker.available(now))
