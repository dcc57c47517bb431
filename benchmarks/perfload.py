"""
The loads of the performance suite, each pointed at a host and port (the
mock itself, or the proxy in front of it) and each verifying every
response: non-streaming requests on keep-alive connections (L{plainLoad}),
requests one after another on one new connection, plain or TLS, the first
timed apart (L{sequentialLoad}), concurrent streams with staggered starts
(L{streamLoad}), Debian's C{wrk} (L{wrkLoad}) and the proxy's start-up
(L{startup}).

Timing uses C{time.monotonic_ns()} on both sides (the mock stamps each
event with it), so the figures are comparable across processes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import time
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from attrs import define, field

from benchmarks.children import ProxyChild
from benchmarks.client import Connection, StreamResult
from benchmarks.perfwire import (
    OPENAI_BASE,
    TextStreamCheck,
    messageBody,
    plainRequest,
    translatedRequest,
)
from benchmarks.plainclient import PlainConnection, ResponseError, requestBytes
from benchmarks.wire import MODEL, Plan

#: At most this many problems are kept, per load, for the report.
MAX_PROBLEMS = 10


@define
class Outcome:
    """
    What one load did, on one side (direct or through the proxy).

    @ivar latencies: Per request (plain) or per content event (streams),
        nanoseconds.
    @ivar ttfb: Per stream, nanoseconds from sending the request to its
        response head.
    @ivar probeTtfb: The same for the probe streams of L{streamLoad}, sent
        once all the others are open.
    @ivar done: Requests answered whole and right, or streams verified.
    @ivar failed: Requests or streams that were not.
    @ivar events: Content events verified.
    @ivar seconds: How long the measured part took.
    @ivar cpu: CPU seconds the proxy used meanwhile, if it was measured.
    @ivar rssPeak: The proxy's peak RSS (bytes) meanwhile, if sampled.
    @ivar metered: How much each meter of L{plainLoad} went up meanwhile.
    """

    latencies: array[int] = field(factory=lambda: array("q"))
    ttfb: array[int] = field(factory=lambda: array("q"))
    probeTtfb: array[int] = field(factory=lambda: array("q"))
    done: int = 0
    failed: int = 0
    events: int = 0
    seconds: float = 0.0
    cpu: float | None = None
    rssPeak: int | None = None
    problems: list[str] = field(factory=list)
    metered: dict[str, float] = field(factory=dict)

    def problem(self, text: str) -> None:
        self.failed += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


class Ids:
    """
    Plan ids, unique over a run, so that a response can never be taken
    for another's.
    """

    def __init__(self) -> None:
        self._next = 0

    def take(self, count: int = 1) -> int:
        first = self._next
        self._next += count
        return first


async def plainLoad(
    host: str,
    port: int,
    ids: Ids,
    concurrency: int,
    *,
    requests: int | None = None,
    duration: float | None = None,
    size: int = 0,
    warmup: int = 3,
    timeout: float = 30,
    cpu: Callable[[], float] | None = None,
    meters: dict[str, Callable[[], Awaitable[float]]] | None = None,
) -> Outcome:
    """
    Non-streaming requests, C{concurrency} keep-alive connections each
    sending one after another: C{requests} in all or for C{duration}
    seconds, after C{warmup} unmeasured ones per connection.  Each
    connection asks for its own plan, so its answers are told apart.

    @param size: The request body size in bytes (at least the bare request).
    @param cpu: Reads the proxy's CPU seconds, for L{Outcome.cpu} over the
        measured requests (not the warm-up).
    @param meters: Counters read before and after the measured requests,
        for L{Outcome.metered} (the mock's accepted connections, say).
    """
    outcome = Outcome()
    first = ids.take(concurrency)
    plans = [
        Plan(id=first + index, events=0, spacing=0, stream=False)
        for index in range(concurrency)
    ]
    wires = [requestBytes(host, port, plainRequest(plan, size)) for plan in plans]
    expected = [messageBody(plan) for plan in plans]
    connections: list[PlainConnection] = []
    try:
        for _ in range(concurrency):
            connections.append(await PlainConnection.open(host, port))
        await asyncio.gather(
            *(
                _requests(connections[i], wires[i], expected[i], warmup, None, timeout)
                for i in range(concurrency)
            )
        )
        meters = meters or {}
        readings = {name: await meter() for name, meter in meters.items()}
        cpuBefore = None if cpu is None else cpu()
        start = time.monotonic()
        deadline = None if duration is None else start + duration
        shares = _shares(requests, concurrency)
        results = await asyncio.gather(
            *(
                _requests(
                    connections[i], wires[i], expected[i], shares[i], deadline, timeout
                )
                for i in range(concurrency)
            )
        )
        outcome.seconds = time.monotonic() - start
        if cpu is not None and cpuBefore is not None:
            outcome.cpu = cpu() - cpuBefore
        for name, meter in meters.items():
            outcome.metered[name] = await meter() - readings[name]
    except (OSError, asyncio.TimeoutError, ResponseError) as e:
        outcome.problem(f"plain load: {e!r}")
        return outcome
    finally:
        for connection in connections:
            connection.close()
    for latencies, problems in results:
        outcome.latencies.extend(latencies)
        outcome.done += len(latencies)
        for problem in problems:
            outcome.problem(problem)
    return outcome


def _shares(requests: int | None, concurrency: int) -> list[int | None]:
    if requests is None:
        return [None] * concurrency
    return [
        requests // concurrency + (1 if index < requests % concurrency else 0)
        for index in range(concurrency)
    ]


async def _requests(
    connection: PlainConnection,
    wire: bytes,
    expected: bytes,
    count: int | None,
    deadline: float | None,
    timeout: float,
) -> tuple[array[int], list[str]]:
    """
    One connection's requests, until C{count} are done or C{deadline}
    passes; their latencies and what went wrong.
    """
    latencies = array("q")
    problems: list[str] = []
    sent = 0
    clock = time.monotonic_ns
    while (count is None or sent < count) and (
        deadline is None or time.monotonic() < deadline
    ):
        sent += 1
        began = clock()
        try:
            status, body = await connection.request(wire, timeout)
        except ResponseError as e:
            problems.append(str(e))
            break
        ended = clock()
        if status != 200:
            problems.append(f"status {status}: {body[:200]!r}")
        elif body != expected:
            problems.append(f"a body that differs: {body[:120]!r}")
        else:
            latencies.append(ended - began)
        if not connection.reusable:
            problems.append("the connection was closed")
            break
    return latencies, problems


@define
class Sequential:
    """
    What L{sequentialLoad} did: the outcome (C{latencies} holds the
    requests after the first), the first request's latency, and how much
    the meter went up over the measured requests.
    """

    outcome: Outcome
    firstNs: int | None = None
    metered: float | None = None


async def sequentialLoad(
    host: str,
    port: int,
    ids: Ids,
    count: int,
    *,
    model: str = MODEL,
    tls: ssl.SSLContext | None = None,
    serverHostname: str | None = None,
    timeConnect: bool = False,
    closeAfter: bool = False,
    meter: Callable[[], Awaitable[float]] | None = None,
    timeout: float = 30,
) -> Sequential:
    """
    C{count} non-streaming requests for C{model}, one after another on one
    new keep-alive connection, each verified byte for byte; the first one's
    latency is kept apart from the rest.

    @param tls: Speak TLS to C{host} (verifying C{serverHostname}).
    @param timeConnect: Whether the first latency includes opening the
        connection (and its TLS handshake): direct to the mock, that is
        what a first request pays; through the proxy the proxy dials the
        upstream itself, so the client's connection is opened untimed.
    @param closeAfter: Then one more request, verified but not timed, whose
        plan makes the upstream answer with C{Connection: close} and close
        its connection: the proxy cannot pool it, so the next call starts
        with no pooled connection to that upstream.
    @param meter: Read just before the first request and just after the
        last measured one (the mock's TLS handshakes, say).
    """
    result = Sequential(Outcome())
    outcome = result.outcome
    first = ids.take(count + 1)
    connection: PlainConnection | None = None
    clock = time.monotonic_ns

    def wire(plan: Plan) -> bytes:
        return requestBytes(host, port, plainRequest(plan, model=model))

    async def ask(plan: Plan) -> int | None:
        """
        One request; its latency if it was answered right.
        """
        assert connection is not None
        began = clock()
        status, body = await connection.request(wire(plan), timeout)
        ended = clock()
        if status != 200:
            outcome.problem(f"plan {plan.id}: status {status}: {body[:200]!r}")
            return None
        if body != messageBody(plan):
            outcome.problem(f"plan {plan.id}: a body that differs: {body[:120]!r}")
            return None
        return ended - began

    async def open() -> PlainConnection:
        return await PlainConnection.open(
            host, port, timeout, tls=tls, serverHostname=serverHostname
        )

    before = 0.0
    try:
        if meter is not None:
            before = await meter()
        start = time.monotonic()
        for index in range(count):
            plan = Plan(id=first + index, events=0, spacing=0, stream=False)
            if connection is None:
                began = clock()
                connection = await open()
                connected = clock() - began
                latency = await ask(plan)
                if latency is not None:
                    result.firstNs = latency + (connected if timeConnect else 0)
                    outcome.done += 1
            else:
                latency = await ask(plan)
                if latency is not None:
                    outcome.latencies.append(latency)
                    outcome.done += 1
            if not connection.reusable:
                outcome.problem(f"plan {plan.id}: the connection was closed")
                return result
        outcome.seconds = time.monotonic() - start
        if meter is not None:
            result.metered = await meter() - before
        if closeAfter and connection is not None:
            plan = Plan(id=first + count, events=0, spacing=0, stream=False, close=True)
            if await ask(plan) is not None:
                outcome.done += 1
    except (OSError, asyncio.TimeoutError, ResponseError) as e:
        outcome.problem(f"sequential requests: {e!r}")
    finally:
        if connection is not None:
            connection.close()
    return result


async def streamLoad(
    host: str,
    port: int,
    ids: Ids,
    streams: int,
    events: int,
    spacing: float,
    *,
    rounds: int = 1,
    ramp: float = 0.0,
    translated: bool = False,
    direct: bool = False,
    size: int = 200,
    probes: int = 0,
) -> Outcome:
    """
    C{streams} concurrent streams of C{events} events C{spacing} seconds
    apart, each connection starting C{ramp / streams} seconds after the one
    before (so a new stream meets the others already flowing, rather than
    all of them at once) and carrying C{rounds} streams one after another.
    Every stream is verified byte for byte (text for C{translated}).

    @param translated: The OpenAI-format stream: through the proxy, a
        request for the translating route; C{direct}, the mock's OpenAI
        path itself.
    @param probes: Once the last stream has started, this many short
        streams one after another on one more connection, for the time to
        first byte with all the others open (L{Outcome.probeTtfb}).
    """
    outcome = Outcome()
    first = ids.take(streams * rounds + probes)
    timeout = events * spacing + 60

    async def worker(index: int) -> list[StreamResult]:
        if index >= streams:
            return await probe()
        await asyncio.sleep(ramp * index / streams)
        results: list[StreamResult] = []
        connection = None
        try:
            for round in range(rounds):
                plan = Plan(
                    id=first + index * rounds + round,
                    events=events,
                    spacing=spacing,
                    size=size,
                )
                if connection is None or not connection.reusable:
                    if connection is not None:
                        connection.close()
                    connection = await Connection.open(host, port)
                if translated:
                    result = await connection.stream(
                        plan,
                        timeout,
                        body=translatedRequest(plan),
                        check=TextStreamCheck(plan),
                        path=OPENAI_BASE + "/chat/completions"
                        if direct
                        else "/v1/messages",
                    )
                else:
                    result = await connection.stream(plan, timeout)
                results.append(result)
        except (OSError, asyncio.TimeoutError) as e:
            results.append(
                StreamResult(
                    plan=Plan(id=-1, events=0, spacing=0),
                    problem=f"cannot connect or send: {e!r}",
                )
            )
        finally:
            if connection is not None:
                connection.close()
        return results

    async def probe() -> list[StreamResult]:
        # A little after the last stream started, so that it has its head.
        await asyncio.sleep(ramp + 0.5)
        results: list[StreamResult] = []
        connection = None
        try:
            for index in range(probes):
                plan = Plan(id=first + streams * rounds + index, events=2, spacing=0.01)
                if connection is None or not connection.reusable:
                    if connection is not None:
                        connection.close()
                    connection = await Connection.open(host, port)
                results.append(await connection.stream(plan, 60))
        except (OSError, asyncio.TimeoutError) as e:
            results.append(
                StreamResult(plan=Plan(id=-1, events=0, spacing=0), problem=repr(e))
            )
        finally:
            if connection is not None:
                connection.close()
        return results

    start = time.monotonic()
    workers = streams + (1 if probes else 0)
    everything = await asyncio.gather(*(worker(index) for index in range(workers)))
    outcome.seconds = time.monotonic() - start
    for index, results in enumerate(everything):
        for result in results:
            if result.outcome != "complete":
                outcome.problem(
                    f"stream {result.plan.id}: {result.outcome}"
                    f" (status {result.status}): {result.problem or result.errorType}"
                )
                continue
            outcome.done += 1
            outcome.events += len(result.latencies)
            outcome.latencies.extend(result.latencies)
            if result.headNs is not None:
                ttfb = outcome.ttfb if index < streams else outcome.probeTtfb
                ttfb.append(result.headNs - result.startedNs)
    return outcome


#: C{wrk}'s script: the body from a file, every response checked against
#: the expected one, and the figures as one JSON line at the end.
_WRK_SCRIPT = """
local function slurp(path)
  local file = assert(io.open(path, "rb"))
  local text = file:read("*a")
  file:close()
  return text
end
wrk.method = "POST"
wrk.body = slurp("%(body)s")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Anthropic-Version"] = "2023-06-01"
wrk.headers["X-Api-Key"] = "sk-ant-api03-load-test-not-a-key"
local expected = slurp("%(expected)s")
local threads = {}
bad = 0
function setup(thread)
  table.insert(threads, thread)
end
function response(status, headers, body)
  if status ~= 200 or body ~= expected then
    bad = bad + 1
  end
end
function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do
    wrong = wrong + thread:get("bad")
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d,'
    .. ' "wrong": %%d, "connect": %%d, "read": %%d, "write": %%d,'
    .. ' "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), wrong, errors.connect, errors.read,
    errors.write, errors.status, errors.timeout))
