"""
Tests for L{ccrouter.stats}: what the proxied requests are counted into.
Mostly without a reactor, over a L{LiveState} with fake clocks and records
built by hand; C{/status/data} through the resource tree with L{StubTreq},
and C{/metrics} (which prometheus_client renders in the reactor's thread
pool) over a real listener on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import treq
from attrs import evolve
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from ccrouter.agents import PooledAgents
from ccrouter.breaker import Outcome, Verdict
from ccrouter.config import Upstream, parseConfig
from ccrouter.live import LiveState
from ccrouter.logs import logWriteErrors
from ccrouter.requestlog import ERROR_CLASSES, RequestRecord, timestamp
from ccrouter.root import resourceTree
from ccrouter.server import ProxySite
from ccrouter.stats import (
    CHART_MINUTES,
    MODEL_LABEL_CAP,
    NO_TARGET,
    OTHER_MODEL,
    RECENT_REQUESTS,
    ModelLabels,
    Stats,
    configModels,
    statusClass,
)
from ccrouter.usage import Usage
from tests.mockupstream import MockUpstream, anthropicMessage, respondJSON

#: A moment 30 seconds into a minute.
MINUTE = 29920690
WALL = MINUTE * 60 + 30.0
PROVIDER_KEY = "PROVIDERKEYCANARY0b7d3a"
CONFIG = """
default: {url: "https://api.anthropic.com"}
upstreams:
  zai:
    url: "https://api.z.ai/api/anthropic"
    auth: {header: x-api-key, value: "${Z_AI_API_KEY}"}
default_mode: auto
breaker: {failures: 2, cooldowns: [10m]}
modes:
  glm:
    - match: "claude-*"
      model: "glm-4.6"
      upstream: zai
  claude: []
  auto: {failover: [claude, glm]}
"""
FAILED = Outcome(Verdict.FAILURE, "HTTP 529 (overloaded)")
#: The fields of a recent request, as the data contract lists them.
CONTRACT_FIELDS = {
    "request_id",
    "at",
    "method",
    "path",
    "client_model",
    "upstream_model",
    "mode",
    "route",
    "target",
    "attempts",
    "failover_path",
    "status",
    "streamed",
    "ttfb_ms",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "stop_reason",
    "error",
    "client_disconnected",
}


def usage(
    inputTokens: int | None = None,
    outputTokens: int | None = None,
    cacheRead: int | None = None,
    cacheWrite: int | None = None,
) -> Usage:
    return Usage(inputTokens, outputTokens, cacheRead, cacheWrite, "end_turn")


def record(
    requestId: str = "ccr_1",
    target: str | None = "glm",
    model: str | None = "glm-4.6",
    status: int | None = 200,
    error: str | None = None,
    tokens: Usage | None = None,
    failoverPath: list[str] | None = None,
    firstByte: float | None = 0.3,
    ended: float | None = 1.2,
) -> RequestRecord:
    """
    A finished request, started at 0 on the monotonic clock.
    """
    return RequestRecord(
        requestId=requestId,
        method="POST",
        path="/v1/messages",
        startedAt=0.0,
        wallStart=WALL,
        clientModel="claude-sonnet-4-5",
        mode="auto",
        streamed=True,
        upstreamModel=model,
        route="claude-*",
        target=target,
        attempts=len(failoverPath or [target]),
        failoverPath=list(failoverPath or ([] if target is None else [target])),
        status=status,
        firstByteAt=firstByte,
        endedAt=ended,
        bytesIn=100,
        bytesOut=200,
        usage=tokens or Usage(),
        error=error,
    )


def parseMetrics(text: str) -> dict[str, Any]:
    """
    Exposition text as C{{family name: (type, {(sample name, labels): value})}},
    labels as sorted tuples of pairs.
    """
    families: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for sample in family.samples
        }
        families[family.name] = (family.type, samples)
    return families


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


class StatsCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.wall = WALL
        self.live = LiveState(
            parseConfig(CONFIG, "c.yaml", {"Z_AI_API_KEY": PROVIDER_KEY}),
            now=self.clock.seconds,
            wallNow=lambda: self.wall,
        )
        self.stats = self.live.stats

    def sample(self, name: str, **pairs: str) -> float | None:
        value: float | None = self.stats.registry.get_sample_value(name, pairs)
        return value

    def metrics(self) -> dict[str, Any]:
        return parseMetrics(generate_latest(self.stats.registry).decode("utf-8"))


class ModelLabelTests(SynchronousTestCase):
    def test_cap(self) -> None:
        """
        The first C{cap} names get their own label, and keep it; the rest
        are C{other}; a model the config names is always its own label; no
        model at all is C{none}.
        """
        known = frozenset({"glm-4.6"})
        models = ModelLabels(cap=2)
        self.assertEqual(
            [
                models.label(name, known)
                for name in ["a", "b", "c", "a", "glm-4.6", "b", "d", None]
            ],
            ["a", "b", OTHER_MODEL, "a", "glm-4.6", "b", OTHER_MODEL, NO_TARGET],
        )

    def test_knownModelsTakeNoPlace(self) -> None:
        """
        The config's models are not counted against the cap.
        """
        known = frozenset({"glm-4.6", "glm-4.5-air"})
        models = ModelLabels(cap=1)
        self.assertEqual(models.label("glm-4.6", known), "glm-4.6")
        self.assertEqual(models.label("glm-4.5-air", known), "glm-4.5-air")
        self.assertEqual(models.label("a", known), "a")
        self.assertEqual(models.label("b", known), OTHER_MODEL)

    def test_defaultCap(self) -> None:
        models = ModelLabels()
        names = [f"model-{index}" for index in range(MODEL_LABEL_CAP + 5)]
        folded = [models.label(name, frozenset()) for name in names]
        self.assertEqual(folded[:MODEL_LABEL_CAP], names[:MODEL_LABEL_CAP])
        self.assertEqual(folded[MODEL_LABEL_CAP:], [OTHER_MODEL] * 5)

    def test_configModels(self) -> None:
        """
        The renames of the top-level routes, of every mode's routes and of
        the failover targets' routes; a route that keeps the name adds none.
        """
        self.assertEqual(
            configModels(parseConfig(CONFIG, "c.yaml", {"Z_AI_API_KEY": "k"})),
            frozenset({"glm-4.6"}),
        )
        config = parseConfig(
            """
