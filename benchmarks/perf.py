"""
The performance suite (issue 8): every scenario measured direct to a mock
upstream and through a real C{twistd -n ccrouter}, side by side in the same
run, medians over repeats, reported as the cost the proxy adds::

    python benchmarks/perf.py                    # the full suite, 3 repeats
    python benchmarks/perf.py --quick            # the 30-second smoke (CI)
    python benchmarks/perf.py --only plain,streams --repeats 5 --out bench/perf

It also covers reliability.md's L1 (per-event latency, in C{streams}), L2
(TTFB with large bodies, in C{bodies}, at issue 8's sizes) and L3
(non-streaming throughput, in C{plain}).

Scenarios (C{--only} takes their names):

  - C{plain}: non-streaming latency p50/p99 at concurrency 1 and 64 and
    requests/s at 64, on keep-alive connections; Debian's C{wrk} for the
    same load as a cross-check when it is installed.
  - C{streams}: time to first byte and per-event delivery latency p50/p99
    with 100 concurrent streams of 50 events 20 ms apart.
  - C{slow}: 1000 concurrent slow streams: the proxy's peak RSS, and the
    TTFB of probe streams sent while all 1000 are open.
  - C{cpu}: the proxy's CPU seconds per 1000 requests (from C{plain}) and
    per 1000 relayed events (from C{streams}).
  - C{bodies}: a 100 KB (Claude Code's real size) and a 1 MiB request
    body, against a 1 KB one.
  - C{translated}: an OpenAI-format upstream stream translated by the
    proxy: per-event latency, CPU per 1000 events against C{streams}.
  - C{tls}: TLS reuse to an HTTPS upstream (the mock's TLS listener, with a
    self-signed certificate made at run time and trusted by the proxy
    through C{SSL_CERT_FILE}): K non-streaming requests one after another
    on one client connection; the first one's latency (the proxy dials TCP
    and TLS), the later ones' p50 against the same requests to the
    plain-HTTP upstream, and how many TLS handshakes the mock saw (target:
    1, the pool reuses the connection).  Each repeat ends with a request
    the mock answers with C{Connection: close}, so the next repeat's first
    request pays a handshake again.  Direct: the same over the client's
    own TLS connection to the mock.
  - C{startup}: from spawning C{twistd} to the first answered C{/health}
    and the first proxied answer.

Every response is checked (each non-streaming body byte for byte, each
stream by its SHA-256, see L{benchmarks.wire}); one that is lost, refused
or corrupted makes the exit status 1.  A missed performance target does
not (CI machines vary), unless C{--strict}.  C{results.json} and
C{results.md} go to C{--out} (default: a new temporary directory), beside
C{proxy.log} and C{mock.log}; the table and the machine are printed at the
end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from attrs import frozen

from benchmarks.children import (
    LOAD_CPU,
    PROXY_CPU,
    MockChild,
    ProxyChild,
    machine,
    pinSelf,
    raiseDescriptorLimit,
)
from benchmarks.client import control
from benchmarks.common import MiB, outDirectory, percentile, run
from benchmarks.perfload import (
    Ids,
    Outcome,
    Sequential,
    freePort,
    plainLoad,
    sequentialLoad,
    startup,
    streamLoad,
    wrkAvailable,
    wrkLoad,
)
from benchmarks.perfreport import SCENARIOS, Figures, collect, machineLine, write
from benchmarks.perftls import TLS_HOST, clientContext, makeCertificate
from benchmarks.perfwire import OPENAI_BASE, OPENAI_MODEL

T = TypeVar("T")

#: The model name the suite's config routes to the mock's TLS listener
#: (used by the C{tls} scenario only, so its pooled connection is its own).
TLS_MODEL = "perf-tls-model"
#: Scenarios whose figures come from others.
NEEDS = {"cpu": ("plain", "streams"), "translated": ("streams",)}


@frozen
class Sizes:
    """
    How much load each scenario puts on, for the full suite or the smoke.
    """

    c1Requests: int
    c64Seconds: float
    wrkSeconds: float
    streams: int
    streamEvents: int
    streamSpacing: float
    streamRounds: int
    streamRamp: float
    slowStreams: int
    slowEvents: int
    slowSpacing: float
    slowRamp: float
    slowProbes: int
    bodies: tuple[tuple[int, int], ...]
    tlsRequests: int
    startups: int


FULL = Sizes(
    c1Requests=2000,
    c64Seconds=5,
    wrkSeconds=5,
    streams=100,
    streamEvents=50,
    streamSpacing=0.02,
    streamRounds=2,
    streamRamp=1.0,
    slowStreams=1000,
    slowEvents=10,
    slowSpacing=1.0,
    slowRamp=4.0,
    slowProbes=50,
    bodies=((1024, 300), (100_000, 300), (2**20, 60)),
    tlsRequests=50,
    startups=1,
)
QUICK = Sizes(
    c1Requests=200,
    c64Seconds=1,
    wrkSeconds=1,
    streams=20,
    streamEvents=10,
    streamSpacing=0.02,
    streamRounds=1,
    streamRamp=0.2,
    slowStreams=200,
    slowEvents=4,
    slowSpacing=0.5,
    slowRamp=0.5,
    slowProbes=10,
    bodies=((1024, 20), (100_000, 20), (2**20, 5)),
    tlsRequests=20,
    startups=1,
)
#: The request body sizes the C{bodies} scenario reports by name.
BODY_NAMES = {1024: "1k", 100_000: "100k", 2**20: "1m"}


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="the 30-second smoke run (CI)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats (default 3, quick 1)"
    )
    parser.add_argument("--out", default=None, help="directory for the results")
    parser.add_argument(
        "--only", default=None, help="comma-separated scenarios (default: all)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 on a missed target as well"
    )
    arguments = parser.parse_args(argv)
    if arguments.repeats is None:
        arguments.repeats = 1 if arguments.quick else 3
    if arguments.repeats < 1:
        parser.error("--repeats must be at least 1")
    chosen = SCENARIOS if arguments.only is None else arguments.only.split(",")
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {SCENARIOS}")
    arguments.scenarios = tuple(name for name in SCENARIOS if name in chosen)
    return arguments


def configText(mockUrl: str, port: int, tlsUrl: str | None = None) -> str:
    """
    The proxy's config: listening on C{port} the way it does for a user
    (not a C{--listen} override), everything to the mock unchanged, the
    model L{OPENAI_MODEL} to the mock's OpenAI-format path (translated),
    with C{tlsUrl} the model L{TLS_MODEL} to the mock's TLS listener, and
    room for the 1000-stream scenario (the defaults cap connections at 256
    and streams at 64).
    """
    tlsUpstream = tlsRoute = ""
    if tlsUrl is not None:
        tlsUpstream = f'  tls:\n    url: "{tlsUrl}"\n'
        tlsRoute = f'  - match: "{TLS_MODEL}"\n    upstream: tls\n'
    return (
        "server:\n"
        '  host: "127.0.0.1"\n'
        f"  port: {port}\n"
        "  max_connections: 4096\n"
        "  max_streams: 4096\n"
        f'default:\n  url: "{mockUrl}"\n'
        "upstreams:\n"
        "  openai:\n"
        f'    url: "{mockUrl}{OPENAI_BASE}"\n'
        "    format: openai\n"
        f"{tlsUpstream}"
        "routes:\n"
        f'  - match: "{OPENAI_MODEL}"\n'
        "    upstream: openai\n"
        f"{tlsRoute}"
    )


def ms(values: Any, fraction: float) -> float:
    return percentile(values, fraction) / 1e6


class OtherLoad:
    """
    How much of the machine's CPU time went to processes other than this
    run's (another benchmark on a shared machine skews every figure, so
    the report says when there was one).
    """

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._start = (time.monotonic(), self._busy(), self._ours())

    def _busy(self) -> float:
        times = psutil.cpu_times()
        return float(times.user + times.nice + times.system) + sum(
            getattr(times, name, 0.0) for name in ("irq", "softirq", "steal")
        )

    def _ours(self) -> float:
        # Reaped children (wrk, the start-up proxies) are in children_*,
        # live ones (the mock, the proxy) are summed one by one.
        times = self._me.cpu_times()
        total = float(
            times.user + times.system + times.children_user + times.children_system
        )
        for child in self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                childTimes = child.cpu_times()
                total += childTimes.user + childTimes.system
        return total

    def share(self) -> float:
        """
        Since this object was made: other processes' CPU time as a share
        of all the CPUs' time.
        """
        began, busy, ours = self._start
        wall = (time.monotonic() - began) * (psutil.cpu_count() or 1)
        other = (self._busy() - busy) - (self._ours() - ours)
        return max(0.0, other / wall) if wall > 0 else 0.0


class Bench:
    """
    The running mock and proxy, and what the scenarios share: plan ids,
    the problems seen, counts of what was verified.
    """

    def __init__(
        self,
        mock: MockChild,
        proxy: ProxyChild,
        sizes: Sizes,
        out: Path,
        proxyCpu: int | None,
        tlsCertificate: Path,
    ) -> None:
        self.mock = mock
        self.tlsCertificate = tlsCertificate
        self.proxy = proxy
        self.sizes = sizes
        self.out = out
        self.proxyCpu = proxyCpu
        self.process = psutil.Process(proxy.pid)
        self.ids = Ids()
        self.problems: list[str] = []
        self.counts = {"requests": 0, "streams": 0, "events": 0, "failed": 0}
        self.notes: list[str] = []

    def cpu(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)

    async def upstreamConnects(self) -> float:
        """
        How many connections the mock has accepted so far.
        """
        stats = await control(self.mock.controlPort, "GET", "/stats")
        return float(str(stats["accepted"]))

    def tally(self, where: str, outcome: Outcome) -> Outcome:
        """
        Count what C{outcome} verified and keep what went wrong.
        """
        if outcome.events:
            self.counts["streams"] += outcome.done
            self.counts["events"] += outcome.events
        else:
            self.counts["requests"] += outcome.done
        self.counts["failed"] += outcome.failed
        for problem in outcome.problems:
            if len(self.problems) < 30:
                self.problems.append(f"{where}: {problem}")
        return outcome

    async def sides(
        self, repeat: int, where: str, load: Callable[[int, bool], Awaitable[T]]
    ) -> tuple[T, T]:
        """
        C{load(port, through)} direct to the mock and through the proxy,
        one after the other, alternating which goes first.
        """
        order = [False, True] if repeat % 2 == 0 else [True, False]
        results: dict[bool, T] = {}
        for through in order:
            port = self.proxy.port if through else self.mock.port
            results[through] = await load(port, through)
            if not self.proxy.alive():
                raise RuntimeError(
                    f"the proxy died in {where}:\n{self.proxy.logTail()}"
                )
        return results[False], results[True]

    async def measured(self, through: bool, load: Awaitable[Outcome]) -> Outcome:
        """
        Run C{load}, with the proxy's CPU time over it when C{through}.
        """
        before = self.cpu() if through else 0.0
        outcome = await load
        if through:
            outcome.cpu = self.cpu() - before
        return outcome


async def plain(bench: Bench, figures: Figures, repeat: int) -> None:
    sizes = bench.sizes
    host = bench.proxy.host

    def c1(port: int, through: bool) -> Awaitable[Outcome]:
        return plainLoad(host, port, bench.ids, 1, requests=sizes.c1Requests)

    def c64(port: int, through: bool) -> Awaitable[Outcome]:
        return plainLoad(
            host,
            port,
            bench.ids,
            64,
            duration=sizes.c64Seconds,
            cpu=bench.cpu if through else None,
            meters={"connects": bench.upstreamConnects} if through else None,
        )

    one = await bench.sides(repeat, "plain c=1", c1)
    many = await bench.sides(repeat, "plain c=64", c64)
    names = ("c1 direct", "c1", "c64 direct", "c64")
    for side, name in zip((*one, *many), names, strict=True):
        bench.tally(f"plain {name}", side)
    figures["plain"] = {
        "c1_p50_ms": (ms(one[0].latencies, 0.5), ms(one[1].latencies, 0.5)),
        "c1_p99_ms": (ms(one[0].latencies, 0.99), ms(one[1].latencies, 0.99)),
        "c64_p50_ms": (ms(many[0].latencies, 0.5), ms(many[1].latencies, 0.5)),
        "c64_p99_ms": (ms(many[0].latencies, 0.99), ms(many[1].latencies, 0.99)),
        "c64_rps": (rate(many[0]), rate(many[1])),
    }
    through = many[1]
    if "connects" in through.metered and through.done:
        figures["plain"]["c64_connects_per_1000"] = (
            None,
            through.metered["connects"] / through.done * 1000,
        )
    if through.cpu is not None and through.done:
        figures.setdefault("cpu", {})["per_1000_requests_s"] = (
            None,
            through.cpu / through.done * 1000,
        )
    if not wrkAvailable():
        note = "wrk is not installed (apt-get install -y wrk): no cross-check."
        if note not in bench.notes:
            bench.notes.append(note)
        return

    async def wrk(port: int, through: bool) -> tuple[Outcome, dict[str, Any]]:
        return await wrkLoad(host, port, bench.ids, bench.out, 64, sizes.wrkSeconds)

    direct, proxied = await bench.sides(repeat, "plain wrk", wrk)
    bench.tally("wrk direct", direct[0])
    bench.tally("wrk", proxied[0])
    if direct[1] and proxied[1]:
        figures["plain"] |= {
            "wrk_c64_rps": (rate(direct[0]), rate(proxied[0])),
            "wrk_c64_p50_ms": (direct[1]["p50_us"] / 1e3, proxied[1]["p50_us"] / 1e3),
            "wrk_c64_p99_ms": (direct[1]["p99_us"] / 1e3, proxied[1]["p99_us"] / 1e3),
        }


def rate(outcome: Outcome) -> float | None:
    return outcome.done / outcome.seconds if outcome.seconds else None


async def streams(bench: Bench, figures: Figures, repeat: int) -> None:
    sizes = bench.sizes

    def load(port: int, through: bool) -> Awaitable[Outcome]:
        return bench.measured(
            through,
            streamLoad(
                bench.proxy.host,
                port,
                bench.ids,
                sizes.streams,
                sizes.streamEvents,
                sizes.streamSpacing,
                rounds=sizes.streamRounds,
                ramp=sizes.streamRamp,
            ),
        )

    direct, through = await bench.sides(repeat, "streams", load)
    bench.tally("streams direct", direct)
    bench.tally("streams", through)
    figures["streams"] = streamFigures(direct, through)
    if through.cpu is not None and through.events:
        figures.setdefault("cpu", {})["per_1000_events_s"] = (
            None,
            through.cpu / through.events * 1000,
        )


def streamFigures(
    direct: Outcome, through: Outcome
) -> dict[str, tuple[float | None, float | None]]:
    return {
        "ttfb_p50_ms": (ms(direct.ttfb, 0.5), ms(through.ttfb, 0.5)),
        "ttfb_p99_ms": (ms(direct.ttfb, 0.99), ms(through.ttfb, 0.99)),
        "event_p50_ms": (ms(direct.latencies, 0.5), ms(through.latencies, 0.5)),
        "event_p99_ms": (ms(direct.latencies, 0.99), ms(through.latencies, 0.99)),
    }


async def slow(bench: Bench, figures: Figures, repeat: int) -> None:
    sizes = bench.sizes
    peak = 0

    async def sample(stop: asyncio.Event) -> None:
        nonlocal peak
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, bench.process.memory_info().rss)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    async def load(port: int, through: bool) -> Outcome:
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample(stop)) if through else None
        try:
            return await streamLoad(
                bench.proxy.host,
                port,
                bench.ids,
                sizes.slowStreams,
                sizes.slowEvents,
                sizes.slowSpacing,
                ramp=sizes.slowRamp,
                probes=sizes.slowProbes,
            )
        finally:
            stop.set()
            if sampler is not None:
                await sampler

    direct, through = await bench.sides(repeat, "slow", load)
    bench.tally("slow direct", direct)
    bench.tally("slow", through)
    figures["slow"] = {
        "ttfb_p50_ms": (ms(direct.probeTtfb, 0.5), ms(through.probeTtfb, 0.5)),
        "ramp_ttfb_p50_ms": (ms(direct.ttfb, 0.5), ms(through.ttfb, 0.5)),
        "event_p99_ms": (ms(direct.latencies, 0.99), ms(through.latencies, 0.99)),
        "peak_rss_mib": (None, peak / MiB if peak else None),
    }


async def bodies(bench: Bench, figures: Figures, repeat: int) -> None:
    result: dict[str, tuple[float | None, float | None]] = {}
    for size, requests in bench.sizes.bodies:

        def load(
            port: int, through: bool, size: int = size, requests: int = requests
        ) -> Awaitable[Outcome]:
            return plainLoad(
                bench.proxy.host, port, bench.ids, 1, requests=requests, size=size
            )

        direct, through = await bench.sides(repeat, f"bodies {size}", load)
        name = BODY_NAMES[size]
        bench.tally(f"body {name} direct", direct)
        bench.tally(f"body {name}", through)
        result[f"p50_{name}_ms"] = (
            ms(direct.latencies, 0.5),
            ms(through.latencies, 0.5),
        )

    def added(name: str) -> float | None:
        direct, through = result[f"p50_{name}_ms"]
        return None if direct is None or through is None else through - direct

    base = added("1k")
    for name in ("100k", "1m"):
        value = added(name)
        result[f"added_{name}_over_1k_ms"] = (
            None,
            None if base is None or value is None else value - base,
        )
    figures["bodies"] = result


async def translated(bench: Bench, figures: Figures, repeat: int) -> None:
    sizes = bench.sizes

    def load(port: int, through: bool) -> Awaitable[Outcome]:
        return bench.measured(
            through,
            streamLoad(
                bench.proxy.host,
                port,
                bench.ids,
                sizes.streams,
                sizes.streamEvents,
                sizes.streamSpacing,
                rounds=sizes.streamRounds,
                ramp=sizes.streamRamp,
                translated=True,
                direct=not through,
            ),
        )

    direct, through = await bench.sides(repeat, "translated", load)
    bench.tally("translated direct", direct)
    bench.tally("translated", through)
    result = streamFigures(direct, through)
    del result["ttfb_p99_ms"]
    perEvent = (
        through.cpu / through.events * 1000
        if through.cpu is not None and through.events
        else None
    )
    result["per_1000_events_s"] = (None, perEvent)
    passthrough = figures.get("cpu", {}).get("per_1000_events_s", (None, None))[1]
    result["cpu_vs_passthrough"] = (
        None,
        perEvent / passthrough if perEvent is not None and passthrough else None,
    )
    figures["translated"] = result


async def startupScenario(bench: Bench, figures: Figures, repeat: int) -> None:
    health: list[float] = []
    first: list[float] = []
    for index in range(bench.sizes.startups):
        directory = bench.out / "startup" / f"{repeat}-{index}"
        port = freePort()
        seconds, answered, problems = await startup(
            directory, configText(bench.mock.url, port), port, bench.ids, bench.proxyCpu
        )
        if seconds is not None:
            health.append(seconds)
        if answered is not None:
            first.append(answered)
            bench.counts["requests"] += 1
        else:
            bench.counts["failed"] += 1
            bench.problems.extend(f"startup: {problem}" for problem in problems)
    figures["startup"] = {
        "health_s": (None, min(health) if health else None),
        "first_request_s": (None, min(first) if first else None),
    }


async def tls(bench: Bench, figures: Figures, repeat: int) -> None:
    count = bench.sizes.tlsRequests
    host = bench.proxy.host
    context = clientContext(bench.tlsCertificate)

    async def handshakes() -> float:
        stats = await control(bench.mock.controlPort, "GET", "/stats")
        return float(str(stats["tls_accepted"]))

    def secure(port: int, through: bool) -> Awaitable[Sequential]:
        if through:
            # The client's connection to the proxy is plain and opened
            # untimed; the proxy dials TLS for the first request.  The
            # closing request leaves no pooled connection for the next
            # repeat.
            return sequentialLoad(
                host,
                port,
                bench.ids,
                count,
                model=TLS_MODEL,
                closeAfter=True,
                meter=handshakes,
            )
        return sequentialLoad(
            TLS_HOST,
            bench.mock.tlsPort,
            bench.ids,
            count,
            tls=context,
            timeConnect=True,
        )

    def plainSide(port: int, through: bool) -> Awaitable[Sequential]:
        return sequentialLoad(host, port, bench.ids, count)

    secured = await bench.sides(repeat, "tls", secure)
    plainOnes = await bench.sides(repeat, "tls plain", plainSide)
    for name, side in zip(
        ("tls direct", "tls", "tls plain direct", "tls plain"),
        (*secured, *plainOnes),
        strict=True,
    ):
        bench.tally(name, side.outcome)

    def firstMs(side: Sequential) -> float | None:
        return None if side.firstNs is None else side.firstNs / 1e6

    first = (firstMs(secured[0]), firstMs(secured[1]))
    later = (
        ms(secured[0].outcome.latencies, 0.5),
        ms(secured[1].outcome.latencies, 0.5),
    )
    plainP50 = (
        ms(plainOnes[0].outcome.latencies, 0.5),
        ms(plainOnes[1].outcome.latencies, 0.5),
    )
    handshakeCount = secured[1].metered
    # Through the proxy: one handshake, paid by the first request only.
    throughFirst, throughLater = first[1], later[1]
    noHandshake = None
    if not (handshakeCount is None or throughFirst is None or math.isnan(throughLater)):
        noHandshake = float(handshakeCount == 1 and throughLater < throughFirst / 2)
    figures["tls"] = {
        "first_ms": first,
        "later_p50_ms": later,
        "plain_p50_ms": plainP50,
        "reuse_over_plain_ms": (later[0] - plainP50[0], later[1] - plainP50[1]),
        "handshakes": (None, handshakeCount),
        "second_pays_no_handshake": (None, noHandshake),
    }


SCENARIO_RUNS: dict[str, Callable[[Bench, Figures, int], Awaitable[None]]] = {
    "plain": plain,
    "streams": streams,
    "slow": slow,
    "bodies": bodies,
    "translated": translated,
    "tls": tls,
    "startup": startupScenario,
}


def toRun(scenarios: tuple[str, ...]) -> list[str]:
    """
    The scenarios to run for the ones asked for, in order, with those
    whose figures they derive from.
    """
    wanted = set(scenarios)
    for name in scenarios:
        wanted.update(NEEDS.get(name, ()))
    return [name for name in SCENARIOS if name in wanted and name in SCENARIO_RUNS]


async def perf(arguments: argparse.Namespace, command: str) -> int:
    out = outDirectory(arguments.out, "perf").absolute()
    pinned = False if arguments.no_pin else pinSelf(LOAD_CPU)
    raiseDescriptorLimit()
    proxyCpu = None if arguments.no_pin else PROXY_CPU
    loadCpu = None if arguments.no_pin else LOAD_CPU
    about = machine()
    sizes = QUICK if arguments.quick else FULL
    # A throw-away certificate for the mock's TLS listener, trusted by the
    # proxy through SSL_CERT_FILE (its only trust store: it reaches no
    # other HTTPS upstream).
    tlsCertificate, tlsKey = makeCertificate(out)
    mock = MockChild(out, cpu=loadCpu, tls=(tlsCertificate, tlsKey))
    proxy: ProxyChild | None = None
    repeats: list[Figures] = []
    otherLoad: list[float] = []
    started = time.monotonic()
    bench: Bench | None = None
    crash: str | None = None
    try:
        await mock.start()
        proxy = ProxyChild(
            out,
            configText(
                mock.url, freePort(), tlsUrl=f"https://{TLS_HOST}:{mock.tlsPort}"
            ),
            cpu=proxyCpu,
            listen=None,
            environment={"SSL_CERT_FILE": str(tlsCertificate)},
        )
        await proxy.start()
        bench = Bench(mock, proxy, sizes, out, proxyCpu, tlsCertificate)
        for repeat in range(arguments.repeats):
            figures: Figures = {}
            other = OtherLoad()
            for name in toRun(arguments.scenarios):
                print(
                    f"perf: repeat {repeat + 1}/{arguments.repeats}: {name}"
                    f" ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                )
                await SCENARIO_RUNS[name](bench, figures, repeat)
            repeats.append(figures)
            otherLoad.append(round(other.share(), 3))
    except (RuntimeError, OSError, psutil.Error) as e:
        crash = f"the run stopped: {e}"
    finally:
        if proxy is not None:
            await proxy.stop()
        await mock.stop()
    problems = ([] if bench is None else bench.problems) + ([crash] if crash else [])
    counts = {} if bench is None else bench.counts
    correct = crash is None and bench is not None and bench.counts["failed"] == 0
    results = collect(repeats, arguments.scenarios)
    targets = [
        row["passed"]
        for scenario in results.values()
        for row in scenario.values()
        if row["target"] is not None
    ]
    targetsMet = all(passed is True for passed in targets)
    status = 0 if correct and (targetsMet or not arguments.strict) else 1
    document = {
        "command": command,
        "quick": arguments.quick,
        "repeats": arguments.repeats,
        "seconds": round(time.monotonic() - started, 1),
        "machine": about,
        "pinned": pinned and proxyCpu is not None,
        "other_load": otherLoad,
        "correctness": {"passed": correct, "problems": problems, **counts},
        "targets_met": targetsMet,
        "targets_missed": sum(1 for passed in targets if passed is False),
        "exit_status": status,
        "notes": [] if bench is None else bench.notes,
        "scenarios": results,
        "out": str(out),
    }
    text = write(out, document)
    print(text)
    print(
        f"perf: {'correct' if correct else 'INCORRECT'}: {counts};"
        f" targets missed: {document['targets_missed']};"
        f" {document['seconds']} s; results in {out}",
        file=sys.stderr,
    )
    print(f"machine: {machineLine(about, bool(document['pinned']))}")
    return status


def main(argv: list[str] | None = None) -> None:
    arguments = parseArguments(argv)
    words = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/perf.py", *words])
    run(perf(arguments, command))


if __name__ == "__main__":
    main()
