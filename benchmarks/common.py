"""
What the load scripts share: percentiles, the RSS drift rule, pass/fail
checks, the JSON summary and running an asyncio main that always cleans up.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from attrs import frozen

from benchmarks.children import Sample

MiB = 2**20


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile (C{fraction} in 0..1); NaN without values.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def latencyFigures(latencies: Sequence[int]) -> dict[str, float]:
    """
    Per-event latencies (ns) as p50 / p99 / max in milliseconds.
    """
    return {
        "events": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50) / 1e6, 3),
        "p99_ms": round(percentile(latencies, 0.99) / 1e6, 3),
        "max_ms": round(max(latencies, default=math.nan) / 1e6, 3),
    }


@frozen
class Drift:
    """
    RSS drift over a load phase: the median of its last tenth minus the
    median of the samples right after the warm-up (its first tenth after
    the warm-up), each at least C{minimum} samples.
    """

    bytes: float
    early: float
    late: float
    samples: int

    @classmethod
    def of(cls, samples: Sequence[Sample], warmup: float, minimum: int = 5) -> Drift:
        if not samples:
            return cls(math.nan, math.nan, math.nan, 0)
        start = samples[0].elapsed
        settled = [sample for sample in samples if sample.elapsed - start >= warmup]
        window = max(minimum, len(settled) // 10)
        if len(settled) < 2 * window:
            return cls(math.nan, math.nan, math.nan, len(settled))
        early = median([sample.rss for sample in settled[:window]])
        late = median([sample.rss for sample in settled[-window:]])
        return cls(late - early, early, late, len(settled))


def rssSlope(samples: Sequence[Sample], warmup: float) -> float:
    """
    The least-squares slope of RSS after the warm-up, in bytes per second.
    """
    if not samples:
        return math.nan
    start = samples[0].elapsed
    points = [(s.elapsed, float(s.rss)) for s in samples if s.elapsed - start >= warmup]
    if len(points) < 2:
        return math.nan
    meanX = sum(x for x, _ in points) / len(points)
    meanY = sum(y for _, y in points) / len(points)
    spread = sum((x - meanX) ** 2 for x, _ in points)
    if spread == 0:
        return math.nan
    return sum((x - meanX) * (y - meanY) for x, y in points) / spread


@frozen
class Check:
    """
    One pass/fail criterion with what was measured.
    """

    name: str
    passed: bool
    measured: Any
    target: str


def atMost(name: str, measured: float, limit: float, unit: str = "") -> Check:
    return Check(name, bool(measured <= limit), _round(measured), f"<= {limit}{unit}")


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    return value


def outDirectory(argument: str | None, script: str) -> Path:
    if argument is None:
        return Path(tempfile.mkdtemp(prefix=f"ccrouter-{script}-"))
    path = Path(argument)
    path.mkdir(parents=True, exist_ok=True)
    return path


def report(
    script: str,
    checks: list[Check],
    figures: dict[str, Any],
    machine: dict[str, Any],
    out: Path,
    human: str,
) -> int:
    """
    Write C{summary.json} to C{out}, print it on standard output and one
    human line on standard error; the exit status is 0 only if every check
    passed.
    """
    passed = all(check.passed for check in checks)
    summary = {
        "script": script,
        "passed": passed,
        "checks": {
            check.name: {
                "passed": check.passed,
                "measured": _round(check.measured),
                "target": check.target,
            }
            for check in checks
        },
        "figures": figures,
        "machine": machine,
        "out": str(out),
    }
    text = json.dumps(summary, indent=2, default=_round)
    (out / "summary.json").write_text(text + "\n")
    print(text)
    failed = [check.name for check in checks if not check.passed]
    verdict = "PASS" if passed else "FAIL (" + ", ".join(failed) + ")"
    print(f"{script}: {verdict}: {human} [{out}]", file=sys.stderr)
    return 0 if passed else 1


def run(main: Coroutine[Any, Any, int]) -> None:
    """
    Run C{main} and exit with its status; SIGTERM or SIGINT cancel it, so
    its C{finally} clauses (which kill the children) run.
    """

    async def guarded() -> int:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            print("interrupted", file=sys.stderr)
            return 2

    sys.exit(asyncio.run(guarded()))


async def until(
    condition: Any, timeout: float, interval: float = 0.05
) -> tuple[bool, float]:
    """
    Poll the async C{condition} until it is true or C{timeout} passes;
    whether it held, and after how many seconds.
    """
    start = time.monotonic()
    while True:
        if await condition():
            return True, time.monotonic() - start
        if time.monotonic() - start >= timeout:
            return False, time.monotonic() - start
        await asyncio.sleep(interval)