default: {url: "https://api.anthropic.com"}
routes:
  - match: "claude-haiku"
    model: "glm-4.5-air"
    upstream: {url: "https://api.z.ai/api/anthropic"}
  - match: "claude-opus"
    upstream: {url: "https://example.com"}
""",
            "c.yaml",
            {},
        )
        self.assertEqual(configModels(config), frozenset({"glm-4.5-air"}))
        config = parseConfig(
            """
default: {url: "https://api.anthropic.com"}
default_mode: claude
modes:
  claude: []
  glm:
    - match: "claude-haiku"
      model: "glm-4.5-air"
      upstream: {url: "https://api.z.ai/api/anthropic"}
""",
            "c.yaml",
            {},
        )
        self.assertEqual(configModels(config), frozenset({"glm-4.5-air"}))


class StatusClassTests(SynchronousTestCase):
    def test_classes(self) -> None:
        self.assertEqual(
            [statusClass(each) for each in [100, 200, 299, 301, 404, 500, 529, 599]],
            ["1xx", "2xx", "2xx", "3xx", "4xx", "5xx", "5xx", "5xx"],
        )

    def test_none(self) -> None:
        """
        A response that never started, or a status outside HTTP's range.
        """
        self.assertEqual(
            [statusClass(each) for each in [None, 0, 99, 600, 1000, -200]],
            ["none"] * 6,
        )


class CounterTests(StatsCase):
    def observeMixture(self) -> None:
        observe = self.stats.observe
        observe(record("ccr_1", tokens=usage(100, 20, 5, 1)))
        observe(
            record(
                "ccr_2",
                tokens=usage(50, 10),
                failoverPath=["claude", "glm"],
            )
        )
        observe(record("ccr_3", status=529, error="upstream_status"))
        observe(
            record(
                "ccr_4",
                target="claude",
                model="claude-sonnet-4-5",
                tokens=usage(7, 3, 0, 0),
            )
        )
        observe(record("ccr_5", target="claude", model="claude-sonnet-4-5", status=400))
        observe(
            record(
                "ccr_6",
                target=None,
                model=None,
                status=529,
                error="overloaded",
                firstByte=0.001,
                ended=0.002,
            )
        )
        observe(
            record(
                "ccr_7",
                status=None,
                error="client_gone",
                tokens=usage(9),
                firstByte=None,
            )
        )

    def test_counters(self) -> None:
        """
        Requests by target, model and status class; errors by target and
        class; failovers by the pair of targets; tokens by kind, counting
        only the kinds a response reported.
        """
        self.observeMixture()
        requests = "ccrouter_requests_total"
        self.assertEqual(
            self.sample(requests, target="glm", model="glm-4.6", status_class="2xx"),
            2.0,
        )
        self.assertEqual(
            self.sample(requests, target="glm", model="glm-4.6", status_class="5xx"),
            1.0,
        )
        self.assertEqual(
            self.sample(requests, target="glm", model="glm-4.6", status_class="none"),
            1.0,
        )
        self.assertEqual(
            self.sample(requests, target="none", model="none", status_class="5xx"),
            1.0,
        )
        errors = "ccrouter_request_errors_total"
        glm = {"target": "glm", "model": "glm-4.6"}
        self.assertEqual(self.sample(errors, **glm, error="upstream_status"), 1)
        self.assertEqual(self.sample(errors, **glm, error="client_gone"), 1)
        self.assertEqual(
            self.sample(errors, target="none", model="none", error="overloaded"), 1
        )
        # A record without an error class counts as no error, whatever its
        # status.
        self.assertIsNone(
            self.sample(
                errors,
                target="claude",
                model="claude-sonnet-4-5",
                error="upstream_status",
            )
        )
        self.assertEqual(
            self.sample(
                "ccrouter_failovers_total", from_target="claude", to_target="glm"
            ),
            1.0,
        )
        tokens = "ccrouter_tokens_total"
        self.assertEqual(
            self.sample(tokens, target="glm", model="glm-4.6", kind="input"), 159.0
        )
        self.assertEqual(
            self.sample(tokens, target="glm", model="glm-4.6", kind="output"), 30.0
        )
        self.assertEqual(
            self.sample(tokens, target="glm", model="glm-4.6", kind="cache_read"), 5.0
        )
        self.assertEqual(
            self.sample(tokens, target="glm", model="glm-4.6", kind="cache_write"), 1.0
        )
        # Zero and unknown counts make no sample.
        self.assertIsNone(
            self.sample(
                tokens, target="claude", model="claude-sonnet-4-5", kind="cache_read"
            )
        )
        self.assertIsNone(
            self.sample(tokens, target="none", model="none", kind="input")
        )

    def test_failoverPairs(self) -> None:
        """
        Each move along the failover path counts once.
        """
        self.stats.observe(
            record(target="c", failoverPath=["a", "b", "c"], model="glm-4.6")
        )
        families = self.metrics()
        kind, samples = families["ccrouter_failovers"]
        self.assertEqual(kind, "counter")
        self.assertEqual(
            {
                key: value
                for key, value in samples.items()
                if key[0] == "ccrouter_failovers_total"
            },
            {
                ("ccrouter_failovers_total", labels(from_target="a", to_target="b")): 1,
                ("ccrouter_failovers_total", labels(from_target="b", to_target="c")): 1,
            },
        )

    def test_histograms(self) -> None:
        """
        Time to first byte and duration, in seconds from the start, by
        target; a response that never started has no first byte.
        """
        self.stats.observe(record(firstByte=0.3, ended=1.2))
        self.stats.observe(record(firstByte=None, ended=7.0))
        ttfb = "ccrouter_time_to_first_byte_seconds"
        self.assertEqual(self.sample(ttfb + "_count", target="glm"), 1.0)
        self.assertEqual(self.sample(ttfb + "_sum", target="glm"), 0.3)
        self.assertEqual(self.sample(ttfb + "_bucket", target="glm", le="0.25"), 0.0)
        self.assertEqual(self.sample(ttfb + "_bucket", target="glm", le="0.5"), 1.0)
        duration = "ccrouter_request_duration_seconds"
        self.assertEqual(self.sample(duration + "_count", target="glm"), 2.0)
        self.assertEqual(self.sample(duration + "_sum", target="glm"), 8.2)
        self.assertEqual(self.sample(duration + "_bucket", target="glm", le="1.0"), 0)
        self.assertEqual(self.sample(duration + "_bucket", target="glm", le="2.0"), 1)
        self.assertEqual(self.sample(duration + "_bucket", target="glm", le="10.0"), 2)
        self.assertEqual(self.sample(duration + "_bucket", target="glm", le="+Inf"), 2)

    def test_totalsAgreeWithCounters(self) -> None:
        """
        totals() is read from the counters C{/metrics} exposes: one row per
        target and model, the requests with an error class as errors.
        """
        self.observeMixture()
        rows = self.stats.totals()
        self.assertEqual(
            rows,
            [
                {
                    "target": "claude",
                    "model": "claude-sonnet-4-5",
                    "requests": 2,
                    "errors": 0,
                    "input_tokens": 7,
                    "output_tokens": 3,
                    "cache_read_tokens": 0,
                    "cache_write_tokens": 0,
                },
                {
                    "target": "glm",
                    "model": "glm-4.6",
                    "requests": 4,
                    "errors": 2,
                    "input_tokens": 159,
                    "output_tokens": 30,
                    "cache_read_tokens": 5,
                    "cache_write_tokens": 1,
                },
                {
                    "target": "none",
                    "model": "none",
                    "requests": 1,
                    "errors": 1,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_read_tokens": 0,
                    "cache_write_tokens": 0,
                },
            ],
        )
        # And the same numbers, summed from the exposition text.
        _, requests = self.metrics()["ccrouter_requests"]
        _, errors = self.metrics()["ccrouter_request_errors"]
        _, tokens = self.metrics()["ccrouter_tokens"]
        kinds = {
            "input": "input_tokens",
            "output": "output_tokens",
            "cache_read": "cache_read_tokens",
            "cache_write": "cache_write_tokens",
        }
        for row in rows:
            counted = {
                "requests": 0,
                "errors": 0,
                **{field: 0 for field in kinds.values()},
            }
            for (name, pairs), value in requests.items():
                found = dict(pairs)
                if name != "ccrouter_requests_total" or (
                    found["target"],
                    found["model"],
                ) != (row["target"], row["model"]):
                    continue
                counted["requests"] += int(value)
            for (name, pairs), value in errors.items():
                found = dict(pairs)
                if name == "ccrouter_request_errors_total" and (
                    found["target"],
                    found["model"],
                ) == (row["target"], row["model"]):
                    counted["errors"] += int(value)
            for (name, pairs), value in tokens.items():
                found = dict(pairs)
                if name == "ccrouter_tokens_total" and (
                    found["target"],
                    found["model"],
                ) == (row["target"], row["model"]):
                    counted[kinds[found["kind"]]] += int(value)
            self.assertEqual({**row, **counted}, row)

    def test_modelsFolded(self) -> None:
        """
        Beyond the cap, upstream models are counted as C{other}, except the
        ones the config names, also after a reload names new ones.
        """
        stats = Stats(self.live, modelCap=2)
        for model in ["m1", "m2", "m3", "m4", "glm-4.6", "m1"]:
            stats.observe(record(model=model))
        requests: dict[str, float] = {}
        for metric in stats.registry.collect():
            for sample in metric.samples:
                if sample.name == "ccrouter_requests_total":
                    requests[sample.labels["model"]] = sample.value
        self.assertEqual(requests, {"m1": 2, "m2": 1, OTHER_MODEL: 2, "glm-4.6": 1})
        self.live.applyConfig(
            parseConfig(
                CONFIG.replace("glm-4.6", "m9"), "c.yaml", {"Z_AI_API_KEY": "k"}
            ),
            chooseMode=False,
        )
        stats.observe(record(model="m9"))
        self.assertEqual(
            stats.registry.get_sample_value(
                "ccrouter_requests_total",
                {"target": "glm", "model": "m9", "status_class": "2xx"},
            ),
            1.0,
        )
        self.assertEqual([row["model"] for row in stats.totals()][-1], "other")


class StatusDataTests(StatsCase):
    def chart(self) -> dict[str, Any]:
        chart: dict[str, Any] = self.stats.statusData()["tokens_per_minute"]
        return chart

    def test_empty(self) -> None:
        self.clock.advance(12.3456)
        self.assertEqual(
            self.stats.statusData(),
            {
                "generated_at": timestamp(WALL),
                "uptime_seconds": 12.346,
                "recent": [],
                "tokens_per_minute": {
                    "step_seconds": 60,
                    "start": timestamp((MINUTE - CHART_MINUTES + 1) * 60),
                    "targets": {},
                },
                "totals": [],
            },
        )

    def test_tokensPerMinute(self) -> None:
        """
        Sixty values per target, oldest first, the current minute last; a
        request's input, output and cache tokens go to the minute it ended.
        """
        observe = self.stats.observe
        observe(record(tokens=usage(100, 20, 5, 1)))
        observe(record(tokens=usage(4)))
        self.wall += 29.9
        observe(record(target="claude", tokens=usage(None, 7)))
        # The next minute starts.
        self.wall = (MINUTE + 1) * 60.0
        observe(record(target="claude", tokens=usage(1, 1)))
        self.wall += 60
        observe(record(tokens=usage(50)))
        chart = self.chart()
        self.assertEqual(chart["step_seconds"], 60)
        self.assertEqual(chart["start"], timestamp((MINUTE + 2 - 59) * 60))
        glm, claude = chart["targets"]["glm"], chart["targets"]["claude"]
        self.assertEqual(len(glm), CHART_MINUTES)
        self.assertEqual(glm[-1], 50)
        self.assertEqual(glm[-3], 130)
        self.assertEqual(sum(glm), 180)
        self.assertEqual(claude[-3:], [7, 2, 0])
        self.assertEqual(sum(claude), 9)
        self.assertEqual(sorted(chart["targets"]), ["claude", "glm"])

    def test_oldMinutesDropped(self) -> None:
        """
        A minute more than an hour old leaves the chart, while the minutes
        after it stay in place.
        """
        self.stats.observe(record(tokens=usage(10)))
        self.wall += 60
        self.stats.observe(record(tokens=usage(20)))
        self.wall += 58 * 60
        self.assertEqual(self.chart()["targets"]["glm"][:2], [10, 20])
        self.wall += 60
        self.assertEqual(self.chart()["targets"]["glm"][:2], [20, 0])
        self.stats.observe(record(tokens=usage(5)))
        glm = self.chart()["targets"]["glm"]
        self.assertEqual((glm[0], glm[-1], sum(glm)), (20, 5, 25))
        self.wall += 3600
        self.assertEqual(self.chart()["targets"]["glm"], [0] * CHART_MINUTES)

    def test_notCharted(self) -> None:
        """
        A request without a target, or without tokens, adds no line.
        """
        self.stats.observe(record(target=None, model=None, tokens=usage(5, 5)))
        self.stats.observe(record(target="claude"))
        self.stats.observe(record(target="glm", tokens=usage(0, 0, 0, 0)))
        self.assertEqual(self.chart()["targets"], {})

    def test_recent(self) -> None:
        """
        The last fifty requests, newest first, each as the request log
        shows it, with the fields of the data contract.
        """
        records = [record(f"ccr_{index}") for index in range(RECENT_REQUESTS + 5)]
        for each in records:
            self.stats.observe(each)
        recent = self.stats.statusData()["recent"]
        self.assertEqual(len(recent), RECENT_REQUESTS)
        self.assertEqual(
            [entry["request_id"] for entry in recent],
            [f"ccr_{index}" for index in range(RECENT_REQUESTS + 4, 4, -1)],
        )
        self.assertEqual(recent[0], records[-1].fields())
        for entry in recent:
            self.assertEqual(set(entry), CONTRACT_FIELDS)
        self.assertEqual(recent[0]["ttfb_ms"], 300.0)
        self.assertEqual(recent[0]["duration_ms"], 1200.0)
        json.dumps(self.stats.statusData())


class LiveCollectorTests(StatsCase):
    def breakerStates(self, target: str) -> dict[str, float]:
        _, samples = self.metrics()["ccrouter_breaker_state"]
        return {
            dict(pairs)["state"]: value
            for (_, pairs), value in samples.items()
            if dict(pairs)["target"] == target
        }

    def breakerValue(self, family: str, sample: str, target: str) -> float:
        _, samples = self.metrics()[family]
        value: float = samples[(sample, labels(target=target))]
        return value

    def test_breakers(self) -> None:
        """
        Each target's breaker state (one of three set), how often it opened
        and how long until its cooldown is over, read when scraped.
        """
        kind, _ = self.metrics()["ccrouter_breaker_state"]
        self.assertEqual(kind, "gauge")
        closed = {"closed": 1.0, "open": 0.0, "half-open": 0.0}
        self.assertEqual(self.breakerStates("glm"), closed)
        self.assertEqual(self.breakerStates("claude"), closed)
        for _ in range(2):
            self.live.record("glm", FAILED, self.live.begin("glm"))
        self.assertEqual(
            self.breakerStates("glm"), {"closed": 0.0, "open": 1.0, "half-open": 0.0}
        )
        self.assertEqual(self.breakerStates("claude"), closed)
        opens = ("ccrouter_breaker_opens", "ccrouter_breaker_opens_total")
        self.assertEqual(self.breakerValue(*opens, "glm"), 1.0)
        self.assertEqual(self.breakerValue(*opens, "claude"), 0.0)
        cooldown = (
            "ccrouter_breaker_cooldown_remaining_seconds",
            "ccrouter_breaker_cooldown_remaining_seconds",
        )
        self.assertEqual(self.breakerValue(*cooldown, "glm"), 600.0)
        self.clock.advance(100)
        self.assertEqual(self.breakerValue(*cooldown, "glm"), 500.0)
        self.clock.advance(500)
        self.assertEqual(self.breakerValue(*cooldown, "glm"), 0.0)
        self.assertEqual(
            self.breakerStates("glm"), {"closed": 0.0, "open": 0.0, "half-open": 1.0}
        )

    def test_scrapeFromAnotherThread(self) -> None:
        """
        A scrape from another thread (prometheus_client's resource renders
        in the reactor's thread pool) never reads the live state itself,
        nor waits for the reactor: it gets the snapshot the reactor's
        thread took when it handed the scrape over.
        """
        self.live.stats.refreshLive()
        for _ in range(2):
            self.live.record("glm", FAILED, self.live.begin("glm"))
        scraped: list[bytes] = []
        worker = threading.Thread(
            target=lambda: scraped.append(generate_latest(self.live.stats.registry))
        )
        worker.start()
        worker.join(10)
        self.assertFalse(worker.is_alive())
        [text] = scraped
        self.assertIn(b'ccrouter_breaker_state{state="closed",target="glm"} 1.0', text)
        self.live.stats.refreshLive()
        worker = threading.Thread(
            target=lambda: scraped.append(generate_latest(self.live.stats.registry))
        )
        worker.start()
        worker.join(10)
        self.assertIn(
            b'ccrouter_breaker_state{state="open",target="glm"} 1.0', scraped[1]
        )

    def test_inflight(self) -> None:
        families = self.metrics()
        self.assertEqual(
            families["ccrouter_inflight_requests"],
            ("gauge", {("ccrouter_inflight_requests", ()): 0.0}),
        )
        self.assertEqual(
            families["ccrouter_max_streams"],
            ("gauge", {("ccrouter_max_streams", ()): 64.0}),
        )
        self.assertEqual(
            families["ccrouter_log_write_errors"],
            (
                "counter",
                {("ccrouter_log_write_errors_total", ()): float(logWriteErrors())},
            ),
        )

        class Exchange:
            def endNow(self, error: object) -> None:
                pass

        first, second = Exchange(), Exchange()
        self.live.inflight.add(first)
        self.live.inflight.add(second)
        value = self.metrics()["ccrouter_inflight_requests"][1]
        self.assertEqual(value, {("ccrouter_inflight_requests", ()): 2.0})
        self.live.inflight.discard(first)
        value = self.metrics()["ccrouter_inflight_requests"][1]
        self.assertEqual(value, {("ccrouter_inflight_requests", ()): 1.0})

    def test_families(self) -> None:
        """
        Every family is named C{ccrouter_*} and has the type it says.
        """
        self.stats.observe(
            record(
                tokens=usage(1, 1, 1, 1),
                failoverPath=["claude", "glm"],
                error="broken_stream",
            )
        )
        self.assertEqual(
            {
                name: kind
                for name, (kind, _) in self.metrics().items()
                # prometheus_client's own companions of each counter.
                if not name.endswith("_created")
            },
            {
                "ccrouter_requests": "counter",
                "ccrouter_request_errors": "counter",
                "ccrouter_failovers": "counter",
                "ccrouter_tokens": "counter",
                "ccrouter_time_to_first_byte_seconds": "histogram",
                "ccrouter_request_duration_seconds": "histogram",
                "ccrouter_breaker_state": "gauge",
                "ccrouter_breaker_opens": "counter",
                "ccrouter_breaker_cooldown_remaining_seconds": "gauge",
                "ccrouter_inflight_requests": "gauge",
                "ccrouter_max_streams": "gauge",
                "ccrouter_log_write_errors": "counter",
            },
        )


class StatusDataResourceTests(StatsCase):
    def get(self, path: str, **headers: bytes) -> tuple[int, Any, bytes]:
        client = StubTreq(resourceTree(self.live, self.agentFor, Clock()))
        d = client.get(
            "http://127.0.0.1:8080" + path,
            headers={
                name.replace("_", "-"): [value] for name, value in headers.items()
            },
        )
        client.flush()
        response = self.successResultOf(d)
        return (
            response.code,
            response.headers,
            self.successResultOf(response.content()),
        )

    def agentFor(self, upstream: Upstream) -> Any:
        raise AssertionError("no upstream may be reached")

    def test_served(self) -> None:
        """
        C{/status/data} is the stats' document, as JSON not to be cached.
        """
        self.stats.observe(record(tokens=usage(3, 4)))
        self.clock.advance(5)
        status, headers, body = self.get("/status/data")
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])
        document = json.loads(body)
        self.assertEqual(document, self.stats.statusData())
        self.assertEqual(document["recent"][0]["request_id"], "ccr_1")
        self.assertEqual(document["totals"][0]["input_tokens"], 3)

    def test_withoutToken(self) -> None:
        """
        Like C{/health}, served without the local token, which a browser
        cannot send; a proxied path still needs it.
        """
        server = evolve(self.live.config.server, token="LOCALTOKENCANARY4411")
        self.live.config = evolve(self.live.config, server=server)
        self.assertEqual(self.get("/status/data")[0], 200)
        self.assertEqual(self.get("/v1/models")[0], 401)

    def test_crossSiteRefused(self) -> None:
        """
        A cross-site browser request and a foreign Host are refused.
        """
        self.assertEqual(
            self.get("/status/data", origin=b"https://evil.example")[0], 403
        )
        self.assertEqual(self.get("/status/data", host=b"evil.example")[0], 403)


#: Header values sent along with every request; none looks like a key, so
#: no redaction could hide a leak.
HEADER_CANARIES = {
    b"x-api-key": b"CLIENTKEYCANARY2f6c11",
    b"authorization": b"Basic AUTHCANARY7d0e35",
    b"x-custom-thing": b"CUSTOMCANARY93a1bb",
    b"user-agent": b"AGENTCANARY/2.0 8c4e",
}
#: A model name shaped like a key: redacted before it becomes a label.
KEY_MODEL = "sk-ant-api03-MODELKEYCANARY55e1"


class MetricsEndpointTests(TestCase):
    timeout = 30

    async def test_scraped(self) -> None:
        """
        C{/metrics} over a real listener, parsed back: the counters of the
        requests proxied and the breakers of the failover targets.  No
        label value holds a header value, a key or a key-shaped model name.
        """
        upstream = MockUpstream(respondJSON(anthropicMessage("hi"))).listen()
        self.addCleanup(upstream.stop)
        config = parseConfig(
            f"""
default: {{url: "{upstream.url}"}}
upstreams:
  zai:
    url: "{upstream.url}/api/anthropic"
    auth: {{header: x-api-key, value: "${{Z_AI_API_KEY}}"}}
default_mode: auto
modes:
  glm:
    - match: "claude-haiku"
      model: "glm-4.6"
      upstream: zai
  claude: []
  auto: {{failover: [glm, claude]}}
""",
            "c.yaml",
            {"Z_AI_API_KEY": PROVIDER_KEY},
        )
        live = LiveState(config, now=time.monotonic, wallNow=time.time)
        agents = PooledAgents(reactor)
        self.addCleanup(agents.stopService)
        site = ProxySite(
            resourceTree(live, agents.agentFor, reactor),
            lambda: live.config.server,
            reactor=reactor,
        )
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        http = HTTPClient(Agent(reactor, pool=pool))
        for model in ["claude-haiku-4-5", "claude-sonnet-4-5", KEY_MODEL]:
            body = json.dumps(
                {
                    "model": model,
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ).encode()
            response = await http.post(
                url + "/v1/messages",
                body,
                headers={
                    b"content-type": [b"application/json"],
                    **{name: [value] for name, value in HEADER_CANARIES.items()},
                },
            ).addTimeout(10, reactor)
            self.assertEqual(response.code, 200)
            await treq.content(response).addTimeout(10, reactor)
        # The key-shaped model did go upstream as it was sent.
        self.assertIn(KEY_MODEL.encode(), upstream.allRaw)
        self.assertIn(PROVIDER_KEY.encode(), upstream.allRaw)
        response = await http.get(url + "/metrics").addTimeout(10, reactor)
        self.assertEqual(response.code, 200)
        [contentType] = response.headers.getRawHeaders(b"content-type")
        self.assertTrue(contentType.startswith(b"text/plain"), contentType)
        text = (await treq.content(response).addTimeout(10, reactor)).decode()
        await self.closeAll(site)
        for canary in [*HEADER_CANARIES.values(), PROVIDER_KEY.encode()]:
            self.assertNotIn(canary.decode(), text)
        self.assertNotIn("MODELKEYCANARY", text)
        families = parseMetrics(text)
        _, requests = families["ccrouter_requests"]
        self.assertEqual(
            {
                pairs: value
                for (name, pairs), value in requests.items()
                if name == "ccrouter_requests_total"
            },
            {
                labels(target="glm", model="glm-4.6", status_class="2xx"): 1.0,
                labels(
                    target="claude", model="claude-sonnet-4-5", status_class="2xx"
                ): 1.0,
                labels(
                    target="claude", model="sk-ant-[redacted]", status_class="2xx"
                ): 1.0,
            },
        )
        _, tokens = families["ccrouter_tokens"]
        self.assertEqual(
            tokens[
                (
                    "ccrouter_tokens_total",
                    labels(target="glm", model="glm-4.6", kind="input"),
                )
            ],
            12.0,
        )
        _, states = families["ccrouter_breaker_state"]
        self.assertEqual(
            states[("ccrouter_breaker_state", labels(target="glm", state="closed"))],
            1.0,
        )
        self.assertAllowedLabels(
            families.values(),
            {
                "glm",
                "claude",
                "glm-4.6",
                "claude-sonnet-4-5",
                "sk-ant-[redacted]",
                NO_TARGET,
                OTHER_MODEL,
                "closed",
                "open",
                "half-open",
                "input",
                "output",
                "cache_read",
                "cache_write",
                *ERROR_CLASSES,
                *(f"{hundred}xx" for hundred in range(1, 6)),
            },
        )
        self.assertEqual(live.stats.totals()[0]["target"], "claude")

    def assertAllowedLabels(self, families: Iterable[Any], allowed: set[str]) -> None:
        """
        Every label value of every sample (but a histogram's bucket bound)
        is one of C{allowed}.
        """
        for _, samples in families:
            for _, pairs in samples:
                for name, value in pairs:
                    if name != "le":
                        self.assertIn(value, allowed, name)

    async def closeAll(self, site: ProxySite) -> None:
        for _ in range(100):
            if site.openConnections == 0:
                return
            await deferLater(reactor, 0.01)
        self.fail("server connections still open")
