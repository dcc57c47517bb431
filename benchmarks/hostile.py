"""
Hostile load (issue 6, reliability.md L6): a legitimate stream through a
real C{twistd -n ccrouter}, alone (the baseline: half before the attack,
half after it), and while 500 slowloris connections, 1000 idle connections
and 20 parallel oversized uploads hit the proxy from another process.

For example::

    python benchmarks/hostile.py                   # 15 s per phase
    python benchmarks/hostile.py --phase 10        # the CI length

Targets (exit status 1 if one is missed): the legitimate stream completes,
byte for byte, in both phases; its per-event latency p99 under attack is at
most 2x the baseline's; the proxy's RSS grows by at most 32 MiB; every
oversized upload is refused (413, or closed) before its body is sent, p99
within 1 s; the proxy's descriptors return to the baseline +-5 once the
attackers leave.  What happened to the
attackers (cut after how long, with which status) is reported, not judged:
it depends on the proxy's header deadline and connection cap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.attack import OVERSIZED
from benchmarks.children import (
    LOAD_CPU,
    PROXY_CPU,
    AttackChild,
    MockChild,
    ProxyChild,
    Sampler,
    machine,
    pinSelf,
    raiseDescriptorLimit,
)
from benchmarks.client import Connection, StreamResult
from benchmarks.common import (
    Check,
    MiB,
    atMost,
    latencyFigures,
    median,
    outDirectory,
    percentile,
    report,
    run,
    until,
)
from benchmarks.wire import Plan

#: How an oversized upload may end: a 413, or a close without one (when the
#: connection cap evicts it, or when the proxy closes with the upload's
#: bytes unread, which the kernel turns into a reset that can overtake the
#: 413).  Any other status, or no end at all, means the proxy took the body.
REFUSED = frozenset({"413", "none", "reset"})


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--phase",
        type=float,
        default=15,
        help="seconds of legitimate stream under attack, and in all before and"
        " after it",
    )
    parser.add_argument("--rate", type=float, default=50, help="legit events/s")
    parser.add_argument("--event-bytes", type=int, default=200)
    parser.add_argument("--slowloris", type=int, default=500)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--upload-gap", type=float, default=0.5, help="seconds")
    parser.add_argument("--connect-rate", type=float, default=500, help="per second")
    parser.add_argument("--max-p99-ratio", type=float, default=2)
    parser.add_argument(
        "--p99-floor",
        type=float,
        default=2,
        help="ms the attack may add to the legit p99 whatever the ratio",
    )
    parser.add_argument("--max-rss-growth", type=float, default=32, help="MiB")
    parser.add_argument("--max-upload-answer", type=float, default=1000, help="ms")
    parser.add_argument("--fd-slack", type=int, default=5)
    parser.add_argument("--out", default=None, help="directory for the results")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs")
    return parser.parse_args(argv)


async def legitimate(
    proxy: ProxyChild, planId: int, seconds: float, arguments: argparse.Namespace
) -> StreamResult:
    """
    One stream of C{seconds} on a new connection.
    """
    plan = Plan(
        id=planId,
        events=int(seconds * arguments.rate),
        spacing=1 / arguments.rate,
        size=arguments.event_bytes,
    )
    try:
        connection = await Connection.open(proxy.host, proxy.port)
    except (OSError, asyncio.TimeoutError) as e:
        return StreamResult(plan=plan, problem=f"cannot connect: {e!r}")
    try:
        return await connection.stream(plan, timeout=seconds + 30)
    finally:
        connection.close()
        await connection.closed()


def describe(result: StreamResult) -> str:
    if result.outcome == "complete":
        return "complete"
    return f"{result.outcome}: {result.problem or result.errorType or result.status}"


async def hostile(arguments: argparse.Namespace) -> int:
    out = outDirectory(arguments.out, "hostile")
    pinned = False if arguments.no_pin else pinSelf(LOAD_CPU)
    raiseDescriptorLimit()
    about = machine()
    loadCpu = None if arguments.no_pin else LOAD_CPU
    mock = MockChild(out, cpu=loadCpu)
    proxy: ProxyChild | None = None
    attacker: AttackChild | None = None
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

        sampler.phase = "baseline"
        before = await legitimate(proxy, 1, arguments.phase / 2, arguments)
        rssBefore = median([sample.rss for sample in sampler.inPhase("baseline")])

        sampler.phase = "attack"
        attacker = AttackChild(
            out,
            [
                "--port",
                str(proxy.port),
                "--slowloris",
                str(arguments.slowloris),
                "--idle",
                str(arguments.idle),
                "--uploads",
                str(arguments.uploads),
                "--upload-gap",
                str(arguments.upload_gap),
                "--connect-rate",
                str(arguments.connect_rate),
            ],
            cpu=loadCpu,
        )
        ready = await attacker.start()
        underAttack = await legitimate(proxy, 2, arguments.phase, arguments)
        attack = await attacker.stop()
        attacker = None
        alive = proxy.alive()
        rssPeak = max(sample.rss for sample in sampler.inPhase("attack"))
        fdsPeak = max(sample.fds for sample in sampler.inPhase("attack"))

        sampler.phase = "after"
        after = await legitimate(proxy, 3, arguments.phase / 2, arguments)

        async def descriptorsBack() -> bool:
            assert sampler is not None
            sample = sampler.sample()
            return sample is not None and sample.fds <= fdBaseline + arguments.fd_slack

        await until(descriptorsBack, 15, interval=0.5)
        last = sampler.samples[-1]
    finally:
        stopSampling.set()
        if samplerTask is not None:
            samplerTask.cancel()
        if sampler is not None:
            sampler.close()
        if attacker is not None:
            await attacker.kill()
        if proxy is not None:
            await proxy.stop()
        await mock.stop()

    # The baseline is taken on both sides of the attack, so a change in the
    # machine's other load during the run weighs on both figures alike.
    baseline = before.latencies + after.latencies
    base = latencyFigures(baseline)
    hit = latencyFigures(underAttack.latencies)
    baseP99 = percentile(baseline, 0.99) / 1e6
    hitP99 = percentile(underAttack.latencies, 0.99) / 1e6
    ratio = hitP99 / baseP99
    # On a quiet machine the baseline p99 is about 1 ms, and a ratio of two
    # such figures measures scheduler noise and accept bursts more than the
    # proxy: below the floor, the added time is what a user could notice.
    allowedP99 = max(arguments.max_p99_ratio * baseP99, baseP99 + arguments.p99_floor)
    uploads = attack["uploads"]
    statuses = uploads["statuses"]
    checks = [
        Check("proxy_alive", alive, alive, "the proxy survives the attack"),
        Check(
            "legit_before",
            before.outcome == "complete",
            describe(before),
            "complete",
        ),
        Check(
            "legit_after",
            after.outcome == "complete",
            describe(after),
            "complete",
        ),
        Check(
            "legit_under_attack",
            underAttack.outcome == "complete",
            describe(underAttack),
            "complete",
        ),
        Check(
            "p99_ratio",
            hitP99 <= allowedP99,
            round(ratio, 3),
            f"<= {arguments.max_p99_ratio}x, or <= {arguments.p99_floor} ms added",
        ),
        atMost(
            "rss_growth_mib",
            (rssPeak - rssBefore) / MiB,
            arguments.max_rss_growth,
            " MiB",
        ),
        Check(
            "uploads_refused",
            bool(statuses) and set(statuses) <= REFUSED,
            statuses,
            "each answered 413 or closed: " + ", ".join(sorted(REFUSED)),
        ),
        atMost(
            "upload_answer_p99_ms",
            uploads["answer_after_ms"]["p99"],
            arguments.max_upload_answer,
            " ms",
        ),
        atMost(
            "upload_bytes_taken_max",
            uploads["body_bytes_sent_before_answer_max"],
            OVERSIZED - 1,
        ),
        Check(
            "fds_back",
            abs(last.fds - fdBaseline) <= arguments.fd_slack,
            last.fds,
            f"{fdBaseline} +- {arguments.fd_slack}",
        ),
    ]
    figures = {
        "phase_s": arguments.phase,
        "legit_rate": arguments.rate,
        "latency_baseline": base,
        "latency_under_attack": hit,
        "p99_ratio": round(ratio, 2),
        "rss_before_mib": round(rssBefore / MiB, 1),
        "rss_peak_mib": round(rssPeak / MiB, 1),
        "rss_after_mib": round(last.rss / MiB, 1),
        "fds_idle": fdBaseline,
        "fds_peak": fdsPeak,
        "fds_after": last.fds,
        "attack_ready": ready,
        "attack": attack,
        "pinned": pinned and proxy.pinned,
    }
    human = (
        f"legit stream {describe(before)} / {describe(underAttack)}"
        f" / {describe(after)};"
        f" p99 {base['p99_ms']} ms alone, {hit['p99_ms']} ms under attack"
        f" ({ratio:.2f}x); RSS +{(rssPeak - rssBefore) / MiB:.1f} MiB;"
        f" uploads {statuses} p99 {uploads['answer_after_ms']['p99']} ms;"
        f" slowloris cut {attack['slowloris']['cut']}/{attack['slowloris']['opened']},"
        f" idle cut {attack['idle']['cut']}/{attack['idle']['opened']};"
        f" fds {fdBaseline}->{fdsPeak}->{last.fds}"
    )
    return report("hostile", checks, figures, about, out, human)


def main(argv: list[str] | None = None) -> None:
    run(hostile(parseArguments(argv)))


if __name__ == "__main__":
    main()
