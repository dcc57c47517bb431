"""
Tests for L{ccrouter.state}: the breaker state file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ccrouter.breaker import BreakerBoard, BreakerPolicy, Outcome, State, Verdict
from ccrouter.state import loadBoard, saveBoard

POLICY = BreakerPolicy(failures=1)


def board(*names: str) -> BreakerBoard:
    result = BreakerBoard(POLICY)
    result.reconcile(names, POLICY, 0.0)
    return result


class StateFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        self.directory = directory
        self.path = str(directory / "breakers.json")

    def test_roundTripAcrossARestart(self) -> None:
        """
        Saved at wall time 1000 (monotonic 50) and loaded by a new process
        at wall time 1100 (monotonic 3): 100 seconds of the cooldown are
        gone.
        """
        before = board("zai", "claude")
        zai = before.get("zai")
        assert zai is not None
        zai.record(Outcome(Verdict.FAILURE, "HTTP 529"), 50.0, None)
        saveBoard(self.path, before, lambda: 50.0, lambda: 1000.0)
        after = board("zai", "claude", "new")
        self.assertEqual(
            sorted(loadBoard(self.path, after, 3.0, 1100.0)), ["claude", "zai"]
        )
        restored = after.get("zai")
        assert restored is not None
        report = restored.report(3.0)
        self.assertEqual(report.state, State.OPEN)
        self.assertEqual(report.cooldownRemaining, 1800.0 - 100.0)
        self.assertEqual([p.name for p in self.directory.iterdir()], ["breakers.json"])

    def test_dropsTargetsNoLongerConfigured(self) -> None:
        saveBoard(self.path, board("old"), lambda: 0.0, lambda: 0.0)
        self.assertEqual(loadBoard(self.path, board("new"), 0.0, 0.0), [])

    def test_missingFileIsNoState(self) -> None:
        self.assertEqual(loadBoard(self.path, board("a"), 0.0, 0.0), [])

    def test_garbageRefusedWhole(self) -> None:
        """
        A damaged file restores nothing, not half of it.
        """
        good = board("a")
        saveBoard(self.path, good, lambda: 0.0, lambda: 0.0)
        document = json.loads(Path(self.path).read_text())
        document["targets"]["b"] = {"open_for": "soon"}
        target = board("a", "b")
        a = target.get("a")
        assert a is not None
        a.record(Outcome(Verdict.FAILURE, "x"), 0.0, None)
        for content in [
            b"\x00\xff",
            b"[]",
            b'{"version": 99}',
            b'{"version": 1, "saved_at": -Infinity, "targets": {}}',
            b'{"version": 1, "saved_at": 1e300, "targets": {}}',
            json.dumps(document).encode(),
        ]:
            Path(self.path).write_bytes(content)
            with self.assertRaises(ValueError):
                loadBoard(self.path, target, 0.0, 0.0)
        self.assertEqual(a.state(0.0), State.OPEN)

    def test_clockSetBackDoesNotStretchTheCooldown(self) -> None:
        before = board("a")
        a = before.get("a")
        assert a is not None
        a.record(Outcome(Verdict.FAILURE, "x"), 0.0, None)
        saveBoard(self.path, before, lambda: 0.0, lambda: 5000.0)
        after = board("a")
        loadBoard(self.path, after, 0.0, 1000.0)
        restored = after.get("a")
        assert restored is not None
        self.assertEqual(restored.report(0.0).cooldownRemaining, 1800.0)

    def test_private(self) -> None:
        """
        S14: the state file is 0600, and a directory it needs is created
        0700, even under C{umask 022}.
        """
        previous = os.umask(0o022)
        self.addCleanup(os.umask, previous)
        path = self.directory / "new" / "breakers.json"
        saveBoard(str(path), board("a"), lambda: 0.0, lambda: 0.0)
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)
        self.assertEqual(path.parent.stat().st_mode & 0o777, 0o700)
        # A state file loosened by hand is tightened by the next save.
        path.chmod(0o644)
        saveBoard(str(path), board("a"), lambda: 0.0, lambda: 0.0)
        self.assertEqual(path.stat().st_mode & 0o777, 0o600)