end
"""


def wrkAvailable() -> bool:
    return shutil.which("wrk") is not None


async def wrkLoad(
    host: str,
    port: int,
    ids: Ids,
    directory: Path,
    connections: int,
    duration: float,
) -> tuple[Outcome, dict[str, Any]]:
    """
    C{wrk -t1 -c<connections>} for C{duration} seconds on the same
    non-streaming request, each response compared with the expected bytes
    in its Lua script; its own figures beside the outcome (whose
    C{latencies} stay empty: C{wrk} reports percentiles only).
    """
    outcome = Outcome()
    plan = Plan(id=ids.take(), events=0, spacing=0, stream=False)
    bodyPath = directory / f"wrk-{plan.id}-body.json"
    expectedPath = directory / f"wrk-{plan.id}-expected.json"
    scriptPath = directory / f"wrk-{plan.id}.lua"
    bodyPath.write_bytes(plainRequest(plan))
    expectedPath.write_bytes(messageBody(plan))
    scriptPath.write_text(_WRK_SCRIPT % {"body": bodyPath, "expected": expectedPath})
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(scriptPath),
        f"http://{host}:{port}/v1/messages",
    ]
    completed = await asyncio.to_thread(
        subprocess.run, command, capture_output=True, timeout=duration + 60
    )
    stdout = completed.stdout.decode(errors="replace")
    line = next(
        (text for text in stdout.splitlines() if text.startswith('{"requests"')), None
    )
    if completed.returncode != 0 or line is None:
        outcome.problem(
            f"wrk exited {completed.returncode}: {stdout[-500:]}"
            f" {completed.stderr.decode(errors='replace')[-500:]}"
        )
        return outcome, {}
    figures: dict[str, Any] = json.loads(line)
    wrong = figures["wrong"] + sum(
        figures[name] for name in ("connect", "read", "write", "status", "timeout")
    )
    outcome.done = figures["requests"] - figures["wrong"]
    outcome.seconds = figures["duration_us"] / 1e6
    if wrong:
        outcome.problem(f"wrk saw {wrong} wrong answers or errors: {figures}")
        outcome.failed = wrong
    elif not figures["requests"]:
        outcome.problem(f"wrk got no answer in {duration:g} s: {figures}")
    return outcome, figures


def freePort() -> int:
    """
    A port nobody listens on now (the proxy binds it a moment later).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _poll(
    attempt: Callable[[], Any], deadline: float, interval: float = 0.002
) -> bool:
    while time.monotonic() < deadline:
        try:
            if await attempt():
                return True
        except (OSError, asyncio.TimeoutError, ResponseError):
            pass
        await asyncio.sleep(interval)
    return False


