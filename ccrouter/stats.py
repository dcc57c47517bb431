# -*- test-case-name: tests.test_stats -*-
"""
What ccrouter counts about the requests it proxied: the Prometheus metrics
C{/metrics} exposes, and, from the same counters, the recent requests,
tokens per minute and totals that C{/status/data} and C{ccrouter stats}
show.

Label values are config names (targets, upstreams), model names and fixed
words; never a header value or a secret.  Model names come from clients,
so only the first L{MODEL_LABEL_CAP} distinct ones (and every model the
config names) get a label of their own; the rest are counted as C{other}.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ccrouter.breaker import State
from ccrouter.config import Config
from ccrouter.logs import JSONFields, logWriteErrors
from ccrouter.requestlog import RequestRecord, timestamp

if TYPE_CHECKING:
    from ccrouter.live import LiveState

#: Distinct model label values kept besides the config's own models.
MODEL_LABEL_CAP = 50
#: The model label of the names beyond the cap.
OTHER_MODEL = "other"
#: The target label of requests that reached no upstream.
NO_TARGET = "none"
#: Requests C{/status/data} lists.
RECENT_REQUESTS = 50
#: Minutes of tokens per target C{/status/data} charts.
CHART_MINUTES = 60
#: Token kinds, as labels and as the fields of the request log.
TOKEN_KINDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write", "cache_write_tokens"),
)

_TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, math.inf)
_DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, math.inf)
_STATES = tuple(state.value for state in State)


def statusClass(status: int | None) -> str:
    """
    C{2xx} ... C{5xx}; C{none} for a response that never started.
    """
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


def configModels(config: Config) -> frozenset[str]:
    """
    The model names a config sends upstream: its routes' renames.
    """
    routes = list(config.routes)
    for mode in config.modes:
        routes.extend(mode.routes)
        for target in mode.failover:
            routes.extend(target.routes)
    return frozenset(route.model for route in routes if route.model)


class ModelLabels:
    """
    Folds model names into a bounded set of label values.
    """

    def __init__(self, cap: int = MODEL_LABEL_CAP) -> None:
        self._cap = cap
        self._seen: set[str] = set()

    def label(self, model: str | None, known: frozenset[str]) -> str:
        if model is None:
            return NO_TARGET
        if model in known or model in self._seen:
            return model
        if len(self._seen) < self._cap:
            self._seen.add(model)
            return model
        return OTHER_MODEL


class _LiveCollector(Collector):
    """
    Metrics read from the live state: breakers, requests in flight, lost
    log lines.  The state belongs to the reactor's thread, but
    prometheus_client's resource scrapes from a thread of the pool, which
    must neither read it nor wait for the reactor (at shutdown the reactor
    waits for the pool): so the reactor's thread takes a snapshot as it
    hands a scrape over (L{refresh}), and a scrape from the pool gets that.
    """

    def __init__(self, live: LiveState) -> None:
        self._live = live
        self._latest: list[Metric] = []

    def describe(self) -> Iterable[Metric]:
        # Without this the registry collects to learn the names.
        return []

    def refresh(self) -> None:
        """
        Take the snapshot the next scrape from another thread serves.
        """
        self._latest = self._snapshot()

    def collect(self) -> Iterable[Metric]:
        if threading.current_thread() is threading.main_thread():
            return self._snapshot()
        return self._latest

    def _snapshot(self) -> list[Metric]:
        live = self._live
        now = live.now()
        state = GaugeMetricFamily(
            "ccrouter_breaker_state",
            "1 for the state each target's circuit breaker is in",
            labels=["target", "state"],
        )
        opens = CounterMetricFamily(
            "ccrouter_breaker_opens",
            "Times each target's circuit breaker opened since start",
            labels=["target"],
        )
        cooldown = GaugeMetricFamily(
            "ccrouter_breaker_cooldown_remaining_seconds",
            "Seconds until an open breaker lets a probe through",
            labels=["target"],
        )
        for name in live.board.names():
            breaker = live.board.get(name)
            assert breaker is not None
            report = breaker.report(now)
            for each in _STATES:
                state.add_metric(
                    [name, each], 1.0 if report.state.value == each else 0.0
                )
            opens.add_metric([name], report.opens)
            cooldown.add_metric([name], report.cooldownRemaining)
        inflight = GaugeMetricFamily(
            "ccrouter_inflight_requests", "Requests in flight to upstreams"
        )
        inflight.add_metric([], len(live.inflight))
        limit = GaugeMetricFamily(
            "ccrouter_max_streams", "How many requests may be in flight (max_streams)"
        )
        limit.add_metric([], live.config.server.limits.maxStreams)
        lost = CounterMetricFamily(
            "ccrouter_log_write_errors", "Log lines lost because the log failed"
        )
        lost.add_metric([], logWriteErrors())
        return [state, opens, cooldown, inflight, limit, lost]


class Stats:
    """
    Counts every finished request (L{observe}) into the metrics, the recent
    list and the per-minute token chart.

    @ivar registry: What C{/metrics} exposes.
    """

    def __init__(
        self,
        live: LiveState,
        recent: int = RECENT_REQUESTS,
        modelCap: int = MODEL_LABEL_CAP,
    ) -> None:
        self._live = live
        self._wallNow: Callable[[], float] = live.wallNow
        self._models = ModelLabels(modelCap)
        self._known: tuple[Config, frozenset[str]] | None = None
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)
        # Per target: (minute, tokens) for the minutes that had any.
        self._minutes: dict[str, deque[tuple[int, int]]] = {}
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "ccrouter_requests",
            "Requests proxied, by target, upstream model and status class",
            ["target", "model", "status_class"],
            registry=registry,
        )
        self._errors = Counter(
            "ccrouter_request_errors",
            "Requests that did not end well, by target, model and error class",
            ["target", "model", "error"],
            registry=registry,
        )
        self._failovers = Counter(
            "ccrouter_failovers",
            "Requests moved from one target to the next",
            ["from_target", "to_target"],
            registry=registry,
        )
        self._tokens = Counter(
            "ccrouter_tokens",
            "Tokens by target, upstream model and kind",
            ["target", "model", "kind"],
            registry=registry,
        )
        self._ttfb = Histogram(
            "ccrouter_time_to_first_byte_seconds",
            "From taking the request to writing the response head",
            ["target"],
            buckets=_TTFB_BUCKETS,
            registry=registry,
        )
        self._duration = Histogram(
            "ccrouter_request_duration_seconds",
            "From taking the request to the end of its response",
            ["target"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self._liveCollector = _LiveCollector(live)
        registry.register(self._liveCollector)
        #: The child of each metric for each set of label values used so
        #: far; as bounded as the label values (see L{ModelLabels}).
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """
        C{metric.labels(*labels)}, remembered: C{labels} checks its
        arguments and takes a lock every time, which made it the larger
        part of counting a request.  Children are never removed here.
        """
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def refreshLive(self) -> None:
        """
        Read the live state for the scrapes that follow (on the reactor's
        thread: see L{_LiveCollector}).
        """
        self._liveCollector.refresh()

    def _knownModels(self) -> frozenset[str]:
        config = self._live.config
        if self._known is None or self._known[0] is not config:
            self._known = (config, configModels(config))
        return self._known[1]

    def observe(self, record: RequestRecord, shown: JSONFields | None = None) -> None:
        """
        Count C{record}, a request whose response is over.

        @param shown: C{record.fields()}, when the caller has made it already.
        """
        target = record.target or NO_TARGET
        model = self._models.label(record.upstreamModel, self._knownModels())
        child = self._child
        child(self._requests, target, model, statusClass(record.status)).inc()
        if record.error is not None:
            child(self._errors, target, model, record.error).inc()
        path = record.failoverPath
        for before, after in itertools.pairwise(path):
            child(self._failovers, before, after).inc()
        usage = record.usage
        total = 0
        for kind, value in (
            ("input", usage.inputTokens),
            ("output", usage.outputTokens),
            ("cache_read", usage.cacheReadTokens),
            ("cache_write", usage.cacheWriteTokens),
        ):
            if value:
                child(self._tokens, target, model, kind).inc(value)
                total += value
        if record.firstByteAt is not None:
            child(self._ttfb, target).observe(record.firstByteAt - record.startedAt)
        if record.endedAt is not None:
            child(self._duration, target).observe(record.endedAt - record.startedAt)
        self._recent.appendleft(record.fields() if shown is None else shown)
        if total and record.target is not None:
            self._addTokens(record.target, total)

    def _addTokens(self, target: str, tokens: int) -> None:
        minute = int(self._wallNow() // 60)
        minutes = self._minutes.setdefault(target, deque())
        if minutes and minutes[-1][0] == minute:
            minutes[-1] = (minute, minutes[-1][1] + tokens)
        else:
            minutes.append((minute, tokens))
        while minutes and minutes[0][0] <= minute - CHART_MINUTES:
            minutes.popleft()

    @staticmethod
    def _samples(counter: Counter) -> Iterator[tuple[dict[str, str], float]]:
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    yield sample.labels, sample.value

    def totals(self) -> list[dict[str, Any]]:
        """
        Requests and tokens per target and model since start, read from
        the counters C{/metrics} exposes.
        """
        rows: dict[tuple[str, str], dict[str, Any]] = {}

        def row(target: str, model: str) -> dict[str, Any]:
            return rows.setdefault(
                (target, model),
                {
                    "target": target,
                    "model": model,
                    "requests": 0,
                    "errors": 0,
                    **{field: 0 for _, field in TOKEN_KINDS},
                },
            )

        for labels, value in self._samples(self._requests):
            row(labels["target"], labels["model"])["requests"] += int(value)
        for labels, value in self._samples(self._errors):
            row(labels["target"], labels["model"])["errors"] += int(value)
        fields = dict(TOKEN_KINDS)
        for labels, value in self._samples(self._tokens):
            row(labels["target"], labels["model"])[fields[labels["kind"]]] += int(value)
        return [rows[key] for key in sorted(rows)]

    def statusData(self) -> dict[str, Any]:
        """
        The document C{/status/data} serves.
        """
        wall = self._wallNow()
        minute = int(wall // 60)
        first = minute - CHART_MINUTES + 1
        series: dict[str, list[int]] = {}
        for target, minutes in sorted(self._minutes.items()):
            values = [0] * CHART_MINUTES
            for at, tokens in minutes:
                if at >= first:
                    values[at - first] += tokens
            series[target] = values
        return {
            "generated_at": timestamp(wall),
            "uptime_seconds": round(self._live.uptime, 3),
            "recent": list(self._recent),
            "tokens_per_minute": {
                "step_seconds": 60,
                "start": timestamp(first * 60),
                "targets": series,
            },
            "totals": self.totals(),
        }
