"""
Hostile local clients against a proxy, in their own process (used by
L{benchmarks.hostile})::

    python -m benchmarks.attack --port P [--slowloris 500] [--idle 1000] [--uploads 20]

It opens the slowloris and idle connections at C{--connect-rate} per second,
prints C{{"ready": ...}} once they are all open, keeps the oversized
uploads going, and when standard input closes (or after C{--duration})
prints one JSON line of what it saw and exits:

 - slowloris: a request line and then one header byte per second, never
   finishing the headers (slowhttptest C{-H});
 - idle: a connection that never sends a byte;
 - uploads: C{Content-Length: 33554433} (32 MiB + 1) and a body sent as
   fast as the socket takes it, until the proxy answers; each uploader
   starts a new one C{--upload-gap} seconds after the last ended.

Connections that are closed are not reopened (as slowhttptest does); for
each kind it reports how many were cut, after how long, and with which
status, if any.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from collections import Counter
from typing import Any

from benchmarks.children import raiseDescriptorLimit
from benchmarks.common import percentile

OVERSIZED = 32 * 2**20 + 1


class Kind:
    """
    What happened to the connections of one kind.
    """

    def __init__(self) -> None:
        self.opened = 0
        self.connectFailures = 0
        self.cutAfter: list[float] = []
        self.statuses: Counter[str] = Counter()

    def summary(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "connect_failures": self.connectFailures,
            "cut": len(self.cutAfter),
            "still_open": self.opened - len(self.cutAfter),
            "cut_after_s": {
                "min": round(min(self.cutAfter, default=float("nan")), 2),
                "p50": round(percentile(self.cutAfter, 0.5), 2),
                "max": round(max(self.cutAfter, default=float("nan")), 2),
            },
            "statuses": dict(self.statuses),
        }


def _status(received: bytes) -> str:
    if received.startswith(b"HTTP/1.1 "):
        return received[9:12].decode(errors="replace")
    return "none"


async def _held(
    kind: Kind,
    host: str,
    port: int,
    stop: asyncio.Event,
    slow: bool,
) -> None:
    """
    One slowloris (C{slow}) or idle connection, held until the proxy cuts
    it or the attack stops.
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)
    except (OSError, asyncio.TimeoutError):
        kind.connectFailures += 1
        return
    kind.opened += 1
    opened = time.monotonic()

    async def drip() -> None:
        writer.write(f"POST /v1/messages HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())
        header = b"X-Slow: " + b"a" * 100_000
        for byte in header:
            await asyncio.sleep(1)
            writer.write(bytes([byte]))

    dripping = asyncio.create_task(drip()) if slow else None
    reading = asyncio.create_task(reader.read(4096))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if reading.done():
            kind.cutAfter.append(time.monotonic() - opened)
            try:
                kind.statuses[_status(reading.result())] += 1
            except OSError:
                kind.statuses["reset"] += 1
    finally:
        for task in (dripping, reading, stopping):
            if task is not None:
                task.cancel()
        writer.close()


class Uploads:
    def __init__(self) -> None:
        self.started = 0
        self.answeredAfter: list[float] = []
        self.sentBefore: list[int] = []
        self.statuses: Counter[str] = Counter()

    def summary(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "answered": len(self.answeredAfter),
            "statuses": dict(self.statuses),
            "answer_after_ms": {
                "p50": round(percentile(self.answeredAfter, 0.5) * 1000, 2),
                "p99": round(percentile(self.answeredAfter, 0.99) * 1000, 2),
                "max": round(max(self.answeredAfter, default=float("nan")) * 1000, 2),
            },
            "body_bytes_sent_before_answer_max": max(self.sentBefore, default=0),
        }


async def _upload(uploads: Uploads, host: str, port: int) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, asyncio.TimeoutError):
        uploads.statuses["connect-failed"] += 1
        return
    uploads.started += 1
    sent = 0
    try:
        writer.write(
            (
                f"POST /v1/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {OVERSIZED}\r\n\r\n"
            ).encode()
        )
        start = time.monotonic()
        reading = asyncio.create_task(reader.read(4096))
        block = b"x" * 65536
        try:
            while not reading.done() and sent < OVERSIZED:
                piece = block[: OVERSIZED - sent]
                writer.write(piece)
                sent += len(piece)
                await asyncio.wait_for(writer.drain(), 10)
        except (OSError, asyncio.TimeoutError):
            pass  # the proxy closed the connection under the upload
        try:
            status = _status(await asyncio.wait_for(reading, 10))
        except OSError:
            status = "reset"
        except asyncio.TimeoutError:
            status = "no answer"
        uploads.answeredAfter.append(time.monotonic() - start)
        uploads.sentBefore.append(sent)
        uploads.statuses[status] += 1
    finally:
        writer.close()


async def _uploader(
    uploads: Uploads, host: str, port: int, gap: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await _upload(uploads, host, port)
        try:
            await asyncio.wait_for(stop.wait(), gap)
        except asyncio.TimeoutError:
            pass


async def attack(arguments: argparse.Namespace) -> None:
    host, port = "127.0.0.1", arguments.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = time.monotonic()

    def stdinClosed() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=stdinClosed, daemon=True).start()
    slowloris, idle, uploads = Kind(), Kind(), Uploads()
    tasks = [
        asyncio.create_task(_uploader(uploads, host, port, arguments.upload_gap, stop))
        for _ in range(arguments.uploads)
    ]
    # Interleave the two kinds, at a bounded rate: the proxy's accept queue
    # is short, and a burst of SYNs beyond it only measures the kernel.
    order = [True] * arguments.slowloris + [False] * arguments.idle
    random.Random(1).shuffle(order)  # noqa: S311 - seeded, for repeatable runs
    for index, slow in enumerate(order):
        if stop.is_set():
            break
        kind = slowloris if slow else idle
        tasks.append(asyncio.create_task(_held(kind, host, port, stop, slow)))
        delay = started + (index + 1) / arguments.connect_rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    for _ in range(600):
        tried = slowloris.opened + slowloris.connectFailures
        tried += idle.opened + idle.connectFailures
        if tried >= len(order):
            break
        await asyncio.sleep(0.05)
    print(
        json.dumps(
            {
                "ready": round(time.monotonic() - started, 2),
                "slowloris_opened": slowloris.opened,
                "idle_opened": idle.opened,
            }
        ),
        flush=True,
    )
    try:
        await asyncio.wait_for(stop.wait(), arguments.duration)
    except asyncio.TimeoutError:
        stop.set()
    if tasks:
        await asyncio.wait(tasks, timeout=15)
    print(
        json.dumps(
            {
                "slowloris": slowloris.summary(),
                "idle": idle.summary(),
                "uploads": uploads.summary(),
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slowloris", type=int, default=500)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--upload-gap", type=float, default=0.5)
    parser.add_argument("--connect-rate", type=float, default=500)
    parser.add_argument("--duration", type=float, default=600)
    arguments = parser.parse_args()
    raiseDescriptorLimit()
    asyncio.run(attack(arguments))


if __name__ == "__main__":
    main()
