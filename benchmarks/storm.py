"""
Cancellation storm (reliability.md L7): many streams through a real
C{twistd -n ccrouter}, each hung up by the client at a random point in its
first seconds (half with a FIN, half with an RST), the way Claude Code
drops a request when the user presses Esc.

For example::

    python benchmarks/storm.py                     # 1000 streams, 50 at a time
    python benchmarks/storm.py --streams 200       # the CI size

Every stream is planned to outlast its cancel point, so each cancel must
reach the upstream.  Targets (exit status 1 if one is missed): the mock
upstream has 0 connections and 0 active streams within 1 s of the last
cancel; each upstream stream the proxy opened closes within 1 s of its
client's cancel; 0 streams refused by the proxy (a leaked stream slot would
refuse later ones); descriptors back to the idle baseline +-5.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.children import (
    LOAD_CPU,
    PROXY_CPU,
    MockChild,
    ProxyChild,
    Sampler,
    machine,
    pinSelf,
    raiseDescriptorLimit,
)
from benchmarks.client import Connection, StreamResult, control
from benchmarks.common import (
    Check,
    MiB,
    atMost,
    outDirectory,
    percentile,
    report,
    run,
    until,
)
from benchmarks.wire import Plan


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--streams", type=int, default=1000, help="streams in all")
    parser.add_argument("--concurrency", type=int, default=50, help="at once")
    parser.add_argument(
        "--cancel-within", type=float, default=5, help="cancel at 0..this seconds"
    )
    parser.add_argument("--rate", type=float, default=20, help="events/s per stream")
    parser.add_argument("--out", default=None, help="directory for the results")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-close-delay", type=float, default=1.0, help="seconds")
    parser.add_argument("--fd-slack", type=int, default=5)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    return parser.parse_args(argv)


async def storm(arguments: argparse.Namespace) -> int:
    out = outDirectory(arguments.out, "storm")
    pinned = False if arguments.no_pin else pinSelf(LOAD_CPU)
    raiseDescriptorLimit()
    about = machine()
    mock = MockChild(out, cpu=None if arguments.no_pin else LOAD_CPU)
    proxy: ProxyChild | None = None
    sampler: Sampler | None = None
    stopSampling = asyncio.Event()
    samplerTask: asyncio.Task[None] | None = None
    try:
        await mock.start()
        proxy = ProxyChild(
            out,
            f'default:\n  url: "{mock.url}"\n',
            cpu=None if arguments.no_pin else PROXY_CPU,
        )
        await proxy.start()
        sampler = Sampler(proxy.pid, out / "samples.csv")
        sampler.phase = "idle"
        samplerTask = asyncio.create_task(sampler.run(stopSampling))
        await asyncio.sleep(3)
        fdBaseline = min(sample.fds for sample in sampler.inPhase("idle"))
        rssBaseline = max(sample.rss for sample in sampler.inPhase("idle"))
        sampler.phase = "storm"

        draw = random.Random(arguments.seed)  # noqa: S311 - seeded, for repeatable runs
        # Long enough to outlast any cancel point, with time to spare.
        events = int((arguments.cancel_within + 5) * arguments.rate)
        plans = [
            (
                Plan(id=index + 1, events=events, spacing=1 / arguments.rate),
                draw.uniform(0, arguments.cancel_within),
                draw.random() < 0.5,
            )
            for index in range(arguments.streams)
        ]
        results: list[StreamResult] = []
        slots = asyncio.Semaphore(arguments.concurrency)
        assert proxy is not None
        host, port = proxy.host, proxy.port

        async def one(plan: Plan, cancelAfter: float, reset: bool) -> None:
            async with slots:
                try:
                    connection = await Connection.open(host, port)
                except (OSError, asyncio.TimeoutError) as e:
                    results.append(StreamResult(plan=plan, problem=f"connect: {e!r}"))
                    return
                result = await connection.stream(
                    plan,
                    timeout=events / arguments.rate + 30,
                    cancelAfter=cancelAfter,
                    cancelReset=reset,
                )
                await connection.closed()
                results.append(result)

        started = time.monotonic()
        await asyncio.gather(*(one(*entry) for entry in plans))
        stormSeconds = time.monotonic() - started
        cancels = [result.cancelNs for result in results if result.cancelNs is not None]
        lastCancel = max(cancels, default=time.monotonic_ns())

        async def upstreamQuiet() -> bool:
            stats = await control(mock.controlPort, "GET", "/stats")
            return stats["connections_open"] == 0 and stats["streams_active"] == 0

        quiet, _ = await until(upstreamQuiet, arguments.max_close_delay + 4, 0.02)
        quietAfter = (time.monotonic_ns() - lastCancel) / 1e9 if quiet else None
        upstream = await control(mock.controlPort, "GET", "/stats?details")
        disconnects = upstream.pop("disconnects")
        assert isinstance(disconnects, dict)
        delays = [
            (disconnects[str(result.plan.id)] - result.cancelNs) / 1e9
            for result in results
            if result.cancelNs is not None and str(result.plan.id) in disconnects
        ]
        sampler.phase = "after"

        async def descriptorsBack() -> bool:
            assert sampler is not None
            sample = sampler.sample()
            return sample is not None and sample.fds <= fdBaseline + arguments.fd_slack

        await until(descriptorsBack, 15, interval=0.5)
        after = sampler.samples[-1]
        rssPeak = max(sample.rss for sample in sampler.samples)
    finally:
        stopSampling.set()
        if samplerTask is not None:
            samplerTask.cancel()
        if sampler is not None:
            sampler.close()
        if proxy is not None:
            await proxy.stop()
        await mock.stop()

    outcomes = Counter(result.outcome for result in results)
    errorTypes = Counter(result.errorType for result in results if result.errorType)
    problems = [
        f"stream {result.plan.id}: {result.problem}"
        for result in results
        if result.problem is not None
    ][:20]
    # Streams the proxy had not yet sent upstream when the client hung up
    # leave no trace at the mock; the rest must each have been closed.
    seen = int(str(upstream["requests"]))
    checks = [
        Check(
            "upstream_quiet_after_last_cancel_s",
            quietAfter is not None and quietAfter <= arguments.max_close_delay,
            quietAfter,
            f"<= {arguments.max_close_delay} s",
        ),
        atMost(
            "max_upstream_close_delay_s",
            max(delays, default=0.0),
            arguments.max_close_delay,
            " s",
        ),
        Check(
            "every_upstream_stream_closed",
            len(delays) == seen,
            f"{len(delays)} of {seen}",
            "all",
        ),
        atMost("refused_or_failed", len(results) - outcomes["cancelled"], 0),
        Check(
            "fds_back",
            abs(after.fds - fdBaseline) <= arguments.fd_slack,
            after.fds,
            f"{fdBaseline} +- {arguments.fd_slack}",
        ),
    ]
    figures = {
        "streams": arguments.streams,
        "concurrency": arguments.concurrency,
        "storm_s": round(stormSeconds, 1),
        "outcomes": dict(outcomes),
        "error_types": dict(errorTypes),
        "upstream_requests": seen,
        "close_delay_ms": {
            "p50": round(percentile(delays, 0.5) * 1000, 2),
            "p99": round(percentile(delays, 0.99) * 1000, 2),
            "max": round(max(delays, default=0.0) * 1000, 2),
        },
        "upstream_quiet_after_last_cancel_s": quietAfter,
        "fds_idle": fdBaseline,
        "fds_after": after.fds,
        "rss_idle_mib": round(rssBaseline / MiB, 1),
        "rss_peak_mib": round(rssPeak / MiB, 1),
        "rss_after_mib": round(after.rss / MiB, 1),
        "upstream": upstream,
        "pinned": pinned and proxy.pinned,
        "problems": problems,
    }
    human = (
        f"{arguments.streams} streams cancelled ({arguments.concurrency} at once):"
        f" upstream closed p99 {figures['close_delay_ms']['p99']} ms, max"
        f" {figures['close_delay_ms']['max']} ms after the cancel; quiet"
        f" {quietAfter if quietAfter is None else round(quietAfter, 3)} s after"
        f" the last; fds {fdBaseline}->{after.fds}"
    )
    return report("storm", checks, figures, about, out, human)


def main(argv: list[str] | None = None) -> None:
    run(storm(parseArguments(argv)))


if __name__ == "__main__":
    main()
