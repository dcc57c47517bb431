"""
Soak (reliability.md L4) and chaos soak (L5, C{--chaos}): many concurrent
streams through a real C{twistd -n ccrouter} to a mock upstream in another
process, for a long time, verifying every byte of every stream and sampling
the proxy's RSS, descriptors and CPU time once a second.

For example::

    python benchmarks/soak.py                        # 50 streams, 30 minutes
    python benchmarks/soak.py --duration 60          # the CI length
    python benchmarks/soak.py --duration 600 --chaos

Targets (exit status 1 if one is missed): 0 failed streams; 0 streams whose
bytes differ from what the mock sent (SHA-256); RSS drift <= 10 MiB (median
of the last tenth of the load minus the median right after the warm-up);
descriptors back to the idle baseline +-5 once the load stops; proxy CPU
<= 50% of one core.  With C{--chaos}, 10% of upstream streams are cut
mid-way (FIN or RST), 5% of new upstream connections are reset, 2% of
requests get 529, the config is rewritten every 60 s, the mode flips every
120 s and SIGHUP arrives every 5 min: the proxy must not crash, and every
client stream must end complete or with an explicit error (an SSE C{error}
event or an error response).

Results go to C{--out} (default: a new temporary directory): C{samples.csv}
(1 Hz), C{summary.json} (also printed), C{proxy.log}, C{mock.log}.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from array import array
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
    Drift,
    MiB,
    atMost,
    latencyFigures,
    outDirectory,
    report,
    rssSlope,
    run,
    until,
)
from benchmarks.wire import KILLS, Plan

#: The modes a chaos run flips between, in order.
CHAOS_MODES = ("two", "auto", "one")


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--duration", type=float, default=1800, help="seconds of load")
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before RSS drift is measured (default 120, or a quarter"
        " of a run shorter than 10 minutes)",
    )
    parser.add_argument("--out", default=None, help="directory for the results")
    parser.add_argument("--chaos", action="store_true", help="the L5 chaos variant")
    parser.add_argument("--rate", type=float, default=20, help="events/s per stream")
    parser.add_argument("--event-bytes", type=int, default=200)
    parser.add_argument("--min-events", type=int, default=50)
    parser.add_argument("--max-events", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reload-every", type=float, default=60)
    parser.add_argument("--flip-every", type=float, default=120)
    parser.add_argument("--hup-every", type=float, default=300)
    parser.add_argument("--max-rss-drift", type=float, default=10, help="MiB")
    parser.add_argument("--fd-slack", type=int, default=5)
    parser.add_argument("--max-cpu", type=float, default=0.5, help="cores")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    arguments = parser.parse_args(argv)
    if arguments.warmup is None:
        arguments.warmup = 120 if arguments.duration >= 600 else arguments.duration / 4
    return arguments


def configText(mockUrl: str, chaos: bool, generation: int = 0) -> str:
    """
    The proxy's config: everything to the mock; for chaos, two named
    upstreams (the same mock under two paths), three modes to flip
    between, and a value that changes with each reload.
    """
    text = f'default:\n  url: "{mockUrl}"\n'
    if not chaos:
        return text + "routes: []\n"
    return text + (
        f"# generation {generation}\n"
        "timeouts:\n"
        f"  idle: {300 + generation % 2}s\n"
        "upstreams:\n"
        f'  a: {{url: "{mockUrl}/a"}}\n'
        f'  b: {{url: "{mockUrl}/b"}}\n'
        "modes:\n"
        '  one: [{match: "*", upstream: a}]\n'
        '  two: [{match: "*", upstream: b}]\n'
        "  auto: {failover: [a, b]}\n"
        "default_mode: one\n"
    )


class Planner:
    """
    The plan of each next stream: a random length, and in chaos runs a
    planned cut or 529 now and then.
    """

    def __init__(self, arguments: argparse.Namespace) -> None:
        self._arguments = arguments
        self._random = random.Random(arguments.seed)  # noqa: S311 - seeded, for repeatable runs
        self._next = 0

    def next(self, remaining: float) -> Plan:
        """
        @param remaining: Seconds of load left; the stream is cut to fit, so
            the run ends close to its deadline.
        """
        arguments = self._arguments
        draw = self._random
        self._next += 1
        events = draw.randint(arguments.min_events, arguments.max_events)
        events = max(1, min(events, int(remaining * arguments.rate)))
        kill = None
        killAfter = 0
        status = None
        if arguments.chaos:
            fault = draw.random()
            if fault < 0.10:
                kill = draw.choice(KILLS)
                killAfter = draw.randrange(events)
            elif fault < 0.12:
                status = 529
        return Plan(
            id=self._next,
            events=events,
            spacing=1 / arguments.rate,
            size=arguments.event_bytes,
            kill=kill,
            killAfter=killAfter,
            status=status,
            close=draw.random() < 0.3,
        )

    def reuse(self) -> bool:
        return self._random.random() < 0.7


class Tally:
    """
    Every stream's outcome, and every event's latency.
    """

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.errorTypes: Counter[str] = Counter()
        self.byteDifferences = 0
        self.unexpected = 0
        self.problems: list[str] = []
        self.latencies = array("q")
        self.bytes = 0
        self.connectFailures = 0

    def add(self, result: StreamResult) -> None:
        plan = result.plan
        outcome = result.outcome
        if result.problem is not None and (
            "digest" in result.problem or "arrived where" in result.problem
        ):
            self.byteDifferences += 1
        # A stream the plan lets finish must finish, whatever the chaos
        # around it (reloads, mode flips, other streams' faults).
        if outcome == "error-event" and plan.kill is None:
            self.unexpected += 1
            self._problem(f"stream {plan.id}: unplanned error event {result.errorType}")
        if outcome == "complete" and (plan.kill is not None or plan.status is not None):
            self.unexpected += 1
            self._problem(f"stream {plan.id}: completed although planned to fail")
        self.outcomes[outcome] += 1
        if result.errorType:
            self.errorTypes[result.errorType] += 1
        if result.problem is not None:
            self._problem(f"stream {plan.id}: {result.problem}")
        self.latencies.extend(result.latencies)
        self.bytes += result.received

    def _problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)

    @property
    def streams(self) -> int:
        return sum(self.outcomes.values())


async def worker(
    proxy: ProxyChild,
    planner: Planner,
    tally: Tally,
    deadline: float,
    stop: asyncio.Event,
) -> None:
    """
    One stream after another until the deadline: on the same keep-alive
    connection most of the time, on a new one otherwise.
    """
    connection: Connection | None = None
    try:
        while time.monotonic() < deadline and not stop.is_set():
            plan = planner.next(deadline - time.monotonic())
            if connection is None or not connection.reusable or not planner.reuse():
                if connection is not None:
                    connection.close()
                    await connection.closed()
                try:
                    connection = await Connection.open(proxy.host, proxy.port)
                except (OSError, asyncio.TimeoutError) as e:
                    connection = None
                    tally.connectFailures += 1
                    tally.add(StreamResult(plan=plan, problem=f"cannot connect: {e!r}"))
                    await asyncio.sleep(0.2)
                    continue
            result = await connection.stream(
                plan, timeout=plan.events * plan.spacing + 30
            )
            tally.add(result)
    finally:
        if connection is not None:
            connection.close()
            await connection.closed()


async def chaosDriver(
    proxy: ProxyChild,
    mockUrl: str,
    arguments: argparse.Namespace,
    stop: asyncio.Event,
    log: list[str],
) -> None:
    """
    Reload the config, flip the mode and send SIGHUP on their schedules.
    """
    start = time.monotonic()
    due = {
        "reload": arguments.reload_every,
        "flip": arguments.flip_every,
        "hup": arguments.hup_every,
    }
    generation = 0
    flips = 0
    while not stop.is_set():
        action = min(due, key=due.__getitem__)
        wait = start + due[action] - time.monotonic()
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return
            except asyncio.TimeoutError:
                pass
        if action == "reload":
            generation += 1
            proxy.writeConfig(configText(mockUrl, True, generation))
        elif action == "flip":
            proxy.writeMode(CHAOS_MODES[flips % len(CHAOS_MODES)])
            flips += 1
        else:
            proxy.hangup()
        log.append(f"{time.monotonic() - start:.1f}s {action}")
        due[action] += getattr(arguments, f"{action}_every")


async def watchdog(proxy: ProxyChild, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if not proxy.alive():
            stop.set()
            return
        await asyncio.sleep(0.5)


async def soak(arguments: argparse.Namespace) -> int:
    out = outDirectory(arguments.out, "soak")
    pinned = False
    if not arguments.no_pin:
        pinned = pinSelf(LOAD_CPU)
    raiseDescriptorLimit()
    proxyCpu = None if arguments.no_pin else PROXY_CPU
    loadCpu = None if arguments.no_pin else LOAD_CPU
    about = machine()
    mock = MockChild(
        out, cpu=loadCpu, refuse=0.05 if arguments.chaos else 0.0, seed=arguments.seed
    )
    proxy: ProxyChild | None = None
    sampler: Sampler | None = None
    stopSampling = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await mock.start()
        proxy = ProxyChild(out, configText(mock.url, arguments.chaos), cpu=proxyCpu)
        await proxy.start()
        sampler = Sampler(proxy.pid, out / "samples.csv")
        sampler.phase = "idle"
        tasks.append(asyncio.create_task(sampler.run(stopSampling)))
        await asyncio.sleep(3)
        idle = sampler.inPhase("idle")
        fdBaseline = min(sample.fds for sample in idle)

        stop = asyncio.Event()
        tally = Tally()
        chaosLog: list[str] = []
        planner = Planner(arguments)
        loadStart = time.monotonic()
        cpuStart = sampler.cpuSeconds()
        deadline = loadStart + arguments.duration
        sampler.phase = "warmup"

        async def phases() -> None:
            await asyncio.sleep(arguments.warmup)
            assert sampler is not None
            sampler.phase = "load"

        tasks.append(asyncio.create_task(phases()))
        tasks.append(asyncio.create_task(watchdog(proxy, stop)))
        if arguments.chaos:
            tasks.append(
                asyncio.create_task(
                    chaosDriver(proxy, mock.url, arguments, stop, chaosLog)
                )
            )
        workers = [
            asyncio.create_task(worker(proxy, planner, tally, deadline, stop))
            for _ in range(arguments.streams)
        ]
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        sampler.phase = "drain"
        loadSeconds = time.monotonic() - loadStart
        cpuLoad = (sampler.cpuSeconds() - cpuStart) / loadSeconds
        # Streams in flight finish; each is bounded by its own timeout.
        _, pending = await asyncio.wait(
            workers, timeout=arguments.max_events / arguments.rate + 60
        )
        for task in pending:
            task.cancel()
        stop.set()
        alive = proxy.alive()

        sampler.phase = "after"
        await control(mock.controlPort, "POST", "/close-idle")

        async def descriptorsBack() -> bool:
            assert sampler is not None
            sample = sampler.sample()
            return sample is not None and sample.fds <= fdBaseline + arguments.fd_slack

        await until(descriptorsBack, 15, interval=0.5)
        after = sampler.samples[-1]
        upstream = await control(mock.controlPort, "GET", "/stats")
        loaded = sampler.inPhase("warmup", "load")
        drift = Drift.of(loaded, arguments.warmup)
        slope = rssSlope(loaded, arguments.warmup)
        latency = latencyFigures(tally.latencies)
        streams = tally.streams
        failed = tally.outcomes["failed"]
        rssPeak = max(sample.rss for sample in sampler.samples)
    finally:
        stopSampling.set()
        for task in tasks:
            task.cancel()
        if sampler is not None:
            sampler.close()
        exitCode = await proxy.stop() if proxy is not None else None
        await mock.stop()

    checks = [
        Check("proxy_alive", alive, alive, "the proxy runs to the end"),
        Check("streams", streams > 0 and not pending, streams, "> 0, all ended"),
        atMost("rss_drift_mib", drift.bytes / MiB, arguments.max_rss_drift, " MiB"),
        Check(
            "fds_back",
            abs(after.fds - fdBaseline) <= arguments.fd_slack,
            after.fds,
            f"{fdBaseline} +- {arguments.fd_slack}",
        ),
        atMost("byte_differences", tally.byteDifferences, 0),
        atMost("upstream_streams_left", int(str(upstream["streams_active"])), 0),
    ]
    if arguments.chaos:
        checks += [
            atMost("unended_streams", failed, 0),
            atMost("unexpected_outcomes", tally.unexpected, 0),
        ]
    else:
        errors = streams - tally.outcomes["complete"]
        checks += [
            atMost("errors", errors, 0),
            atMost("cpu_cores", cpuLoad, arguments.max_cpu),
        ]
    figures = {
        "duration_s": round(loadSeconds, 1),
        "concurrent_streams": arguments.streams,
        "events_per_second_per_stream": arguments.rate,
        "event_bytes": arguments.event_bytes,
        "streams": streams,
        "outcomes": dict(tally.outcomes),
        "error_types": dict(tally.errorTypes),
        "bytes_received": tally.bytes,
        "latency": latency,
        "rss_drift_mib": round(drift.bytes / MiB, 2),
        "rss_after_warmup_mib": round(drift.early / MiB, 1),
        "rss_end_mib": round(drift.late / MiB, 1),
        "rss_peak_mib": round(rssPeak / MiB, 1),
        "rss_slope_mib_per_10min": round(slope * 600 / MiB, 3),
        "fds_idle": fdBaseline,
        "fds_after": after.fds,
        "fds_peak": max(sample.fds for sample in sampler.samples),
        "cpu_cores": round(cpuLoad, 3),
        "warmup_s": arguments.warmup,
        "upstream": upstream,
        "proxy_exit_code": exitCode,
        "pinned": pinned and proxy.pinned,
        "problems": tally.problems,
    }
    if arguments.chaos:
        figures["chaos_actions"] = chaosLog
    human = (
        f"{streams} streams ({arguments.streams} at once, {loadSeconds:.0f} s),"
        f" {streams - tally.outcomes['complete']} not complete"
        f" ({failed} failed), {tally.byteDifferences} byte differences,"
        f" RSS drift {drift.bytes / MiB:+.2f} MiB, fds {fdBaseline}->{after.fds},"
        f" CPU {cpuLoad:.0%}, latency p50 {latency['p50_ms']} ms"
        f" p99 {latency['p99_ms']} ms"
    )
    return report("soak", checks, figures, about, out, human)


def main(argv: list[str] | None = None) -> None:
    run(soak(parseArguments(argv)))


if __name__ == "__main__":
    main()