async def startup(
    directory: Path,
    config: str,
    port: int,
    ids: Ids,
    cpu: int | None,
    timeout: float = 30,
) -> tuple[float | None, float | None, list[str]]:
    """
    Start one more C{twistd -n ccrouter} with C{config}, which makes it
    listen on C{port}, and poll it: seconds from spawning it to the first
    answered C{GET /health}, and to the first answered request proxied to
    the mock.
    """
    directory.mkdir(parents=True, exist_ok=True)
    proxy = ProxyChild(directory, config, cpu=cpu, listen=None)
    seen: list[str] = []
    health = first = None
    plan = Plan(id=ids.take(), events=0, spacing=0, stream=False)
    wire = requestBytes("127.0.0.1", port, plainRequest(plan))
    probe = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    async def ask(request: bytes, check: Callable[[bytes], bool]) -> bool:
        connection = await PlainConnection.open("127.0.0.1", port, timeout=1)
        try:
            status, body = await connection.request(request, 5)
        finally:
            connection.close()
        if status == 200 and check(body):
            return True
        seen.append(f"status {status}: {body[:200]!r}")
        return False

    try:
        proxy.spawn()
        deadline = time.monotonic() + timeout
        if await _poll(lambda: ask(probe, lambda body: True), deadline):
            health = (time.monotonic_ns() - proxy.spawnedNs) / 1e9
            expected = messageBody(plan)
            if await _poll(lambda: ask(wire, expected.__eq__), deadline):
                first = (time.monotonic_ns() - proxy.spawnedNs) / 1e9
    finally:
        await proxy.stop()
    if first is not None:
        return health, first, []
    # Refusals and errors while it starts are expected; only an answer
    # that never comes is a problem.
    return (
        health,
        first,
        [
            f"no answer within {timeout} s",
            *seen[-3:],
            proxy.logTail(10),
        ],
    )
