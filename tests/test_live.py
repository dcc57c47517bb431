"""
Tests for L{ccrouter.live}: choosing the mode, taking and refusing configs,
and breaker bookkeeping.  No reactor; the clock is a L{task.Clock}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ccrouter.breaker import BreakerBoard, BreakerPolicy, Outcome, State, Verdict
from ccrouter.config import parseConfig
from ccrouter.live import LiveState, ModeSource
from ccrouter.state import decodeInto, encodeBoard

CONFIG = """
default_mode: claude
modes:
  antigravity: []
  claude: []
  auto: {failover: [antigravity, claude]}
breaker: {failures: 1, cooldowns: [10s]}
"""
FAILED = Outcome(Verdict.FAILURE, "HTTP 529 (overloaded)")
POLICY = BreakerPolicy(failures=1, cooldowns=(600.0,))
WALL = 1795262400.0


class LiveCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.saved: list[list[str]] = []
        self.live = LiveState(
            parseConfig(CONFIG, "/cfg/config.yaml", {}, "/cfg"),
            now=self.clock.seconds,
            wallNow=lambda: 1795262400.0 + self.clock.seconds(),
            configPath="/cfg/config.yaml",
            saveBreakers=self.save,
        )
        self.logged: list[str] = []

        def observe(event: LogEvent) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def save(self, path: str, board: BreakerBoard) -> None:
        self.assertEqual(path, "/cfg/breakers.json")
        self.saved.append(board.names())


class ModeTests(LiveCase):
    def test_defaultUntilTheFileSaysOtherwise(self) -> None:
        live = self.live
        self.assertEqual(
            (live.modeName, live.modeSource), ("claude", ModeSource.DEFAULT)
        )
        live.applyModeFile(b"auto\n")
        self.assertEqual((live.modeName, live.modeSource), ("auto", ModeSource.FILE))
        self.assertEqual(live.mode.name, "auto")
        live.applyModeFile(None)
        self.assertEqual(
            (live.modeName, live.modeSource), ("claude", ModeSource.DEFAULT)
        )

    def test_garbageKeepsTheModeAndLogsOnce(self) -> None:
        """
        C7: a mode file naming no mode keeps the mode in force, says why, and
        logs it once however often it is read.
        """
        live = self.live
        live.applyModeFile(b"auto")
        live.applyModeFile(b"nonsense")
        live.applyModeFile(b"nonsense")
        self.assertEqual((live.modeName, live.modeSource), ("auto", ModeSource.FILE))
        self.assertEqual(
            live.modeProblem,
            "names unknown mode 'nonsense'; modes: antigravity, claude, auto",
        )
        warnings = [line for line in self.logged if "nonsense" in line]
        self.assertEqual(len(warnings), 1, warnings)
        live.applyModeFile(b"antigravity")
        self.assertIsNone(live.modeProblem)
        self.assertEqual(live.modeName, "antigravity")

    def test_newConfigWithoutTheCurrentMode(self) -> None:
        """
        A reload that removes the mode in use falls back to the new default
        and says why; one that adds the mode the file names switches to it.
        """
        live = self.live
        live.applyModeFile(b"auto")
        live.applyConfig(parseConfig("modes:\n  zai: []\n", "c.yaml", {}, "/cfg"))
        self.assertEqual(live.modeName, "zai")
        self.assertEqual(live.modeProblem, "names unknown mode 'auto'; modes: zai")
        live.applyConfig(parseConfig(CONFIG, "c.yaml", {}, "/cfg"))
        self.assertEqual(live.modeName, "auto")
        self.assertIsNone(live.modeProblem)


class ConfigTests(LiveCase):
    def test_refusalKeepsTheConfigAndLogsOnce(self) -> None:
        """
        C1: a refused reload keeps the config in force and is logged once while
        the problem stays the same.
        """
        live = self.live
        config = live.config
        live.configRefused("c.yaml:3: routes: bad")
        live.configRefused("c.yaml:3: routes: bad")
        self.assertIs(live.config, config)
        assert live.lastReload is not None
        self.assertEqual(live.lastReload.error, "c.yaml:3: routes: bad")
        self.assertEqual(len([x for x in self.logged if "routes: bad" in x]), 1)
        live.configRefused("c.yaml:4: other")
        self.assertEqual(len([x for x in self.logged if "c.yaml:" in x]), 2)

    def test_reloadKeepsBreakersOfKeptTargets(self) -> None:
        """
        C9: a reload keeps the breaker state of a target that is still
        configured.
        """
        live = self.live
        live.record("antigravity", FAILED, live.begin("antigravity"))
        breaker = live.breaker("antigravity")
        assert breaker is not None
        self.assertEqual(breaker.state(self.clock.seconds()), State.OPEN)
        live.applyConfig(parseConfig(CONFIG, "c.yaml", {}, "/cfg"))
        self.assertIs(live.breaker("antigravity"), breaker)
        assert live.lastReload is not None
        self.assertIsNone(live.lastReload.error)


class BreakerTests(LiveCase):
    def test_transitionsAreLoggedAndSaved(self) -> None:
        live = self.live
        live.record("antigravity", FAILED, live.begin("antigravity"))
        self.assertEqual(self.saved, [["antigravity", "claude"]])
        self.assertTrue(
            any(
                "antigravity taken out of rotation for 0.2 min" in x
                for x in self.logged
            ),
            self.logged,
        )
        self.clock.advance(10)
        probe = live.begin("antigravity")
        self.assertTrue(probe)
        live.record("antigravity", Outcome(Verdict.SUCCESS, "ok"), probe)
        self.assertEqual(len(self.saved), 2)
        self.assertTrue(any("healthy again" in x for x in self.logged))

    def test_unknownTargetsIgnored(self) -> None:
        live = self.live
        self.assertFalse(live.begin(None))
        live.record(None, FAILED, None)
        live.record("gone", FAILED, None)
        self.assertEqual(self.saved, [])

    def test_saveFailureIsLogged(self) -> None:
        def failingSave(path: str, board: BreakerBoard) -> None:
            raise PermissionError(13, "Permission denied")

        self.live._saveBreakers = failingSave
        self.live.record("claude", FAILED, None)
        self.assertTrue(
            any(
                "cannot save breaker state" in x and "Permission denied" in x
                for x in self.logged
            )
        )


class ClockJumpTests(SynchronousTestCase):
    """
    The breakers run on the monotonic clock; the wall clock only dates
    reloads, rate-limit resets and the saved state.
    """

    def trace(self, jumps: list[float]) -> list[tuple[State, float, int]]:
        """
        The breaker of C{antigravity} through a fixed run of requests seven
        seconds apart, the wall clock moved by C{jumps[i]} before the
        C{i}th; as (state, cooldown left, openings) after each.
        """
        monotonic = Clock()
        wall = [1795262400.0]
        live = LiveState(
            parseConfig(
                CONFIG.replace("cooldowns: [10s]", "cooldowns: [10s, 20s]"),
                "c.yaml",
                {},
            ),
            now=monotonic.seconds,
            wallNow=lambda: wall[0] + monotonic.seconds(),
        )
        outcomes = [FAILED, FAILED, Outcome(Verdict.SUCCESS, "ok"), FAILED] * 4
        trace = []
        for jump, outcome in zip(jumps, outcomes, strict=True):
            wall[0] += jump
            breaker = live.breaker("antigravity")
            assert breaker is not None
            if breaker.available(monotonic.seconds()):
                live.record("antigravity", outcome, live.begin("antigravity"))
            monotonic.advance(7)
            report = breaker.report(monotonic.seconds())
            trace.append((report.state, report.cooldownRemaining, report.opens))
        return trace

    def test_wallClockJumps(self) -> None:
        """
        F25: the wall clock moved two hours back and forth between requests
        leaves the breaker's trace exactly as it is with a steady clock: no
        cooldown ends early or lasts for ever.
        """
        steady = self.trace([0.0] * 16)
        self.assertEqual(
            {state for state, _, _ in steady},
            {State.CLOSED, State.OPEN, State.HALF_OPEN},
        )
        hours = 3600.0
        jumpy = self.trace([2 * hours, -2 * hours, -2 * hours, 2 * hours] * 4)
        self.assertEqual(jumpy, steady)

    def test_savedStateAcrossAClockJump(self) -> None:
        """
        F25: breaker state saved, then restored by a new process whose wall
        clock was set back two hours keeps the cooldown it had (not two hours
        more); set forward two hours, the cooldown is over, not stuck.
        """
        saved = BreakerBoard(POLICY)
        saved.reconcile(["a"], POLICY, 0.0)
        breaker = saved.get("a")
        assert breaker is not None
        breaker.record(FAILED, 100.0, None)
        content = encodeBoard(saved, now=100.0, wallNow=WALL)
        for wallNow, state, remaining in [
            (WALL - 7200.0, State.OPEN, 600.0),
            (WALL + 7200.0, State.HALF_OPEN, 0.0),
        ]:
            restored = BreakerBoard(POLICY)
            restored.reconcile(["a"], POLICY, 5.0)
            decodeInto(content, restored, now=5.0, wallNow=wallNow)
            again = restored.get("a")
            assert again is not None
            report = again.report(5.0)
            self.assertEqual(
                (report.state, report.cooldownRemaining), (state, remaining)
            )
