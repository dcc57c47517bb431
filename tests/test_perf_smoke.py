"""
The performance suite (C{benchmarks/perf.py}) at smoke size, so that it
cannot rot: run as a child process (its own mock upstream and C{twistd -n
ccrouter} as grandchildren), it must verify every response, exit 0 and
report a figure for every scenario.  Its timings are not judged here (they
vary with the machine); the full suite is run by hand, see the README.

Beside it, the suite's own checks, in memory: that they pass a whole
stream (direct, or translated by the proxy's real translator) and catch a
changed, lost or cut one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from benchmarks.perfwire import OpenAIStreamEncoder, TextStreamCheck, plainRequest
from benchmarks.wire import Plan, planFromBody
from ccrouter.translate.stream import StreamTranslator
from tests.proxyprocess import REPOSITORY

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test extra
    psutil = None

#: Every scenario and, for each, the metrics that must have a figure
#: through the proxy (the wrk cross-check is optional: it needs Debian's
#: wrk).
EXPECTED = {
    "plain": {
        "c1_p50_ms",
        "c1_p99_ms",
        "c64_p50_ms",
        "c64_p99_ms",
        "c64_rps",
        "c64_connects_per_1000",
    },
    "streams": {"ttfb_p50_ms", "ttfb_p99_ms", "event_p50_ms", "event_p99_ms"},
    "slow": {"ttfb_p50_ms", "ramp_ttfb_p50_ms", "event_p99_ms", "peak_rss_mib"},
    "cpu": {"per_1000_requests_s", "per_1000_events_s"},
    "bodies": {
        "p50_1k_ms",
        "p50_100k_ms",
        "p50_1m_ms",
        "added_100k_over_1k_ms",
        "added_1m_over_1k_ms",
    },
    "translated": {
        "ttfb_p50_ms",
        "event_p50_ms",
        "event_p99_ms",
        "per_1000_events_s",
        "cpu_vs_passthrough",
    },
    "tls": {
        "first_ms",
        "later_p50_ms",
        "plain_p50_ms",
        "reuse_over_plain_ms",
        "handshakes",
        "second_pays_no_handshake",
    },
    "startup": {"health_s", "first_request_s"},
}


class PerfSmokeTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        if psutil is None:
            raise SkipTest("the suite samples the proxy with psutil")
        if not sys.platform.startswith("linux"):
            raise SkipTest("the suite pins processes and counts the Linux way")

    async def runQuick(self) -> tuple[subprocess.CompletedProcess[bytes], Path]:
        out = Path(self.mktemp()).absolute()
        command = [
            sys.executable,
            str(REPOSITORY / "benchmarks" / "perf.py"),
            "--quick",
            "--out",
            str(out),
        ]
        completed = await deferToThread(
            subprocess.run,
            command,
            capture_output=True,
            timeout=180,
            cwd=REPOSITORY,
        )
        return completed, out

    async def test_quick(self) -> None:
        """
        C{perf.py --quick} exits 0 (nothing lost or corrupted), writes
        C{results.md} and a C{results.json} with a figure for every metric
        of every scenario, and verified requests, streams and events.
        """
        completed, out = await self.runQuick()
        stderr = completed.stderr.decode(errors="replace")[-3000:]
        resultsPath = out / "results.json"
        self.assertTrue(resultsPath.exists(), f"no results.json; stderr:\n{stderr}")
        results: dict[str, Any] = json.loads(resultsPath.read_text())
        self.assertEqual(results["correctness"]["problems"], [], stderr)
        self.assertEqual(completed.returncode, 0, stderr)
        self.assertTrue(results["correctness"]["passed"])
        self.assertEqual(results["exit_status"], 0)
        for name in ("requests", "streams", "events"):
            self.assertGreater(results["correctness"][name], 0, name)
        self.assertEqual(results["correctness"]["failed"], 0)
        self.assertEqual(set(results["scenarios"]), set(EXPECTED))
        for scenario, metrics in EXPECTED.items():
            reported = results["scenarios"][scenario]
            self.assertLessEqual(metrics, set(reported), scenario)
            for key in metrics:
                row = reported[key]
                self.assertIsInstance(row["through"], float, f"{scenario} {key}")
                if row["added"] is not None:
                    self.assertIsInstance(row["direct"], float, f"{scenario} {key}")
        table = (out / "results.md").read_text()
        self.assertIn("| scenario | metric | direct | through ccrouter |", table)
        self.assertIn("Machine:", table)
        self.assertIn(results["machine"]["python"], table)


class Names:
    def toOriginal(self, name: str) -> str:
        return name


def openaiStream(plan: Plan) -> list[bytes]:
    """
    The events of the mock's OpenAI-format stream for C{plan}.
    """
    encoder = OpenAIStreamEncoder(plan)
    body = encoder.opening()
    for seq in range(plan.events):
        body += encoder.delta(seq, 1_000_000 + seq)
    body += encoder.closing()
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


def checked(plan: Plan, events: list[bytes]) -> TextStreamCheck:
    check = TextStreamCheck(plan)
    for event in events:
        check.event(event, 2_000_000)
    return check


def translated(events: list[bytes]) -> list[bytes]:
    """
    C{events} through the proxy's own translator, cut where it likes.
    """
    translator = StreamTranslator("perf-openai", Names(), "msg_perf")
    output = b"".join(translator.feed(event) for event in events)
    output += translator.finish()
    return [event + b"\n\n" for event in output.split(b"\n\n") if event]


class CheckTests(SynchronousTestCase):
    plan = Plan(id=7, events=5, spacing=0.02, size=180)

    def test_direct(self) -> None:
        """
        The mock's OpenAI stream, read as it is, passes, with one latency
        per event taken from the send time in its text.
        """
        check = checked(self.plan, openaiStream(self.plan))
        self.assertEqual(check.problems, [])
        self.assertTrue(check.complete)
        self.assertEqual(
            check.latencies, [1_000_000 - seq for seq in range(self.plan.events)]
        )

    def test_translated(self) -> None:
        """
        The same stream translated to Anthropic events by the proxy's
        translator passes too.
        """
        check = checked(self.plan, translated(openaiStream(self.plan)))
        self.assertEqual(check.problems, [])
        self.assertTrue(check.complete)
        self.assertEqual(len(check.latencies), self.plan.events)

    def test_changed(self) -> None:
        """
        One letter changed in one event is caught.
        """
        events = openaiStream(self.plan)
        # events[3] is the third delta (seq 2), whose letter is this one.
        letter = b"abcdefghijklmnopqrstuvwxyz"[(self.plan.id + 2) % 26 :][:1]
        changed = events[3].replace(letter * 3, letter + b"!" + letter, 1)
        self.assertNotEqual(changed, events[3])
        events[3] = changed
        check = checked(self.plan, translated(events))
        self.assertFalse(check.complete)
        self.assertNotEqual(check.problems, [])

    def test_lost(self) -> None:
        """
        A lost event is caught.
        """
        events = openaiStream(self.plan)
        del events[2]
        check = checked(self.plan, translated(events))
        self.assertFalse(check.complete)
        self.assertIn("event 2 arrived where 1 was due", check.problems)

    def test_cut(self) -> None:
        """
        A stream that ends before its end record is not complete.
        """
        events = [*openaiStream(self.plan)[:4], b"data: [DONE]\n\n"]
        check = checked(self.plan, events)
        self.assertFalse(check.complete)
        self.assertIn("the stream ended without its end record", check.problems)

    def test_paddedBody(self) -> None:
        """
        A padded request is exactly as large as asked and still carries its
        plan.
        """
        plan = Plan(id=3, events=0, spacing=0, stream=False)
        for size in (1024, 100_000, 2**20):
            body = plainRequest(plan, size)
            self.assertEqual(len(body), size)
            self.assertEqual(planFromBody(body), plan)
