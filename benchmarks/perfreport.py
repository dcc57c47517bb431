"""
The performance suite's metrics, the targets of issue 8 they are judged
by, and the report: C{results.json} and C{results.md} (a Markdown table
with one row per metric).

Each repeat measures every metric direct to the mock and through the
proxy, one right after the other; the report gives the median of each
side over the repeats and, as the cost the proxy adds, the median of the
per-repeat differences (so that a repeat slowed down by something else on
the machine slows both of its sides alike and drops out).  A metric with
no direct side (the proxy's RSS or CPU time, its start-up) reports the
median of its values, except a metric marked C{worst}, which reports the
worst repeat (a count that must hold in every repeat, not in most).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from benchmarks.common import median

#: Where a target applies: the added cost, or the figure through the proxy.
ADDED = "added"
THROUGH = "through"


@frozen
class Target:
    """
    A limit from the issue: C{on} (L{ADDED} or L{THROUGH}) at most (or, with
    C{atLeast}, at least) C{limit}.
    """

    on: str
    limit: float
    atLeast: bool = False

    def holds(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value >= self.limit if self.atLeast else value <= self.limit

    def text(self, unit: str) -> str:
        sign = ">=" if self.atLeast else "<="
        return f"{self.on} {sign} {self.limit:g}{' ' + unit if unit else ''}"


@frozen
class Metric:
    """
    One row of the table.

    @ivar paired: Whether it is measured direct as well.
    @ivar rate: Higher is better (requests per second): the added column
        shows the change in percent as well.
    @ivar worst: Report the worst repeat's figure (by the target) through
        the proxy, not the median.
    """

    scenario: str
    key: str
    label: str
    unit: str
    paired: bool = True
    target: Target | None = None
    rate: bool = False
    worst: bool = False


def _ms(scenario: str, key: str, label: str, target: Target | None = None) -> Metric:
    return Metric(scenario, key, label, "ms", target=target)


#: Every metric, in the order of the table.
METRICS: tuple[Metric, ...] = (
    _ms("plain", "c1_p50_ms", "latency p50, c=1", Target(ADDED, 0.8)),
    _ms("plain", "c1_p99_ms", "latency p99, c=1"),
    _ms("plain", "c64_p50_ms", "latency p50, c=64"),
    _ms("plain", "c64_p99_ms", "latency p99, c=64"),
    Metric(
        "plain",
        "c64_rps",
        "requests/s, c=64",
        "req/s",
        target=Target(THROUGH, 2500, atLeast=True),
        rate=True,
    ),
    Metric(
        "plain",
        "c64_connects_per_1000",
        "upstream connections opened per 1000 requests, c=64",
        "",
        False,
    ),
    Metric(
        "plain",
        "wrk_c64_rps",
        "requests/s, c=64 (wrk)",
        "req/s",
        target=Target(THROUGH, 2500, atLeast=True),
        rate=True,
    ),
    _ms("plain", "wrk_c64_p50_ms", "latency p50, c=64 (wrk)"),
    _ms("plain", "wrk_c64_p99_ms", "latency p99, c=64 (wrk)"),
    _ms("streams", "ttfb_p50_ms", "TTFB p50", Target(THROUGH, 3)),
    _ms("streams", "ttfb_p99_ms", "TTFB p99"),
    _ms("streams", "event_p50_ms", "per-event latency p50"),
    _ms("streams", "event_p99_ms", "per-event latency p99", Target(ADDED, 1.5)),
    _ms("slow", "ttfb_p50_ms", "TTFB p50, all streams open", Target(THROUGH, 10)),
    _ms("slow", "ramp_ttfb_p50_ms", "TTFB p50 while they open"),
    _ms("slow", "event_p99_ms", "per-event latency p99"),
    Metric("slow", "peak_rss_mib", "proxy peak RSS", "MiB", False, Target(THROUGH, 90)),
    Metric(
        "cpu",
        "per_1000_requests_s",
        "proxy CPU per 1000 requests (c=64)",
        "s",
        False,
        Target(THROUGH, 0.6),
    ),
    Metric(
        "cpu",
        "per_1000_events_s",
        "proxy CPU per 1000 events (100 streams)",
        "s",
        False,
        Target(THROUGH, 0.1),
    ),
    _ms("bodies", "p50_1k_ms", "latency p50, 1 KB body"),
    _ms("bodies", "p50_100k_ms", "latency p50, 100 KB body"),
    _ms("bodies", "p50_1m_ms", "latency p50, 1 MiB body"),
    Metric(
        "bodies",
        "added_100k_over_1k_ms",
        "added by the proxy at 100 KB minus at 1 KB",
        "ms",
        False,
        Target(THROUGH, 1),
    ),
    Metric(
        "bodies",
        "added_1m_over_1k_ms",
        "added by the proxy at 1 MiB minus at 1 KB",
        "ms",
        False,
    ),
    _ms("translated", "ttfb_p50_ms", "TTFB p50"),
    _ms("translated", "event_p50_ms", "per-event latency p50"),
    _ms("translated", "event_p99_ms", "per-event latency p99"),
    Metric(
        "translated",
        "per_1000_events_s",
        "proxy CPU per 1000 events",
        "s",
        False,
    ),
    Metric(
        "translated",
        "cpu_vs_passthrough",
        "CPU per event, translated / passthrough",
        "x",
        False,
        Target(THROUGH, 2),
    ),
    _ms(
        "tls",
        "first_ms",
        "first request, new upstream TCP + TLS connection (every repeat: the"
        " mock closed the last one; direct: the client's own connect)",
    ),
    _ms("tls", "later_p50_ms", "later requests p50, TLS connection reused"),
    _ms("tls", "plain_p50_ms", "the same to the plain-HTTP upstream, p50"),
    _ms("tls", "reuse_over_plain_ms", "TLS reused minus plain HTTP, p50"),
    Metric(
        "tls",
        "handshakes",
        "upstream TLS handshakes per K requests (worst repeat)",
        "",
        False,
        Target(THROUGH, 1),
        worst=True,
    ),
    Metric(
        "tls",
        "second_pays_no_handshake",
        "second request pays no handshake: later p50 < first / 2 and"
        " 1 handshake (1 = yes, worst repeat)",
        "",
        False,
        Target(THROUGH, 1, atLeast=True),
        worst=True,
    ),
    Metric(
        "startup",
        "health_s",
        "spawn to first /health answer",
        "s",
        False,
    ),
    Metric(
        "startup",
        "first_request_s",
        "spawn to first proxied answer",
        "s",
        False,
        Target(THROUGH, 1),
    ),
)

#: Every scenario, in the order they run and are reported.
SCENARIOS = (
    "plain",
    "streams",
    "slow",
    "cpu",
    "bodies",
    "translated",
    "tls",
    "startup",
)

#: One repeat's figures: scenario -> metric key -> (direct, through).
Figures = dict[str, dict[str, tuple[float | None, float | None]]]


def _number(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, 4)


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None and not math.isnan(value)]
    return _number(median(present)) if present else None


def summarize(
    metric: Metric, runs: list[tuple[float | None, float | None]]
) -> dict[str, Any]:
    """
    A metric's medians over the repeats, and whether its target held.
    """
    direct = _median([run[0] for run in runs]) if metric.paired else None
    through = _median([run[1] for run in runs])
    if metric.worst and metric.target is not None:
        present = [
            run[1] for run in runs if run[1] is not None and not math.isnan(run[1])
        ]
        if present:
            through = _number(min(present) if metric.target.atLeast else max(present))
    added = None
    if metric.paired:
        added = _median(
            [
                run[1] - run[0]
                for run in runs
                if run[0] is not None and run[1] is not None
            ]
        )
    passed = None
    if metric.target is not None:
        passed = metric.target.holds(added if metric.target.on == ADDED else through)
    return {
        "label": metric.label,
        "unit": metric.unit,
        "direct": direct,
        "through": through,
        "added": added,
        "target": None if metric.target is None else metric.target.text(metric.unit),
        "passed": passed,
        "runs": [[_number(a), _number(b)] for a, b in runs],
    }


def collect(
    repeats: list[Figures], scenarios: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """
    Every metric of the C{scenarios} that ran, summarized over the repeats.
    """
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in METRICS:
        if metric.scenario not in scenarios:
            continue
        runs = [
            figures[metric.scenario][metric.key]
            for figures in repeats
            if metric.key in figures.get(metric.scenario, {})
        ]
        result.setdefault(metric.scenario, {})[metric.key] = summarize(metric, runs)
    return result


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.3f}"


def _added(metric: Metric, row: dict[str, Any]) -> str:
    added = row["added"]
    if added is None:
        return "-"
    text = ("+" if added > 0 else "") + _cell(added)
    if metric.rate and row["direct"]:
        text += f" ({added / row['direct']:+.0%})"
    return text


def markdown(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """
    The table: scenario, metric, direct, through ccrouter, added, target,
    pass/fail.
    """
    lines = [
        "| scenario | metric | direct | through ccrouter | added | target | result |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for metric in METRICS:
        row = results.get(metric.scenario, {}).get(metric.key)
        if row is None:
            continue
        unit = f" ({metric.unit})" if metric.unit else ""
        verdict = {True: "pass", False: "**FAIL**", None: "-"}[row["passed"]]
        if metric.target is not None and row["passed"] is None:
            verdict = "no figure"
        lines.append(
            f"| {metric.scenario} | {metric.label}{unit} | {_cell(row['direct'])}"
            f" | {_cell(row['through'])} | {_added(metric, row)}"
            f" | {row['target'] or '-'} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def machineLine(machine: dict[str, Any], pinned: bool) -> str:
    where = "proxy pinned to CPU 0, mock and load to CPU 1" if pinned else "unpinned"
    return (
        f"{machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_mib']} MiB,"
        f" Python {machine['python']}, Twisted {machine['twisted']},"
        f" load average before the run {machine['load_average']}, {where}"
    )


#: Above this share of the CPUs taken by other processes, a repeat's
#: figures are suspect.
BUSY = 0.05


def otherLoadLine(shares: list[float]) -> str:
    """
    What other processes took of the CPUs during each repeat.
    """
    if not shares:
        return ""
    text = "Other processes took " + ", ".join(f"{s:.0%}" for s in shares)
    text += " of the CPU time during the repeats"
    if max(shares) > BUSY:
        return text + ": **the machine was shared, the figures are skewed**."
    return text + "."


def write(out: Path, document: dict[str, Any]) -> str:
    """
    Write C{results.json} and C{results.md} to C{out}; the Markdown.
    """
    results = document["scenarios"]
    text = (
        "# ccrouter performance\n\n"
        f"`{document['command']}`\n\n"
        f"Machine: {machineLine(document['machine'], document['pinned'])}.\n\n"
        f"Medians of {document['repeats']} repeat(s); *added* is the median of"
        " the per-repeat differences (through - direct)."
        f" {otherLoadLine(document['other_load'])}\n\n" + markdown(results)
    )
    correctness = document["correctness"]
    if not correctness["passed"]:
        text += "\n**Correctness failures:**\n\n" + "".join(
            f"- {problem}\n" for problem in correctness["problems"]
        )
    for note in document.get("notes", []):
        text += f"\n{note}\n"
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "results.md").write_text(text)
    return text
