"""
C{ccrouter stats} and the recent requests of C{ccrouter status}: the
formatting with canned C{/status/data} documents, and the commands against
a stub proxy on 127.0.0.1 that serves them.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from io import StringIO
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Request

from ccrouter.cli import main
from ccrouter.statscmd import NAME_LIMIT, formatRecent, formatStats
from tests.mockupstream import MockUpstream
from tests.test_end_to_end import freePort

#: What a client may put in a model name to write to the user's terminal:
#: a colour, a bell, a title change, a cursor move, a C1 CSI, a bidi
#: override, a new line.
HOSTILE = "evil\x1b[31mred\x07\x1b]0;pwned\x07\x1b[2J\x9b1m\u202egnp\r\nfake"

UTC = timezone.utc


def contractRequest(**changes: Any) -> dict[str, Any]:
    """
    The recent request of the data contract, with C{changes}.
    """
    entry = {
        "request_id": "ccr_3f9a0c1d2e4b5a6978877665",
        "at": "2026-11-22T09:59:58Z",
        "method": "POST",
        "path": "/v1/messages",
        "client_model": "claude-sonnet-4-5",
        "upstream_model": "glm-4.6",
        "mode": "auto",
        "route": "claude-sonnet-*",
        "target": "zai",
        "attempts": 2,
        "failover_path": ["anthropic", "zai"],
        "status": 200,
        "streamed": True,
        "ttfb_ms": 312.5,
        "duration_ms": 4100.2,
        "bytes_in": 102400,
        "bytes_out": 5120,
        "input_tokens": 1200,
        "output_tokens": 340,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "stop_reason": "end_turn",
        "error": None,
        "client_disconnected": False,
    }
    entry.update(changes)
    return entry


def total(target: Any, model: Any, **counts: Any) -> dict[str, Any]:
    row = {
        "target": target,
        "model": model,
        "requests": 0,
        "errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
    }
    row.update(counts)
    return row


def document(**changes: Any) -> dict[str, Any]:
    """
    A C{/status/data} document: three requests, two totals.
    """
    data: dict[str, Any] = {
        "generated_at": "2026-11-22T10:00:00Z",
        "uptime_seconds": 3600.5,
        "recent": [
            contractRequest(),
            contractRequest(
                at="2026-11-22T09:59:40Z",
                client_model="claude-opus-4-1",
                upstream_model="claude-opus-4-1",
                route=None,
                target="anthropic",
                attempts=1,
                failover_path=["anthropic"],
                status=529,
                ttfb_ms=20.4,
                duration_ms=21.0,
                input_tokens=None,
                output_tokens=None,
                stop_reason=None,
                error="overloaded",
            ),
            contractRequest(
                at="2026-11-22T09:58:00Z",
                method="GET",
                path="/v1/models",
                client_model=None,
                upstream_model=None,
                route=None,
                target=None,
                attempts=0,
                failover_path=[],
                status=404,
                ttfb_ms=None,
                duration_ms=0.4,
                input_tokens=None,
                output_tokens=None,
                error="local",
            ),
        ],
        "tokens_per_minute": {
            "step_seconds": 60,
            "start": "2026-11-22T09:01:00Z",
            "targets": {"zai": [0] * 59 + [1540]},
        },
        "totals": [
            total(
                "zai",
                "glm-4.6",
                requests=12,
                errors=1,
                input_tokens=15000,
                output_tokens=4000,
            ),
            total(
                "anthropic",
                "claude-opus-4-1",
                requests=1234,
                input_tokens=1500000,
                output_tokens=40000,
                cache_read_tokens=900000,
                cache_write_tokens=12000,
            ),
            total("anthropic", "claude-haiku-4-5", requests=3, errors=3),
        ],
    }
    data.update(changes)
    return data


class FormattingCase(SynchronousTestCase):
    def assertPrintable(self, lines: list[str]) -> None:
        """
        Assert that C{lines} cannot drive a terminal.
        """
        for line in lines:
            self.assertTrue(line.isprintable(), repr(line))
            self.assertNotIn("\x1b", line)
            self.assertNotIn("\x9b", line)


class FormatStatsTests(FormattingCase):
    def test_table(self) -> None:
        """
        One row per target and model, sorted by both, numbers with
        thousands separators and aligned right, then a total row.
        """
        self.assertEqual(
            formatStats(document()),
            [
                "ccrouter has been up 1h00m; requests and tokens since it started:",
                "  target     model             requests  errors      input  output"
                "  cache read  cache write     tokens",
                "  anthropic  claude-haiku-4-5         3       3          0       0"
                "           0            0          0",
                "  anthropic  claude-opus-4-1      1,234       0  1,500,000  40,000"
                "     900,000       12,000  2,452,000",
                "  zai        glm-4.6                 12       1     15,000   4,000"
                "           0            0     19,000",
                "  total                           1,249       4  1,515,000  44,000"
                "     900,000       12,000  2,471,000",
            ],
        )

    def test_emptyProxy(self) -> None:
        """
        A proxy that has not answered anything yet says so, with its
        uptime.
        """
        self.assertEqual(
            formatStats(document(uptime_seconds=42.4, recent=[], totals=[])),
            ["ccrouter has been up 42s", "no requests yet"],
        )
        self.assertEqual(
            formatStats({}), ["ccrouter has been up an unknown time", "no requests yet"]
        )

    def test_unknownValues(self) -> None:
        """
        Missing, null and non-numeric values (JSON's NaN included) are shown
        as C{-} and count as nothing in the total; rows that are not objects
        are skipped.
        """
        data = document(
            uptime_seconds=None,
            totals=[
                total(None, None, requests=None, input_tokens=float("nan")),
                {"target": "zai"},
                "not a row",
                total("zai", "glm-4.6", requests="7", output_tokens=float("inf")),
                total("zai", "glm-4.6", requests=2, output_tokens=5.0),
            ],
        )
        self.assertEqual(
            formatStats(data),
            [
                "ccrouter has been up an unknown time; requests and tokens since it"
                " started:",
                "  target  model    requests  errors  input  output  cache read"
                "  cache write  tokens",
                "  -       -               -       0      -       0           0"
                "            0       0",
                "  zai     -               -       -      -       -           -"
                "            -       0",
                "  zai     glm-4.6         -       0      0       -           0"
                "            0       0",
                "  zai     glm-4.6         2       0      0       5           0"
                "            0       5",
                "  total                   2       0      0       5           0"
                "            0       5",
            ],
        )

    def test_hostileModelName(self) -> None:
        """
        A model name a client chose cannot write escape sequences or line
        breaks to the terminal: they are shown escaped, and a long name is
        cut.
        """
        data = document(
            totals=[
                total("zai", HOSTILE, requests=1),
                total("zai\x1b[1m", "x" * 5000, requests=1),
            ]
        )
        lines = formatStats(data)
        self.assertPrintable(lines)
        self.assertEqual(len(lines), 5)
        self.assertIn("evil\\x1b[31mred\\x07", lines[2])
        self.assertIn("zai\\x1b[1m", lines[3])
        self.assertIn("x" * (NAME_LIMIT - 3) + "...", lines[3])
        self.assertNotIn("x" * (NAME_LIMIT - 2), lines[3])


class FormatRecentTests(FormattingCase):
    def test_lines(self) -> None:
        """
        One line per request, newest first: time, status, the model asked
        for and the one sent, the target and the failover path when there
        was more than one attempt, time to first byte, duration, tokens in
        and out, and the error.
        """
        self.assertEqual(
            formatRecent(document(), 10, UTC),
            [
                "recent requests, newest first:",
                "  time      status  model                         target      "
                "                    ttfb  duration  tokens in/out",
                "  09:59:58     200  claude-sonnet-4-5 -> glm-4.6  zai (tried"
                " anthropic -> zai)  312 ms    4.10 s    1,200 / 340",
                "  09:59:40     529  claude-opus-4-1               anthropic   "
                "                   20 ms     21 ms              -  error: overloaded",
                "  09:58:00     404  GET /v1/models                -           "
                "                       -      0 ms              -  error: local",
            ],
        )

    def test_count(self) -> None:
        """
        Only the newest C{n} are shown, in the order given (newest first);
        none at all for 0.
        """
        lines = formatRecent(document(), 1, UTC)
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[2].startswith("  09:59:58     200"))
        self.assertEqual(formatRecent(document(), 0, UTC), [])
        self.assertEqual(len(formatRecent(document(), 2, UTC)), 4)

    def test_emptyProxy(self) -> None:
        self.assertEqual(
            formatRecent(document(recent=[]), 10), ["recent requests: none yet"]
        )
        self.assertEqual(formatRecent({}, 10), ["recent requests: none yet"])
        self.assertEqual(
            formatRecent({"recent": "nonsense"}, 10), ["recent requests: none yet"]
        )

    def test_nullsEverywhere(self) -> None:
        """
        Every field the contract allows to be null is shown as unknown.
        """
        entry = contractRequest(
            client_model=None,
            upstream_model=None,
            route=None,
            target=None,
            ttfb_ms=None,
            input_tokens=None,
            output_tokens=None,
            cache_read_tokens=None,
            cache_write_tokens=None,
            stop_reason=None,
            error=None,
        )
        lines = formatRecent(document(recent=[entry]), 10, UTC)
        self.assertEqual(
            lines[2],
            "  09:59:58     200  POST /v1/messages  - (tried anthropic -> zai)     -"
            "    4.10 s              -",
        )
        entry.update(method=None, path=None, attempts=None, failover_path=None)
        lines = formatRecent(document(recent=[entry]), 10, UTC)
        self.assertEqual(
            lines[2], "  09:59:58     200  -      -          -    4.10 s              -"
        )

    def test_garbage(self) -> None:
        """
        Values of the wrong type, unparseable times, NaN and huge numbers
        and entries that are not objects do not stop the listing.
        """
        entry = {
            "at": "yesterday",
            "status": "200",
            "client_model": 42,
            "target": ["zai"],
            "attempts": float("nan"),
            "failover_path": "zai",
            "ttfb_ms": float("inf"),
            "duration_ms": 1e300,
            "input_tokens": True,
            "output_tokens": -3,
            "error": {"class": "timeout"},
            "client_disconnected": True,
        }
        lines = formatRecent(
            document(recent=[entry, None, {"at": 1e300}, {"at": -1e20}]), 10, UTC
        )
        self.assertEqual(
            lines,
            [
                "recent requests, newest first:",
                "  time      status  model  target  ttfb  duration  tokens in/out",
                "  --:--:--       -  -      -          -         -         - / -3"
                "  error: client gone",
                "  --:--:--       -  -      -          -         -              -",
                "  --:--:--       -  -      -          -         -              -",
            ],
        )

    def test_times(self) -> None:
        """
        Times are shown in the zone asked for, the local one by default;
        seconds since the epoch are understood too.
        """
        at = datetime(2026, 11, 22, 9, 59, 58, tzinfo=UTC)
        plus2 = timezone(timedelta(hours=2))
        for value in ("2026-11-22T09:59:58Z", "2026-11-22T11:59:58+02:00"):
            lines = formatRecent(document(recent=[contractRequest(at=value)]), 1, plus2)
            self.assertTrue(lines[2].startswith("  11:59:58 "), lines[2])
        lines = formatRecent(
            document(recent=[contractRequest(at=at.timestamp())]), 1, UTC
        )
        self.assertTrue(lines[2].startswith("  09:59:58 "), lines[2])
        local = at.astimezone().strftime("%H:%M:%S")
        lines = formatRecent(document(), 1)
        self.assertTrue(lines[2].startswith(f"  {local} "), lines[2])

    def test_durations(self) -> None:
        """
        Times under a second are in milliseconds, longer ones in seconds.
        """

        def duration(milliseconds: float) -> str:
            entry = contractRequest(duration_ms=milliseconds, ttfb_ms=None)
            line = formatRecent(document(recent=[entry]), 1, UTC)[2]
            return line.split("  -  ")[1].strip().split("  ")[0]

        self.assertEqual(duration(0.4), "0 ms")
        self.assertEqual(duration(999.4), "999 ms")
        self.assertEqual(duration(999.6), "1.00 s")
        self.assertEqual(duration(61_234), "61.23 s")
        self.assertEqual(duration(3_600_000), "3,600 s")

    def test_longFailoverPath(self) -> None:
        entry = contractRequest(attempts=9, failover_path=[f"t{i}" for i in range(9)])
        line = formatRecent(document(recent=[entry]), 1, UTC)[2]
        self.assertIn("zai (tried t0 -> t1 -> t2 -> t3 -> t4 -> ...)", line)

    def test_hostileStrings(self) -> None:
        """
        Nothing a client or the answering server chose reaches the terminal
        unescaped: model names, path, method, target, failover path, error.
        """
        entry = contractRequest(
            client_model=HOSTILE,
            upstream_model=HOSTILE + "2",
            target="zai\x1b[0m",
            failover_path=["\x1b[1manthropic", "zai\n"],
            error="\x07boom",
        )
        other = contractRequest(client_model=None, method="\x1b[A", path=HOSTILE)
        lines = formatRecent(document(recent=[entry, other]), 10, UTC)
        self.assertEqual(len(lines), 4)
        self.assertPrintable(lines)
        self.assertIn("evil\\x1b[31mred\\x07", lines[2])
        self.assertIn("zai\\x1b[0m (tried \\x1b[1manthropic -> zai\\x0a)", lines[2])
        self.assertIn("error: \\x07boom", lines[2])
        self.assertIn("\\x1b[A evil\\x1b[31m", lines[3])


class StubProxyCase(TestCase):
    """
    The commands, run in a thread as C{ccrouter ...} would run them, against
    a stub proxy serving canned C{/health} and C{/status/data}.
    """

    timeout = 60

    def setUp(self) -> None:
        self.home = Path(self.mktemp()).absolute()
        self.home.mkdir(parents=True)
        self.environ = {"CCROUTER_HOME": str(self.home), "HOME": str(self.home)}
        self.health: dict[str, Any] = {
            "status": "ok",
            "version": "9.9",
            "pid": 4242,
            "uptime_seconds": 3600.5,
            "mode": "auto",
            "mode_source": "file",
            "mode_file_problem": None,
            "auto_switch": None,
            "config": {"path": "/c.yaml", "last_reload": None},
            "targets": {},
        }
        self.data: dict[str, Any] | None = document()
        self.dataStatus = 200
        self.upstream = MockUpstream(behaviour=self.answer).listen()
        self.addCleanup(self.upstream.stop)
        self.usePort(self.upstream.portNumber)

    def usePort(self, port: int) -> None:
        (self.home / "config.yaml").write_text(f"server: {{port: {port}}}\n")

    def answer(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/health":
            return json.dumps(self.health).encode()
        if request.path == b"/status/data" and self.data is not None:
            request.setResponseCode(self.dataStatus)
            return json.dumps(self.data).encode()
        request.setResponseCode(404)
        return b'{"type": "error"}'

    async def ccrouter(self, *arguments: str) -> tuple[int, str, str]:
        out, err = StringIO(), StringIO()
        code = await deferToThread(main, list(arguments), self.environ, out, err)
        return code, out.getvalue(), err.getvalue()

    def paths(self) -> list[bytes]:
        return [request.uri for request in self.upstream.requests]


class StatsCommandTests(StubProxyCase):
    async def test_stats(self) -> None:
        code, out, err = await self.ccrouter("stats")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines(), formatStats(document()))
        self.assertEqual(self.paths(), [b"/status/data"])
        request = self.upstream.requests[0]
        self.assertEqual(request.method, b"GET")
        self.assertEqual(request.header(b"host"), [b"127.0.0.1"])

    async def test_json(self) -> None:
        """
        C{--json} prints the totals as they came, as ASCII-only JSON: a
        hostile model name is kept, escaped.
        """
        data = document()
        data["totals"].append(total("zai", HOSTILE, requests=1))
        self.data = copy.deepcopy(data)
        code, out, err = await self.ccrouter("stats", "--json")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(json.loads(out), data["totals"])
        self.assertTrue(out.isascii())
        self.assertNotIn("\x1b", out)

    async def test_notRunning(self) -> None:
        self.usePort(freePort())
        code, out, err = await self.ccrouter("stats")
        self.assertEqual((code, out, err), (1, "ccrouter is not running\n", ""))

    async def test_olderProxy(self) -> None:
        """
        A proxy without C{/status/data} cannot answer: exit 1, saying why.
        """
        self.data = None
        code, out, err = await self.ccrouter("stats")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("/status/data is not there", err)
        self.assertIn("older", err)

    async def test_notCcrouter(self) -> None:
        self.dataStatus = 500
        code, out, _ = await self.ccrouter("stats")
        self.assertEqual((code, out), (1, "ccrouter is not running\n"))


class StatusCommandTests(StubProxyCase):
    async def test_recentRequests(self) -> None:
        """
        After what it printed before, C{status} lists the ten newest
        requests.
        """
        self.data = document(recent=[contractRequest(status=s) for s in range(12)])
        code, out, err = await self.ccrouter("status")
        self.assertEqual((code, err), (0, ""))
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("ccrouter 9.9 is running (pid 4242)"))
        self.assertEqual(lines[-12:], formatRecent(self.data, 10))
        self.assertIn("mode: auto (from the mode file)", lines[:-12])
        self.assertEqual(self.paths(), [b"/health", b"/status/data"])

    async def test_requestsOption(self) -> None:
        code, out, err = await self.ccrouter("status", "--requests", "2")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[-4:], formatRecent(document(), 2))
        self.assertEqual(out.count(" POST ") + out.count(" claude-"), 2)

    async def test_noRequests(self) -> None:
        """
        C{--requests 0} lists none and does not ask for them.
        """
        code, out, err = await self.ccrouter("status", "--requests", "0")
        self.assertEqual((code, err), (0, ""))
        self.assertNotIn("recent requests", out)
        self.assertEqual(self.paths(), [b"/health"])

    async def test_negativeRequests(self) -> None:
        code, out, err = await self.ccrouter("status", "--requests", "-1")
        self.assertEqual((code, out), (2, ""))
        self.assertIn("--requests cannot be negative", err)

    async def test_olderProxy(self) -> None:
        """
        A proxy without C{/status/data} is shown as before, with nothing
        extra.
        """
        self.data = None
        code, out, err = await self.ccrouter("status")
        self.assertEqual((code, err), (0, ""))
        _, before, _ = await self.ccrouter("status", "--requests", "0")
        self.assertEqual(out, before)
        self.assertEqual(self.paths(), [b"/health", b"/status/data", b"/health"])

    async def test_brokenData(self) -> None:
        """
        When the proxy answers C{/health} but not C{/status/data}, C{status}
        still succeeds and says why the requests are missing.
        """
        self.dataStatus = 500
        code, out, err = await self.ccrouter("status")
        self.assertEqual(code, 0)
        self.assertNotIn("recent requests", out)
        self.assertIn("cannot list the recent requests", err)
        self.assertIn("answered 500", err)

    async def test_emptyProxy(self) -> None:
        self.data = document(recent=[], totals=[])
        code, out, err = await self.ccrouter("status")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[-1], "recent requests: none yet")
